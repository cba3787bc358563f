"""Membership, subgroups, intersections, sampling and element descriptions."""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from relaxed_e3nn.groups import CONTINUOUS_GROUPS, describe_element, point_group
from _geometry import mirror, rot


def frame_with_z(z, x):
    z = np.asarray(z, float) / np.linalg.norm(z)
    x = np.asarray(x, float) - np.dot(x, z) * z
    x /= np.linalg.norm(x)
    return np.stack([x, np.cross(z, x), z], axis=1)


Z = np.array([0.0, 0, 1])


@pytest.mark.parametrize(
    "small, big, expected",
    [
        ("C4v", "Oh", True), ("D2h", "D4h", True), ("Td", "Th", False), ("Th", "Td", False),
        ("T", "Td", True), ("T", "Th", True), ("D3d", "Oh", False), ("C4h", "D4h", True),
        ("S4", "D2d", True), ("S4", "C4v", False), ("D4h", "Dinfh", True), ("C6v", "Cinfv", True),
        ("C4h", "Cinfv", False), ("C4h", "Cinfh", True), ("D3", "Dinf", True), ("D3h", "Dinf", False),
        ("Cinf", "SO3", True), ("Cinfh", "SO3", False), ("Dinf", "SO3", True), ("Cinfv", "Dinfh", True),
        ("Cinfv", "Cinfh", False), ("SO3", "O3", True), ("O3", "SO3", False), ("SO3", "Oh", False),
        ("Ih", "O3", True), ("I", "SO3", True), ("Ih", "SO3", False), ("Cinf", "Cinf", True),
    ],
)
def test_subgroups_in_standard_frames(small, big, expected):
    assert point_group(small).is_subgroup_of(point_group(big)) is expected


def test_subgroups_need_the_right_frame():
    oh = point_group("Oh")
    diag = np.array([1.0, 1, 1])
    # σv must contain the 3-fold axis and a (1,1,-2)-type direction to be an Oh mirror
    assert point_group("C3v", frame_with_z(diag, (-1, -1, 2))).is_subgroup_of(oh)
    assert not point_group("C3v", frame_with_z(diag, (1, -1, 0))).is_subgroup_of(oh)
    assert point_group("D3d", frame_with_z(diag, (1, -1, 0))).is_subgroup_of(oh)
    assert not point_group("C4v", frame_with_z(diag, (1, -1, 0))).is_subgroup_of(oh)
    # axial continuous groups: same axis required
    assert not point_group("Cinf", frame_with_z((1, 0, 0), Z)).is_subgroup_of(point_group("Cinfv"))
    assert point_group("Cinf", frame_with_z((0, 0, -1), (1, 0, 0))).is_subgroup_of(point_group("Cinfv"))
    c_inf_diag = point_group("Cinf", frame_with_z(diag, (1, 0, 0)))
    assert point_group("C3", frame_with_z(diag, (1, -1, 0))).is_subgroup_of(c_inf_diag)


def test_continuous_membership_is_exact():
    rng = np.random.default_rng(0)
    n = frame_with_z((1.0, 2.0, 2.0), (1, 0, 0))
    axis = n[:, 2]
    groups = {name: point_group(name, n) for name in CONTINUOUS_GROUPS}
    angle = rng.uniform(0.1, 3.0)
    perp = n[:, 0]
    members = {
        "rotation about n": (rot(axis, angle), {"Cinf", "Cinfv", "Cinfh", "Dinf", "Dinfh", "SO3", "O3"}),
        "mirror containing n": (mirror(perp), {"Cinfv", "Dinfh", "O3"}),
        "C2 perpendicular": (rot(perp, math.pi), {"Dinf", "Dinfh", "SO3", "O3"}),
        "σh": (mirror(axis), {"Cinfh", "Dinfh", "O3"}),
        "inversion": (-np.eye(3), {"Cinfh", "Dinfh", "O3"}),
        "S(φ)": (mirror(axis) @ rot(axis, angle), {"Cinfh", "Dinfh", "O3"}),
        "generic rotation": (Rotation.random(random_state=rng).as_matrix(), {"SO3", "O3"}),
        "generic mirror": (mirror(rng.normal(size=3)), {"O3"}),
    }
    for label, (R, inside) in members.items():
        for name, group in groups.items():
            assert group.contains(R) is (name in inside), (label, name)
    # a batch returns a bool tensor
    batch = np.stack([m for m, _ in members.values()])
    got = groups["Dinfh"].contains(batch)
    assert got.dtype == torch.bool and got.tolist() == [True] * 6 + [False] * 2
    # slightly off: rotation about a tilted axis is rejected
    assert not groups["Cinf"].contains(rot(axis + np.array([1e-3, 0, 0]), 1.0))
    assert not groups["O3"].contains(np.diag([1.0, 1.0, 1.1]))  # not orthogonal


