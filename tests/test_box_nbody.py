"""The box n-body simulator: walls, symmetry group, G-equivariance of the dynamics."""
import math

import numpy as np
import pytest

from relaxed_e3nn.data.generators import GENERATORS
from relaxed_e3nn.data.generators._box_nbody import (
    BoxDynamicsData,
    box_nbody,
    box_point_group,
    simulate_box_nbody,
)
from relaxed_e3nn.discrete import fully_connected_batch
from relaxed_e3nn.groups import point_group


def _initial(n_samples, n_bodies, half_widths, seed, planar=False):
    rng = np.random.default_rng(seed)
    widths = np.array(half_widths, dtype=float)
    pos = rng.uniform(-1, 1, size=(n_samples, n_bodies, 3)) * widths * 0.9
    vel = rng.normal(size=(n_samples, n_bodies, 3))
    if planar:
        pos[..., 2] = 0.0
        vel[..., 2] = 0.0
    charges = rng.choice([-1.0, 1.0], size=(n_samples, n_bodies))
    return pos, vel, charges


@pytest.mark.parametrize(
    "widths, planar, name, axis",
    [
        ((5, 5, 5), False, "Oh", 2),
        ((5, 4, 4), False, "D4h", 0),
        ((4, 5, 4), False, "D4h", 1),
        ((4, 4, 3), False, "D4h", 2),
        ((5, 4, 3), False, "D2h", 2),
        ((5, math.inf, math.inf), False, "D4h", 0),
        ((4, 4), True, "C4v", 2),
        ((5, 4), True, "C2v", 2),
        ((math.inf, 4), True, "C2v", 2),
    ],
)
def test_group_from_box_shape(widths, planar, name, axis):
    group_name, frame = box_point_group(widths, planar=planar)
    assert group_name == name
    assert np.allclose(frame @ np.array([0.0, 0.0, 1.0]), np.eye(3)[axis])  # principal axis
    assert np.isclose(np.linalg.det(frame), 1.0)


@pytest.mark.parametrize(
    "widths, interaction",
    [((5.0, 4.0, 3.0), "coulomb"), ((5.0, 5.0, 5.0), "gravity"), ((4.0, 5.0, 4.0), "coulomb")],
)
def test_simulator_is_equivariant_under_the_box_group(widths, interaction):
    """simulate(g x0, g v0) == g simulate(x0, v0) for every element, over a short horizon."""
    pos, vel, charges = _initial(3, 5, widths, seed=1)
    if interaction == "gravity":
        charges = np.abs(charges)
    steps = 300  # 0.3 time units: several wall hits at speed ~1.6 in a box of width 6..10
    ref_x, ref_v = simulate_box_nbody(pos, vel, charges, widths, steps, interaction=interaction)
    name, frame = box_point_group(widths)
    group = point_group(name, frame=frame)
    elements = group.elements.numpy()
    assert len(elements) == {"Oh": 48, "D4h": 16, "D2h": 8}[name]
    for g in elements:
        x, v = simulate_box_nbody(pos @ g.T, vel @ g.T, charges, widths, steps, interaction=interaction)
        assert np.abs(x - ref_x @ g.T).max() < 1e-9
        assert np.abs(v - ref_v @ g.T).max() < 1e-9


def test_simulator_breaks_symmetries_the_box_lacks():
    """Negative control: a 4-fold rotation about z is not a symmetry of a (5, 4, 3) box."""
    widths = (5.0, 4.0, 3.0)
    pos, vel, charges = _initial(2, 5, (3.0, 3.0, 2.5), seed=2)
    steps = 1500
    ref_x, _ = simulate_box_nbody(pos, vel, charges, widths, steps)
    c4 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    x, _ = simulate_box_nbody(pos @ c4.T, vel @ c4.T, charges, widths, steps)
    assert np.abs(x - ref_x @ c4.T).max() > 1e-2


def test_equivariance_about_an_offset_centre():
    widths, center = (5.0, 4.0, 3.0), np.array([1.0, -2.0, 0.5])
    pos, vel, charges = _initial(2, 4, widths, seed=3)
    pos = pos + center
    ref_x, _ = simulate_box_nbody(pos, vel, charges, widths, 300, center=center)
    for g in point_group("D2h").elements.numpy():
        x, _ = simulate_box_nbody(center + (pos - center) @ g.T, vel @ g.T, charges, widths, 300, center=center)
        assert np.abs(x - (center + (ref_x - center) @ g.T)).max() < 1e-9


