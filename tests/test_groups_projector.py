"""The Reynolds projector ``P_H = mean_h D(h)`` against character theory and invariance."""
import math

import numpy as np
import pytest
import torch
from e3nn import o3

from relaxed_e3nn.groups import point_group

ALL_IRREPS = o3.Irreps("+".join(f"{l}{p}" for l in range(7) for p in "eo"))  # 0e+0o+...+6e+6o


def character_count(group, irreps):
    """Number of invariants from characters: mean_g Σ_irreps p^[det<0] χ_l(angle of det·g)."""
    total = 0.0
    for g in group.elements.numpy():
        det = round(np.linalg.det(g))
        q = det * g
        theta = math.acos(np.clip((np.trace(q) - 1) / 2, -1, 1))
        for mul, ir in irreps:
            chi = 1 + 2 * sum(math.cos(m * theta) for m in range(1, ir.l + 1))
            total += mul * chi * (ir.p if det < 0 else 1)
    return total / group.order


def continuous_count(name, irreps):
    """Invariants of the continuous groups: only m = 0 (Y_l0) survives C∞, then parity rules."""
    total = 0
    for mul, ir in irreps:
        l, p = ir.l, ir.p
        ok = {
            "Cinf": True,
            "Cinfv": p == (-1) ** l,  # σv acts on Y_l0 as p (-1)^l
            "Cinfh": p == 1,  # σh = i C2(z): p
            "Dinf": l % 2 == 0,  # C2' acts on Y_l0 as (-1)^l
            "Dinfh": l % 2 == 0 and p == 1,
            "SO3": l == 0,
            "O3": l == 0 and p == 1,
        }[name]
        total += mul * int(ok)
    return total


def random_frame(seed):
    torch.manual_seed(seed)
    return o3.rand_matrix().double()


def check_projector(P, tol):
    assert torch.allclose(P @ P, P, atol=tol)
    assert torch.allclose(P, P.T, atol=tol)


@pytest.mark.parametrize("name", ["Oh", "C4v", "D3h", "Td", "Th", "Ih", "S6", "C2", "Cs", "D4d", "C1"])
def test_finite_rank_matches_characters(name, dtype, float_tolerance):
    group = point_group(name, random_frame(1))
    P = group.invariant_projector(ALL_IRREPS)
    assert P.dtype == dtype and P.shape == (ALL_IRREPS.dim, ALL_IRREPS.dim)
    check_projector(P, float_tolerance)
    expected = character_count(group, ALL_IRREPS)
    assert abs(expected - round(expected)) < 1e-9
    assert torch.linalg.matrix_rank(P.double(), atol=1e-4).item() == round(expected)
    assert abs(P.trace().item() - expected) < 10 * float_tolerance


def test_known_invariant_counts():
    oh = point_group("Oh")
    assert torch.linalg.matrix_rank(oh.invariant_projector("4e", dtype=torch.float64), atol=1e-8).item() == 1
    assert torch.linalg.matrix_rank(oh.invariant_projector("6e", dtype=torch.float64), atol=1e-8).item() == 1
    assert torch.linalg.matrix_rank(oh.invariant_projector("4o+2e+3e+1e", dtype=torch.float64), atol=1e-8).item() == 0
    assert round(oh.invariant_projector(ALL_IRREPS).trace().item()) == 3  # 0e, 4e, 6e
    c4v = point_group("C4v")
    per_l = [
        round(c4v.invariant_projector(o3.Irrep(l, (-1) ** l), dtype=torch.float64).trace().item())
        for l in range(7)
    ]
    assert per_l == [1, 1, 1, 1, 2, 2, 2]  # cos(m φ) with m ≡ 0 (mod 4)
    # the Oh-invariant l=4 vector is the cubic harmonic: components 4 and 8 in ratio sqrt(7/5) : 1
    P = oh.invariant_projector("4e", dtype=torch.float64)
    v = P[:, 4] / P[:, 4].norm()
    assert torch.allclose(v.abs()[[0, 1, 2, 3, 5, 6, 7]], torch.zeros(7, dtype=torch.float64), atol=1e-12)
    assert abs(abs(v[4] / v[8]).item() - math.sqrt(7 / 5)) < 1e-12


@pytest.mark.parametrize("name", ["Cinf", "Cinfv", "Cinfh", "Dinf", "Dinfh", "SO3", "O3"])
def test_continuous_projectors_are_exact(name, dtype, float_tolerance):
    frame = random_frame(2)
    group = point_group(name, frame)
    irreps = ALL_IRREPS + o3.Irreps("2x8e+9o")
    P = group.invariant_projector(irreps)
    assert P.dtype == dtype
    check_projector(P, float_tolerance)
    expected = continuous_count(name, irreps)
    assert abs(P.double().trace().item() - expected) < 10 * float_tolerance
    assert torch.linalg.matrix_rank(P.double(), atol=1e-4).item() == expected
    # invariance under Haar-random members (parity included where the group has it)
    g = group.sample(16, generator=torch.Generator().manual_seed(0))
    D = irreps.D_from_matrix(g.to(dtype))
    assert (D @ P - P).abs().max() < 10 * float_tolerance
    assert (P @ D - P).abs().max() < 10 * float_tolerance


