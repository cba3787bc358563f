"""residual_group: the largest point group leaving relaxed weights invariant."""
import math
import zlib

import numpy as np
import pytest
import torch
from e3nn import o3

from relaxed_e3nn.groups import point_group
from relaxed_e3nn.symmetry import find_residual_symmetry, residual_group, symmetry_errors
from relaxed_e3nn.groups import D_from_matrix, proper_D_blocks, rotation_about
from relaxed_e3nn.symmetry._blocks import axis_components, blocks_of, transform_blocks

# 2 copies of every irrep 0e .. 6o
IRREPS = o3.Irreps("+".join(f"2x{l}{p}" for l in range(7) for p in ("e", "o")))
TOL = 1e-3

FINITE = (
    ["C1", "Ci", "Cs"]
    + [f"C{n}" for n in range(2, 7)]
    + [f"C{n}v" for n in range(2, 7)]
    + [f"C{n}h" for n in range(2, 7)]
    + ["S4", "S6", "S8", "S10", "S12"]
    + [f"D{n}" for n in range(2, 7)]
    + [f"D{n}h" for n in range(2, 7)]
    + [f"D{n}d" for n in range(2, 7)]
    + ["T", "Td", "Th", "O", "Oh", "I", "Ih"]
)
CONTINUOUS = ["Cinf", "Cinfv", "Cinfh", "Dinf", "Dinfh", "SO3", "O3"]


def same_elements(a, b, tol):
    """Two finite groups have the same element sets (entrywise within ``tol``)."""
    ea, eb = a.elements.numpy(), b.elements.numpy()
    if len(ea) != len(eb):
        return False
    d = np.abs(ea[:, None] - eb[None]).reshape(len(ea), len(eb), 9).max(-1)
    return bool((d.min(1) <= tol).all() and (d.min(0) <= tol).all())


def reynolds(group, irreps):
    """Independent Reynolds operator: mean of e3nn's D(h) over the group's elements (float64)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        return irreps.D_from_matrix(group.elements).mean(0)
    finally:
        torch.set_default_dtype(old)


def non_scalar_mask(irreps):
    return torch.cat([torch.full((mul * ir.dim,), ir != o3.Irrep("0e")) for mul, ir in irreps])


def invariant_theta(group, generator, irreps=IRREPS):
    P = group.invariant_projector(irreps, dtype=torch.float64)
    return P @ torch.randn(irreps.dim, generator=generator, dtype=torch.float64)


def add_noise(theta, relative, generator, irreps=IRREPS):
    mask = non_scalar_mask(irreps)
    noise = torch.randn(irreps.dim, generator=generator, dtype=torch.float64) * mask
    scale = theta[mask].norm()
    return theta + noise / noise.norm() * relative * scale


@pytest.fixture
def float64_default():
    """e3nn builds its Wigner generators in the default dtype: compare in float64."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def test_search_kernel_matches_e3nn(float64_default):
    """The search applies D(g) with groups' proper_D_blocks: e3nn's D^l for l <= 8, parity included."""
    R = o3.rand_matrix(20, dtype=torch.float64)
    blocks = proper_D_blocks(R, 8)
    for l in range(9):
        ref = o3.Irrep(l, 1).D_from_matrix(R).numpy()
        assert np.abs(blocks[l].numpy() - ref).max() < 1e-12
    g = R * torch.tensor([1.0, -1.0] * 10, dtype=torch.float64)[:, None, None]
    theta = torch.randn(IRREPS.dim, dtype=torch.float64)
    ref = torch.einsum("nij,j->ni", IRREPS.D_from_matrix(g), theta).numpy()
    moved = transform_blocks(blocks_of(IRREPS, theta.numpy()), g.numpy())
    # reassemble the merged blocks in IRREPS order (IRREPS is already sorted and merged)
    flat = np.concatenate([m.reshape(len(g), -1) for m in moved], 1)
    order = sorted(range(len(IRREPS)), key=lambda i: (IRREPS[i].ir.l, IRREPS[i].ir.p))
    ref_blocks = [ref[:, IRREPS.slices()[i]] for i in order]
    assert np.abs(flat - np.concatenate(ref_blocks, 1)).max() < 1e-12


