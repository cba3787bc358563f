"""RelaxedWeights, ThetaLinearMap, RelaxedTensorProduct and RelaxedLinear."""
import copy
import pickle

import pytest
import torch
from e3nn import o3

from relaxed_e3nn._dtype import default_dtype
from relaxed_e3nn.nn import (
    RelaxedLinear,
    RelaxedTensorProduct,
    RelaxedWeights,
    ThetaLinearMap,
    irreps_relaxed_from,
    relaxed_parameters,
    rotate,
)
from test_nn_helpers import mirror, random_orthogonal, relative_tolerance, rotation_about


def test_irreps_from_int_lists_both_parities():
    assert irreps_relaxed_from(2) == o3.Irreps("0e+0o+1o+1e+2e+2o")
    assert irreps_relaxed_from(0) == o3.Irreps("0e+0o")
    assert irreps_relaxed_from("2x1o+0e") == o3.Irreps("2x1o+0e")
    with pytest.raises(ValueError, match="irreps_relaxed"):
        irreps_relaxed_from(-1)
    with pytest.raises(ValueError, match="irreps_relaxed"):
        irreps_relaxed_from("not irreps")
    with pytest.raises(TypeError, match="irreps_relaxed"):
        irreps_relaxed_from(1.5)
    with pytest.raises(TypeError, match="irreps_relaxed"):
        irreps_relaxed_from(True)


def test_relaxed_weights_initialisation_and_norms(dtype):
    weights = RelaxedWeights("2x0e+1x1o+2x2e")
    theta = weights.theta
    assert theta.dtype == dtype and theta.shape == (2 + 3 + 10,)
    assert theta[:2].tolist() == [1.0, 1.0] and theta[2:].abs().max() == 0
    assert weights.breaking_norm() == 0 and weights.penalty() == 0
    assert weights.num_copies == 5
    with torch.no_grad():
        theta.copy_(torch.arange(15, dtype=dtype))
    copies = [theta[0:1], theta[1:2], theta[2:5], theta[5:10], theta[10:15]]
    expected_norms = torch.stack([c.norm() for c in copies])
    torch.testing.assert_close(weights.copy_norms(), expected_norms)
    torch.testing.assert_close(weights.penalty(), expected_norms[2:].sum())
    torch.testing.assert_close(weights.breaking_norm(), theta[2:].norm())
    # only theta is in the state dict
    assert list(weights.state_dict()) == ["theta"]


def test_penalty_gradient_is_finite_at_zero(dtype):
    weights = RelaxedWeights(1)
    weights.penalty().backward()
    assert torch.isfinite(weights.theta.grad).all() and weights.theta.grad.abs().max() == 0
    weights.theta.grad = None
    with torch.no_grad():
        weights.theta[2:5] = torch.tensor([3.0, 0.0, 4.0])
    weights.penalty().backward()
    torch.testing.assert_close(weights.theta.grad[2:5], torch.tensor([0.6, 0.0, 0.8]))


def test_prox_soft_thresholds_breaking_copies(dtype):
    weights = RelaxedWeights("0e+1o+1e")
    with torch.no_grad():
        weights.theta.copy_(torch.tensor([0.3, 3.0, 0.0, 4.0, 0.1, 0.1, 0.1]))
    weights.prox_(1.0)
    # 0e untouched, 1o shrunk by 1 along its direction, 1e (norm 0.17 < 1) exactly zero
    expected = torch.tensor([0.3, 3.0 * 0.8, 0.0, 4.0 * 0.8, 0.0, 0.0, 0.0])
    torch.testing.assert_close(weights.theta.detach(), expected)
    assert (weights.theta[4:] == 0).all()
    with pytest.raises(ValueError, match="threshold"):
        weights.prox_(-1.0)


def test_prox_commutes_with_rotations(dtype):
    weights = RelaxedWeights(2)
    with torch.no_grad():
        weights.theta.normal_()
    for R in random_orthogonal(2):
        D = weights.irreps.D_from_matrix(R).to(dtype)
        rotated = RelaxedWeights(2)
        with torch.no_grad():
            rotated.theta.copy_(D @ weights.theta)
        shrunk = copy.deepcopy(weights).prox_(0.4)
        rotated.prox_(0.4)
        torch.testing.assert_close(rotated.theta.detach(), D @ shrunk.theta.detach(),
                                   atol=10 * relative_tolerance(dtype), rtol=0)


