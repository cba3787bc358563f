"""RelaxedConvolution: exact equivariance, joint equivariance, stabilizers, identities with e3nn."""
import math

import pytest
import torch
from e3nn import o3
from e3nn.nn.models import gate_points_2101
from e3nn.nn.models.v2106 import points_convolution

from _tolerance import tolerance as table_tolerance
from relaxed_e3nn._dtype import default_dtype
from relaxed_e3nn.nn import (
    RelaxedConvolution,
    RelaxedWeights,
    load_equivariant_state,
    relax,
    relaxed_parameters,
    rotate,
)
from test_nn_helpers import (
    cached_conv,
    complete_graph,
    conv_equivariance_error,
    conv_inputs,
    edge_inputs,
    mirror,
    oh_group,
    perpendicular,
    random_orthogonal,
    relative_tolerance,
    rotation_about,
    run_conv,
    set_theta,
    theta_from_parts,
)

BROKEN = 1e-3  # a broken symmetry must show a relative error far above round-off


def _random_theta(conv, scale=0.7):
    return conv.theta.theta.detach() + scale * torch.randn_like(conv.theta.theta) * (~conv.theta.scalar_mask)


@pytest.mark.parametrize("relax_at", ["both", "edge", "node"])
def test_equivariant_at_initialisation(dtype, relax_at):
    conv = cached_conv("small", dtype, relax_at)
    x, attr, pos = conv_inputs(conv)
    for R in random_orthogonal(4):
        assert conv_equivariance_error(conv, R, x, attr, pos) < relative_tolerance(dtype)


@pytest.mark.parametrize("relax_at", ["both", "edge", "node"])
def test_breaking_theta_breaks_equivariance(dtype, relax_at):
    conv = cached_conv("small", dtype, relax_at)
    x, attr, pos = conv_inputs(conv)
    set_theta(conv, _random_theta(conv))
    errors = [conv_equivariance_error(conv, R, x, attr, pos) for R in random_orthogonal(4)]
    assert min(errors) > BROKEN


@pytest.mark.parametrize("config,mixing", [("small", "angle"), ("parity", "alpha"), ("attr", "angle")])
def test_joint_equivariance_any_theta(dtype, config, mixing):
    conv = cached_conv(config, dtype, "both", mixing)
    x, attr, pos = conv_inputs(conv)
    theta = _random_theta(conv)
    set_theta(conv, theta)
    for R in random_orthogonal(4):
        theta_rotated = conv.irreps_relaxed.D_from_matrix(R).to(dtype) @ theta
        assert conv_equivariance_error(conv, R, x, attr, pos, theta_rotated) < relative_tolerance(dtype)
        # negative control: the rotated input with the unrotated theta is not equivariant
        assert conv_equivariance_error(conv, R, x, attr, pos) > BROKEN


def test_rotate_model_is_exact(dtype):
    conv = cached_conv("parity", dtype)
    x, attr, pos = conv_inputs(conv)
    set_theta(conv, _random_theta(conv))
    before = conv.theta.theta.detach().clone()
    for R in random_orthogonal(2):
        rotated = rotate(conv, R)
        assert torch.equal(conv.theta.theta.detach(), before), "rotate must not modify its argument"
        D_in = conv.irreps_node_input.D_from_matrix(R).to(dtype)
        D_out = conv.irreps_node_output.D_from_matrix(R).to(dtype)
        out = run_conv(conv, x, attr, pos)
        out_rotated = run_conv(rotated, x @ D_in.T, attr, pos @ R.to(dtype).T)
        error = (out_rotated - out @ D_out.T).abs().max() / out.abs().max()
        assert error < relative_tolerance(dtype)
        assert rotated.theta.theta.dtype == dtype


def test_rotate_rejects_non_orthogonal():
    conv = cached_conv("small", torch.float64)
    with pytest.raises(ValueError, match="orthogonal"):
        rotate(conv, 2 * torch.eye(3))
    with pytest.raises(ValueError, match="3x3"):
        rotate(conv, torch.eye(2))
    with pytest.raises(TypeError, match="model"):
        rotate("conv", torch.eye(3))


def _assert_stabilizer(conv, kept, broken, dtype):
    """Every element of ``kept`` is a symmetry of ``conv`` to round-off, every element of ``broken`` is not."""
    x, attr, pos = conv_inputs(conv)
    assert max(conv_equivariance_error(conv, g, x, attr, pos) for g in kept) < relative_tolerance(dtype)
    assert min(conv_equivariance_error(conv, g, x, attr, pos) for g in broken) > BROKEN