def _axis_frame(n):
    """e3nn's Q = R_y(alpha) R_x(beta) with Q e_y = n (the frame axis_components uses)."""
    alpha = torch.tensor(math.atan2(n[0], n[2]), dtype=torch.float64)
    beta = torch.tensor(math.atan2(math.hypot(n[0], n[2]), n[1]), dtype=torch.float64)
    return o3.angles_to_matrix(alpha, beta, torch.zeros((), dtype=torch.float64))


def test_search_kernel_precise_near_the_polar_axis():
    """Elements and axes at or near y (where arccos-based Euler angles lose digits) agree with D_from_matrix."""
    axis = np.array([1e-9, 1.0, 2e-9])
    R = np.stack([rotation_about(axis / np.linalg.norm(axis), a) for a in (0.3, 1e-9, np.pi)])
    R = np.concatenate([R, rotation_about(np.array([1.0, 0.0, 0.0]), 1e-9)[None]])
    for l in (1, 4, 6):
        ref = D_from_matrix(o3.Irreps(f"{l}e"), torch.as_tensor(R)).numpy()
        assert np.abs(proper_D_blocks(torch.as_tensor(R), l)[l].numpy() - ref).max() < 1e-12
    # the Euler-angle path: components about axes near +-y and generic ones
    theta = torch.randn(IRREPS.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    blocks = blocks_of(IRREPS, theta.numpy())
    axes = np.array([[1e-9, 1.0, 2e-9], [0.0, -1.0, 0.0], [3e-10, -1.0, 0.0], [0.3, -0.5, 0.8], [1.0, 0.0, 0.0]])
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    comps = axis_components(blocks, axes)
    for k, n in enumerate(axes):
        Q = _axis_frame(n)
        assert (Q[:, 1] - torch.as_tensor(n)).abs().max() < 1e-15
        for b, u in zip(blocks, comps):
            D = D_from_matrix(o3.Irreps(f"{b.l}{'e' if b.p == 1 else 'o'}"), Q).numpy()
            assert np.abs(u[k] - b.values @ D).max() < 1e-12
    # negative control: a frame about another axis gives other components
    D = D_from_matrix(o3.Irreps("3o"), _axis_frame(axes[3])).numpy()
    b3 = next(b for b in blocks if (b.l, b.p) == (3, -1))
    assert np.abs(comps[blocks.index(b3)][4] - b3.values @ D).max() > 1e-2


@pytest.mark.slow
@pytest.mark.parametrize("name", FINITE)
def test_finite_groups_recovered_exactly(name):
    from relaxed_e3nn.groups import D_from_matrix

    gen = torch.Generator().manual_seed(zlib.crc32(name.encode()))
    frame = o3.rand_matrix(dtype=torch.float64)
    standard = point_group(name)
    H = point_group(name, frame=frame)
    # the catalogue's projector agrees with an independent average over the elements
    assert torch.allclose(standard.invariant_projector(IRREPS, dtype=torch.float64), reynolds(standard, IRREPS), atol=1e-12)
    # an invariant of the standard-frame group, rotated into the frame R
    theta = D_from_matrix(IRREPS, frame) @ invariant_theta(standard, gen)
    # noise well below the tolerance does not change the answer
    noisy = add_noise(theta, 0.1 * TOL, gen)
    for t, elem_tol in ((theta, 1e-8), (noisy, 1e-3)):
        found = residual_group(t, IRREPS, tol=TOL)
        assert found.schoenflies == H.schoenflies
        assert same_elements(found, H, elem_tol), (name, found)
        assert (symmetry_errors(t, IRREPS, found) <= TOL).all()


@pytest.mark.parametrize("name", ["C4v", "D3d", "Oh"])
def test_noise_above_tolerance_breaks_everything(name):
    gen = torch.Generator().manual_seed(3)
    H = point_group(name, frame=o3.rand_matrix(dtype=torch.float64))
    theta = add_noise(invariant_theta(H, gen), 10 * TOL, gen)
    assert residual_group(theta, IRREPS, tol=TOL).schoenflies == "C1"
    # a looser tolerance accepts that noise again
    assert same_elements(residual_group(theta, IRREPS, tol=50 * TOL), H, 0.05)


def test_breaking_above_tolerance_gives_the_subgroup():
    """A C2v-invariant but C4v-breaking part of 10 tol lowers C4v to C2v (same frame)."""
    gen = torch.Generator().manual_seed(4)
    frame = o3.rand_matrix(dtype=torch.float64)
    c4v, c2v = point_group("C4v", frame=frame), point_group("C2v", frame=frame)
    theta = invariant_theta(c4v, gen)
    extra = invariant_theta(c2v, gen) - c4v.invariant_projector(IRREPS, dtype=torch.float64) @ invariant_theta(c2v, gen)
    mask = non_scalar_mask(IRREPS)
    theta_small = theta + extra / extra.norm() * 0.1 * TOL * theta[mask].norm()
    theta_big = theta + extra / extra.norm() * 10 * TOL * theta[mask].norm()
    assert same_elements(residual_group(theta_small, IRREPS, tol=TOL), c4v, 1e-3)
    assert same_elements(residual_group(theta_big, IRREPS, tol=TOL), c2v, 1e-3)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_continuous_groups_from_projector(name):
    gen = torch.Generator().manual_seed(5)
    H = point_group(name, frame=o3.rand_matrix(dtype=torch.float64))
    theta = invariant_theta(H, gen)
    found = residual_group(theta, IRREPS, tol=TOL)
    assert found.schoenflies == name
    assert found == H


def test_continuous_groups_from_simple_weights():
    z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    y2z = o3.spherical_harmonics(2, z, normalize=True)
    cases = [
        ("0e+1o", torch.cat([torch.ones(1, dtype=torch.float64), z]), "Cinfv"),
        ("0e+1e", torch.cat([torch.ones(1, dtype=torch.float64), z]), "Cinfh"),
        ("0e+2e", torch.cat([torch.ones(1, dtype=torch.float64), y2z]), "Dinfh"),
        ("0e+0o", torch.tensor([1.0, 0.3], dtype=torch.float64), "SO3"),
        ("2x0e+1o", torch.tensor([1.0, -2.0, 0.0, 0.0, 0.0], dtype=torch.float64), "O3"),
    ]
    for irreps, theta, name in cases:
        found = residual_group(theta, irreps)
        assert found.schoenflies == name, (irreps, found)
        if not found.schoenflies.endswith("3"):
            assert abs(abs(float(found.frame[:, 2] @ z)) - 1) < 1e-12


def test_generic_theta_is_c1(dtype):
    theta = torch.randn(IRREPS.dim)
    assert residual_group(theta, IRREPS).schoenflies == "C1"


def cubic_harmonic_theta(dtype):
    """theta in 4e with theta . Y4(r) = x^4 + y^4 + z^4 - 3/5 (least squares, no group code)."""
    r = torch.randn(200, 3, dtype=torch.float64)
    r = r / r.norm(dim=1, keepdim=True)
    f = (r**4).sum(1) - 0.6
    Y = o3.spherical_harmonics(4, r, normalize=True)
    theta = torch.linalg.lstsq(Y, f[:, None]).solution[:, 0]
    assert (Y @ theta - f).abs().max() < 1e-12  # it really is a pure l=4 function
    return theta.to(dtype)


def test_cubic_harmonic_is_oh(dtype):
    theta = cubic_harmonic_theta(dtype)
    found = residual_group(theta, "4e")
    assert same_elements(found, point_group("Oh"), 1e-5)
    # the resolution statement: l = 4 resolves axis orders up to 4
    assert find_residual_symmetry(theta, "4e").resolution == 4


def test_frame_independence(dtype):
    gen = torch.Generator().manual_seed(6)
    H = point_group("D3h", frame=o3.rand_matrix(dtype=torch.float64))
    theta = invariant_theta(H, gen)
    base = residual_group(theta.to(dtype), IRREPS)
    for _ in range(3):
        R = o3.rand_matrix(dtype=torch.float64)
        if _ % 2:
            R = -R  # improper change of frame
        moved = (IRREPS.D_from_matrix(R) @ theta).to(dtype)
        found = residual_group(moved, IRREPS)
        expected = R @ base.elements @ R.T
        d = (found.elements[:, None] - expected[None]).abs().flatten(2).max(-1).values
        assert found.order == base.order and (d.min(1).values < 1e-4).all()


def test_within_intersections():
    v111 = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    res = find_residual_symmetry(v111, "1o", within="Oh")
    assert res.unrestricted.schoenflies == "Cinfv"
    assert res.group.schoenflies == "C3v"
    assert abs(abs(float(res.group.frame[:, 2] @ v111)) / math.sqrt(3) - 1) < 1e-12
    assert res.chain() == "Oh -> C3v"
    # a continuous parent: the cubic harmonic inside Cinfv about z is C4v
    theta = cubic_harmonic_theta(torch.float64)
    assert same_elements(residual_group(theta, "4e", within="Cinfv"), point_group("C4v"), 1e-8)
    # a parent that theta breaks completely
    assert residual_group(torch.randn(IRREPS.dim, dtype=torch.float64), IRREPS, within="Oh").schoenflies == "C1"


def test_within_a_finite_parent_near_the_bound_is_still_a_group():
    """A vector ⟂ z within C4 at a bound between |C4 v − v| = √2 and |C2 v − v| = 2: C4 and C4³ pass
    but their product C2 does not, so the kept elements are no group; the answer is the largest
    group within the bound (C1), not an error."""
    theta = torch.tensor([5.58, 1.0, 0.0, 0.0], dtype=torch.float64)  # 0e + 1o (y, z, x): along y
    bound = 0.3 * float(theta.norm())
    assert math.sqrt(2) < bound < 2
    assert residual_group(theta, "1x0e+1x1o", tol=0.3, within="C4") == point_group("C1")
    assert residual_group(theta, "1x0e+1x1o", tol=0.37, within="C4") == point_group("C4")  # bound > 2


def test_model_and_list_inputs_intersect_layers():
    from relaxed_e3nn.nn import RelaxedWeights

    model = torch.nn.ModuleDict({"a": RelaxedWeights("0e+1o"), "b": RelaxedWeights("0e+2e")})
    with torch.no_grad():
        model["a"].theta[1:] = torch.tensor([0.0, 0.0, 1.0])  # Cinfv about z
        model["b"].theta[1:] = o3.spherical_harmonics(2, torch.tensor([1.0, 0.0, 0.0]), normalize=True)  # Dinfh about x
    found = residual_group(model)
    # Cinfv(z) and Dinfh(x): mirrors xz and yz, C2 about z -> C2v about z
    assert found.schoenflies == "C2v"
    assert abs(abs(float(found.frame[:, 2, ] @ torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))) - 1) < 1e-9
    pairs = [(ir, p.detach()) for _, ir, p in __import__("relaxed_e3nn.nn", fromlist=["x"]).relaxed_parameters(model)]
    assert residual_group(pairs) == found


