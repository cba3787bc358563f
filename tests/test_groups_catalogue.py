"""The point-group catalogue against independent ground truth.

Ground truth here is built without the package: generators written in the tests (scipy rotations,
hand-written mirrors), a naive closure, element classes counted from (det, trace), and pymatgen's
own tables of the 32 crystallographic point groups.
"""
import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from relaxed_e3nn.groups import (
    MAX_AXIS_ORDER,
    PointGroup,
    point_group,
    point_group_from_elements,
    point_group_from_generators,
)
from _geometry import PHI, mirror, rot


def naive_closure(gens):
    """Products of the generators until nothing new appears (keys: entries rounded to 1e-8)."""
    def key(m):
        return tuple(np.round(m, 8).ravel() + 0.0)

    elements = {key(np.eye(3)): np.eye(3)}
    while True:
        new = {}
        for a in list(elements.values()):
            for g in gens:
                p = a @ g
                k = key(p)
                if k not in elements and k not in new:
                    new[k] = p
        if not new:
            return np.stack(list(elements.values()))
        elements.update(new)
        assert len(elements) <= 500


def same_set(a, b, tol=1e-9):
    a, b = np.asarray(a), np.asarray(b)
    if len(a) != len(b):
        return False
    d = np.abs(a[:, None] - b[None]).reshape(len(a), len(b), -1).max(-1)
    return bool((d.min(0) < tol).all() and (d.min(1) < tol).all())


def class_counts(elements):
    """Multiset of (det, trace) — conjugacy-invariant labels, basis-independent."""
    out = {}
    for m in np.asarray(elements, float):
        k = (int(round(np.linalg.det(m))), round(float(np.trace(m)), 6) + 0.0)
        out[k] = out.get(k, 0) + 1
    return out


Z, X = (0, 0, 1), (1, 0, 0)
SIGMA_H = mirror(Z)
SIGMA_V = mirror((0, 1, 0))  # contains z and x
C2X = rot(X, math.pi)


def cn(n):
    return rot(Z, 2 * math.pi / n)


def sn(n):
    return SIGMA_H @ rot(Z, 2 * math.pi / n)


def reference_generators(name):
    """Generators of the documented standard frames, written out independently of the package."""
    c3 = rot((1, 1, 1), 2 * math.pi / 3)
    t = [rot(Z, math.pi), C2X, c3]
    o = [cn(4), rot(X, math.pi / 2), c3]
    ico = t + [rot((0, 1, PHI), 2 * math.pi / 5)]
    fixed = {
        "C1": [np.eye(3)], "Ci": [-np.eye(3)], "Cs": [SIGMA_H],
        "T": t, "Td": t + [mirror((1, -1, 0))], "Th": t + [-np.eye(3)],
        "O": o, "Oh": o + [-np.eye(3)], "I": ico, "Ih": ico + [-np.eye(3)],
    }
    if name in fixed:
        return fixed[name]
    n = int("".join(c for c in name if c.isdigit()))
    if name.startswith("S"):
        return [sn(n)]
    suffix = name[-1] if name[-1] in "vhd" else ""
    if name.startswith("C"):
        return {"": [cn(n)], "v": [cn(n), SIGMA_V], "h": [cn(n), SIGMA_H]}[suffix]
    # D_nd: σd bisects the C2' axes at angles kπ/n: its plane makes angle π/(2n) with x
    sigma_d = mirror((-math.sin(math.pi / (2 * n)), math.cos(math.pi / (2 * n)), 0))
    return {"": [cn(n), C2X], "h": [cn(n), C2X, SIGMA_H], "d": [cn(n), C2X, sigma_d]}[suffix]


def expected_order(name):
    fixed = {"C1": 1, "Ci": 2, "Cs": 2, "T": 12, "Td": 24, "Th": 24, "O": 24, "Oh": 48, "I": 60, "Ih": 120}
    if name in fixed:
        return fixed[name]
    n = int("".join(c for c in name if c.isdigit()))
    if name.startswith("S"):
        return n
    factor = {"C": 1, "D": 2}[name[0]] * (2 if name[-1] in "vhd" else 1)
    return factor * n


FINITE_NAMES = (
    ["C1", "Ci", "Cs", "T", "Td", "Th", "O", "Oh", "I", "Ih"]
    + [f"C{n}{s}" for n in range(2, MAX_AXIS_ORDER + 1) for s in ("", "v", "h")]
    + [f"D{n}{s}" for n in range(2, MAX_AXIS_ORDER + 1) for s in ("", "h", "d")]
    + [f"S{2 * n}" for n in range(2, MAX_AXIS_ORDER + 1)]
)


def random_rotation(rng):
    return Rotation.random(random_state=rng).as_matrix()


def test_catalogue_orders_and_sets_match_independent_generators():
    for name in FINITE_NAMES:
        pg = point_group(name)
        truth = naive_closure(reference_generators(name))
        assert pg.schoenflies == name
        assert pg.order == expected_order(name) == len(truth), name
        assert pg.elements.dtype == torch.float64
        assert same_set(pg.elements.numpy(), truth), name
        assert class_counts(pg.elements) == class_counts(truth)


