"""Generators: determinism, the physics of the targets, and the symmetry they document."""
import os

import ase.io
import numpy as np
import pytest
import spglib
import torch
from ase.calculators.emt import EMT
from ase.calculators.mixing import SumCalculator
from e3nn import o3

from _geometry import mirror, rot
from relaxed_e3nn.cli import main
from relaxed_e3nn.data import read
from relaxed_e3nn.data.generators import (
    GENERATORS, PEROVSKITE_PHASES, UniformFieldCalculator, field_md, lorentz, lorentz_accelerations,
    lorentz_residual_group, perovskite_compositions, perovskite_distortion, shape_deformation,
)


def _all_same(a, b):
    return all(np.array_equal(x.positions, y.positions) and x.info.keys() == y.info.keys() and
               all(np.array_equal(x.arrays[k], y.arrays[k]) for k in x.arrays) for x, y in zip(a, b))


# ----------------------------------------------------------------------------- registry and seeds
def test_registry_names():
    for name in ("perovskite_distortion", "field_md", "lorentz", "shape_deformation"):
        assert name in GENERATORS


@pytest.mark.parametrize("name, options", [
    ("perovskite_distortion", {"supercells": (1, 2)}),
    ("field_md", {"frames_per_trajectory": 2, "equilibration": 2, "stride": 2}),
    ("lorentz", {}),
    ("shape_deformation", {}),
])
def test_seeded_and_documented(name, options):
    generate = GENERATORS[name]
    first = generate(num_samples=4, seed=3, **options)
    again = generate(num_samples=4, seed=3, **options)
    other = generate(num_samples=4, seed=4, **options)
    assert len(first) == 4
    assert _all_same(first, again)
    assert not _all_same(first, other)
    for atoms in first:
        assert {"parent_group", "residual_group", "axis"} <= set(atoms.info)
        assert np.isclose(np.linalg.norm(atoms.info["axis"]), 1.0)


@pytest.mark.parametrize("call, error", [
    (lambda: perovskite_distortion(num_samples=0), ValueError),
    (lambda: perovskite_distortion(num_samples=2.5), TypeError),
    (lambda: perovskite_distortion(phase="Pnma"), ValueError),
    (lambda: perovskite_distortion(split="validation"), ValueError),
    (lambda: perovskite_distortion(supercells=(0,)), ValueError),
    (lambda: perovskite_distortion(seed="zero"), TypeError),
    (lambda: field_md(num_samples=1, species=("Cu", "Xe")), ValueError),
    (lambda: field_md(num_samples=1, charges={"Cu": 0.3, "Au": 0.3}), ValueError),
    (lambda: field_md(num_samples=1, num_atoms=7), ValueError),
    (lambda: field_md(num_samples=1, field=(1.0, 0.0)), ValueError),
    (lambda: lorentz(num_samples=1, E=(np.nan, 0, 0)), ValueError),
    (lambda: lorentz(num_samples=1, num_particles=50, box=0.5), ValueError),
    (lambda: lorentz(num_samples=1, mass_range=(2.0, 1.0)), ValueError),
    (lambda: shape_deformation(target="sphere"), ValueError),
    (lambda: shape_deformation(scale_range=(0.0, 1.0)), ValueError),
])
def test_bad_options_raise(call, error):
    with pytest.raises(error):
        call()


# ----------------------------------------------------------------------------- perovskites
def test_perovskite_compositions_hold_out_combinations_not_species():
    train, test = perovskite_compositions()
    assert len(test) >= 5 and not set(train) & set(test)
    train_a, train_b = {a for a, _ in train}, {b for _, b in train}
    for a, b in test:
        assert a in train_a and b in train_b
    for atoms in perovskite_distortion(num_samples=30, split="test", supercells=(1,)):
        a_b = (atoms.get_chemical_symbols()[0], atoms.get_chemical_symbols()[1])
        assert a_b in test


def _spacegroup(atoms, displaced):
    positions = atoms.positions + (atoms.arrays["displacements"] if displaced else 0.0)
    cell = (atoms.cell[:], np.linalg.solve(atoms.cell[:].T, positions.T).T, atoms.numbers)
    return spglib.get_symmetry_dataset(cell, symprec=1e-4).international


