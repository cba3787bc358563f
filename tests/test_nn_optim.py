"""make_optimizer: torch-equivalent arithmetic, the Curie check and staying in the H-invariant subspace."""
import pytest
import torch
from e3nn import o3

from relaxed_e3nn.nn import RelaxedConvolution, RelaxedOptimizer, RelaxedWeights, make_optimizer, relaxed_parameters
from _tolerance import tolerance as table_tolerance
from test_nn_helpers import complete_graph, d4h_group, edge_inputs, random_orthogonal, reynolds

L_RELAXED = 4


class _TwoLayers(torch.nn.Module):
    """Two relaxed convolutions 0e -> hidden -> 1o (a per-node vector)."""

    def __init__(self):
        super().__init__()
        edge = o3.Irreps.spherical_harmonics(2)
        self.conv1 = RelaxedConvolution("0e", "0e", edge, "4x0e+2x1o+2x2e", 5, 1, 8, 7.0, irreps_relaxed=L_RELAXED)
        self.conv2 = RelaxedConvolution("4x0e+2x1o+2x2e", "0e", edge, "1x1o", 5, 1, 8, 7.0, irreps_relaxed=L_RELAXED)

    def forward(self, pos):
        edge_src, edge_dst = complete_graph(pos.shape[0])
        edge_attr, embedded = edge_inputs(self.conv1.irreps_edge_attr, pos, edge_src, edge_dst)
        ones = pos.new_ones(pos.shape[0], 1)
        x = self.conv1(ones, ones, edge_src, edge_dst, edge_attr, embedded)
        return self.conv2(x, ones, edge_src, edge_dst, edge_attr, embedded)


def _cube_to_prism(dtype):
    """Cube in a random frame (O_h) and a target stretching it along the frame's z (D_4h)."""
    torch.manual_seed(1)
    frame = o3.rand_matrix(dtype=torch.float64)
    corners = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=torch.float64)
    stretch = frame @ torch.diag(torch.tensor([0.5, 0.5, 2.0], dtype=torch.float64)) @ frame.T
    pos = corners @ frame.T
    target = pos @ stretch.T - pos
    projector = reynolds(o3.Irreps([(1, (l, p)) for l in range(L_RELAXED + 1) for p in (1, -1)]), d4h_group(frame))
    return pos.to(dtype), target.to(dtype), projector.to(dtype)


def _loss(model, pos, target):
    return (model(pos) - target).pow(2).mean()


def _outside(theta, projector):
    """Norm of the part of theta outside the H-invariant subspace."""
    return float((theta.detach() - projector @ theta.detach()).norm())


def test_curie_gradient_lives_on_h_invariant_irreps(dtype):
    pos, target, projector = _cube_to_prism(dtype)
    model = _TwoLayers()
    _loss(model, pos, target).backward()
    tolerance = table_tolerance(dtype, "gradient")
    for name, irreps, theta in relaxed_parameters(model):
        grad = theta.grad
        scale = float(grad.norm())
        assert scale > 0
        assert _outside(grad, projector) < tolerance * scale, name
        norms = {str(ir): float(grad[sl].norm()) / scale for (_, ir), sl in zip(irreps, irreps.slices())}
        # D_4h has invariants only in 0e, 2e and 4e
        for ir, value in norms.items():
            if ir not in ("0e", "2e", "4e"):
                assert value < tolerance, (name, ir, value)
        assert norms["2e"] > 1e-4 and norms["4e"] > 1e-4, (name, norms)


def _train(model, optimizer, pos, target, steps):
    for _ in range(steps):
        optimizer.zero_grad()
        loss = _loss(model, pos, target)
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def test_default_optimizer_keeps_theta_in_invariant_subspace_plain_adam_does_not():
    dtype = torch.float64
    torch.set_default_dtype(dtype)
    try:
        pos, target, projector = _cube_to_prism(dtype)
        torch.manual_seed(2)
        model = _TwoLayers()
        plain = _TwoLayers()
        plain.load_state_dict(model.state_dict())
        initial = float(_loss(model, pos, target).detach())

        loss = _train(model, make_optimizer(model, 1e-2), pos, target, 40)
        assert loss < initial
        for name, irreps, theta in relaxed_parameters(model):
            breaking = float(theta.detach()[1:].norm())
            assert breaking > 1e-2, "theta must actually move for the check to mean anything"
            assert _outside(theta, projector) < 1e-10, name

        _train(plain, torch.optim.Adam(plain.parameters(), lr=1e-2), pos, target, 40)
        outside = [_outside(theta, projector) / float(theta.detach()[1:].norm())
                   for _, _, theta in relaxed_parameters(plain)]
        assert max(outside) > 1e-3, "per-element Adam was expected to leave the invariant subspace"
    finally:
        torch.set_default_dtype(torch.float32)


