"""Symmetry discovery end to end: generators -> relaxed models -> residual group.

Every model here is tiny, seeded, trained full-batch in float64 with the package optimizer
(``make_optimizer``: Adam on ordinary weights, the default equivariant ``irrep_adam`` on θ), and
shared across tests through module-scoped fixtures.
"""
import numpy as np
import pytest
import torch
from ase.data import atomic_numbers

from relaxed_e3nn.data import collate, from_ase
from relaxed_e3nn.data.generators import (
    PEROVSKITE_PHASES, field_md, lorentz, perovskite_compositions, perovskite_distortion, shape_deformation,
)
from relaxed_e3nn.groups import point_group
from relaxed_e3nn.models import RelaxedNetwork, RelaxedNetworkConfig
from relaxed_e3nn.nn import make_optimizer, relaxed_parameters
from relaxed_e3nn.symmetry import residual_group

PEROVSKITE_CUTOFF = 3.5  # B-O and A-O bonds; locality is what lets unseen A/B combinations generalise
PEROVSKITE_SPECIES = sorted({atomic_numbers[s] for pair in sum(perovskite_compositions(), []) for s in pair} | {8})


class _float64:
    """Train and analyse in float64 (exactness of the symmetry checks), restoring the default after."""

    def __enter__(self):
        self.old = torch.get_default_dtype()
        torch.set_default_dtype(torch.float64)

    def __exit__(self, *exc):
        torch.set_default_dtype(self.old)


def _batch(structures, cutoff, **keys):
    return collate([from_ase(a, cutoff, dtype=torch.get_default_dtype(), **keys) for a in structures])


def _fit(model, loss_fn, steps, lr, optimizer=None):
    optimizer = make_optimizer(model, lr) if optimizer is None else optimizer
    for _ in range(steps):
        optimizer.zero_grad()
        loss = loss_fn(model)
        loss.backward()
        optimizer.step()
    return float(loss.detach())


def _relative_mse(prediction, target):
    return float(((prediction - target) ** 2).mean() / (target ** 2).mean())


def _theta_blocks(model, ir):
    """The ``ir`` blocks (one row per copy) of every relaxed weight, per layer."""
    from e3nn import o3

    rows = []
    for _, irreps, theta in relaxed_parameters(model):
        theta = theta.detach()
        for mul_ir, sl in zip(o3.Irreps(irreps), o3.Irreps(irreps).slices()):
            if mul_ir.ir == o3.Irrep(ir):
                rows.append(theta[sl].reshape(mul_ir.mul, mul_ir.ir.dim))
    return torch.cat(rows)


def _perovskite_model(relaxed):
    model = RelaxedNetwork(RelaxedNetworkConfig(
        species=PEROVSKITE_SPECIES, cutoff=PEROVSKITE_CUTOFF, output="node", irreps_out="1o", num_layers=1,
        irreps_hidden="8x0e+4x1o+2x2e", lmax=2, irreps_relaxed=2, relaxed=relaxed,
        num_radial_basis=6, radial_neurons=16, num_neighbors=10.0,
    ))
    model.set_scale(0.05)
    return model


# ----------------------------------------------------------------------------- Curie: strict = 0
def test_strict_model_predicts_zero_displacement_at_centrosymmetric_sites(dtype, float_tolerance):
    torch.manual_seed(1)
    model = _perovskite_model(relaxed=False)
    cells = perovskite_distortion(num_samples=4, seed=2, split="all", supercells=(1, 2))
    ideal = model(_batch(cells, PEROVSKITE_CUTOFF))["node_output"]
    rattled_cells = [a.copy() for a in cells]
    for a in rattled_cells:
        a.rattle(0.05, seed=3)
    rattled = model(_batch(rattled_cells, PEROVSKITE_CUTOFF))["node_output"]
    scale = rattled.abs().max()
    # negative control: without the inversion centres the same model gives displacements
    # (a typical size for its random weights and output scale 0.05)
    assert scale > 1e-5
    assert ideal.abs().max() <= float_tolerance * scale


