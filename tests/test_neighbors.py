"""The neighbor list equals ase's ``neighbor_list("ijS")`` pair for pair, in every geometry."""
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.neighborlist import neighbor_list as ase_neighbor_list

from relaxed_e3nn.data import neighbor_list


def ase_pairs(positions, cutoff, cell, pbc):
    atoms = Atoms(
        numbers=np.ones(len(positions), dtype=int),
        positions=np.asarray(positions, dtype=np.float64),
        cell=np.zeros((3, 3)) if cell is None else cell,
        pbc=False if pbc is None else pbc,
    )
    i, j, shift = ase_neighbor_list("ijS", atoms, cutoff, self_interaction=False)
    return sorted(zip(i.tolist(), j.tolist(), map(tuple, shift.tolist())))


def our_pairs(positions, cutoff, cell, pbc):
    src, dst, shift = neighbor_list(positions, cutoff, cell=cell, pbc=pbc)
    assert src.dtype == dst.dtype == shift.dtype == np.int64
    return sorted(zip(dst.tolist(), src.tolist(), map(tuple, shift.tolist())))


def random_cell(rng, skew):
    return np.diag(rng.uniform(3.0, 6.0, size=3)) + skew * rng.normal(size=(3, 3))


CASES = {
    "cubic": dict(skew=0.0, pbc=(True, True, True), n=12, cutoff=4.0),
    "triclinic": dict(skew=1.5, pbc=(True, True, True), n=12, cutoff=4.5),
    "slab": dict(skew=1.0, pbc=(True, True, False), n=10, cutoff=4.0),
    "wire": dict(skew=1.0, pbc=(False, False, True), n=10, cutoff=4.0),
    "mixed": dict(skew=1.0, pbc=(True, False, True), n=10, cutoff=4.0),
    "tiny_cell_long_cutoff": dict(skew=0.3, pbc=(True, True, True), n=2, cutoff=7.0, scale=0.4),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("np_dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_matches_ase_pair_for_pair(name, np_dtype):
    case = CASES[name]
    rng = np.random.default_rng(sorted(CASES).index(name))
    for _ in range(3):
        cell = random_cell(rng, case["skew"]) * case.get("scale", 1.0)
        # atoms also outside the cell: shifts must refer to the positions as given
        positions = (rng.uniform(-0.5, 1.5, size=(case["n"], 3)) @ cell).astype(np_dtype)
        ref = ase_pairs(positions, case["cutoff"], cell, case["pbc"])
        got = our_pairs(positions, case["cutoff"], cell, case["pbc"])
        assert len(ref) > 0
        assert got == ref


def test_slab_without_vector_along_vacuum():
    rng = np.random.default_rng(3)
    cell = random_cell(rng, 0.5)
    cell[2] = 0.0  # non-periodic direction with no lattice vector at all
    positions = rng.uniform(0, 1, size=(10, 3)) @ random_cell(rng, 0.5)
    assert our_pairs(positions, 4.0, cell, (True, True, False)) == ase_pairs(positions, 4.0, cell, (True, True, False))


@pytest.mark.parametrize("shape", ["random", "single", "pair", "planar", "linear", "spread"])
def test_molecules(shape):
    rng = np.random.default_rng(5)
    positions = {
        "random": rng.normal(size=(25, 3)) * 2.0,
        "single": np.zeros((1, 3)),
        "pair": np.array([[0.0, 0.0, 0.0], [1.1, 0.0, 0.0]]),
        "planar": np.c_[rng.normal(size=(20, 2)), np.zeros(20)],
        "linear": np.c_[rng.normal(size=20) * 3, np.zeros((20, 2))],
        "spread": rng.normal(size=(30, 3)) * 100.0,
    }[shape]
    cutoff = 2.5
    ref = ase_pairs(positions, cutoff, None, None)
    assert our_pairs(positions, cutoff, None, None) == ref
    # a cell with pbc all False is a molecule too
    assert our_pairs(positions, cutoff, np.eye(3) * 0.5, (False, False, False)) == ref
    if shape in ("random", "pair", "planar", "linear"):
        assert len(ref) > 0


def test_edge_vectors_within_cutoff_and_no_self_pairs():
    rng = np.random.default_rng(7)
    cell = random_cell(rng, 0.5) * 0.5  # cutoff longer than the cell: many images of each atom
    positions = rng.uniform(0, 1, size=(3, 3)) @ cell
    cutoff = 5.0
    src, dst, shift = neighbor_list(positions, cutoff, cell=cell, pbc=True)
    vec = positions[src] - positions[dst] + shift @ cell
    length = np.linalg.norm(vec, axis=1)
    assert np.all(length < cutoff) and np.all(length > 0)
    self_image = (src == dst)
    assert self_image.any()  # an atom neighbors its own images ...
    assert np.all(np.abs(shift[self_image]).sum(axis=1) > 0)  # ... never itself
    # every pair appears in both directions with opposite shift
    forward = set(zip(src.tolist(), dst.tolist(), map(tuple, shift.tolist())))
    backward = set(zip(dst.tolist(), src.tolist(), map(tuple, (-shift).tolist())))
    assert forward == backward


def test_torch_positions_accepted():
    positions = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0]], dtype=torch.float32)
    src, dst, shift = neighbor_list(positions, 1.5)
    assert sorted(zip(src.tolist(), dst.tolist())) == [(0, 1), (1, 0)]