def test_bad_input_raises():
    with pytest.raises(ValueError, match="irreps"):
        residual_group(torch.zeros(4))
    with pytest.raises(ValueError, match="dimension"):
        residual_group(torch.zeros(5), "0e+1o")
    with pytest.raises(ValueError, match="NaN"):
        residual_group(torch.tensor([1.0, float("nan"), 0, 0]), "0e+1o")
    with pytest.raises(ValueError, match="tol"):
        residual_group(torch.zeros(4), "0e+1o", tol=0.0)
    with pytest.raises(TypeError, match="theta"):
        residual_group("0e+1o")
    with pytest.raises(ValueError, match="unknown point group"):
        residual_group(torch.zeros(4), "0e+1o", within="Q7")
    with pytest.raises(ValueError, match="RelaxedWeights"):
        residual_group(torch.nn.Linear(2, 2))


def test_axis_orders_beyond_lmax_are_continuous():
    """C5v-invariant weights with l <= 4 have only m = 0 parts: reported as Cinfv (documented)."""
    gen = torch.Generator().manual_seed(8)
    frame = o3.rand_matrix(dtype=torch.float64)
    c5v = point_group("C5v", frame=frame)
    low = o3.Irreps("2x0e+2x1o+2x2e+2x3o+2x4e")
    res = find_residual_symmetry(invariant_theta(c5v, gen, low), low)
    assert res.group.schoenflies == "Cinfv" and res.resolution == 4
    assert res.group.is_subgroup_of(point_group("Cinfv", frame=frame))
    high = o3.Irreps("2x0e+2x1o+2x2e+2x3o+2x4e+2x5o")
    assert same_elements(residual_group(invariant_theta(c5v, gen, high), high), c5v, 1e-8)