@pytest.mark.parametrize("phase", list(PEROVSKITE_PHASES))
def test_perovskite_input_cubic_target_polar(phase):
    expected = {"P4mm": "P4mm", "Amm2": "Amm2", "R3m": "R3m"}[phase]
    axis_int, residual, _ = PEROVSKITE_PHASES[phase]
    structures = perovskite_distortion(num_samples=6, seed=1, phase=phase, supercells=(1, 2))
    for atoms in structures:
        assert _spacegroup(atoms, displaced=False) == "Pm-3m"  # unrattled: Oh site symmetry kept
        assert _spacegroup(atoms, displaced=True) == expected
        u = atoms.arrays["displacements"]
        axis = np.asarray(axis_int, float) / np.linalg.norm(axis_int)
        assert np.allclose(np.cross(u, axis), 0.0, atol=1e-12)  # all along the polar axis
        assert np.abs(u).max() > 1e-3
        assert atoms.info["residual_group"] == residual
        assert np.allclose(atoms.info["axis"], axis)


def test_perovskite_magnitudes_depend_on_composition_and_lattice():
    structures = perovskite_distortion(num_samples=40, seed=0, supercells=(1,))
    b_shift = {}
    for atoms in structures:
        b_shift.setdefault(atoms.info["composition"], []).append(
            (atoms.info["lattice_constant"], atoms.arrays["displacements"][1, 2]))
    per_composition = {c: np.mean([d for _, d in v]) for c, v in b_shift.items()}
    assert len(set(np.round(list(per_composition.values()), 6))) == len(per_composition)
    # one composition at two strains: larger cell, larger off-centring
    pairs = [sorted(v) for v in b_shift.values() if len(v) >= 2]
    assert pairs and all(p[-1][1] > p[0][1] for p in pairs)


# ----------------------------------------------------------------------------- field_md
def test_field_md_energy_forces_consistent_and_neutral():

    field = np.array([0.2, -0.1, 0.4])
    snapshots = field_md(num_samples=6, seed=2, field=field, frames_per_trajectory=3, equilibration=5, stride=3)
    for atoms in snapshots:
        q = atoms.get_initial_charges()
        assert abs(q.sum()) < 1e-12
        bare = atoms.copy()
        bare.calc = EMT()
        dipole = q @ atoms.positions
        assert np.isclose(atoms.info["REF_energy"], bare.get_potential_energy() - dipole @ field, atol=1e-10)
        assert np.allclose(atoms.arrays["REF_forces"], bare.get_forces() + q[:, None] * field, atol=1e-10)
        assert atoms.info["residual_group"] == "Cinfv"
        assert np.allclose(atoms.info["axis"], field / np.linalg.norm(field))
    # neutral: the field energy does not change under a translation
    atoms = snapshots[0]
    q = atoms.get_initial_charges()
    assert np.isclose(q @ (atoms.positions + [1.0, 2.0, 3.0]) @ field, q @ atoms.positions @ field)
    assert len({round(a.info["REF_energy"], 8) for a in snapshots}) == len(snapshots)


def test_field_md_forces_are_energy_gradient():


    atoms = field_md(num_samples=1, seed=5, frames_per_trajectory=1, equilibration=2, stride=2)[0]
    atoms.calc = SumCalculator([EMT(), UniformFieldCalculator([0.0, 0.3, 0.5])])
    forces = atoms.get_forces()
    h, numeric = 1e-5, np.zeros_like(forces)
    for i in range(len(atoms)):
        for k in range(3):
            for sign in (1, -1):
                shifted = atoms.copy()
                shifted.calc = atoms.calc
                shifted.positions[i, k] += sign * h
                numeric[i, k] -= sign * shifted.get_potential_energy() / (2 * h)
    assert np.allclose(forces, numeric, atol=1e-5)


# ----------------------------------------------------------------------------- lorentz
def test_lorentz_residual_group_cases():
    assert lorentz_residual_group([0, 0, 1], [0, 0, 3])[0] == "Cinf"
    name, axis = lorentz_residual_group([1, 0, 0], [0, 1, 0])
    assert name == "Cs" and np.allclose(axis, [0, 1, 0])
    assert lorentz_residual_group([1, 0, 1], [0, 1, 0.2])[0] == "C1"
    assert lorentz_residual_group([1, 0, 0], [0, 0, 0])[0] == "Cinfv"
    assert lorentz_residual_group([0, 0, 0], [0, 2, 0])[0] == "Cinfh"
    assert lorentz_residual_group([0, 0, 0], [0, 0, 0])[0] == "O3"


def _lorentz_covariance_error(g, sample, E, B, coulomb):
    """|a(g r, g v) - g a(r, v)| with E, B held fixed (zero iff g is a symmetry of the fields)."""
    r, v = sample.positions, sample.arrays["velocities"]
    q, m = sample.get_initial_charges(), sample.get_masses()
    a = lorentz_accelerations(r, v, q, m, E, B, coulomb)
    a_g = lorentz_accelerations(r @ g.T, v @ g.T, q, m, E, B, coulomb)
    return np.abs(a_g - a @ g.T).max()