def _frame_vector():
    n = torch.randn(3, dtype=torch.float64)
    return n / n.norm()


def test_polar_vector_keeps_c_inf_v(dtype):
    conv = cached_conv("small", dtype)
    n = _frame_vector()
    m = perpendicular(n)
    set_theta(conv, theta_from_parts(conv.irreps_relaxed, {"1o": 0.8 * n}))
    kept = [rotation_about(n, a) for a in (0.3, 1.7, -2.9)] + [mirror(m), mirror(torch.linalg.cross(n, m))]
    broken = [-torch.eye(3, dtype=torch.float64), mirror(n), rotation_about(m, math.pi)]
    _assert_stabilizer(conv, kept, broken, dtype)


def test_axial_vector_keeps_c_inf_h(dtype):
    conv = cached_conv("small", dtype)
    n = _frame_vector()
    m = perpendicular(n)
    set_theta(conv, theta_from_parts(conv.irreps_relaxed, {"1e": 0.8 * n}))
    kept = [rotation_about(n, a) for a in (0.3, -2.2)] + [-torch.eye(3, dtype=torch.float64), mirror(n)]
    broken = [mirror(m), rotation_about(m, math.pi)]
    _assert_stabilizer(conv, kept, broken, dtype)


def test_y2_keeps_d_inf_h(dtype):
    conv = cached_conv("small", dtype)
    n = _frame_vector()
    m = perpendicular(n)
    y2 = o3.spherical_harmonics(2, n, normalize=True, normalization="component")
    set_theta(conv, theta_from_parts(conv.irreps_relaxed, {"2e": 0.5 * y2}))
    kept = [rotation_about(n, 1.1), rotation_about(m, math.pi), -torch.eye(3, dtype=torch.float64), mirror(n),
            mirror(m)]
    broken = [rotation_about(m, 0.7), rotation_about(n + m, math.pi / 3)]
    _assert_stabilizer(conv, kept, broken, dtype)


def test_pseudoscalar_keeps_so3_in_node_mode(dtype):
    conv = cached_conv("parity", dtype, "node")
    set_theta(conv, theta_from_parts(conv.irreps_relaxed, {"0o": 0.9}))
    rotations = [R for R in random_orthogonal(6)[::2]]
    improper = [-torch.eye(3, dtype=torch.float64), mirror(_frame_vector()), -rotations[1]]
    _assert_stabilizer(conv, rotations, improper, dtype)


def test_pseudoscalar_cannot_act_through_natural_parity_edges(dtype):
    # a 0o theta has no coupling to natural-parity edge attributes: edge-only relaxation stays O(3)
    conv = cached_conv("parity", dtype, "edge")
    set_theta(conv, theta_from_parts(conv.irreps_relaxed, {"0o": 0.9}))
    x, attr, pos = conv_inputs(conv)
    for R in random_orthogonal(2):
        assert conv_equivariance_error(conv, R, x, attr, pos) < relative_tolerance(dtype)


def test_cubic_harmonic_keeps_all_of_oh(dtype):
    conv = cached_conv("cubic", dtype)
    frame = o3.rand_matrix(dtype=torch.float64)
    elements = oh_group(frame)
    # the one O_h-invariant direction of l = 4: project a random vector with the Reynolds operator
    D4 = torch.stack([o3.Irreps("4e").D_from_matrix(g) for g in elements]).mean(0)
    cubic = D4 @ torch.randn(9, dtype=torch.float64)
    cubic = cubic / cubic.norm()
    set_theta(conv, theta_from_parts(conv.irreps_relaxed, {"4e": 1.2 * cubic}))
    x, attr, pos = conv_inputs(conv)
    errors = [conv_equivariance_error(conv, g, x, attr, pos) for g in elements]
    assert len(errors) == 48 and max(errors) < relative_tolerance(dtype)
    broken = [frame @ rotation_about([0, 0, 1], math.pi / 4) @ frame.T, rotation_about([1, 2, 3], 0.4)]
    assert min(conv_equivariance_error(conv, g, x, attr, pos) for g in broken) > BROKEN