def test_finite_contains_tolerance_and_batch():
    c4 = point_group("C4")
    assert c4.contains(rot(Z, math.pi / 2) + 1e-8)
    assert not c4.contains(rot(Z, math.pi / 2 + 1e-3))
    assert c4.contains(torch.tensor(rot(Z, math.pi), dtype=torch.float32))
    assert c4.contains(np.stack([np.eye(3), mirror(Z)])).tolist() == [True, False]
    with pytest.raises(ValueError, match="shape"):
        c4.contains(np.eye(4))


def test_equality_and_repr():
    assert point_group("Cinfv") == point_group("Cinfv", frame_with_z((0, 0, -1), (0, 1, 0)))
    assert point_group("Cinfv") != point_group("Cinfv", frame_with_z((0, 1, 0), (1, 0, 0)))
    assert point_group("Cinfv") != point_group("Cinfh")
    assert point_group("C4") != point_group("Cinf")
    text = repr(point_group("D4h"))
    assert "D4h" in text and "order=16" in text and "principal_axis" in text
    assert "inf" in repr(point_group("Dinfh"))
    axes = point_group("C3v", frame_with_z((1, 1, 1), (1, -1, 0))).axes()
    assert torch.allclose(axes["principal"], torch.tensor([1.0, 1, 1], dtype=torch.float64) / math.sqrt(3))
    assert torch.allclose(axes["secondary"], torch.tensor([1.0, -1, 0], dtype=torch.float64) / math.sqrt(2))
    assert "secondary" not in point_group("C4").axes() and "principal" not in point_group("O3").axes()
    with pytest.raises(TypeError):
        {point_group("C2")}  # unhashable: equality has a tolerance


def test_continuous_groups_have_no_element_list():
    g = point_group("Cinfv")
    assert not g.is_finite and g.order == math.inf
    with pytest.raises(ValueError, match="continuous"):
        g.elements
    with pytest.raises(ValueError, match="n is required"):
        g.sample()


def test_intersections():
    oh = point_group("Oh")
    assert oh.intersection(point_group("Oh", rot(Z, math.pi / 4))) == point_group("D4h")
    assert point_group("Cinfv").intersection(oh) == point_group("C4v")
    assert oh.intersection(point_group("Cinfv", frame_with_z((1, 1, 1), (1, -1, 0)))).schoenflies == "C3v"
    assert point_group("Cinfv").intersection(point_group("Cinfh")) == point_group("Cinf")
    assert point_group("Dinfh").intersection(point_group("SO3")) == point_group("Dinf")
    assert point_group("O3").intersection(oh) == oh
    assert point_group("SO3").intersection(point_group("O3")) == point_group("SO3")
    flipped = point_group("Cinfh", frame_with_z((0, 0, -1), (1, 0, 0)))
    assert point_group("Cinfh").intersection(flipped) == point_group("Cinfh")
    # different axes: only the elements that preserve both lines
    x_axis = frame_with_z((1, 0, 0), (0, 1, 0))
    assert point_group("Cinfv").intersection(point_group("Dinfh", x_axis)) == point_group("C2v")
    assert point_group("Dinfh").intersection(point_group("Dinfh", x_axis)) == point_group("D2h")
    tilted = frame_with_z((1, 0, 1), (0, 1, 0))
    both = point_group("Dinfh").intersection(point_group("Dinfh", tilted))
    assert both.schoenflies == "C2h" and both.contains(rot((0, 1, 0), math.pi))
    assert point_group("Cinf").intersection(point_group("Cinf", tilted)) == point_group("C1")
    with pytest.raises(TypeError):
        oh.intersection("Oh")