def test_lorentz_targets_and_symmetry():
    E, B = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    samples = lorentz(num_samples=3, seed=1, E=E, B=B, coulomb=0.1)
    for s in samples:
        q, m, v = s.get_initial_charges(), s.get_masses(), s.arrays["velocities"]
        assert set(np.unique(q)) <= {-1.0, 1.0}
        free = (q / m)[:, None] * (E + np.cross(v, B))
        assert np.allclose(lorentz(num_samples=3, seed=1, E=E, B=B, coulomb=0.0)[samples.index(s)].arrays["accelerations"],
                           free, atol=1e-12)
        assert s.info["residual_group"] == "Cs"
        # kept: the mirror normal to B (acts on B as an axial vector: B -> B)
        assert _lorentz_covariance_error(mirror(B), s, E, B, 0.1) < 1e-12
        # broken: rotation by pi about E (flips B), mirror containing E and B (flips B), C2 about B
        for g in (rot(E, np.pi), mirror(np.cross(E, B)), rot(B, np.pi), -np.eye(3)):
            assert _lorentz_covariance_error(g, s, E, B, 0.1) > 1e-3


# ----------------------------------------------------------------------------- shape
def _vertex_permutation(g, vertices):
    images = vertices @ g.T
    distance = np.linalg.norm(images[:, None, :] - vertices[None, :, :], axis=-1)
    perm = distance.argmin(axis=1)
    assert np.allclose(distance.min(axis=1), 0.0)
    return perm


@pytest.mark.parametrize("target, kept, broken", [
    ("cube", [rot([1, 1, 1], 2 * np.pi / 3), rot([1, 0, 0], np.pi / 2), -np.eye(3)], []),
    ("prism", [rot([0, 0, 1], np.pi / 2), mirror([0, 0, 1]), mirror([1, 1, 0]), -np.eye(3)],
     [rot([1, 1, 1], 2 * np.pi / 3), rot([1, 0, 0], np.pi / 2)]),
    ("irregular", [np.eye(3)], [rot([0, 0, 1], np.pi / 2), -np.eye(3), mirror([0, 0, 1])]),
])
def test_shape_targets_keep_documented_symmetry(target, kept, broken):

    atoms = shape_deformation(num_samples=1, seed=0, target=target, lmax=4)[0]
    centre = atoms.positions.mean(axis=0)
    vertices = atoms.positions - centre
    u, signal = atoms.arrays["displacements"], atoms.arrays["signal"]
    irreps = o3.Irreps(atoms.info["signal_irreps"])
    assert signal.shape == (8, irreps.dim)

    def error(g):
        perm = _vertex_permutation(g, vertices)
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)  # e3nn builds D(g) in the default dtype
        try:
            D = irreps.D_from_matrix(torch.as_tensor(g)).numpy()
        finally:
            torch.set_default_dtype(old)
        return max(np.abs(u[perm] - u @ g.T).max(), np.abs(signal[perm] - signal @ D.T).max())

    for g in kept:
        assert error(g) < 1e-10
    for g in broken:
        assert error(g) > 1e-2


def test_shape_prism_geometry():
    atoms = shape_deformation(num_samples=1, seed=0, target="prism")[0]
    s = atoms.info["scale"]
    rel = atoms.positions - atoms.positions.mean(axis=0)
    assert np.allclose(rel + atoms.arrays["displacements"], rel * [0.5, 0.5, 2.0])
    assert np.allclose(np.abs(rel), s)


# ----------------------------------------------------------------------------- CLI
def test_generate_cli_writes_readable_extxyz(tmp_path, capsys):


    out = tmp_path / "lorentz.xyz"
    assert main(["generate", "lorentz", "--out", str(out), "--num-samples", "3", "--seed", "7",
                 "-o", "E=[0, 0, 1]", "-o", "B=[0, 0, 2]"]) == 0
    frames = ase.io.read(out, index=":")
    direct = lorentz(num_samples=3, seed=7, E=(0, 0, 1), B=(0, 0, 2))
    assert len(frames) == 3 and frames[0].info["residual_group"] == "Cinf"
    for a, b in zip(frames, direct):
        assert np.allclose(a.arrays["accelerations"], b.arrays["accelerations"])
        assert np.allclose(a.get_initial_charges(), b.get_initial_charges())
    graphs = read(out, cutoff=10.0, node_features=["velocities", "charges"], node_targets=["accelerations"],
                  dtype=torch.float64)
    assert torch.allclose(graphs[1].node_targets["accelerations"],
                          torch.as_tensor(direct[1].arrays["accelerations"]))

    out = tmp_path / "field.xyz"
    assert main(["generate", "field_md", "--out", str(out), "--n", "2", "-o", "frames_per_trajectory=2",
                 "-o", "equilibration=1"]) == 0
    graphs = read(out, cutoff=6.0, energy_key="REF_energy", forces_key="REF_forces", node_features=["charges"])
    assert len(graphs) == 2 and "forces" in graphs[0].node_targets


