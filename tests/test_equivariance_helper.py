"""The tests' shared check (``_equivariance.equivariance_error``) and tables: it passes what is
equivariant, jointly with θ, and fails what breaks the symmetry (including parity only)."""
import pytest
import torch
from e3nn import o3

from _equivariance import equivariance_error
from _geometry import close_group, random_orthogonal, reflection, rotation_about
from _tolerance import TOLERANCE, tolerance


def _joint_product(dtype):
    """``f(x, θ) = x ⊗ θ``: equivariant jointly in ``x`` and θ, not with θ held fixed."""
    tp = o3.FullyConnectedTensorProduct("1o + 2e", "0e + 1o + 2e", "0e + 1e + 2o + 1o")
    return tp.to(dtype), torch.randn(5, tp.irreps_in1.dim, dtype=dtype), torch.randn(1, tp.irreps_in2.dim, dtype=dtype)


def test_joint_equivariance_with_theta_as_an_input(dtype):
    tp, x, theta = _joint_product(dtype)
    error = equivariance_error(tp, (x, theta), [tp.irreps_in1, tp.irreps_in2], tp.irreps_out, num_elements=6)
    assert error < tolerance(dtype, "rel")


def test_theta_held_fixed_breaks_the_check(dtype):
    """Negative control: θ not rotated (a fixed direction) breaks the symmetry; the check sees it."""
    tp, x, theta = _joint_product(dtype)
    assert equivariance_error(tp, (x, theta), [tp.irreps_in1, None], tp.irreps_out, num_elements=6) > 1e-3


def test_wrong_parity_is_caught_only_by_improper_elements(dtype):
    x = torch.randn(4, 3, dtype=dtype)
    identity = lambda v: v  # noqa: E731
    assert equivariance_error(identity, (x,), ["1o"], ["1o"]) < tolerance(dtype, "rel")
    assert equivariance_error(identity, (x,), ["1o"], ["1e"]) > 1.0  # a polar vector read as axial
    proper = [rotation_about([1, 2, 3], 0.7), rotation_about([0, 0, 1], 2.0)]
    assert equivariance_error(identity, (x,), ["1o"], ["1e"], elements=proper) < tolerance(dtype, "rel")


def test_points_about_a_centre_and_finite_groups(dtype):
    c4v = close_group([rotation_about([0, 0, 1], torch.pi / 2), reflection([1, 0, 0])])
    center = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
    pos = torch.randn(6, 3, dtype=dtype)

    def pull_along_z(p):  # C4v-equivariant about `center` (z is its axis), not O(3)-equivariant
        offset = torch.tensor([0.0, 0.0, 1.0], dtype=p.dtype)
        return p + offset * ((p - center.to(p.dtype)) ** 2).sum(-1, keepdim=True)

    args, points = (pos,), ["cartesian_points"]
    assert equivariance_error(pull_along_z, args, points, points, elements=c4v, center=center) < tolerance(dtype, "rel")
    assert equivariance_error(pull_along_z, args, points, points, elements=random_orthogonal(4, seed=1),
                              center=center) > 1e-3
    # translations: the centroid is E(3)-equivariant, a pinned origin is not
    centroid = lambda p: p.mean(0, keepdim=True)  # noqa: E731
    assert equivariance_error(centroid, args, points, points, translate=True) < tolerance(dtype, "rel")
    assert equivariance_error(lambda p: p - p[:1], args, points, points, translate=True) > 1e-3


def test_bad_descriptions_and_tolerance_kinds_raise():
    with pytest.raises(ValueError, match="irreps_in"):
        equivariance_error(lambda a, b: a, (torch.zeros(1, 3), torch.zeros(1, 3)), ["1o"], ["1o"])
    with pytest.raises(KeyError, match="kind"):
        tolerance(torch.float64, "loose")
    with pytest.raises(KeyError, match="dtype"):
        tolerance(torch.float16, "abs")
    assert all(set(row) == {torch.float32, torch.float64} for row in TOLERANCE.values())