def test_irrep_adam_step_commutes_with_rotations(dtype):
    weights = RelaxedWeights(3)
    with torch.no_grad():
        weights.theta.normal_()
    grads = [torch.randn(weights.irreps.dim) for _ in range(3)]
    for R in random_orthogonal(2):
        D = weights.irreps.D_from_matrix(R).to(dtype)
        results = []
        for rotate_all in (False, True):
            w = RelaxedWeights(3)
            with torch.no_grad():
                w.theta.copy_(D @ weights.theta if rotate_all else weights.theta)
            optimizer = make_optimizer(w, 0.1, theta_penalty=0.5)
            for g in grads:
                w.theta.grad = D @ g if rotate_all else g.clone()
                optimizer.step()
            results.append(w.theta.detach())
        torch.testing.assert_close(results[1], D @ results[0], atol=table_tolerance(dtype, "step"), rtol=0)


def _mlp():
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 2))


@pytest.mark.parametrize("name,reference,kwargs", [
    ("adam", torch.optim.Adam, dict(weight_decay=0.1)),
    ("adamw", torch.optim.AdamW, dict(weight_decay=0.1)),
    ("sgd", torch.optim.SGD, dict(weight_decay=0.1, momentum=0.9)),
])
def test_ordinary_parameters_follow_torch(dtype, name, reference, kwargs):
    ours, theirs = _mlp(), _mlp()
    theirs.load_state_dict(ours.state_dict())
    optimizer = make_optimizer(ours, 0.05, name=name, **kwargs)
    torch_optimizer = reference(theirs.parameters(), lr=0.05, **kwargs)
    x = torch.randn(16, 3)
    for _ in range(5):
        for model, opt in ((ours, optimizer), (theirs, torch_optimizer)):
            opt.zero_grad()
            model(x).pow(2).sum().backward()
            opt.step()
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, atol=table_tolerance(dtype, "step"), rtol=0)


def test_proximal_step_zeroes_unneeded_blocks_and_state_dict_round_trip(dtype):
    weights = RelaxedWeights("0e+1o+2e")
    with torch.no_grad():
        weights.theta.copy_(torch.tensor([1.0, 0.3, 0.0, 0.4] + [1e-3] * 5))
    optimizer = make_optimizer(weights, 0.1, theta_optimizer="sgd", theta_penalty=0.1)
    weights.theta.grad = torch.zeros_like(weights.theta)
    optimizer.step()
    # threshold 0.01: 1o (norm 0.5) shrinks to 0.49, 2e (norm 2.2e-3) becomes exactly 0, 0e untouched
    assert weights.theta[0] == 1.0
    torch.testing.assert_close(weights.theta[1:4].norm(), torch.tensor(0.49))
    assert (weights.theta[4:] == 0).all()

    state = optimizer.state_dict()
    assert state["param_groups"][0]["irreps"] == ["1x0e+1x1o+1x2e"]
    clone = make_optimizer(weights, 0.1, theta_optimizer="sgd", theta_penalty=0.1)
    clone.load_state_dict(state)
    assert clone.param_groups[0]["penalty"] == 0.1


def test_scheduler_and_state_dict_with_irrep_adam():
    model = torch.nn.ModuleDict({"theta": RelaxedWeights(1), "linear": torch.nn.Linear(2, 2)})
    optimizer = make_optimizer(model, 0.1, theta_lr=0.01)
    assert [g["kind"] for g in optimizer.param_groups] == ["adam", "theta_irrep_adam"]
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    for _ in range(2):
        optimizer.zero_grad()
        (model["linear"](torch.ones(2)).sum() + (model["theta"].theta ** 2).sum()).backward()
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[1]["lr"] == pytest.approx(0.0025)
    state = optimizer.state_dict()
    other = make_optimizer(model, 0.1, theta_lr=0.01)
    other.load_state_dict(state)
    theta_state = other.state[model["theta"].theta]
    assert theta_state["exp_avg_sq_per_copy"].shape == (4,)
    torch.testing.assert_close(theta_state["exp_avg"], optimizer.state[model["theta"].theta]["exp_avg"])


def test_make_optimizer_rejects_bad_arguments():
    model = torch.nn.ModuleDict({"theta": RelaxedWeights(1), "linear": torch.nn.Linear(2, 2)})
    with pytest.raises(ValueError, match="name"):
        make_optimizer(model, 0.1, name="lbfgs")
    with pytest.raises(ValueError, match="theta_optimizer"):
        make_optimizer(model, 0.1, theta_optimizer="adam")
    with pytest.raises(ValueError, match="lr"):
        make_optimizer(model, -1.0)
    with pytest.raises(ValueError, match="theta_penalty"):
        make_optimizer(model, 0.1, theta_penalty=-1.0)
    with pytest.raises(TypeError, match="model"):
        make_optimizer([torch.zeros(2)], 0.1)
    frozen = torch.nn.Linear(2, 2).requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable"):
        make_optimizer(frozen, 0.1)
    with pytest.raises(ValueError, match="irreps"):
        RelaxedOptimizer([dict(params=[torch.zeros(3, requires_grad=True)], kind="theta_sgd", irreps=["0e"])], lr=0.1)
