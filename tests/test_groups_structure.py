"""``point_group_of``: crystals through spglib/pymatgen, molecules through PointGroupAnalyzer.

Every returned element is checked to map the structure onto itself (positions about the centre
of mass for molecules; Cartesian positions modulo the lattice for crystals), independently of
the analysers used inside.
"""
import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.spacegroup import crystal
from scipy.spatial.transform import Rotation

from relaxed_e3nn.groups import point_group, point_group_of


def maps_molecule_onto_itself(atoms, R, tol=1e-3):
    pos = atoms.positions - atoms.get_center_of_mass()
    moved = pos @ np.asarray(R).T
    d = np.linalg.norm(moved[:, None] - pos[None], axis=-1)
    same_species = atoms.numbers[:, None] == atoms.numbers[None]
    return bool((np.where(same_species, d, np.inf).min(axis=1) < tol).all())


def maps_crystal_onto_itself(atoms, R, tol=1e-3):
    """Some translation t makes x -> R x + t a symmetry (try the differences to atom 0's images)."""
    cell = atoms.cell.array
    frac = atoms.get_scaled_positions()
    moved = atoms.positions @ np.asarray(R).T
    for j in np.nonzero(atoms.numbers == atoms.numbers[0])[0]:
        t = atoms.positions[j] - moved[0]
        mfrac = np.linalg.solve(cell.T, (moved + t).T).T
        diff = mfrac[:, None] - frac[None]
        diff -= np.round(diff)
        d = np.linalg.norm(diff @ cell, axis=-1)
        same = atoms.numbers[:, None] == atoms.numbers[None]
        if (np.where(same, d, np.inf).min(axis=1) < tol).all():
            return True
    return False


def srtio3():
    return crystal(["Sr", "Ti", "O"], [(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0)], spacegroup=221,
                   cellpar=[3.905, 3.905, 3.905, 90, 90, 90])


def wurtzite_zno():
    return crystal(["Zn", "O"], [(1 / 3, 2 / 3, 0), (1 / 3, 2 / 3, 0.382)], spacegroup=186,
                   cellpar=[3.25, 3.25, 5.207, 90, 90, 120])


def test_cubic_perovskite_is_Oh():
    atoms = srtio3()
    pg = point_group_of(atoms)
    assert pg.schoenflies == "Oh" and pg == point_group("Oh")
    assert all(maps_crystal_onto_itself(atoms, R) for R in pg.elements.numpy())


@pytest.mark.parametrize("make, name", [(wurtzite_zno, "C6v"), (lambda: bulk("Mg", "hcp", a=3.21, c=5.21), "D6h")])
def test_hexagonal_crystals_have_the_6_fold_along_c(make, name):
    atoms = make()
    pg = point_group_of(atoms)
    assert pg.schoenflies == name
    c_axis = atoms.cell.array[2] / np.linalg.norm(atoms.cell.array[2])
    assert abs(abs(pg.principal_axis.numpy() @ c_axis) - 1) < 1e-9
    assert pg.contains(Rotation.from_rotvec(c_axis * math.pi / 3).as_matrix())
    assert all(maps_crystal_onto_itself(atoms, R) for R in pg.elements.numpy())
    # negative control: a 4-fold rotation is not a symmetry of the crystal
    assert not maps_crystal_onto_itself(atoms, Rotation.from_rotvec(c_axis * math.pi / 2).as_matrix())


def test_rotated_crystal_and_pymatgen_structure():
    from pymatgen.io.ase import AseAtomsAdaptor

    atoms = wurtzite_zno()
    R = Rotation.from_euler("zyx", [0.3, 0.7, -1.1]).as_matrix()
    rotated = atoms.copy()
    rotated.set_cell(atoms.cell.array @ R.T, scale_atoms=True)
    pg = point_group_of(AseAtomsAdaptor.get_structure(rotated))
    assert pg.schoenflies == "C6v"
    assert pg == point_group("C6v", R @ point_group_of(atoms).frame.numpy())


@pytest.mark.parametrize(
    "name, expected",
    [("H2O", "C2v"), ("NH3", "C3v"), ("CH4", "Td"), ("C6H6", "D6h"), ("C2H6", "D3d"), ("CO2", "Dinfh"),
     ("HCN", "Cinfv")],
)
def test_molecules(name, expected):
    atoms = molecule(name)
    R = Rotation.from_euler("zyx", [0.4, -0.9, 2.0]).as_matrix()
    atoms.positions = atoms.positions @ R.T + np.array([1.0, -2.0, 0.5])
    pg = point_group_of(atoms)
    assert pg.schoenflies == expected
    if pg.is_finite:
        assert all(maps_molecule_onto_itself(atoms, g) for g in pg.elements.numpy())
    else:
        samples = pg.sample(20, generator=None).numpy()
        assert all(maps_molecule_onto_itself(atoms, g) for g in samples)
        axis = atoms.positions[-1] - atoms.positions[0]
        assert abs(abs(pg.principal_axis.numpy() @ axis / np.linalg.norm(axis)) - 1) < 1e-6
    # negative control: a generic rotation moves the molecule
    assert not maps_molecule_onto_itself(atoms, Rotation.from_rotvec([0.3, 0.2, 0.1]).as_matrix())


def test_pymatgen_molecule_and_single_atom():
    from pymatgen.core import Molecule

    mol = Molecule(["O", "H", "H"], [[0, 0, 0.12], [0, 0.76, -0.48], [0, -0.76, -0.48]])
    pg = point_group_of(mol)
    assert pg.schoenflies == "C2v" and pg == point_group("C2v", [[0, 1, 0], [-1, 0, 0], [0, 0, 1]])
    assert point_group_of(Atoms("Ar", positions=[[1.0, 2.0, 3.0]])).schoenflies == "O3"


def test_bad_structures():
    with pytest.raises(TypeError, match="ase.Atoms"):
        point_group_of(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="no atoms"):
        point_group_of(Atoms())
    with pytest.raises(ValueError, match="cell is degenerate"):
        point_group_of(Atoms("H2", positions=[[0, 0, 0], [0, 0, 0.7]], pbc=True))
    with pytest.raises(ValueError, match="NaN"):
        point_group_of(Atoms("H2", positions=[[0, 0, 0], [0, 0, np.nan]]))
    with pytest.raises(ValueError, match="symprec"):
        point_group_of(molecule("H2O"), symprec=0)


def test_slightly_distorted_crystal_within_symprec():
    atoms = srtio3()
    cell = atoms.cell.array.copy()
    cell[2] *= 1 + 5e-4
    atoms.set_cell(cell, scale_atoms=True)
    atoms.positions += np.random.default_rng(0).normal(scale=5e-4, size=atoms.positions.shape)
    loose = point_group_of(atoms, symprec=0.01)
    assert loose.schoenflies == "Oh"
    R = loose.elements
    assert (R @ R.transpose(1, 2) - torch.eye(3, dtype=R.dtype)).abs().max() < 1e-12  # exact elements
    assert point_group_of(atoms, symprec=1e-5).schoenflies == "C1"


def test_slab_with_vacuum_uses_its_periodic_stacking():
    from ase.build import fcc111

    slab = fcc111("Cu", (1, 1, 3), vacuum=8.0)  # pbc = (True, True, False), symmetric slab
    pg = point_group_of(slab)
    assert pg.schoenflies == "D3d"
    assert abs(abs(pg.principal_axis[2].item()) - 1) < 1e-9
    assert all(maps_crystal_onto_itself(slab, R) for R in pg.elements.numpy())