# ----------------------------------------------------------------------------- perovskites
@pytest.fixture(scope="module", params=list(PEROVSKITE_PHASES))
def perovskite_run(request):
    phase = request.param
    with _float64():
        torch.manual_seed(0)
        train = perovskite_distortion(num_samples=48, seed=0, phase=phase, split="train", supercells=(1,))
        test = perovskite_distortion(num_samples=24, seed=1, phase=phase, split="test", supercells=(1, 2))
        keys = dict(node_targets=("displacements",))
        train_batch, test_batch = _batch(train, PEROVSKITE_CUTOFF, **keys), _batch(test, PEROVSKITE_CUTOFF, **keys)
        y = train_batch.node_targets["displacements"]

        def loss_fn(model):
            return ((model(train_batch)["node_output"] - y) ** 2).mean() / (y ** 2).mean()

        runs = {}
        for relaxed in (True, False):
            torch.manual_seed(0)
            model = _perovskite_model(relaxed)
            _fit(model, loss_fn, steps=120 if relaxed else 10, lr=2e-2)
            with torch.no_grad():
                prediction = model(test_batch)["node_output"]
            runs[relaxed] = (model, _relative_mse(prediction, test_batch.node_targets["displacements"]))
        yield phase, runs


@pytest.mark.slow
def test_perovskite_relaxed_beats_strict_on_held_out_compositions(perovskite_run):
    phase, runs = perovskite_run
    (_, relaxed_error), (_, strict_error) = runs[True], runs[False]
    assert strict_error == pytest.approx(1.0, abs=1e-12)  # it can only predict zero
    assert relaxed_error < 0.05, (phase, relaxed_error)


@pytest.mark.slow
def test_perovskite_residual_group_is_the_polar_phase(perovskite_run):
    phase, runs = perovskite_run
    axis_int, expected, _ = PEROVSKITE_PHASES[phase]
    axis = torch.tensor(axis_int, dtype=torch.float64)
    axis = axis / axis.norm()
    with _float64():
        group = residual_group(runs[True][0], within="Oh")
        unrestricted = residual_group(runs[True][0])
    assert group.schoenflies == expected
    assert abs(float(group.principal_axis @ axis)) > 1 - 1e-9
    # θ alone: a polar axis (1o, and l=2 parts invariant under the polar group), C∞v or the polar
    # group itself (for [011] the cubic environment lets 2e carry C2v-only parts); Oh cuts it to the
    # crystal's polar group
    assert unrestricted.schoenflies in ("Cinfv", expected)
    assert abs(float(unrestricted.principal_axis @ axis)) > 1 - 1e-9


# ----------------------------------------------------------------------------- field_md
def _field_model(symmetrize):
    field = np.array([0.0, 0.6, 0.8])
    with _float64():
        torch.manual_seed(0)
        # the same number of structures either way: 6 snapshots x 8 images, or 48 snapshots
        snapshots = field_md(num_samples=6 if symmetrize else 48, seed=0, field=field, frames_per_trajectory=3,
                             equilibration=10, stride=5, symmetrize=symmetrize)
        batch = _batch(snapshots, 6.0, node_features=("charges",), energy_key="REF_energy",
                       forces_key="REF_forces")
        energy, forces = batch.graph_targets["energy"], batch.node_targets["forces"]
        atoms_per_graph = torch.bincount(batch.batch).to(energy.dtype)
        config = RelaxedNetworkConfig(
            species=[29, 79], cutoff=6.0, output="energy", num_layers=1, irreps_hidden="8x0e+4x1o+2x2e",
            lmax=2, irreps_relaxed=2, node_features={"charges": "0e"}, num_radial_basis=6, radial_neurons=16,
            num_neighbors=7.0,
        )
        model = RelaxedNetwork(config)
        model.set_atomic_energies([float(energy.mean() / atoms_per_graph.mean())] * 2)

        def loss_fn(model):
            out = model(batch, compute_forces=True)
            e_loss = (((out["energy"] - energy) / atoms_per_graph) ** 2).mean()
            return e_loss / energy.var() * atoms_per_graph.mean() ** 2 + ((out["forces"] - forces) ** 2).mean() \
                / (forces ** 2).mean()

        model.train()
        first = float(loss_fn(model).detach())
        last = _fit(model, loss_fn, steps=30, lr=1e-2)
        model.eval()
    return model, field / np.linalg.norm(field), first, last