@pytest.mark.parametrize(
    "widths, planar", [((5.0, 4.0, 3.0), False), ((2.0, 2.0, 2.0), False), ((3.0, 2.0), True), ((math.inf, 2.0, 1.5), False)]
)
def test_walls_hold(widths, planar):
    """Every recorded frame of fast particles in a small box stays inside the walls."""
    data = box_nbody(
        num_samples=6, num_bodies=5, half_widths=widths, speed=3.0, input_frame=2, target_frame=4,
        steps_per_frame=100, planar=planar, seed=4,
    )
    full = np.array(data.half_widths)
    pos, vel, charges = data.positions, data.velocities, data.charges
    sim_widths = full.copy()
    if planar:
        sim_widths[2] = np.inf
    _, _, frames, _ = simulate_box_nbody(pos, vel, charges, sim_widths, 2000, record_every=10)
    for x in (frames, data.positions, data.targets):
        assert np.all(np.abs(x) <= np.where(np.isfinite(full), full, np.inf) + 1e-12)
    if planar:
        assert np.all(frames[..., 2] == 0.0) and np.all(data.velocities[..., 2] == 0.0)
    else:
        # the walls were actually hit: some coordinate came within 5% of a finite wall
        finite = np.isfinite(full)
        assert np.any(np.abs(frames[..., finite]) > 0.95 * full[finite])


def test_energy_is_conserved_with_walls():
    """Velocity Verlet with elastic walls: total energy drifts little (checks force signs too)."""
    widths = (3.0, 3.0, 3.0)
    pos, vel, charges = _initial(4, 5, widths, seed=5)
    vel *= 0.5

    def energy(x, v):
        diff = x[:, :, None] - x[:, None]
        inv = 1.0 / np.sqrt((diff**2).sum(-1) + 0.1**2)
        iu = np.triu_indices(x.shape[1], 1)
        potential = (charges[:, :, None] * charges[:, None, :] * inv)[:, iu[0], iu[1]].sum(-1)
        return 0.5 * (v**2).sum((1, 2)) + potential

    x, v = simulate_box_nbody(pos, vel, charges, widths, 2000)
    e0, e1 = energy(pos, vel), energy(x, v)
    assert np.abs(e1 - e0).max() < 1e-3 * np.abs(e0).max() + 1e-3
    # a wrong sign of the force would not conserve the same quantity
    assert np.abs(e0).max() > 0.1


def test_box_nbody_dataset_fields_and_determinism():
    data = box_nbody(num_samples=5, half_widths=(5, 4, 3), input_frame=1, target_frame=3, seed=7)
    assert isinstance(data, BoxDynamicsData) and len(data) == 5
    assert data.positions.shape == data.velocities.shape == data.targets.shape == (5, 5, 3)
    assert data.charges.shape == (5, 5) and set(np.unique(data.charges)) <= {-1.0, 1.0}
    assert data.group_name == "D2h" and data.point_group().order == 8
    again = box_nbody(num_samples=5, half_widths=(5, 4, 3), input_frame=1, target_frame=3, seed=7)
    assert np.array_equal(again.targets, data.targets)
    other = box_nbody(num_samples=5, half_widths=(5, 4, 3), input_frame=1, target_frame=3, seed=8)
    assert not np.allclose(other.targets, data.targets)
    # targets are the continuation of the inputs
    x, _ = simulate_box_nbody(data.positions, data.velocities, data.charges, data.half_widths, 200)
    assert np.allclose(x, data.targets, atol=1e-12)
    part = data.subset(slice(1, 3))
    assert len(part) == 2 and np.array_equal(part.targets, data.targets[1:3])
    prism = box_nbody(num_samples=2, half_widths=(5, 4, 4), input_frame=1, target_frame=2)
    axis = prism.point_group().elements.numpy()
    # the 4-fold axis of the (5, 4, 4) box is x: a 90 degree rotation about x is in the group
    c4x = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    assert np.abs(axis - c4x).max(axis=(1, 2)).min() < 1e-12