def test_permutation_equivariance(dtype):
    conv = cached_conv("attr", dtype)
    set_theta(conv, _random_theta(conv))
    x, attr, pos = conv_inputs(conv, num_nodes=6)
    # a sparse graph so that the edge order matters
    edge_src, edge_dst = complete_graph(6)
    keep = (edge_src + 2 * edge_dst) % 3 != 0
    edge_src, edge_dst = edge_src[keep], edge_dst[keep]
    edge_attr, embedded = edge_inputs(conv.irreps_edge_attr, pos, edge_src, edge_dst)
    out = conv(x, attr, edge_src, edge_dst, edge_attr, embedded)
    perm = torch.randperm(6)
    inverse = torch.argsort(perm)
    edge_perm = torch.randperm(edge_src.shape[0])
    out_perm = conv(x[perm], attr[perm], inverse[edge_src][edge_perm], inverse[edge_dst][edge_perm],
                    edge_attr[edge_perm], embedded[edge_perm])
    torch.testing.assert_close(out_perm, out[perm], atol=10 * relative_tolerance(dtype), rtol=0)


def _plain_graph_inputs(conv, dtype):
    num_nodes = 8
    irreps_in = conv.irreps_in if hasattr(conv, "irreps_in") else conv.irreps_node_input
    x = torch.randn(num_nodes, irreps_in.dim, dtype=dtype)
    attr = torch.randn(num_nodes, conv.irreps_node_attr.dim, dtype=dtype)
    pos = 2 * torch.randn(num_nodes, 3, dtype=dtype)
    edge_src, edge_dst = complete_graph(num_nodes)
    edge_attr, embedded = edge_inputs(conv.irreps_edge_attr, pos, edge_src, edge_dst)
    return x, attr, edge_src, edge_dst, edge_attr, embedded


@pytest.mark.parametrize("plain", ["gate_points_2101", "v2106"])
def test_from_equivariant_identical(dtype, plain):
    if plain == "gate_points_2101":
        conv = gate_points_2101.Convolution("4x0e+2x1o+1x2e", "0e+1o", "0e+1o+2e", "3x0e+2x1o+1x2e+1x1e",
                                            5, 1, 8, 3.0)
    else:
        conv = points_convolution.Convolution("4x0e+2x1o+1x2e", "0e+1o", "0e+1o+2e", "3x0e+2x1o+1x2e+1x1e",
                                              [5, 8], 3.0)
        with torch.no_grad():
            conv.alpha.weight.normal_()
    conv = conv.to(dtype)
    relaxed = RelaxedConvolution.from_equivariant(conv, irreps_relaxed=2)
    assert relaxed.theta.theta.dtype == dtype
    assert relaxed.mixing == ("angle" if plain == "gate_points_2101" else "alpha")
    inputs = _plain_graph_inputs(conv, dtype)
    expected = conv(*inputs)
    got = relaxed(*inputs)
    tolerance = table_tolerance(dtype, "identity")
    assert (got - expected).abs().max() <= tolerance
    # with a breaking theta the outputs differ: the comparison above can fail
    set_theta(relaxed, _random_theta(relaxed))
    assert (relaxed(*inputs) - expected).abs().max() > 1e-3


def test_from_equivariant_rejects_other_modules():
    with pytest.raises(TypeError, match="conv must be"):
        RelaxedConvolution.from_equivariant(torch.nn.Linear(2, 2))
    conv = cached_conv("small", torch.float64)
    with pytest.raises(TypeError, match="already"):
        RelaxedConvolution.from_equivariant(conv)


def test_fc_neurons_is_the_v2106_way_of_giving_the_radial_sizes(dtype):
    args = ("4x0e+2x1o", "0e", "0e+1o+2e", "4x0e+2x1o")
    with default_dtype(dtype):
        torch.manual_seed(0)
        separate = RelaxedConvolution(*args, 5, 2, 7, 3.0)
        torch.manual_seed(0)
        joint = RelaxedConvolution(*args, fc_neurons=[5, 7, 7], num_neighbors=3.0)
    assert joint.fc_neurons == separate.fc_neurons == [5, 7, 7] and joint.fc.hs == separate.fc.hs
    state = separate.state_dict()
    assert state.keys() == joint.state_dict().keys()
    assert all(torch.equal(v, joint.state_dict()[k]) for k, v in state.items())
    with pytest.raises(ValueError, match="not both"):
        RelaxedConvolution(*args, 5, 2, 7, 3.0, fc_neurons=[5, 7])
    with pytest.raises(ValueError, match="fc_neurons must be"):
        RelaxedConvolution(*args, fc_neurons=[5, 0], num_neighbors=3.0)
    with pytest.raises(ValueError, match="num_neighbors is required"):
        RelaxedConvolution(*args, fc_neurons=[5, 7])