@pytest.mark.parametrize("name", ["D3h", "Cinf", "Cinfv", "Cinfh", "Dinf", "Dinfh", "SO3", "O3"])
def test_samples_are_members(name):
    frame = frame_with_z((2.0, -1.0, 0.5), (0, 0, 1))
    g = point_group(name, frame)
    gen = torch.Generator().manual_seed(0)
    s = g.sample(200, generator=gen)
    assert s.shape == (200, 3, 3) and s.dtype == torch.float64
    assert g.contains(s, tol=1e-10).all()
    again = g.sample(200, generator=torch.Generator().manual_seed(0))
    assert torch.equal(s, again)
    # every connected component (det, R n = ±n) is reached
    axis = torch.tensor(frame[:, 2])
    components = {(round(float(torch.det(m))), round(float(axis @ m @ axis))) for m in s}
    if name in ("SO3", "O3"):
        components = {d for d, _ in components}
    expected = {"Cinf": 1, "Cinfv": 2, "Cinfh": 2, "Dinf": 2, "Dinfh": 4, "SO3": 1, "O3": 2}
    assert len(components) == expected.get(name, len(components))


def test_haar_sampling_is_uniform_enough():
    s = point_group("SO3").sample(4000, generator=torch.Generator().manual_seed(1))
    assert s.mean(0).abs().max() < 0.05  # E[R] = 0 under Haar
    # the rotation angle of a Haar rotation has density (1 - cos θ)/π: E[trace] = 0
    assert abs(s.diagonal(dim1=1, dim2=2).sum(-1).mean()) < 0.05
    finite = point_group("Oh")
    assert torch.equal(finite.sample(), finite.elements)
    draws = finite.sample(5, generator=torch.Generator().manual_seed(0))
    assert draws.shape == (5, 3, 3) and finite.contains(draws).all()
    with pytest.raises(ValueError, match="non-negative int"):
        finite.sample(-1)


@pytest.mark.parametrize(
    "matrix, kind, symbol, order",
    [
        (np.eye(3), "identity", "E", 1),
        (-np.eye(3), "inversion", "i", 2),
        (mirror((1, 1, 0)), "mirror", "σ", 2),
        (rot((1, 2, 3), math.pi / 2), "rotation", "C4", 4),
        (rot((1, 2, 3), 4 * math.pi / 5), "rotation", "C5^2", 5),
        (mirror(Z) @ rot(Z, math.pi / 3), "improper_rotation", "S6", 6),
        (mirror(Z) @ rot(Z, math.pi / 2), "improper_rotation", "S4", 4),
        (mirror(Z) @ rot(Z, 2 * math.pi / 3), "improper_rotation", "S3", 6),
        (rot((0, 1, 0), math.pi), "rotation", "C2", 2),
    ],
)
def test_describe_element(matrix, kind, symbol, order):
    e = describe_element(matrix)
    assert (e.kind, e.symbol, e.order) == (kind, symbol, order)
    assert e.proper == (np.linalg.det(matrix) > 0)
    if e.axis is not None:
        # rebuild the matrix from the description
        rebuilt = rot(e.axis, e.angle)
        if not e.proper:
            rebuilt = mirror(e.axis) @ rebuilt
        np.testing.assert_allclose(rebuilt, matrix, atol=1e-12)


