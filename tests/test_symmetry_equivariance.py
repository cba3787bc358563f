"""equivariance_error: exact layers pass, broken functions fail, relaxed layers pass under their stabilizer."""
import pytest
import torch
from e3nn import o3

from relaxed_e3nn.groups import point_group
from relaxed_e3nn.symmetry import equivariance_error

REL = {torch.float32: 1e-5, torch.float64: 1e-10}


def test_e3nn_linear_is_equivariant(dtype):
    layer = o3.Linear("2x0e+1o+2e+1e", "0e+3x1o+2e+1e")
    x = torch.randn(5, layer.irreps_in.dim)
    err = equivariance_error(layer, x, layer.irreps_in, layer.irreps_out, num_elements=6)
    assert err.num_elements == 6
    assert len(err.blocks) == len(layer.irreps_out)
    assert err.max_rel < REL[dtype]
    assert err.max_abs < 10 * REL[dtype]


def test_tensor_product_and_cartesian_points(dtype):
    tp = o3.FullyConnectedTensorProduct("1o+2e", "0e+1o+2e", "0e+1o+1e+2e+3o")

    def fn(x, pos):
        sh = o3.spherical_harmonics("0e+1o+2e", pos, normalize=True)
        return tp(x, sh)

    x = torch.randn(7, 8)
    pos = torch.randn(7, 3)
    err = equivariance_error(fn, (x, pos), ["1o+2e", "cartesian_points"], tp.irreps_out, num_elements=6)
    assert err.max_rel < REL[dtype] * 10


def test_broken_function_fails(dtype):
    shift = torch.tensor([0.0, 0.0, 0.3])

    def broken(x):
        return x + shift  # a fixed vector: not equivariant

    x = torch.randn(4, 3)
    err = equivariance_error(broken, x, "1o", "1o", num_elements=6)
    assert err.max_rel > 0.05
    # an output that ignores parity: mislabelled 1o -> 1e fails exactly on the improper elements
    err_parity = equivariance_error(lambda v: v, x, "1o", "1e", num_elements=6)
    assert err_parity.max_rel > 1.0
    assert equivariance_error(lambda v: v, x, "1o", "1e", group="SO3", num_elements=6).max_rel < REL[dtype]
    assert equivariance_error(lambda v: v, x, "1o", "1e", group="C4", num_elements=6).max_rel < REL[dtype]
    with pytest.warns(DeprecationWarning, match="'n' is deprecated; use 'num_elements'"):
        assert equivariance_error(broken, x, "1o", "1o", n=6).max_rel == err.max_rel


def test_relaxed_layer_keeps_its_stabilizer(dtype):
    from relaxed_e3nn.nn import RelaxedLinear

    layer = RelaxedLinear("2x0e+1o+2e", "2x0e+1o+2e", irreps_relaxed="0e+1o")
    with torch.no_grad():
        layer.theta.theta[1:] = torch.tensor([0.0, 0.0, 0.7])  # polar vector along z: C_inf_v
        for p in layer.relaxation.parameters():
            p.normal_()
    x = torch.randn(6, layer.irreps_in.dim)
    for group in ("C4v", "C6v", "Cinfv"):
        err = equivariance_error(layer, x, layer.irreps_in, layer.irreps_out, group=point_group(group), num_elements=12)
        assert err.max_rel < 10 * REL[dtype], group
    # all elements of the finite group were used
    assert equivariance_error(layer, x, layer.irreps_in, layer.irreps_out, group="C4v", num_elements=12).num_elements == 8
    broken = equivariance_error(layer, x, layer.irreps_in, layer.irreps_out, num_elements=6)
    assert broken.max_rel > 1e-2
    # a group that does not fix z is broken too
    assert equivariance_error(layer, x, layer.irreps_in, layer.irreps_out, group="Oh", num_elements=48).max_rel > 1e-2


def test_result_reporting():
    layer = o3.Linear("1o", "1o+0e")
    err = equivariance_error(layer, torch.randn(2, 3), "1o", "1o+0e", num_elements=2, group="D2h")
    d = err.to_dict()
    assert d["group"] == "D2h" and d["num_elements"] == 2 and len(d["blocks"]) == 2
    assert "1x1o" in str(err)


def test_bad_input_raises():
    x = torch.randn(2, 3)
    with pytest.raises(ValueError, match="irreps_in"):
        equivariance_error(lambda a: a, x, ["1o", "1o"], "1o")
    with pytest.raises(ValueError, match="dimension"):
        equivariance_error(lambda a: a, x, "2e", "2e")
    with pytest.raises(ValueError, match="cartesian"):
        equivariance_error(lambda a: a, torch.randn(2, 4), "cartesian_points", "1o")
    with pytest.raises(TypeError, match="fn"):
        equivariance_error(3, x, "1o", "1o")
    with pytest.raises(ValueError, match="num_elements must"):
        equivariance_error(lambda a: a, x, "1o", "1o", num_elements=0)
    with pytest.raises(ValueError, match="irreps_in"):
        equivariance_error(lambda a: a, x, "banana", "1o")
