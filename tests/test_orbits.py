"""Symmetrised datasets: images under a finite group, and splits and batches that keep orbits whole."""
import numpy as np
import pytest
from ase.build import bulk, molecule
from ase.calculators.singlepoint import SinglePointCalculator

from relaxed_e3nn.data import orbit_batches, orbit_ids_of, orbit_split, symmetrize
from relaxed_e3nn.data.generators import lorentz
from relaxed_e3nn.groups import frame_from_axes, point_group
from relaxed_e3nn.train import epoch_permutation


def labelled_water(seed=0):
    rng = np.random.default_rng(seed)
    atoms = molecule("H2O")
    atoms.positions += rng.normal(scale=0.05, size=(3, 3))
    atoms.info.update({"REF_energy": -14.2, "E_field": np.array([0.3, -0.1, 0.2]),
                       "B_field": np.array([0.0, 0.5, 1.0]), "REF_stress": rng.normal(size=6), "label": "w"})
    atoms.arrays["REF_forces"] = rng.normal(size=(3, 3))
    atoms.arrays["polarizability"] = rng.normal(size=(3, 3, 3))
    atoms.calc = SinglePointCalculator(atoms, energy=-14.0, forces=rng.normal(size=(3, 3)),
                                       stress=rng.normal(size=6))
    return atoms


def voigt_to_matrix(v):
    xx, yy, zz, yz, xz, xy = v
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def test_symmetrize_transforms_every_quantity_by_its_kind():
    # a mirror whose normal is not a coordinate axis, plus the C2 about the other axis
    group = point_group("C2v", frame=frame_from_axes([1.0, 1.0, 0.3], [0.2, -0.1, 1.0]))
    atoms = labelled_water()
    images = symmetrize([atoms], group)
    assert len(images) == group.order
    centre = atoms.get_center_of_mass()
    for g, image in zip(group.elements.numpy(), images):
        det = np.linalg.det(g)
        np.testing.assert_allclose(image.positions - centre, (atoms.positions - centre) @ g.T, atol=1e-12)
        np.testing.assert_allclose(image.arrays["REF_forces"], atoms.arrays["REF_forces"] @ g.T, atol=1e-12)
        np.testing.assert_allclose(image.info["E_field"], g @ atoms.info["E_field"], atol=1e-12)
        np.testing.assert_allclose(image.info["B_field"], det * g @ atoms.info["B_field"], atol=1e-12)
        stress = voigt_to_matrix(image.info["REF_stress"])
        np.testing.assert_allclose(stress, g @ voigt_to_matrix(atoms.info["REF_stress"]) @ g.T, atol=1e-12)
        np.testing.assert_allclose(image.arrays["polarizability"],
                                   np.einsum("ij,njk,lk->nil", g, atoms.arrays["polarizability"], g), atol=1e-12)
        np.testing.assert_allclose(image.calc.results["forces"], atoms.calc.results["forces"] @ g.T, atol=1e-12)
        calc_stress = voigt_to_matrix(image.calc.results["stress"])
        np.testing.assert_allclose(calc_stress, g @ voigt_to_matrix(atoms.calc.results["stress"]) @ g.T, atol=1e-12)
        assert image.info["REF_energy"] == atoms.info["REF_energy"]
        assert image.calc.results["energy"] == atoms.calc.results["energy"]
        assert image.info["label"] == "w" and image.info["orbit_id"] == 0
    np.testing.assert_allclose(images[0].positions, atoms.positions, atol=1e-12)  # identity first
    assert "orbit_id" not in atoms.info  # the input is left alone


def test_symmetrize_periodic_cells_rotate_about_the_origin():
    crystal = bulk("Cu", "fcc", a=3.6) * (2, 1, 1)
    crystal.positions[0] += [0.05, -0.02, 0.03]
    images = symmetrize([crystal], "C4v")
    for g, image in zip(point_group("C4v").elements.numpy(), images):
        np.testing.assert_allclose(image.cell.array, crystal.cell.array @ g.T, atol=1e-12)
        np.testing.assert_allclose(image.positions, crystal.positions @ g.T, atol=1e-12)
        np.testing.assert_allclose(image.get_scaled_positions(wrap=False),
                                   crystal.get_scaled_positions(wrap=False), atol=1e-12)