def test_generate_cli_errors_leave_no_file(tmp_path, capsys):

    out = tmp_path / "bad.xyz"
    assert main(["generate", "perovskite_distortion", "--out", str(out), "-o", "phase=Pnma"]) == 1
    assert main(["generate", "perovskite_distortion", "--out", str(out), "-o", "colour=red"]) == 1
    assert main(["generate", "perovskite_distortion", "--out", str(out), "-o", "supercells=[one]"]) == 1
    assert main(["generate", "perovskite_distortion", "--out", str(out), "-o", "phase"]) == 1
    assert main(["generate", "no_such_generator", "--out", str(out)]) == 1
    assert "unknown generator" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    assert main(["generate", "--list"]) == 0
    assert "perovskite_distortion" in capsys.readouterr().out


# ----------------------------------------------------------------------------- symmetrised data sets
def test_lorentz_symmetrize_adds_exact_images():
    from relaxed_e3nn.groups import point_group

    samples = lorentz(num_samples=2, seed=0, E=(0, 0, 1), B=(0, 0, 2), symmetrize=True)
    assert len(samples) == 8 and {s.info["symmetrized_by"] for s in samples} == {"C4"}
    base = samples[0]
    images = samples[:4]
    rotations = point_group("C4").elements.numpy()
    for image in images:
        # the image is g·base for exactly one rotation g of C4 about z, targets included
        g = [r for r in rotations if np.allclose(base.positions @ r.T, image.positions, atol=1e-12)]
        assert len(g) == 1
        assert np.allclose(image.arrays["velocities"], base.arrays["velocities"] @ g[0].T, atol=1e-12)
        assert np.allclose(image.arrays["accelerations"], base.arrays["accelerations"] @ g[0].T, atol=1e-12)
    crossed = lorentz(num_samples=1, seed=0, E=(1, 0, 0), B=(0, 1, 0), symmetrize=True)
    assert len(crossed) == 2 and np.allclose(crossed[1].positions[:, 1], -crossed[0].positions[:, 1])
    with pytest.raises(TypeError):
        lorentz(num_samples=1, symmetrize="yes")


def test_field_md_symmetrize_adds_exact_images():
    snapshots = field_md(num_samples=1, seed=0, field=(0.0, 0.0, 0.5), frames_per_trajectory=1, equilibration=2, stride=2,
                         symmetrize=True)
    assert len(snapshots) == 8 and snapshots[0].info["symmetrized_by"] == "C4v"
    base = snapshots[0]
    for image in snapshots[1:]:
        assert image.info["REF_energy"] == base.info["REF_energy"]
        g, *_ = np.linalg.lstsq(base.positions - base.positions.mean(0), image.positions - image.positions.mean(0),
                                rcond=None)
        g = g.T  # image = base @ g.T
        assert np.allclose(g @ g.T, np.eye(3), atol=1e-10) and np.allclose(g @ [0, 0, 1], [0, 0, 1], atol=1e-10)
        assert np.allclose(image.arrays["REF_forces"], base.arrays["REF_forces"] @ g.T, atol=1e-10)


def test_perovskite_cells_survive_extxyz_exactly(tmp_path):
    """Lattice constants are rounded to 1e-4 Å, so the 8-decimal extxyz text keeps the cells (to 1 ulp)."""

    cells = perovskite_distortion(num_samples=10, seed=0, supercells=(1, 2))
    ase.io.write(tmp_path / "cells.xyz", cells, format="extxyz")
    again = ase.io.read(tmp_path / "cells.xyz", index=":")
    for a, b in zip(cells, again):
        assert np.array_equal(a.cell[:], b.cell[:])
        assert np.abs(a.positions - b.positions).max() <= 4 * np.finfo(float).eps * a.cell[0, 0]
        assert round(a.info["lattice_constant"], 4) == a.info["lattice_constant"]


def test_deprecated_count_names_still_work():
    """``n`` (and box_nbody's ``n_samples`` / ``n_bodies``) warn and give the same data as ``num_samples``."""
    with pytest.warns(DeprecationWarning, match="'n' is deprecated; use 'num_samples'"):
        old = lorentz(n=2, seed=1)
    assert _all_same(old, lorentz(num_samples=2, seed=1))
    with pytest.raises(ValueError, match="give 'num_samples' only"):
        lorentz(n=2, num_samples=2)
    assert main(["generate", "lorentz", "--out", os.devnull, "--n", "1"]) == 0  # the old flag spelling