@pytest.mark.parametrize(
    "name, counts",
    [
        # (det, trace): count. proper trace = 1 + 2cosθ; improper -(1 + 2cosθ') of -R
        ("Oh", {(1, 3.0): 1, (1, -1.0): 9, (1, 0.0): 8, (1, 1.0): 6,
                (-1, -3.0): 1, (-1, 1.0): 9, (-1, 0.0): 8, (-1, -1.0): 6}),
        ("Td", {(1, 3.0): 1, (1, -1.0): 3, (1, 0.0): 8, (-1, 1.0): 6, (-1, -1.0): 6}),
        ("Th", {(1, 3.0): 1, (1, -1.0): 3, (1, 0.0): 8, (-1, -3.0): 1, (-1, 1.0): 3, (-1, 0.0): 8}),
        ("I", {(1, 3.0): 1, (1, -1.0): 15, (1, 0.0): 20, (1, round(PHI, 6)): 12, (1, round(1 - PHI, 6)): 12}),
        ("D4h", {(1, 3.0): 1, (1, -1.0): 5, (1, 1.0): 2, (-1, -3.0): 1, (-1, 1.0): 5, (-1, -1.0): 2}),
        ("C3v", {(1, 3.0): 1, (1, 0.0): 2, (-1, 1.0): 3}),
        ("S4", {(1, 3.0): 1, (1, -1.0): 1, (-1, -1.0): 2}),
        ("D3d", {(1, 3.0): 1, (1, 0.0): 2, (1, -1.0): 3, (-1, -3.0): 1, (-1, 0.0): 2, (-1, 1.0): 3}),
    ],
)
def test_element_classes_hand_counted(name, counts):
    got = class_counts(point_group(name).elements)
    assert got == {(d, round(t, 6) + 0.0): c for (d, t), c in counts.items()}


def test_frame_conventions():
    """Spot checks of the documented standard frames."""
    assert point_group("C4v").contains(SIGMA_V) and point_group("C4v").contains(mirror(X))
    assert point_group("D3").contains(C2X) and not point_group("D3").contains(rot((0, 1, 0), math.pi))
    assert point_group("D3h").contains(SIGMA_H) and point_group("Cs").contains(SIGMA_H)
    d2d = point_group("D2d")
    assert d2d.contains(mirror((1, -1, 0))) and not d2d.contains(mirror(X))
    assert point_group("O").contains(cn(4)) and point_group("T").contains(rot((1, 1, 1), 2 * math.pi / 3))
    assert point_group("I").contains(rot((0, 1, PHI), 2 * math.pi / 5))
    assert not point_group("I").contains(rot((0, PHI, 1), 2 * math.pi / 5))
    assert point_group("I").contains(rot(X, math.pi))


def _hexagonal_to_cartesian(ops):
    lat = np.array([[1.0, 0, 0], [-0.5, math.sqrt(3) / 2, 0], [0, 0, 1.0]])  # rows: a, b, c
    return np.stack([lat.T @ w @ np.linalg.inv(lat.T) for w in ops])


def test_32_crystallographic_groups_against_pymatgen():
    from pymatgen.symmetry.groups import SYMM_DATA
    from pymatgen.symmetry.groups import PointGroup as PymatgenPointGroup

    seen = set()
    for symbol, system in SYMM_DATA["point_group_crystal_system_map"].items():
        ops = np.stack([op.rotation_matrix for op in PymatgenPointGroup(symbol).symmetry_ops])
        if system in ("trigonal", "hexagonal"):
            ops = _hexagonal_to_cartesian(ops)
        pg = point_group_from_elements(ops)
        assert pg.hermann_mauguin == symbol, (symbol, pg.schoenflies)
        assert pg.order == len(ops)
        assert same_set(pg.elements.numpy(), ops, 1e-9)
        assert class_counts(point_group(pg.schoenflies).elements) == class_counts(ops)
        seen.add(pg.schoenflies)
    assert len(seen) == 32


def test_every_name_round_trips_in_a_random_frame():
    rng = np.random.default_rng(1)
    for name in FINITE_NAMES:
        frame = random_rotation(rng)
        truth = frame @ naive_closure(reference_generators(name)) @ frame.T
        truth = truth[rng.permutation(len(truth))]
        pg = point_group_from_elements(truth)
        assert pg.schoenflies == name
        assert same_set(pg.elements.numpy(), truth, 1e-9)
        assert point_group(pg.schoenflies, pg.frame) == pg
        assert point_group(name, frame) == pg
        # from a few generators only, given as a float32 tensor (noise ~1e-7)
        gens = torch.tensor(frame @ np.stack(reference_generators(name)) @ frame.T, dtype=torch.float32)
        pg2 = point_group_from_generators(gens, tol=1e-5)
        assert pg2.schoenflies == name and pg2 == pg


def test_group_in_wrong_frame_is_not_equal():
    rng = np.random.default_rng(2)
    frame = random_rotation(rng)
    assert point_group("D4h", frame) != point_group("D4h")
    assert point_group("D4h", frame) == point_group("D4h", frame @ cn(4))  # normaliser: same set
    assert point_group("Oh") == point_group("Oh", rot((1, 1, 1), 2 * math.pi / 3))
    assert point_group("C4v") != point_group("C4h")