def test_details_and_absolute_tolerance():
    theta = torch.tensor([1.0, 0.0, 0.0, 0.3, 0.5, 0.0, 0.0], dtype=torch.float64)  # 0e + 1o(z) + 1e(x)
    res = find_residual_symmetry(theta, "0e+1o+1e")
    assert res.group.schoenflies == "Cs"  # mirror with normal x: keeps the polar z and the axial x
    assert res.scale == pytest.approx(math.sqrt(0.34), rel=1e-12)
    assert res.max_error <= res.tol
    assert [a["symbol"] for a in res.axes] == ["σ"]
    assert abs(abs(res.axes[0]["axis"][0]) - 1) < 1e-9
    # a polar part below the relative tolerance is ignored: the axial x alone is Cinfh about x
    tiny = theta.clone()
    tiny[3] = 1e-9
    assert residual_group(tiny, "0e+1o+1e").schoenflies == "Cinfh"
    # an absolute slack larger than the whole non-scalar part: nothing breaks
    assert residual_group(theta, "0e+1o+1e", atol=2.0).schoenflies == "O3"
    errs = symmetry_errors(theta, "0e+1o+1e", point_group("C2v"))
    assert errs.shape == (4,) and errs.min() < 1e-12 and errs.max() > 1.0
    # scalars only, inside a parent: the parent itself
    assert residual_group(torch.tensor([2.0, 0.0, 0.0, 0.0]), "0e+1o", within="D4h").schoenflies == "D4h"


def test_small_block_carrying_the_finer_symmetry():
    """A dominant polar vector plus a 1% cubic-like part: C4v, not C4 or Cinfv."""
    gen = torch.Generator().manual_seed(9)
    frame = o3.rand_matrix(dtype=torch.float64)
    c4v = point_group("C4v", frame=frame)
    irreps = o3.Irreps("1o+4e+6e")
    theta = invariant_theta(c4v, gen, irreps)
    theta = theta * torch.cat([torch.full((ir.dim,), 1.0 if ir.l <= 2 else 0.01, dtype=torch.float64) for _, ir in irreps])
    # the small part does break the continuous axis beyond the tolerance
    cinfv = point_group("Cinfv", frame=frame)
    assert symmetry_errors(theta, irreps, cinfv.sample(64)).max() > 3 * TOL
    assert same_elements(residual_group(theta, irreps, tol=TOL), c4v, 1e-8)


def test_within_a_structure():
    from ase.build import molecule

    methane = molecule("CH4")  # Td with its 2-fold axes along x, y, z
    polar_z = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    assert residual_group(polar_z, "1o", within=methane).schoenflies == "C2v"
    with pytest.raises(TypeError, match="within"):
        residual_group(polar_z, "1o", within=3.0)