def test_describe_element_axis_and_errors():
    e = describe_element(torch.tensor(rot((0, 0, -1), math.pi / 3)))
    np.testing.assert_allclose(e.axis, [0, 0, -1], atol=1e-12)
    assert e.symbol == "C6" and abs(e.angle - math.pi / 3) < 1e-12
    assert describe_element(rot(Z, 1.0)).n is None and describe_element(rot(Z, 1.0)).order is None
    with pytest.raises(ValueError, match="orthogonal"):
        describe_element(np.diag([1.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match="single"):
        describe_element(np.stack([np.eye(3)] * 2))


def test_frame_from_axes_and_rotated():
    from relaxed_e3nn.groups import frame_from_axes

    F = frame_from_axes(torch.tensor([0.0, 2.0, 0.0]), [1.0, 1.0, 0.0])
    assert F.dtype == torch.float64 and abs(torch.det(F).item() - 1) < 1e-12
    assert torch.allclose(F.T @ F, torch.eye(3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(F[:, 2], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    assert torch.allclose(F[:, 0], torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    G = frame_from_axes([1.0, 1.0, 1.0])
    assert abs(G[:, 0] @ G[:, 2]) < 1e-12
    c3v = point_group("C3v", frame_from_axes([1.0, 1.0, 1.0], [-1.0, -1.0, 2.0]))
    assert c3v.is_subgroup_of(point_group("Oh"))
    with pytest.raises(ValueError, match="parallel"):
        frame_from_axes([0, 0, 1.0], [0, 0, -3.0])
    with pytest.raises(ValueError, match="principal"):
        frame_from_axes([0, 0, 0])
    with pytest.raises(ValueError, match="secondary"):
        frame_from_axes([0, 0, 1.0], [1.0, np.nan, 0])
    rng = np.random.default_rng(7)
    R = Rotation.random(random_state=rng).as_matrix()
    assert point_group("D3d").rotated(R) == point_group("D3d", R)
    assert point_group("Cinfh").rotated(R) == point_group("Cinfh", R)
    assert point_group("D3d").rotated(R) != point_group("D3d")


def test_docstring_examples():
    import doctest

    import relaxed_e3nn.groups as groups
    from relaxed_e3nn.groups import _elements, _point_group

    for module in (groups, _elements, _point_group):
        result = doctest.testmod(module, verbose=False)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_rotation_about_matches_scipy_and_broadcasts():
    from relaxed_e3nn.groups import rotation_about

    rng = np.random.default_rng(0)
    axes = rng.normal(size=(5, 3))
    angles = rng.uniform(-math.pi, math.pi, size=5)
    R = rotation_about(axes, angles)
    assert R.shape == (5, 3, 3)
    unit = axes / np.linalg.norm(axes, axis=1, keepdims=True)
    ref = Rotation.from_rotvec(unit * angles[:, None]).as_matrix()
    assert np.abs(R - ref).max() < 1e-14
    # one axis, one angle -> one matrix; the axis is normalised; several angles about one axis
    assert np.abs(rotation_about(3 * Z, math.pi / 2) - rot(Z, math.pi / 2)).max() < 1e-14
    assert rotation_about(Z, angles).shape == (5, 3, 3)
    # negative control: the opposite angle is the inverse, not the same rotation
    assert np.abs(rotation_about(axes[0], -angles[0]) - R[0]).max() > 0.1
    assert np.abs(rotation_about(axes[0], -angles[0]) @ R[0] - np.eye(3)).max() < 1e-14


def test_as_point_group_reads_every_group_argument():
    from ase.build import molecule

    from relaxed_e3nn.groups import as_point_group

    c4v = point_group("C4v")
    assert as_point_group(c4v) is c4v
    assert as_point_group("D3d") == point_group("D3d")
    assert as_point_group(None) is None
    assert as_point_group(None, default="O3") == point_group("O3")
    assert as_point_group(molecule("CH4")).schoenflies == "Td"
    with pytest.raises(TypeError, match="within must be a PointGroup"):
        as_point_group(3, "within")
    with pytest.raises(ValueError, match="unknown point group"):
        as_point_group("Q7")


def test_orthogonality_check_names_the_bad_matrix():
    from relaxed_e3nn.groups import point_group_from_elements

    mats = np.stack([np.eye(3), np.diag([1.0, 1.0, 1.001])])
    with pytest.raises(ValueError, match="mats must be orthogonal.*matrix 1 has error"):
        point_group_from_elements(mats)