def test_symmetrized_dataset_is_invariant_as_a_set():
    """Applying any element to every structure permutes the dataset (positions and forces)."""
    group = point_group("D3")
    images = symmetrize([labelled_water(s) for s in range(2)], group)

    def key(positions, forces):
        return np.round(np.concatenate([positions, forces]).ravel(), 8).tobytes()

    def keys(g):
        return sorted(key((a.positions - a.get_center_of_mass()) @ g.T, a.arrays["REF_forces"] @ g.T)
                      for a in images)

    for g in group.elements.numpy():
        assert keys(g) == keys(np.eye(3))
    mirror = point_group("Cs").elements.numpy()[1]  # not in D3: the set is not invariant
    assert keys(mirror) != keys(np.eye(3))


def test_symmetrize_keeps_existing_orbits_and_names_new_ones():
    waters = [labelled_water(s) for s in range(3)]
    once = symmetrize(waters, "Cs")
    assert orbit_ids_of(once) == [0, 0, 1, 1, 2, 2]
    twice = symmetrize(once, "Ci")
    assert orbit_ids_of(twice) == [0] * 4 + [2] * 4 + [4] * 4  # the first input of each old orbit


@pytest.mark.parametrize("bad, message", [
    (np.stack([np.eye(3), 2 * np.eye(3)]), "orthogonal"),
    (np.stack([np.eye(3), point_group("C3").elements.numpy()[1]]), "group"),  # C3 without C3^2
    (point_group("C2").elements.numpy()[1:], "group"),  # no identity
    ("Cinfv", "continuous"),
    (point_group("Dinfh"), "continuous"),
])
def test_symmetrize_rejects_bad_groups(bad, message):
    with pytest.raises(ValueError, match=message):
        symmetrize([labelled_water()], bad)


def test_symmetrize_rejects_ambiguous_quantities():
    atoms = labelled_water()
    atoms.info["mystery"] = np.ones(5)
    with pytest.raises(ValueError, match="mystery"):
        symmetrize([atoms], "Cs")
    assert orbit_ids_of(symmetrize([atoms], "Cs", invariant=["mystery"])) == [0, 0]
    with pytest.raises(TypeError, match="atoms_list"):
        symmetrize(atoms, "Cs")
    with pytest.raises(ValueError, match="centre"):
        symmetrize([atoms], "Cs", centre=[0, 0])


# ---------------------------------------------------------------------------------------- orbits
def mixed_orbit_ids():
    """Orbits of sizes 4, 2 and 1 (no id), interleaved."""
    waters = [labelled_water(s) for s in range(9)]
    data = symmetrize(waters[:3], "C2v") + symmetrize(waters[3:6], "Cs") + waters[6:]
    ids = orbit_ids_of(data)
    # the two symmetrize calls both count from 0: give the second its own ids
    ids = [i if k < 12 else (None if i is None else 100 + i) for k, i in enumerate(ids)]
    order = np.random.default_rng(1).permutation(len(ids))
    return [ids[k] for k in order]


def orbits_of(ids):
    out = {}
    for index, orbit_id in enumerate(ids):
        out.setdefault(("id", orbit_id) if orbit_id is not None else ("own", index), set()).add(index)
    return list(out.values())


def assert_whole(parts, ids):
    flat = [i for p in parts for i in p]
    assert sorted(flat) == list(range(len(ids)))
    for orbit in orbits_of(ids):
        assert sum(bool(orbit & set(p)) for p in parts) == 1, orbit


