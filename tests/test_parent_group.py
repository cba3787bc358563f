"""Parent symmetry of ideal and rattled structures: the symprec scan and the direct RMS check."""
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, fcc111, molecule
from scipy.spatial.transform import Rotation

from relaxed_e3nn.groups import check_parent, parent_group_of, point_group, point_group_of
from relaxed_e3nn.groups._parent import check_elements


def rattled(atoms, amplitude, seed):
    out = atoms.copy()
    out.rattle(stdev=amplitude, seed=seed)
    return out


def rotated(atoms, seed=7):
    out = atoms.copy()
    out.positions = out.positions @ Rotation.random(random_state=seed).as_matrix().T
    return out, Rotation.random(random_state=seed).as_matrix()


def random_cluster(seed=0, num=7, min_distance=1.4):
    rng = np.random.default_rng(seed)
    positions = []
    while len(positions) < num:
        trial = rng.uniform(-2.5, 2.5, 3)
        if all(np.linalg.norm(trial - p) >= min_distance for p in positions):
            positions.append(trial)
    return Atoms(["C", "N", "O", "S", "P", "Cl", "F", "Br"][:num], positions=positions)


@pytest.mark.parametrize("atoms, expected", [
    (molecule("CH4"), "Td"),
    (molecule("NH3"), "C3v"),
    (molecule("C6H6"), "D6h"),
    (bulk("Cu", "fcc", a=3.6), "Oh"),
    # three (111) layers ABC in a cell with vacuum: the 3-fold axis along the normal, three
    # mirrors, and the inversion through the middle layer, as for the ideal slab: D3d (-3m)
    (fcc111("Cu", size=(2, 2, 3), vacuum=5.0), "D3d"),
])
def test_parent_of_ideal_structures(atoms, expected):
    parent = parent_group_of(atoms)
    assert parent.group.schoenflies == expected
    assert parent.has_symmetry
    low, high = parent.symprec_range
    assert low <= 1e-5 * 1.0001 and high >= 0.2
    assert check_parent(parent.group, atoms, tol=1e-5).passed  # ase's NH3 and C6H6 are exact to ~1e-7 Å


def test_parent_found_in_a_rotated_frame():
    atoms, R = rotated(molecule("CH4"))
    parent = parent_group_of(atoms)
    assert parent.group == point_group("Td").rotated(R)
    assert check_parent(parent.group, atoms, tol=1e-8).passed
    with pytest.raises(ValueError, match="not a symmetry"):  # the standard-frame Td does not fit
        check_parent("Td", atoms, tol=0.05)


@pytest.mark.parametrize("amplitude, seed", [(0.01, 1), (0.02, 5), (0.03, 2)])
def test_parent_of_rattled_methane_is_td_over_a_plateau(amplitude, seed):
    atoms = rattled(molecule("CH4"), amplitude, seed)
    assert point_group_of(atoms, symprec=1e-3).schoenflies == "C1"  # no exact symmetry
    parent = parent_group_of(atoms)
    assert parent.group.schoenflies == "Td", str(parent)
    low, high = parent.symprec_range
    assert high / low >= 3
    assert amplitude <= low <= 5 * amplitude  # the plateau starts at the measured displacement
    text = str(parent)
    assert "Td" in text and "symprec" in text and len(text.splitlines()) > len(parent.scan)


def test_parent_of_rattled_slab_and_crystal():
    slab = rattled(fcc111("Cu", size=(2, 2, 3), vacuum=5.0), 0.02, 3)
    assert parent_group_of(slab).group.schoenflies == "D3d"
    crystal = rattled(bulk("Cu", "fcc", a=3.6, cubic=True), 0.02, 4)
    assert parent_group_of(crystal).group.schoenflies == "Oh"


def test_random_cluster_has_no_symmetry():
    parent = parent_group_of(random_cluster())
    assert parent.group.schoenflies == "C1"
    assert not parent.has_symmetry
    assert "no symmetry" in parent.summary()