@pytest.mark.parametrize("name", ["Oh", "D3h", "Cinfv", "Dinfh", "Cinfh"])
def test_projector_invariance_and_negative(name, dtype, float_tolerance):
    frame = random_frame(3)
    group = point_group(name, frame)
    irreps = o3.Irreps("0e+0o+1o+1e+2e+2o+3o+4e")
    P = group.invariant_projector(irreps)
    members = group.sample(12, generator=torch.Generator().manual_seed(1)).to(dtype)
    D = irreps.D_from_matrix(members)
    assert (D @ P - P).abs().max() < 10 * float_tolerance
    # a generic rotation and a generic mirror break every non-O(3)-invariant direction
    torch.manual_seed(5)
    for g in (o3.rand_matrix(), -o3.rand_matrix()):
        assert not group.contains(g)
        err = (irreps.D_from_matrix(g.to(dtype)) @ P - P).abs().max()
        assert err > 0.05


def test_axial_projector_keeps_axis_harmonics():
    """Y(n) is invariant under C∞v about n, so P Y(n) = Y(n); the orthogonal complement is killed."""
    axis = torch.tensor([0.3, -0.5, 0.8], dtype=torch.float64)
    axis = axis / axis.norm()
    x = torch.linalg.cross(axis, torch.tensor([1.0, 0, 0], dtype=torch.float64))
    x = x / x.norm()
    frame = torch.stack([x, torch.linalg.cross(axis, x), axis], dim=1)
    irreps = o3.Irreps.spherical_harmonics(6)
    y = o3.spherical_harmonics(irreps, axis, normalize=True)
    P = point_group("Cinfv", frame).invariant_projector(irreps, dtype=torch.float64)
    assert torch.allclose(P @ y, y, atol=1e-12)
    assert abs(P.trace().item() - 7) < 1e-10
    other = o3.spherical_harmonics(irreps, x, normalize=True)
    assert (P @ other - other).norm() > 0.1


def test_projector_bad_input_and_empty():
    g = point_group("C4v")
    with pytest.raises(ValueError, match="irreps"):
        g.invariant_projector("not irreps")
    assert g.invariant_projector("", dtype=torch.float64).shape == (0, 0)


def test_D_from_matrix_matches_e3nn_and_is_a_homomorphism(dtype, float_tolerance):
    from relaxed_e3nn.groups import D_from_matrix

    irreps = o3.Irreps("0e+0o+1o+1e+2e+3o+4e+6o+8e")
    torch.manual_seed(0)
    R = o3.rand_matrix(6, dtype=torch.float64)
    R[3:] *= -1  # improper elements
    ours = D_from_matrix(irreps, R.to(dtype))
    assert ours.dtype == dtype
    assert (ours - irreps.D_from_matrix(R).to(dtype)).abs().max() < 10 * float_tolerance
    # exact homomorphism also on the standard-frame elements where Euler angles degenerate
    oh = point_group("Oh").elements
    D = D_from_matrix(irreps, oh.to(dtype))
    prod = D_from_matrix(irreps, (oh[:6, None] @ oh[None]).reshape(-1, 3, 3).to(dtype))
    assert (prod - (D[:6, None] @ D[None]).reshape(prod.shape)).abs().max() < 10 * float_tolerance
    eye = torch.eye(irreps.dim, dtype=dtype)
    assert (D @ D.transpose(1, 2) - eye).abs().max() < 10 * float_tolerance
    # negative control: a perturbed matrix is not the representation of the product
    assert (D_from_matrix(irreps, (oh[1] @ oh[2]).to(dtype)) - D[1] @ D[3]).abs().max() > 0.1
    with pytest.raises(ValueError, match="shape"):
        D_from_matrix(irreps, torch.eye(2))


def test_projector_cache_returns_fresh_tensors():
    g = point_group("D4h")
    first = g.invariant_projector("2e+4e", dtype=torch.float64)
    first.zero_()
    again = g.invariant_projector("2e+4e", dtype=torch.float64)
    assert again.abs().max() > 0.1


def test_D_from_matrix_is_float64_accurate_under_any_default_dtype(dtype):
    from relaxed_e3nn.groups import D_from_matrix

    irreps = o3.Irreps("1o+2e+4e+6o")
    R = o3.rand_matrix(4, dtype=torch.float64)
    D = D_from_matrix(irreps, R)
    assert D.dtype == torch.float64
    D2 = D_from_matrix(irreps, R @ R)
    assert (D2 - D @ D).abs().max() < 1e-12
    assert (D[:, :3, :3] - R).abs().max() < 1e-15  # the l=1 block is R itself