def test_theta_linear_map_matches_e3nn_right(dtype):
    irreps_in, irreps_theta, irreps_out = o3.Irreps("2x0e+2x1o+1x2e"), o3.Irreps("2x0e+0o+1o+1e+2x2e"), \
        o3.Irreps("1x0e+1x0o+2x1o+1x1e+1x2e")
    linear_map = ThetaLinearMap(irreps_in, irreps_theta, irreps_out)
    instructions = [(i, j, k, "uvw", True) for i, j, k in linear_map.instructions]
    tp = o3.TensorProduct(irreps_in, irreps_theta, irreps_out, instructions, internal_weights=True,
                          shared_weights=True, compile_right=True)
    with torch.no_grad():
        for (_, view), e3nn_view in zip(linear_map.weight_views(), tp.weight_views()):
            e3nn_view.copy_(view)
    theta = torch.randn(irreps_theta.dim)
    torch.testing.assert_close(linear_map(theta), tp.right(theta), atol=10 * relative_tolerance(dtype), rtol=0)
    # and it is the tensor product applied to x
    x = torch.randn(4, irreps_in.dim)
    torch.testing.assert_close(x @ linear_map(theta), tp(x, theta.expand(4, -1)),
                               atol=10 * relative_tolerance(dtype), rtol=0)


def test_theta_linear_map_exact_identity_and_equivariance(dtype):
    irreps = o3.Irreps("0e+1o+2e")
    linear_map = ThetaLinearMap(irreps, irreps_relaxed_from(2), irreps, identity=True)
    weights = RelaxedWeights(2)
    assert torch.equal(linear_map(weights.theta), torch.eye(irreps.dim))
    theta = weights.theta.detach() + torch.randn(weights.irreps.dim)
    for R in random_orthogonal(4):
        D_theta = weights.irreps.D_from_matrix(R).to(dtype)
        D = irreps.D_from_matrix(R).to(dtype)
        # row-vector convention: A(D_theta theta) = D A(theta) D^T
        torch.testing.assert_close(linear_map(D_theta @ theta), D @ linear_map(theta) @ D.T,
                                   atol=10 * relative_tolerance(dtype), rtol=0)
        # negative: with theta held fixed (not rotated) the broken map is not invariant
        assert (linear_map(theta) - D @ linear_map(theta) @ D.T).abs().max() > 1e-3
    with pytest.raises(ValueError, match="theta"):
        linear_map(theta[:-1])
    with pytest.raises(ValueError, match="identity"):
        ThetaLinearMap("0e", "1o", "1o", identity=True)
    # picklable (deepcopy, torch.save)
    clone = pickle.loads(pickle.dumps(linear_map))
    torch.testing.assert_close(clone(theta), linear_map(theta))


def _tensor_product_pair(dtype):
    irreps_in1, irreps_in2, irreps_out = "2x0e+1x1o", "0e+1o+2e", "2x0e+1x1o+1x1e+1x2e"
    instructions = []
    for i, (_, ir1) in enumerate(o3.Irreps(irreps_in1)):
        for j, (_, ir2) in enumerate(o3.Irreps(irreps_in2)):
            for k, (_, ir3) in enumerate(o3.Irreps(irreps_out)):
                if ir3 in ir1 * ir2:
                    instructions.append((i, j, k, "uvw", True))
    plain = o3.TensorProduct(irreps_in1, irreps_in2, irreps_out, instructions)
    relaxed = RelaxedTensorProduct(irreps_in1, irreps_in2, irreps_out, instructions, irreps_relaxed=2,
                                   compile_right=True)
    relaxed.load_state_dict(plain.state_dict(), strict=False)
    return plain, relaxed