@pytest.fixture(scope="module")
def field_model():
    return _field_model(symmetrize=True)


@pytest.mark.slow
def test_field_md_residual_group_is_cinfv_about_the_field(field_model):
    model, axis, first, last = field_model
    assert last < first
    with _float64():
        group = residual_group(model)
    assert group.schoenflies == "Cinfv"
    assert abs(float(group.principal_axis @ torch.as_tensor(axis))) > 1 - 1e-9
    polar = _theta_blocks(model, "1o")
    assert polar.norm() > 1e-3  # the field is learned, not merely allowed


@pytest.mark.slow
def test_field_md_without_symmetrization_meets_cinfv_only_on_average():
    """Negative control: generic snapshots are symmetric only statistically; 48 of them leave θ noisy."""
    model, axis, first, last = _field_model(symmetrize=False)
    assert last < first
    with _float64():
        group = residual_group(model)
    assert group.schoenflies != "Cinfv"


# ----------------------------------------------------------------------------- lorentz
def _lorentz_model(E, B, steps=150):
    with _float64():
        torch.manual_seed(0)
        samples = lorentz(num_samples=12, seed=0, E=E, B=B, coulomb=0.1, symmetrize=True)
        batch = _batch(samples, 8.0, node_features=("velocities", "charges", "masses"),
                       node_targets=("accelerations",))
        y = batch.node_targets["accelerations"]
        config = RelaxedNetworkConfig(
            species=[1], cutoff=8.0, output="node", irreps_out="1o", num_layers=1,
            irreps_hidden="8x0e+4x1o+4x1e", lmax=1, irreps_relaxed="0e+1o+1e", relax_at="node",
            node_features={"velocities": "1o", "charges": "0e", "masses": "0e"},
            num_radial_basis=4, radial_neurons=8, num_neighbors=4.0,
        )
        model = RelaxedNetwork(config)

        def loss_fn(model):
            return ((model(batch)["node_output"] - y) ** 2).mean() / (y ** 2).mean()

        first = float(loss_fn(model).detach())
        last = _fit(model, loss_fn, steps=steps, lr=2e-2)
    return model, first, last


def _cosines(blocks, direction):
    direction = torch.as_tensor(direction, dtype=blocks.dtype)
    direction = direction / direction.norm()
    return (blocks @ direction).abs() / blocks.norm(dim=1)


@pytest.fixture(scope="module")
def lorentz_parallel():
    return _lorentz_model(E=(0.0, 0.0, 1.0), B=(0.0, 0.0, 1.5))


@pytest.fixture(scope="module")
def lorentz_crossed():
    return _lorentz_model(E=(1.0, 0.0, 0.0), B=(0.0, 1.0, 0.0))


@pytest.mark.slow
def test_lorentz_parallel_fields_polar_along_E_axial_along_B(lorentz_parallel):
    model, first, last = lorentz_parallel
    assert last < 0.2 * first
    polar, axial = _theta_blocks(model, "1o"), _theta_blocks(model, "1e")
    assert polar.norm(dim=1).min() > 1e-2 and axial.norm(dim=1).min() > 1e-2
    assert _cosines(polar, [0, 0, 1]).min() > 0.99
    assert _cosines(axial, [0, 0, 1]).min() > 0.99
    with _float64():
        group = residual_group(model)
    assert group.schoenflies == "Cinf"  # a polar and an axial vector on one axis: rotations only


@pytest.mark.slow
def test_lorentz_crossed_fields_axial_along_B_and_mirror_kept(lorentz_crossed):
    model, first, last = lorentz_crossed
    assert last < 0.2 * first
    E, B = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    polar, axial = _theta_blocks(model, "1o"), _theta_blocks(model, "1e")
    assert axial.norm(dim=1).min() > 1e-2
    assert _cosines(axial, B).min() > 0.99
    # Cs (mirror normal to B) leaves every polar vector in the E-(E x B) plane invariant, so the
    # 1o weights are confined to that plane, though not necessarily along E within it
    assert _cosines(polar, B).max() < 1e-8
    assert float((polar @ torch.as_tensor(E)).abs().max()) > 1e-2
    with _float64():
        group = residual_group(model)
    assert group.schoenflies == "Cs"
    assert abs(float(group.principal_axis @ torch.as_tensor(B))) > 1 - 1e-9