def test_single_atom_and_odd_electron_molecules():
    assert parent_group_of(Atoms("Cu")).group.schoenflies == "O3"
    assert point_group_of(Atoms("Cu")).schoenflies == "O3"
    no = Atoms("NO", positions=[[0, 0, 0], [0, 0, 1.15]])
    assert point_group_of(no).schoenflies == "Cinfv"
    methyl = Atoms("CH3", positions=[[0, 0, 0], [1.08, 0, 0], [-0.54, 0.935, 0], [-0.54, -0.935, 0]])
    assert parent_group_of(methyl).group.schoenflies == "D3h"


def test_fixed_symprec_skips_the_scan():
    parent = parent_group_of(molecule("NH3"), symprec=0.01)
    assert parent.group.schoenflies == "C3v" and len(parent.scan) == 1


# ---------------------------------------------------------------------------------------- check
@pytest.mark.parametrize("amplitude", [0.01, 0.03])
def test_check_parent_rms_scales_with_the_rattle(amplitude):
    ideal = molecule("CH4")
    assert check_parent("Td", ideal, tol=1e-10).rms.max() < 1e-10
    structures = [rattled(ideal, amplitude, seed) for seed in range(4)]
    result = check_parent("Td", structures, tol=1.0)
    assert result.passed and result.rms.shape == (4,)
    # independent Gaussian noise on image and target: rms ~ sqrt(6) a
    assert np.all(result.rms > 1.0 * amplitude) and np.all(result.rms < 4.5 * amplitude)
    flagged = check_parent("Td", structures, tol=0.5 * amplitude, raise_error=False)
    assert not flagged.passed and list(flagged.failed) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="not a symmetry"):
        check_parent("Td", structures, tol=0.5 * amplitude)


def test_check_parent_rejects_a_wrong_parent():
    ch4 = molecule("CH4")
    result = check_parent("Oh", ch4, raise_error=False)
    assert not result.passed and result.rms[0] > 0.5
    assert result.worst[0].startswith(("C4", "S", "σ", "i"))  # an element of Oh outside Td
    assert not check_parent("O3", ch4, raise_error=False).passed


def test_check_parent_on_crystals_uses_the_best_translation():
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=5.0)
    # the inversion centre is the middle layer, not the lattice origin: a translation is needed
    assert check_parent("D3d", slab, tol=1e-8).passed
    shaken = [rattled(slab, 0.02, seed) for seed in range(2)]
    rms = check_parent("D3d", shaken, tol=0.2).rms
    assert np.all(rms > 0.02) and np.all(rms < 0.1)
    assert not check_parent("Oh", slab, raise_error=False).passed  # not even the lattice is cubic
    cubic = bulk("Cu", "fcc", a=3.6, cubic=True)
    assert check_parent("Oh", cubic, tol=1e-8).passed
    assert check_parent("Oh", rattled(cubic, 0.02, 1), tol=0.15).passed


def test_check_parent_continuous_groups():
    co2 = Atoms("OCO", positions=[[0, 0, -1.16], [0, 0, 0], [0, 0, 1.16]])
    assert check_parent("Dinfh", co2, tol=1e-8).passed
    assert not check_parent("Dinfh", molecule("NH3"), raise_error=False).passed
    assert check_parent("O3", Atoms("Ar"), tol=1e-12).passed
    elements = check_elements(point_group("Cinfv"), num_samples=5)
    assert elements.shape[0] > 5  # sampled elements plus mirrors and finite rotations
    assert point_group("Cinfv").contains(elements).all()


def test_check_parent_bad_input():
    with pytest.raises(ValueError, match="structures"):
        check_parent("Td", [])
    with pytest.raises(TypeError, match="structures"):
        check_parent("Td", [np.zeros((3, 3))])
    with pytest.raises(ValueError, match="tol"):
        check_parent("Td", molecule("CH4"), tol=-1)
    with pytest.raises(ValueError, match="centre"):
        check_parent("Oh", bulk("Cu"), centre=[0, 0, 0])
    with pytest.raises(ValueError):
        check_parent("Q7", molecule("CH4"))
    with pytest.raises(ValueError, match="symprec"):
        parent_group_of(molecule("CH4"), symprec=-0.1)
    with pytest.raises(ValueError, match="max_symprec"):
        parent_group_of(molecule("CH4"), min_symprec=0.1, max_symprec=0.01)
    with pytest.raises(ValueError, match="no atoms"):
        parent_group_of(Atoms())