def test_relaxed_tensor_product_identity_and_joint_equivariance(dtype):
    plain, relaxed = _tensor_product_pair(dtype)
    x, y = torch.randn(5, plain.irreps_in1.dim), torch.randn(5, plain.irreps_in2.dim)
    assert torch.equal(relaxed(x, y), plain(x, y))
    with torch.no_grad():
        relaxed.theta.theta.add_(torch.randn_like(relaxed.theta.theta))
    out = relaxed(x, y)
    assert (out - plain(x, y)).abs().max() > 1e-3
    for R in random_orthogonal(4):
        D1, D2, Dout = (irreps.D_from_matrix(R).to(dtype) for irreps in
                        (relaxed.irreps_in1, relaxed.irreps_in2, relaxed.irreps_out))
        rotated = rotate(relaxed, R)
        error = (rotated(x @ D1.T, y @ D2.T) - out @ Dout.T).abs().max() / out.abs().max()
        assert error < relative_tolerance(dtype)
        assert (relaxed(x @ D1.T, y @ D2.T) - out @ Dout.T).abs().max() / out.abs().max() > 1e-3
    torch.testing.assert_close(torch.einsum("zi,zik->zk", x, relaxed.right(y)), out,
                               atol=10 * relative_tolerance(dtype), rtol=0)
    with pytest.raises(ValueError, match="y"):
        relaxed(x, y[:, :3])


def test_relaxed_linear_identity_stabilizer_and_parity(dtype):
    irreps_in, irreps_out = "2x0e+2x1o", "2x0e+1x0o+2x1o+1x1e"
    plain = o3.Linear(irreps_in, irreps_out)
    relaxed = RelaxedLinear(irreps_in, irreps_out, irreps_relaxed="0e+0o+1o")
    relaxed.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(6, plain.irreps_in.dim)
    assert torch.equal(relaxed(x), plain(x))
    n = torch.randn(3, dtype=torch.float64)
    n = n / n.norm()
    # polar vector theta along n: kept by rotations about n and mirrors containing n, broken by inversion
    with torch.no_grad():
        relaxed.theta.theta[2:] = n.to(dtype)
    out = relaxed(x)
    D_in, D_out = relaxed.irreps_in.D_from_matrix, relaxed.irreps_out.D_from_matrix

    def error(R):
        R = R.to(torch.float64)
        return float(((relaxed(x @ D_in(R).to(dtype).T) - out @ D_out(R).to(dtype).T).abs().max() / out.abs().max()).detach())

    perpendicular = torch.linalg.cross(n, torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64))
    assert max(error(rotation_about(n, 0.9)), error(mirror(perpendicular))) < relative_tolerance(dtype)
    assert error(-torch.eye(3)) > 1e-3
    # a pseudoscalar theta reaches the odd-parity outputs that o3.Linear cannot
    with torch.no_grad():
        relaxed.theta.theta.copy_(torch.tensor([1.0, 0.7, 0, 0, 0]))
    odd = relaxed(x)[:, [2, 9, 10, 11]]
    assert odd.abs().max() > 1e-3 and plain(x)[:, [2, 9, 10, 11]].abs().max() == 0
    assert [name for name, _, _ in relaxed_parameters(relaxed)] == ["theta"]


def test_theta_linear_map_keeps_float64_precision_after_to():
    with default_dtype(torch.float32):
        linear_map = ThetaLinearMap("0e+1o+2e", irreps_relaxed_from(2), "0e+1o+2e", identity=True)
    linear_map = linear_map.to(torch.float64)
    assert linear_map.coupling.dtype == torch.float64
    assert list(linear_map.state_dict()) == ["weight"]
    with default_dtype(torch.float64):  # e3nn computes D in the default dtype
        theta = torch.randn(linear_map.dim_relaxed)
        R = -o3.rand_matrix()
        D_theta = irreps_relaxed_from(2).D_from_matrix(R)
        D = o3.Irreps("0e+1o+2e").D_from_matrix(R)
    error = (linear_map(D_theta @ theta) - D @ linear_map(theta) @ D.T).abs().max()
    assert error < 1e-12


def test_node_map_carries_the_v_cross_b_coupling(dtype):
    # 1o x 1e -> 1o: with theta an axial vector B the node map acts as x -> c (x cross B)
    linear_map = ThetaLinearMap("1o", "1e", "1o")
    B = torch.randn(3)
    v = torch.randn(5, 3)
    out = (v @ linear_map(B)).detach()
    cross = torch.linalg.cross(v, B.expand(5, 3), dim=1)
    c = (out * cross).sum() / (cross * cross).sum()
    assert abs(float(c)) > 1e-3
    torch.testing.assert_close(out, c * cross, atol=10 * relative_tolerance(dtype), rtol=0)
    # a natural-parity map has no room for a pseudoscalar theta at all
    assert ThetaLinearMap("0e+1o+2e", "0o", "0e+1o+2e").num_paths == 0
