"""CIF files with JSON sidecars: forces and stresses are read in the frame the sidecar names.

A CIF stores a cell as lengths and angles; ase and pymatgen orient it differently (ase: a along
x; pymatgen: c along z), so Cartesian forces written by one and read by the other are rotated
unless the sidecar says which frame they are in.
"""
import json

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.stress import voigt_6_to_full_3x3_stress
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor
from pymatgen.io.cif import CifWriter

from relaxed_e3nn.train import frame_rotation, read_atoms


def _cu3au_structure(seed=0):
    """A sheared, rattled Cu3Au cell in pymatgen's orientation (c along z)."""
    rng = np.random.default_rng(seed)
    lattice = Lattice.from_parameters(3.75, 3.78, 3.72, 91.5, 88.7, 92.2)
    frac = np.array([[0, 0, 0], [0, 0.5, 0.5], [0.5, 0, 0.5], [0.5, 0.5, 0]]) + rng.normal(0, 0.01, (4, 3))
    return Structure(lattice, ["Au", "Cu", "Cu", "Cu"], frac)


def _emt_values(atoms):
    atoms = atoms.copy()
    atoms.calc = EMT()
    return {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces().tolist(),
            "stress": atoms.get_stress().tolist()}


def _write(tmp_path, structure_writer, values, name="x"):
    cif, sidecar = tmp_path / f"{name}.cif", tmp_path / f"{name}.json"
    structure_writer(cif)
    sidecar.write_text(json.dumps([values]))
    return {"path": str(cif), "targets": str(sidecar)}


def _read_one(source):
    (atoms, _), = read_atoms(source)
    return atoms


def test_pymatgen_frame_round_trip(tmp_path):
    structure = _cu3au_structure()
    values = _emt_values(AseAtomsAdaptor.get_atoms(structure))  # Cartesian in pymatgen's frame
    source = _write(tmp_path, lambda p: CifWriter(structure).write_file(str(p)),
                    dict(values, frame="cartesian_pymatgen"))
    atoms = _read_one(source)
    # the cell as ase reads it is a rotation of pymatgen's (about a degree here), not the same
    assert not np.allclose(atoms.cell[:], structure.lattice.matrix, atol=1e-3)
    expected = _emt_values(atoms)  # EMT in ase's frame on the structure as read
    assert np.allclose(atoms.get_forces(), expected["forces"], atol=1e-6)
    assert np.allclose(atoms.get_stress(), expected["stress"], atol=1e-7)
    assert atoms.get_potential_energy() == pytest.approx(expected["energy"], abs=1e-6)
    assert "frame" not in atoms.info


def test_wrong_frame_misreads_forces(tmp_path):
    """Negative control: reading pymatgen's Cartesian forces as ase's gives wrong forces."""
    structure = _cu3au_structure()
    values = _emt_values(AseAtomsAdaptor.get_atoms(structure))
    source = _write(tmp_path, lambda p: CifWriter(structure).write_file(str(p)), dict(values, frame="cartesian_ase"))
    atoms = _read_one(source)
    error = np.abs(atoms.get_forces() - np.asarray(_emt_values(atoms)["forces"])).max()
    assert error > 1e-3


def test_cell_frame_for_a_strained_cell_written_by_ase(tmp_path):
    """The examples' case: an arbitrary (strained) cell written by ase, values in its own frame."""
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True)
    strain = np.eye(3) + np.array([[0.0, 0.02, 0.01], [0.02, 0.0, -0.015], [0.01, -0.015, 0.01]])
    atoms.set_cell(atoms.cell[:] @ strain, scale_atoms=True)
    atoms.positions += np.random.default_rng(1).normal(0, 0.05, atoms.positions.shape)
    values = _emt_values(atoms)
    source = _write(tmp_path, lambda p: ase.io.write(str(p), atoms),
                    dict(values, frame={"cell": atoms.cell[:].tolist()}))
    read_back = _read_one(source)
    expected = _emt_values(read_back)
    assert np.allclose(read_back.get_forces(), expected["forces"], atol=1e-6)
    assert np.allclose(read_back.get_stress(), expected["stress"], atol=1e-7)
    # a Voigt stress and its 3x3 form give the same answer
    full = dict(values, stress=voigt_6_to_full_3x3_stress(np.asarray(values["stress"])).tolist(),
                frame={"cell": atoms.cell[:].tolist()})
    assert np.allclose(_read_one(_write(tmp_path, lambda p: ase.io.write(str(p), atoms), full, "y")).get_stress(),
                       expected["stress"], atol=1e-7)


def test_cif_forces_without_a_frame_are_refused(tmp_path):
    structure = _cu3au_structure()
    values = _emt_values(AseAtomsAdaptor.get_atoms(structure))
    source = _write(tmp_path, lambda p: CifWriter(structure).write_file(str(p)), values)
    with pytest.raises(ValueError, match=r"need a 'frame'.*cartesian_pymatgen"):
        read_atoms(source)
    energy_only = _write(tmp_path, lambda p: CifWriter(structure).write_file(str(p)),
                         {"energy": values["energy"]}, "e")
    assert _read_one(energy_only).get_potential_energy() == pytest.approx(values["energy"])


def test_extxyz_sidecar_needs_no_frame(tmp_path):
    """extxyz stores the lattice vectors themselves: Cartesian values are unambiguous."""
    atoms = AseAtomsAdaptor.get_atoms(_cu3au_structure())
    values = _emt_values(atoms)
    path = tmp_path / "x.xyz"
    ase.io.write(str(path), atoms, format="extxyz")
    (tmp_path / "x.json").write_text(json.dumps([values]))
    read_back = _read_one({"path": str(path), "targets": str(tmp_path / "x.json")})
    assert np.allclose(read_back.get_forces(), values["forces"])


@pytest.mark.parametrize("frame, match", [
    ("cartesian_vasp", "expected one of"),
    ({"cell": [[1, 0, 0], [0, 1, 0]]}, "3 finite lattice vectors"),
    ({"cell": np.diag([3.0, 3.0, 3.0]).tolist()}, "not a rotation of the structure's cell"),
    ({"cell": (-_cu3au_structure().lattice.matrix).tolist()}, "opposite handedness"),
])
def test_bad_frames_are_named(frame, match):
    atoms = AseAtomsAdaptor.get_atoms(_cu3au_structure())
    with pytest.raises(ValueError, match=match):
        frame_rotation(atoms, frame, where="targets[0].frame")


def test_frame_rotation_is_a_proper_rotation():
    atoms = AseAtomsAdaptor.get_atoms(_cu3au_structure())
    rotation = frame_rotation(atoms, {"cell": atoms.cell[:].tolist()})
    assert np.allclose(rotation, np.eye(3), atol=1e-12)
    rotation = frame_rotation(atoms, "cartesian_ase")
    assert np.allclose(rotation @ rotation.T, np.eye(3), atol=1e-12) and np.linalg.det(rotation) > 0
    assert np.allclose(atoms.cell.cellpar(), ase.Atoms(cell=atoms.cell[:] @ rotation.T, pbc=True).cell.cellpar())