def test_rejects_nan_positions():
    with pytest.raises(ValueError, match="NaN or inf"):
        neighbor_list(np.array([[0.0, 0.0, np.nan]]), 2.0)


@pytest.mark.parametrize("cutoff", [0.0, -1.0, float("inf")])
def test_rejects_bad_cutoff(cutoff):
    with pytest.raises(ValueError, match="cutoff"):
        neighbor_list(np.zeros((2, 3)) + [[0, 0, 0], [1, 0, 0]], cutoff)


def test_rejects_zero_volume_cell():
    cell = np.array([[3.0, 0, 0], [0, 3.0, 0], [3.0, 3.0, 0]])
    with pytest.raises(ValueError, match="zero volume"):
        neighbor_list(np.zeros((1, 3)), 2.0, cell=cell, pbc=True)


def test_rejects_pbc_without_cell_and_bad_shapes():
    with pytest.raises(ValueError, match="needs a cell"):
        neighbor_list(np.zeros((1, 3)), 2.0, pbc=True)
    with pytest.raises(ValueError, match="positions must have shape"):
        neighbor_list(np.zeros((4, 2)), 2.0)


def test_rejects_coincident_atoms():
    with pytest.raises(ValueError, match="coincide"):
        neighbor_list(np.zeros((2, 3)), 2.0)


def test_widely_spread_molecule_matches_brute_force():
    """Atoms 1e6 A apart: a cell-list box would need billions of bins; the k-d tree does not."""
    rng = np.random.default_rng(11)
    positions = np.concatenate([rng.normal(size=(30, 3)), rng.normal(size=(30, 3)) + 1e6, rng.normal(size=(5, 3)) * 1e6])
    cutoff = 1.5
    distance = np.linalg.norm(positions[:, None] - positions[None], axis=-1)
    dst, src = np.nonzero((distance < cutoff) & ~np.eye(len(positions), dtype=bool))
    assert len(dst) > 0
    got_src, got_dst, shift = neighbor_list(positions, cutoff)
    assert sorted(zip(got_dst.tolist(), got_src.tolist())) == sorted(zip(dst.tolist(), src.tolist()))
    assert not shift.any()


def _o3_elements(rng, count):
    """Random orthogonal matrices, every other one improper (a rotation times the inversion)."""
    from scipy.spatial.transform import Rotation

    rotations = Rotation.random(count, random_state=int(rng.integers(2**31 - 1))).as_matrix()
    return [(-1.0) ** k * r for k, r in enumerate(rotations)]


def _sorted_edge_vectors(positions, cell, pbc, cutoff, dtype):
    from relaxed_e3nn.data import from_arrays

    graph = from_arrays(positions, np.ones(len(positions), dtype=np.int64), cutoff, cell=cell, pbc=pbc, dtype=dtype)
    keys = list(zip(graph.edge_dst.tolist(), graph.edge_src.tolist(), map(tuple, graph.edge_shift.tolist())))
    order = sorted(range(len(keys)), key=keys.__getitem__)
    return [keys[i] for i in order], graph.edge_vec()[order]


@pytest.mark.parametrize("name", ["triclinic", "slab", "wire"])
def test_graph_is_o3_equivariant_including_parity(name, dtype):
    """g acting on positions and lattice rows keeps every (dst, src, shift) and rotates edge vectors by g."""
    case = CASES[name]
    rng = np.random.default_rng(7)
    cell = random_cell(rng, case["skew"])
    positions = rng.uniform(0.0, 1.0, size=(case["n"], 3)) @ cell
    keys, vectors = _sorted_edge_vectors(positions, cell, case["pbc"], case["cutoff"], dtype)
    assert len(keys) > 0
    tolerance = 1e-10 if dtype == torch.float64 else 1e-5
    elements = _o3_elements(rng, 4)
    assert any(np.linalg.det(g) < 0 for g in elements)
    for g in elements:
        moved_keys, moved = _sorted_edge_vectors(positions @ g.T, cell @ g.T, case["pbc"], case["cutoff"], dtype)
        assert moved_keys == keys
        expected = vectors @ torch.as_tensor(g.T, dtype=dtype)
        scale = float(vectors.abs().max())
        assert torch.allclose(moved, expected, rtol=0.0, atol=tolerance * scale)


def test_graph_equivariance_check_fails_for_a_non_orthogonal_map(dtype):
    """Negative control: a stretch is not in O(3); the edge set or the vectors no longer follow it."""
    case = CASES["triclinic"]
    rng = np.random.default_rng(7)
    cell = random_cell(rng, case["skew"])
    positions = rng.uniform(0.0, 1.0, size=(case["n"], 3)) @ cell
    keys, _ = _sorted_edge_vectors(positions, cell, case["pbc"], case["cutoff"], dtype)
    stretch = np.diag([1.25, 1.0, 0.9])
    moved_keys, _ = _sorted_edge_vectors(positions @ stretch.T, cell @ stretch.T, case["pbc"], case["cutoff"], dtype)
    assert moved_keys != keys