def test_orbit_split_keeps_orbits_whole_and_is_deterministic():
    ids = mixed_orbit_ids()
    assert len(ids) == 12 + 6 + 3
    parts = orbit_split(ids, [0.2, 0.2], seed=3)
    assert len(parts) == 3 and all(parts)
    assert_whole(parts, ids)
    assert parts == orbit_split(ids, [0.2, 0.2], seed=3)
    for part in parts[:2]:
        assert abs(len(part) - round(0.2 * len(ids))) <= 2  # within half of the largest orbit
    assert_whole(orbit_split(ids, sizes=[5, 0, 3], seed=0), ids)
    assert orbit_split(ids, [0.0], seed=0)[0] == []


def test_orbit_split_of_singletons_is_the_trainer_split():
    n, seed = 17, 4
    order = np.random.default_rng(seed).permutation(n).tolist()
    val, test, train = orbit_split([None] * n, [0.2, 0.1], seed=seed)
    assert val == sorted(order[:3]) and test == sorted(order[3:5]) and train == sorted(order[5:])


def test_orbit_batches_keep_orbits_whole():
    ids = mixed_orbit_ids()
    for epoch in range(3):
        batches = orbit_batches(ids, 6, seed=0, epoch=epoch)
        assert_whole(batches, ids)
        assert all(len(b) <= 6 + 2 for b in batches)  # at most half the largest orbit over
    assert orbit_batches(ids, 6, seed=0, epoch=1) == orbit_batches(ids, 6, seed=0, epoch=1)
    assert orbit_batches(ids, 6, seed=0, epoch=1) != orbit_batches(ids, 6, seed=0, epoch=2)
    assert_whole(orbit_batches(ids, 1, shuffle=False), ids)


@pytest.mark.parametrize("batch_size, orbits_per_batch", [(8, 2), (6, 2), (9, 2), (10, 3), (2, 1), (1, 1)])
def test_orbit_batches_round_to_whole_orbits(batch_size, orbits_per_batch):
    ids = [k // 4 for k in range(40)]  # ten orbits of four
    batches = orbit_batches(ids, batch_size, seed=1, epoch=0)
    assert all(len(b) == 4 * orbits_per_batch for b in batches[:-1])


def test_orbit_batches_of_singletons_are_the_trainer_batches():
    n, batch_size, seed, epoch = 23, 5, 3, 2
    order = epoch_permutation(n, seed, epoch).tolist()
    expected = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    assert orbit_batches([None] * n, batch_size, seed=seed, epoch=epoch) == expected


def test_orbit_bad_input():
    with pytest.raises(ValueError, match="fractions"):
        orbit_split([None] * 10, [0.6, 0.5])
    with pytest.raises(ValueError, match="fractions"):
        orbit_split([None] * 10, [-0.1])
    with pytest.raises(ValueError, match="exactly one"):
        orbit_split([None] * 10, [0.1], sizes=[1])
    with pytest.raises(ValueError, match="sizes"):
        orbit_split([None] * 10, sizes=[11])
    with pytest.raises(ValueError, match="too few"):
        orbit_split([0] * 10, [0.1, 0.1])
    with pytest.raises(ValueError, match="batch_size"):
        orbit_batches([None] * 4, 0)
    with pytest.raises(TypeError, match="orbit_ids"):
        orbit_batches([[1], [2]], 2)
    with pytest.raises(TypeError, match="orbit_ids"):
        orbit_batches("abc", 2)


def test_generated_lorentz_data_carries_orbit_ids():
    # E ⟂ B: the residual group is Cs, so every sample comes with its mirror image
    data = lorentz(4, seed=0, E=(1.0, 0.0, 0.0), B=(0.0, 1.0, 0.0), symmetrize=True)
    ids = orbit_ids_of(data)
    assert ids == [0, 0, 1, 1, 2, 2, 3, 3]
    assert_whole(orbit_batches(ids, 3, seed=0, epoch=0), ids)
    assert_whole(orbit_split(ids, [0.25], seed=0), ids)
    plain = lorentz(3, seed=0)
    assert orbit_ids_of(plain) == [0, 1, 2]