def test_load_equivariant_state_allows_only_relaxed_weights_to_be_missing():
    conv = gate_points_2101.Convolution("4x0e+2x1o", "0e", "0e+1o+2e", "4x0e+2x1o", 5, 1, 8, 3.0)
    relaxed = RelaxedConvolution("4x0e+2x1o", "0e", "0e+1o+2e", "4x0e+2x1o", 5, 1, 8, 3.0)
    load_equivariant_state(relaxed, conv.state_dict(), "here")
    assert torch.equal(relaxed.fc.state_dict()["layer0.weight"], conv.fc.state_dict()["layer0.weight"])
    with pytest.raises(ValueError, match=r"here: .*unexpected \['extra'\]"):
        load_equivariant_state(relaxed, {**conv.state_dict(), "extra": torch.zeros(1)}, "here")
    incomplete = {k: v for k, v in conv.state_dict().items() if not k.startswith("lin2.")}
    with pytest.raises(ValueError, match=r"missing \['lin2\.weight'"):
        load_equivariant_state(relaxed, incomplete, "here")
    other = gate_points_2101.Convolution("4x0e+2x1o", "0e", "0e+1o+2e", "4x0e+2x1o", 5, 1, 9, 3.0)
    with pytest.raises(ValueError, match="do not fit the relaxed model"):
        load_equivariant_state(relaxed, other.state_dict(), "here")


def _network_input(num_nodes, dtype):
    # e3nn's radius_graph adds spurious self-loops above 25 points (torch.cdist's matrix-multiply
    # path); 12 nodes keep its graph clean
    assert num_nodes <= 25
    pos = 1.5 * torch.randn(num_nodes, 3, dtype=dtype)
    return {"pos": pos, "x": torch.randn(num_nodes, 2, dtype=dtype)}


def test_relax_network_identical_then_breaks(dtype):
    network = gate_points_2101.Network(
        irreps_in="2x0e", irreps_hidden="4x0e+4x0o+2x1e+2x1o", irreps_out="1x1o+1x0e", irreps_node_attr=None,
        irreps_edge_attr=o3.Irreps.spherical_harmonics(2), layers=2, max_radius=3.0, number_of_basis=5,
        radial_layers=1, radial_neurons=8, num_neighbors=4.0, num_nodes=12,
    ).to(dtype)
    data = _network_input(12, dtype)
    expected = network(data)
    relaxed = relax(network, irreps_relaxed=1, relax_at="both")
    assert relaxed is network
    names = [name for name, _, _ in relaxed_parameters(relaxed)]
    assert names == ["layers.0.first.theta", "layers.1.first.theta", "layers.2.theta"]
    assert all(isinstance(m, RelaxedConvolution) for m in (network.layers[0].first, network.layers[2]))
    tolerance = table_tolerance(dtype, "identity")
    assert (network(data) - expected).abs().max() <= tolerance
    # equivariant at init, parity included
    D_out = network.irreps_out.D_from_matrix
    for R in random_orthogonal(2):
        R = R.to(dtype)
        rotated = network({"pos": data["pos"] @ R.T, "x": data["x"]})
        assert (rotated - expected @ D_out(R).T).abs().max() < 10 * relative_tolerance(dtype) * expected.abs().max()
    for _, _, theta in relaxed_parameters(relaxed):
        with torch.no_grad():
            theta.add_(0.5 * torch.randn_like(theta))
    assert (network(data) - expected).abs().max() > 1e-3


def test_relax_returns_relaxed_convolution_for_a_bare_convolution():
    conv = gate_points_2101.Convolution("2x0e", "0e", "0e+1o", "1x1o", 3, 1, 4, 2.0)
    relaxed = relax(conv, irreps_relaxed="0e+1o", relax_at="edge")
    assert isinstance(relaxed, RelaxedConvolution)
    assert relaxed.relax_at == "edge" and relaxed.irreps_relaxed == o3.Irreps("0e+1o")
    assert isinstance(relaxed.theta, RelaxedWeights)
    with pytest.raises(TypeError, match="module"):
        relax(42)


def test_bad_arguments():
    args = ("2x0e", "0e", "0e+1o", "1x1o", 3, 1, 4, 2.0)
    with pytest.raises(ValueError, match="relax_at"):
        RelaxedConvolution(*args, relax_at="edges")
    with pytest.raises(ValueError, match="mixing"):
        RelaxedConvolution(*args, mixing="sum")
    with pytest.raises(ValueError, match="number_of_basis"):
        RelaxedConvolution("2x0e", "0e", "0e+1o", "1x1o", [3], 1, 4, 2.0)
    with pytest.raises(ValueError, match="radial_layers"):
        RelaxedConvolution("2x0e", "0e", "0e+1o", "1x1o", 3, -1, 4, 2.0)
    with pytest.raises(ValueError, match="num_neighbors"):
        RelaxedConvolution("2x0e", "0e", "0e+1o", "1x1o", 3, 0, 4, -1.0)
    with pytest.raises(ValueError, match="irreps_relaxed"):
        RelaxedConvolution(*args, irreps_relaxed=-1)
    with pytest.raises(ValueError, match="produces nothing"):
        RelaxedConvolution("2x0e", "0e", "0e", "1x1o", 3, 0, 4, 2.0)