# ----------------------------------------------------------------------------- shape deformation
def _shape_model(target, target_key, irreps_out, steps, plain_adam=False):
    with _float64():
        torch.manual_seed(0)
        samples = shape_deformation(num_samples=6, seed=0, target=target, lmax=4)
        batch = _batch(samples, 6.0, node_targets=(target_key,))
        y = batch.node_targets[target_key]
        config = RelaxedNetworkConfig(
            species=[6], cutoff=6.0, output="node", irreps_out=irreps_out, num_layers=1,
            irreps_hidden="8x0e+4x1o+4x2e+2x4e", lmax=4, irreps_relaxed=4,
            num_radial_basis=4, radial_neurons=8, num_neighbors=7.0,
        )
        model = RelaxedNetwork(config)

        def loss_fn(model):
            return ((model(batch)["node_output"] - y) ** 2).mean() / (y ** 2).mean()

        first = float(loss_fn(model).detach())
        optimizer = torch.optim.Adam(model.parameters(), lr=2e-2) if plain_adam else None
        last = _fit(model, loss_fn, steps=steps, lr=2e-2, optimizer=optimizer)
    return model, first, last


@pytest.mark.slow
def test_shape_cube_to_prism_breaks_only_by_2e_and_4e():
    from e3nn import o3

    model, first, last = _shape_model("prism", "displacements", "1o", steps=60)
    assert last < 0.1 * first
    with _float64():
        group = residual_group(model, within="Oh")
        d4h_4e = point_group("D4h").invariant_projector("4e", dtype=torch.float64)
        y2_z = o3.spherical_harmonics(2, torch.tensor([0.0, 0.0, 1.0]), normalize=True)
    assert group.schoenflies == "D4h"
    assert abs(float(group.principal_axis[2])) > 1 - 1e-9
    for ir in ("0o", "1o", "1e", "2o", "3o", "3e", "4o"):
        assert float(_theta_blocks(model, ir).abs().max()) < 1e-12, ir  # Curie: odd and l=1,3 never move
    quadrupole = _theta_blocks(model, "2e")
    assert quadrupole.norm(dim=1).min() > 1e-3
    assert _cosines(quadrupole, y2_z).min() > 1 - 1e-9  # along the stretch axis
    hexadecapole = _theta_blocks(model, "4e")
    assert torch.allclose(hexadecapole @ d4h_4e.T, hexadecapole, atol=1e-12)


@pytest.mark.slow
def test_shape_cube_to_cube_keeps_oh():
    model, first, last = _shape_model("cube", "signal", "0e+1o+2e+3o+4e", steps=40)
    assert last < first
    with _float64():
        assert residual_group(model, within="Oh").schoenflies == "Oh"
        oh_4e = point_group("Oh").invariant_projector("4e", dtype=torch.float64)
    hexadecapole = _theta_blocks(model, "4e")  # only the cubic harmonic may appear
    assert torch.allclose(hexadecapole @ oh_4e.T, hexadecapole, atol=1e-12)
    for ir in ("1o", "1e", "2e", "3o"):
        assert float(_theta_blocks(model, ir).abs().max()) < 1e-12, ir


@pytest.mark.slow
def test_plain_adam_on_theta_breaks_curie():
    """Negative control: per-element Adam on θ leaves the D4h-invariant subspace on the same data."""
    model, first, last = _shape_model("prism", "displacements", "1o", steps=30, plain_adam=True)
    with _float64():
        group = residual_group(model, within="Oh")
    assert group.schoenflies != "D4h" and group.is_subgroup_of(point_group("D4h"))
    assert max(float(_theta_blocks(model, ir).abs().max()) for ir in ("1o", "3o", "1e")) > 1e-6
