"""Builders (ase, pymatgen, files), batching and input validation of the data layer."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write as ase_write
from ase.neighborlist import neighbor_list as ase_neighbor_list
from torch.utils.data import DataLoader

from _geometry import rattled_cu
from relaxed_e3nn.data import AtomicGraph, GraphDataset, collate, from_arrays, from_ase, from_pymatgen, read


def edge_set(graph):
    return sorted(
        zip(graph.edge_dst.tolist(), graph.edge_src.tolist(), map(tuple, graph.edge_shift.long().tolist()))
    )


def test_from_ase_periodic_matches_ase_edges_and_vectors(dtype):
    atoms = rattled_cu()
    atoms.set_cell(atoms.cell @ np.array([[1, 0.2, 0], [0, 1, 0.1], [0, 0, 1]]), scale_atoms=True)
    graph = from_ase(atoms, 3.2)
    i, j, shift, vec = ase_neighbor_list("ijSD", atoms, 3.2)
    assert edge_set(graph) == sorted(zip(i.tolist(), j.tolist(), map(tuple, shift.tolist())))
    assert graph.pos.dtype == graph.cell.dtype == graph.edge_shift.dtype == dtype
    assert graph.cell.shape == (1, 3, 3) and graph.pbc.shape == (1, 3) and graph.pbc.all()
    assert graph.batch.shape == (len(atoms),) and int(graph.batch.max()) == 0
    assert graph.cutoff == 3.2
    # edge_vec follows the package convention: ase's D with i = dst, j = src
    order = np.lexsort((shift[:, 2], shift[:, 1], shift[:, 0], j, i))
    ours = torch.stack([graph.edge_dst, graph.edge_src, *graph.edge_shift.long().T], 1).numpy()
    our_order = np.lexsort(ours[:, ::-1].T)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(graph.edge_vec().numpy()[our_order], vec[order], atol=tol)


def test_from_ase_molecule_and_explicit_dtype():
    atoms = molecule("CH4")
    graph = from_ase(atoms, 1.5, dtype=torch.float64)
    assert graph.pos.dtype == torch.float64
    assert not graph.pbc.any() and torch.all(graph.cell == 0)
    assert graph.num_edges == 8  # 4 C-H bonds, both directions; H-H (1.78 A) is beyond 1.5
    assert set(graph.atomic_numbers.tolist()) == {1, 6}
    assert torch.all(graph.edge_vec().norm(dim=1) < 1.5)


def test_calculator_targets_and_voigt_stress(dtype):
    atoms = rattled_cu()
    atoms.calc = EMT()
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces()
    stress = atoms.get_stress()  # Voigt xx yy zz yz xz xy
    graph = from_ase(atoms, 3.0)
    assert graph.graph_targets["energy"].shape == (1,)
    assert graph.node_targets["forces"].shape == (len(atoms), 3)
    assert graph.graph_targets["stress"].shape == (1, 3, 3)
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    assert abs(float(graph.graph_targets["energy"][0]) - energy) < tol * max(1, abs(energy))
    np.testing.assert_allclose(graph.node_targets["forces"].numpy(), forces, atol=tol)
    full = graph.graph_targets["stress"][0].double().numpy()
    np.testing.assert_allclose(full, full.T)
    np.testing.assert_allclose([full[0, 0], full[1, 1], full[2, 2], full[1, 2], full[0, 2], full[0, 1]], stress, atol=tol)


def test_no_calculator_means_no_targets():
    graph = from_ase(rattled_cu(), 3.0)
    assert graph.graph_targets == {} and graph.node_targets == {}


def test_named_keys_features_and_graph_targets():
    atoms = rattled_cu()
    n = len(atoms)
    rng = np.random.default_rng(0)
    atoms.info["REF_energy"] = -3.5
    atoms.arrays["REF_forces"] = rng.normal(size=(n, 3))
    atoms.info["REF_stress"] = rng.normal(size=6)
    atoms.info["dipole"] = np.array([0.1, 0.2, 0.3])
    atoms.set_velocities(rng.normal(size=(n, 3)))  # stored as momenta
    atoms.set_initial_charges(rng.normal(size=n))
    atoms.arrays["displacements"] = rng.normal(size=(n, 3))
    graph = from_ase(
        atoms,
        3.0,
        node_features=["velocities", "charges"],
        node_targets="displacements",
        graph_targets=["dipole"],
        energy_key="REF_energy",
        forces_key="REF_forces",
        stress_key="REF_stress",
        dtype=torch.float64,
    )
    np.testing.assert_allclose(graph.node_features["velocities"].numpy(), atoms.get_velocities())
    assert graph.node_features["charges"].shape == (n,)  # per-atom scalars are [N]
    np.testing.assert_allclose(graph.node_targets["displacements"].numpy(), atoms.arrays["displacements"])
    np.testing.assert_allclose(graph.node_targets["forces"].numpy(), atoms.arrays["REF_forces"])
    assert graph.graph_targets["energy"].tolist() == [-3.5]
    assert graph.graph_targets["dipole"].shape == (1, 3)
    assert graph.graph_targets["stress"].shape == (1, 3, 3)


def test_missing_key_names_it_and_the_structure(tmp_path):
    atoms = [rattled_cu(seed=s) for s in range(3)]
    for a in atoms[:2]:
        a.info["REF_energy"] = 1.0
    path = tmp_path / "data.xyz"
    ase_write(path, atoms, format="extxyz")
    with pytest.raises(ValueError, match=r"REF_energy.*structure 2"):
        read(path, 3.0, energy_key="REF_energy")
    with pytest.raises(ValueError, match="velocities"):
        from_ase(rattled_cu(), 3.0, node_features=["velocities"])


def test_read_extxyz_calculator_and_ref_keys(tmp_path, dtype):
    structures = []
    for seed in range(3):
        atoms = rattled_cu(seed=seed)
        atoms.calc = EMT()
        energy, forces, stress = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces, stress=stress)
        atoms.info["REF_energy"] = energy + 1.0
        atoms.arrays["REF_forces"] = forces * 2.0
        atoms.set_velocities(np.full((len(atoms), 3), 0.01 * (seed + 1)))
        structures.append(atoms)
    path = tmp_path / "train.extxyz"
    ase_write(path, structures, format="extxyz")

    graphs = read(path, 3.0)
    assert len(graphs) == 3 and all(g.pos.dtype == dtype for g in graphs)
    for graph, atoms in zip(graphs, structures):
        assert abs(float(graph.graph_targets["energy"][0]) - atoms.calc.results["energy"]) < 1e-4
        assert graph.graph_targets["stress"].shape == (1, 3, 3)
        assert edge_set(graph) == edge_set(from_ase(atoms, 3.0))

    ref = read(path, 3.0, index="1:", energy_key="REF_energy", forces_key="REF_forces", node_features="velocities")
    assert len(ref) == 2
    assert abs(float(ref[0].graph_targets["energy"][0]) - structures[1].info["REF_energy"]) < 1e-4
    np.testing.assert_allclose(ref[0].node_targets["forces"].numpy(), structures[1].arrays["REF_forces"], atol=1e-5)
    np.testing.assert_allclose(ref[1].node_features["velocities"].numpy(), 0.03, rtol=1e-5)
    assert len(read(path, 3.0, index=-1)) == 1


def test_read_cif_and_from_pymatgen_agree(tmp_path):
    from pymatgen.core import Lattice, Molecule, Structure

    structure = Structure(
        Lattice.from_parameters(3.9, 4.1, 4.3, 85, 95, 100),
        ["Ba", "Ti", "O", "O", "O"],
        [[0, 0, 0], [0.5, 0.52, 0.48], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    path = tmp_path / "BaTiO3.cif"
    structure.to(filename=str(path))
    (from_file,) = read(path, 4.0, dtype=torch.float64)
    from_pmg = from_pymatgen(structure, 4.0, dtype=torch.float64)
    assert from_file.num_nodes == from_pmg.num_nodes == 5
    assert from_file.num_edges == from_pmg.num_edges > 0
    # the same geometry: compare sorted edge lengths (CIF may reorder sites)
    a = torch.sort(from_file.edge_vec().norm(dim=1)).values
    b = torch.sort(from_pmg.edge_vec().norm(dim=1)).values
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)

    methane = Molecule(["C", "H", "H", "H", "H"], molecule("CH4").positions, site_properties={"charge": [-0.4, 0.1, 0.1, 0.1, 0.1]})
    graph = from_pymatgen(methane, 1.5, node_features=["charge"])
    assert not graph.pbc.any() and graph.num_edges == 8
    assert graph.node_features["charge"].shape == (5,)


def test_collate_offsets_and_dataloader(dtype):
    graphs = [from_ase(rattled_cu(seed=s, repeat=(1, 1, r)), 3.0) for s, r in enumerate([1, 2, 3])]
    graphs[0] = from_ase(molecule("H2O"), 3.0)
    for g in graphs:
        g.graph_targets["energy"] = torch.randn(1)
        g.node_targets["forces"] = torch.randn(g.num_nodes, 3)
    batch = collate(graphs)
    assert batch.num_graphs == 3
    assert batch.num_nodes == sum(g.num_nodes for g in graphs)
    assert batch.num_edges == sum(g.num_edges for g in graphs)
    assert batch.graph_targets["energy"].shape == (3,)
    assert batch.batch.tolist() == sum(([b] * g.num_nodes for b, g in enumerate(graphs)), [])
    # each batched edge vector equals the unbatched one: offsets and per-graph cells are right
    torch.testing.assert_close(batch.edge_vec(), torch.cat([g.edge_vec() for g in graphs]))
    assert torch.all(batch.batch[batch.edge_src] == batch.batch[batch.edge_dst])
    # batching a batch keeps counting graphs
    twice = collate([batch, graphs[1]])
    assert twice.num_graphs == 4 and int(twice.batch.max()) == 3

    loader = DataLoader(GraphDataset(graphs), batch_size=2, shuffle=False, collate_fn=collate)
    batches = list(loader)
    assert [b.num_graphs for b in batches] == [2, 1]
    assert isinstance(batches[0], AtomicGraph)


def test_collate_rejects_mismatched_keys_and_cutoffs():
    a = from_ase(molecule("H2O"), 2.0)
    b = from_ase(molecule("NH3"), 2.0)
    a.graph_targets["energy"] = torch.zeros(1)
    with pytest.raises(ValueError, match="graph_targets keys"):
        collate([a, b])
    with pytest.raises(ValueError, match="cutoff"):
        collate([from_ase(molecule("H2O"), 2.0), from_ase(molecule("H2O"), 3.0)])
    with pytest.raises(ValueError, match="empty"):
        collate([])


def test_rejects_nan_positions():
    atoms = molecule("H2O")
    atoms.positions[1, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        from_ase(atoms, 2.0)


def test_rejects_zero_volume_periodic_cell():
    atoms = Atoms("Cu2", positions=[[0, 0, 0], [1, 1, 0]], cell=[[2, 0, 0], [0, 2, 0], [2, 2, 0]], pbc=True)
    with pytest.raises(ValueError, match="zero volume"):
        from_ase(atoms, 3.0)


@pytest.mark.parametrize("cutoff", [0.0, -2.0])
def test_rejects_non_positive_cutoff(cutoff):
    with pytest.raises(ValueError, match="cutoff must be a positive"):
        from_ase(molecule("H2O"), cutoff)


def test_rejects_unknown_format_and_extension(tmp_path):
    path = tmp_path / "structure.pdbx"
    path.write_text("nothing")
    with pytest.raises(ValueError, match="extension '.pdbx'"):
        read(path, 3.0)
    with pytest.raises(ValueError, match="unknown format 'gromacs'"):
        read(path, 3.0, format="gromacs")
    with pytest.raises(FileNotFoundError):
        read(tmp_path / "missing.xyz", 3.0)


def test_rejects_mismatched_lengths():
    positions = np.array([[0.0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]])
    with pytest.raises(ValueError, match="atomic_numbers must have shape"):
        from_arrays(positions, [1, 1], 2.0)
    with pytest.raises(ValueError, match="node feature 'charges' must have 3 rows"):
        from_arrays(positions, [1, 1, 1], 2.0, node_features={"charges": [0.1, 0.2]})
    with pytest.raises(ValueError, match="positions must have shape"):
        from_arrays(positions[:, :2], [1, 1, 1], 2.0)


def test_rejects_empty_structure(tmp_path):
    with pytest.raises(ValueError, match="empty structure"):
        from_ase(Atoms(), 3.0)
    with pytest.raises(ValueError, match="empty structure"):
        from_arrays(np.zeros((0, 3)), [], 3.0)


def test_import_data_stays_free_of_layers():
    code = (
        "import sys, relaxed_e3nn.data; "
        "bad = [m for m in sys.modules if m.split('.')[:2] in (['relaxed_e3nn','nn'], ['relaxed_e3nn','models'], "
        "['relaxed_e3nn','train'])]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_docstring_examples():
    import doctest

    from relaxed_e3nn.data import _builders

    result = doctest.testmod(_builders, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