def test_same_positional_arguments_as_gate_points_2101():
    """The constructor is a drop-in for gate_points_2101.Convolution: same positional arguments."""
    args = ("4x0e+2x1o", "0e", "0e+1o+2e", "4x0e+2x1o", 5, 2, 7, 3.0)
    plain = gate_points_2101.Convolution(*args)
    relaxed = RelaxedConvolution(*args)
    assert relaxed.fc.hs == plain.fc.hs
    assert relaxed.tp.instructions == plain.tp.instructions
    relaxed.load_state_dict(plain.state_dict(), strict=False)
    missing = set(relaxed.state_dict()) - set(plain.state_dict())
    assert missing == {"theta.theta", "edge_relaxation.weight", "node_relaxation.weight"}


def test_bad_inputs_raise():
    conv = cached_conv("small", torch.float64)
    x, attr, pos = conv_inputs(conv, dtype=torch.float64)
    edge_src, edge_dst = complete_graph(7)
    edge_attr, embedded = edge_inputs(conv.irreps_edge_attr, pos, edge_src, edge_dst)
    with pytest.raises(ValueError, match="node_input"):
        conv(x[:, :-1], attr, edge_src, edge_dst, edge_attr, embedded)
    with pytest.raises(ValueError, match="edge_attr"):
        conv(x, attr, edge_src, edge_dst, edge_attr[:, :4], embedded)
    with pytest.raises(ValueError, match="edge_dst"):
        conv(x, attr, edge_src, edge_dst[:-1], edge_attr, embedded)
    with pytest.raises(TypeError, match="edge_src"):
        conv(x, attr, edge_src.double(), edge_dst, edge_attr, embedded)
    with pytest.raises(ValueError, match="edge_length_embedded"):
        conv(x, attr, edge_src, edge_dst, edge_attr, embedded[:, :2])


def test_gradients_reach_theta_and_dtype_follows(dtype):
    conv = cached_conv("small", dtype)
    x, attr, pos = conv_inputs(conv)
    out = run_conv(conv, x, attr, pos)
    assert out.dtype == dtype
    conv.zero_grad()
    out.pow(2).sum().backward()
    grad = conv.theta.theta.grad
    assert grad is not None and grad.dtype == dtype and torch.isfinite(grad).all()
    assert grad[~conv.theta.scalar_mask].abs().max() > 0
    conv.zero_grad()


def test_state_dict_and_pickle_round_trip(tmp_path):
    conv = cached_conv("parity", torch.float64)
    set_theta(conv, _random_theta(conv))
    x, attr, pos = conv_inputs(conv, dtype=torch.float64)
    expected = run_conv(conv, x, attr, pos)
    assert not any("coupling" in key for key in conv.state_dict())
    torch.save(conv, tmp_path / "conv.pt")
    loaded = torch.load(tmp_path / "conv.pt", weights_only=False)
    assert torch.equal(run_conv(loaded, x, attr, pos), expected)
    number_of_basis, *hidden = conv.fc_neurons
    fresh = RelaxedConvolution(conv.irreps_in, conv.irreps_node_attr, conv.irreps_edge_attr, conv.irreps_out,
                               number_of_basis, len(hidden), hidden[0], conv.num_neighbors,
                               irreps_relaxed=conv.irreps_relaxed, relax_at=conv.relax_at).to(torch.float64)
    fresh.load_state_dict(conv.state_dict())
    assert torch.equal(run_conv(fresh, x, attr, pos), expected)


def test_rotate_is_float64_exact_under_a_float32_default():
    # e3nn builds Wigner D matrices in the default dtype; rotate() must not inherit float32 rounding
    conv = cached_conv("small", torch.float64)
    set_theta(conv, _random_theta(conv))
    theta = conv.theta.theta.detach().clone()
    R = random_orthogonal(2)[1]
    rotated = rotate(conv, R)  # default dtype is float32 here
    with default_dtype(torch.float64):
        expected = conv.irreps_relaxed.D_from_matrix(R) @ theta
    assert (rotated.theta.theta.detach() - expected).abs().max() < 1e-13