def test_generators_registry_returns_atoms():
    structures = GENERATORS["box_nbody"](num_samples=3, seed=0, input_frame=1, target_frame=2, half_widths=(4, 4, 4))
    assert len(structures) == 3
    atoms = structures[0]
    assert atoms.info["parent_group"] == "Oh" and atoms.arrays["target_positions"].shape == (5, 3)
    assert np.allclose(atoms.get_velocities(), atoms.get_velocities())  # readable
    assert atoms.get_initial_charges().shape == (5,)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(half_widths=(5, 4)), "half_widths"),
        (dict(half_widths=(5, -1, 3)), "half_widths"),
        (dict(half_widths=(math.inf, math.inf, math.inf)), "finite"),
        (dict(interaction="yukawa"), "interaction"),
        (dict(input_frame=3, target_frame=3), "input_frame"),
        (dict(num_bodies=1), "num_bodies"),
    ],
)
def test_box_nbody_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        box_nbody(num_samples=2, **kwargs)


def test_simulator_rejects_particles_outside_the_box():
    with pytest.raises(ValueError, match="inside the box"):
        simulate_box_nbody(np.full((1, 2, 3), 9.0), np.zeros((1, 2, 3)), np.ones((1, 2)), (5, 4, 3), 1)
    with pytest.raises(ValueError, match="finite"):
        simulate_box_nbody(np.full((1, 2, 3), np.nan), np.zeros((1, 2, 3)), np.ones((1, 2)), (5, 4, 3), 1)


def test_deprecated_n_samples_and_n_bodies():
    with pytest.warns(DeprecationWarning, match="deprecated; use"):
        old = box_nbody(n_samples=2, n_bodies=3, input_frame=1, target_frame=2)
    new = box_nbody(num_samples=2, num_bodies=3, input_frame=1, target_frame=2)
    assert np.array_equal(old.positions, new.positions) and old.positions.shape == (2, 3, 3)
    with pytest.warns(DeprecationWarning, match="deprecated; use"):
        src, dst, batch = fully_connected_batch(n_systems=2, n_bodies=3)
    assert [t.tolist() for t in (src, dst, batch)] == [t.tolist() for t in fully_connected_batch(2, 3)]


def test_clustered_preset_has_close_encounters_in_its_test_split():
    """The hard regime: >= 1% of the test inputs (the last 200 of 600) hold a pair closer than 0.05."""
    from relaxed_e3nn.data.generators import box_nbody_preset

    data = box_nbody_preset("clustered", num_samples=600, seed=0)
    assert data.group_name == "D2h" and data.target_time == pytest.approx(0.5)
    diff = data.positions[:, :, None] - data.positions[:, None]
    distance = np.linalg.norm(diff, axis=-1) + np.eye(5) * 1e9
    closest = distance.min(axis=(1, 2))
    assert (closest[400:] < 0.05).mean() >= 0.01
    assert np.all(np.abs(data.positions) <= data.half_widths + 1e-9)
    again = box_nbody_preset("clustered", num_samples=600, seed=0)
    assert np.array_equal(again.targets, data.targets)
    with pytest.raises(ValueError, match="name must be one of"):
        box_nbody_preset("gentle")
    with pytest.raises(ValueError, match="init must be one of"):
        box_nbody(num_samples=2, init="lattice")


def test_from_arrays_checks_shapes_and_the_box():
    data = box_nbody(num_samples=3, input_frame=1, target_frame=2)
    arrays = dict(positions=data.positions, velocities=data.velocities, charges=data.charges,
                  target_positions=data.targets, half_widths=data.half_widths, dt=0.1)
    made = BoxDynamicsData.from_arrays(**arrays, masses=np.ones((3, 5)))
    assert made.target_time == 0.1 and made.subset(slice(0, 2)).masses.shape == (2, 5)
    with pytest.raises(ValueError, match=r"charges must have shape \(3, 5\)"):
        BoxDynamicsData.from_arrays(**{**arrays, "charges": data.charges[:, :4]})
    with pytest.raises(ValueError, match="positions must lie inside the box"):
        BoxDynamicsData.from_arrays(**{**arrays, "positions": data.positions + 100})
    with pytest.raises(ValueError, match="masses must be positive"):
        BoxDynamicsData.from_arrays(**arrays, masses=-np.ones((3, 5)))