def test_improper_frame_and_tensor_frame():
    rng = np.random.default_rng(3)
    frame = random_rotation(rng)
    improper = -frame
    a = point_group("C3v", improper)
    assert a == point_group("C3v", frame)
    assert torch.det(a.frame) > 0
    b = point_group("C3v", torch.tensor(frame, dtype=torch.float32))
    assert b == a


def test_aliases_and_spellings():
    assert point_group("C1h") == point_group("Cs") == point_group("S1")
    assert point_group("S2") == point_group("Ci")
    assert point_group("C1v").schoenflies == "Cs" and point_group("C1v").contains(SIGMA_V)
    d1 = point_group("D1")
    assert d1.schoenflies == "C2" and d1.contains(C2X) and d1.order == 2
    d1h = point_group("D1h")
    assert d1h.schoenflies == "C2v" and d1h.contains(C2X) and d1h.contains(SIGMA_H)
    d1d = point_group("D1d")
    assert d1d.schoenflies == "C2h" and d1d.contains(C2X) and d1d.contains(-np.eye(3))
    for spelling in ("Cinfv", "C∞v", "cinfv", "C_inf_v", "C_∞v"):
        assert point_group(spelling).schoenflies == "Cinfv"
    assert point_group("D∞h").schoenflies == "Dinfh"
    assert point_group("SO(3)").schoenflies == "SO3" and point_group("o3").schoenflies == "O3"
    assert point_group("c4V").schoenflies == "C4v" and point_group(" oh ").schoenflies == "Oh"


@pytest.mark.parametrize(
    "name, hm",
    [("C4v", "4mm"), ("D3h", "-6m2"), ("Oh", "m-3m"), ("D3d", "-3m"), ("S6", "-3"), ("S8", "-8"),
     ("C5h", "-10"), ("D5d", "-5m"), ("D4d", "-82m"), ("Ih", "-5-3m"), ("Cinfv", "infm"),
     ("Dinfh", "inf/mm"), ("O3", "infinfm"), ("C2h", "2/m"), ("C5v", "5m")],
)
def test_hermann_mauguin(name, hm):
    assert point_group(name).hermann_mauguin == hm


@pytest.mark.parametrize(
    "bad, match",
    [("C9", "out of range"), ("D0h", "out of range"), ("C0", "out of range"), ("S18", "out of range"),
     ("S3", "C3h"), ("X4", "valid names"), ("Cinfd", "valid names"), ("", "valid names"),
     ("D4x", "valid names"), ("Oh2", "valid names")],
)
def test_bad_names(bad, match):
    with pytest.raises(ValueError, match=match):
        point_group(bad)


def test_bad_name_type_and_frames():
    with pytest.raises(TypeError, match="name must be a str"):
        point_group(4)
    with pytest.raises(ValueError, match="frame"):
        point_group("C4", np.diag([1.0, 1.0, 1.01]))
    with pytest.raises(ValueError, match="frame"):
        point_group("C4", np.eye(2))
    with pytest.raises(ValueError, match="frame"):
        point_group("C4", np.full((3, 3), np.nan))
    with pytest.raises(ValueError, match="frame"):
        point_group("C4", np.stack([np.eye(3), np.eye(3)]))
    with pytest.raises(ValueError, match="canonical"):
        PointGroup("c4v")


def test_not_a_group_and_bad_elements():
    with pytest.raises(ValueError, match="closure fails"):
        point_group_from_elements([np.eye(3), cn(4)])
    with pytest.raises(ValueError, match="identity"):
        point_group_from_elements([cn(2)])
    with pytest.raises(ValueError, match="orthogonal"):
        point_group_from_elements([np.eye(3), np.diag([1.0, 1.0, 2.0])])
    with pytest.raises(ValueError, match=r"shape \[N, 3, 3\]"):
        point_group_from_elements(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="empty"):
        point_group_from_elements([])
    with pytest.raises(ValueError, match="max_order"):
        point_group_from_generators(rot(Z, 1.0))  # irrational angle: infinite group
    with pytest.raises(ValueError, match="axis"):
        point_group_from_generators(cn(12))
    with pytest.raises(ValueError, match="tol"):
        point_group_from_elements([np.eye(3)], tol=-1.0)


@pytest.mark.parametrize("big", ["Oh", "Ih", "D8h", "D7h", "S16"])
def test_random_subgroups_are_named_consistently(big):
    """Closures of random element pairs of a big group: subgroups, named, round-tripping."""
    rng = np.random.default_rng(4)
    G = point_group(big, random_rotation(rng))
    elements = G.elements
    names = set()
    for _ in range(15):
        gens = elements[rng.integers(len(elements), size=2)]
        h = point_group_from_generators(gens)
        truth = naive_closure([g.numpy() for g in gens])
        assert h.order == len(truth) and same_set(h.elements.numpy(), truth, 1e-9)
        assert h.is_subgroup_of(G)
        assert point_group(h.schoenflies, h.frame) == h
        names.add(h.schoenflies)
    assert len(names) >= 2
