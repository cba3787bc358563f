"""Validated symmetry breaking: projection onto a group, candidate groups, and the held-out decision.

The decision tests train a tiny ``RelaxedNetwork`` (float64, seeded, full batch, the package
optimizer) on rattled CH4 in one orientation; the targets are computed here: Morse bonds (isotropic,
parent Td) plus, optionally, point charges in a uniform field along a C3 axis (physics C3v within Td).
"""
import copy
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import molecule

from relaxed_e3nn.data import collate, from_ase
from relaxed_e3nn.groups import frame_from_axes, point_group
from relaxed_e3nn.models import RelaxedNetwork, RelaxedNetworkConfig
from relaxed_e3nn.nn import make_optimizer, relaxed_parameters
from relaxed_e3nn.symmetry import (
    BreakingDecision, ThetaProjector, breaking_beyond, candidate_groups, equivariance_error, project_thetas,
    validate_breaking,
)

CUTOFF = 3.0
CHARGES = {1: 0.1, 6: -0.4}
C3_AXIS = np.ones(3) / np.sqrt(3)  # a C-H bond direction of ase's CH4


def _config(**changes):
    values = dict(species=[1, 6], cutoff=CUTOFF, output="energy", num_layers=1,
                  irreps_hidden="16x0e+4x1o+4x1e+2x2e+2x2o", lmax=2, irreps_relaxed=2, num_radial_basis=6,
                  radial_neurons=16, num_neighbors=4.0)
    values.update(changes)
    return RelaxedNetworkConfig(**values)


def _random_unit(rng):
    v = rng.normal(size=3)
    return v / np.linalg.norm(v)


def _random_rotation(rng):
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q * np.sign(np.linalg.det(q))


def _randomize_thetas(model, scale=0.5):
    with torch.no_grad():
        for _, _, theta in relaxed_parameters(model):
            theta.normal_(std=scale)


def _cluster(seed=0):
    rng = np.random.default_rng(seed)
    return Atoms([6, 1, 1, 1, 6, 1], positions=rng.uniform(-1.2, 1.2, size=(6, 3)))


def _error(model, atoms, group, dtype):
    """Relative equivariance error of (energy, forces) under ``group`` (8 elements; Haar for continuous)."""
    graph = from_ase(atoms, CUTOFF, dtype=dtype)

    def fn(pos):
        out = model(replace(graph, pos=pos), compute_forces=True)
        return out["energy"][:, None].detach(), out["forces"].detach()

    return equivariance_error(fn, [graph.pos], "cartesian_points", ["0e", "1o"], group=group, num_elements=8).max_rel


# ----------------------------------------------------------------------------- projection
def _groups(rng):
    axis = _random_unit(rng)
    normal = _random_unit(rng)
    return {
        "C3v": point_group("C3v", frame=frame_from_axes(axis, _random_unit(rng))),
        "Cs": point_group("Cs", frame=frame_from_axes(normal)),
        "Cinfv": point_group("Cinfv", frame=frame_from_axes(axis)),
    }


@pytest.mark.parametrize("name", ["C3v", "Cs", "Cinfv"])
def test_projected_model_is_exactly_equivariant(dtype, float_tolerance, name):
    rng = np.random.default_rng(1)
    group = _groups(rng)[name]
    model = RelaxedNetwork(_config(), dtype=dtype)
    _randomize_thetas(model)
    atoms = _cluster()
    assert _error(model, atoms, group, dtype) > 1e-3  # negative control: random θ breaks H
    project_thetas(model, group)
    assert _error(model, atoms, group, dtype) < 10 * float_tolerance
    assert max(breaking_beyond(model, group).values()) < float_tolerance


def test_projection_follows_the_model_frame(dtype, float_tolerance):
    rng = np.random.default_rng(2)
    frame = _random_rotation(rng)
    group = point_group("C3v", frame=frame_from_axes(_random_unit(rng), _random_unit(rng)))
    model = RelaxedNetwork(_config(frame=frame.tolist()), dtype=dtype)
    _randomize_thetas(model)
    atoms = _cluster(1)
    wrong = copy.deepcopy(model)
    project_thetas(wrong, group, frame=np.eye(3))  # ignores F: projects for H instead of F H F^T
    assert _error(wrong, atoms, group, dtype) > 1e-3
    project_thetas(model, group)  # the model's frame by default
    assert _error(model, atoms, group, dtype) < 10 * float_tolerance
    assert max(breaking_beyond(wrong, group).values()) > 1e-3
    assert max(breaking_beyond(model, group, relative=True).values()) < float_tolerance


def test_breaking_beyond_is_zero_only_inside_the_invariant_subspace():
    model = RelaxedNetwork(_config(), dtype=torch.float64)
    _randomize_thetas(model)
    norms = breaking_beyond(model, "O3")
    assert len(norms) == 2 and min(norms.values()) > 0.1
    project_thetas(model, "O3")
    assert max(breaking_beyond(model, "O3").values()) == 0.0
    for _, irreps, theta in relaxed_parameters(model):  # only the 0e scalar survives O(3)
        assert float(theta.detach()[1:].abs().max()) == 0.0 and irreps[0].ir.l == 0


def test_restricted_step_trains_the_symmetric_restriction(dtype, float_tolerance):
    """Inside ``restricted()`` the model is exactly H-equivariant; on exit θ's outside part is back and
    the gradients are projected, so a step changes only the ordinary weights and P θ."""
    group = _groups(np.random.default_rng(4))["C3v"]
    model = RelaxedNetwork(_config(), dtype=dtype)
    _randomize_thetas(model)
    atoms = _cluster(2)
    projector = ThetaProjector(model, group)
    before = [theta.detach().clone() for _, _, theta in relaxed_parameters(model)]
    assert _error(model, atoms, group, dtype) > 1e-3  # negative control
    with projector.restricted():
        assert _error(model, atoms, group, dtype) < 10 * float_tolerance
        graph = from_ase(atoms, CUTOFF, dtype=dtype)
        model(graph, compute_forces=True)["energy"].sum().backward()
    for (_, _, theta), old in zip(relaxed_parameters(model), before):
        assert torch.equal(theta.detach(), old)
    for _, _, theta, P in projector.entries:
        grad = theta.grad.to(torch.float64)
        assert float(grad.norm()) > 0
        assert float((grad - P @ grad).norm()) <= float_tolerance * float(grad.norm())
    with pytest.raises(RuntimeError, match="inside"):
        with projector.restricted():
            raise RuntimeError("inside")
    for (_, _, theta), old in zip(relaxed_parameters(model), before):  # restored after an error too
        assert torch.equal(theta.detach(), old)


def test_projection_rejects_bad_arguments():
    model = RelaxedNetwork(_config(), dtype=torch.float64)
    with pytest.raises(TypeError, match="group"):
        project_thetas(model, 3)
    with pytest.raises(ValueError, match="frame"):
        project_thetas(model, "C3v", frame=np.ones((3, 3)))
    with pytest.raises(ValueError, match="relaxed weights"):
        project_thetas(torch.nn.Linear(2, 2), "C3v")


# ----------------------------------------------------------------------------- data and training
def _targets(atoms, field):
    """Morse C-H and H-H bonds plus point charges in a uniform field: energy and forces."""
    pos = torch.tensor(atoms.positions, requires_grad=True)
    z = torch.tensor(atoms.numbers)
    r = ((pos[:, None] - pos[None]).pow(2).sum(-1) + torch.eye(len(z), dtype=pos.dtype)).sqrt()
    r0 = torch.where((z[:, None] == 6) | (z[None] == 6), 1.09, 1.78)
    i, j = torch.triu_indices(len(z), len(z), 1)
    energy = ((1 - torch.exp(-2.0 * (r - r0))) ** 2)[i, j].sum()
    q = torch.tensor([CHARGES[int(a)] for a in atoms.numbers], dtype=pos.dtype)
    energy = energy - (q[:, None] * pos * torch.as_tensor(field, dtype=pos.dtype)).sum()
    (grad,) = torch.autograd.grad(energy, pos)
    return float(energy.detach()), (-grad).numpy()


def _batch(field, n, seed):
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(n):
        atoms = molecule("CH4")
        atoms.positions += rng.normal(scale=0.03, size=atoms.positions.shape)
        atoms.info["E"], atoms.arrays["F"] = _targets(atoms, field)
        graphs.append(from_ase(atoms, CUTOFF, energy_key="E", forces_key="F", dtype=torch.float64))
    return collate(graphs)


def loss_fn(model, batch):
    """Per-structure energy (per atom, squared) plus summed squared force errors per atom."""
    out = model(batch, compute_forces=True)
    num_atoms = torch.bincount(batch.batch).to(out["energy"].dtype)
    energy = (out["energy"] - batch.graph_targets["energy"]) ** 2 / num_atoms
    forces = ((out["forces"] - batch.node_targets["forces"]) ** 2).sum(-1)
    return energy + torch.zeros_like(energy).index_add_(0, batch.batch, forces) / num_atoms


def _trained(field_strength, steps=300):
    field = field_strength * C3_AXIS
    train, heldout = _batch(field, 32, seed=0), _batch(field, 32, seed=1)
    torch.manual_seed(0)
    mean_energy = float(train.graph_targets["energy"].mean() / 5)
    model = RelaxedNetwork(_config(), dtype=torch.float64)
    model.set_atomic_energies([mean_energy, mean_energy])
    optimizer = make_optimizer(model, 1e-2)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad()
        loss_fn(model, train).mean().backward()
        optimizer.step()
    model.eval()
    return model, train, heldout


@pytest.fixture(scope="module")
def isotropic():
    model, train, heldout = _trained(0.0)
    decision = validate_breaking(model, [train], [heldout], loss_fn, parent="Td", finetune_steps=10)
    return model, train, heldout, decision


@pytest.fixture(scope="module")
def in_field():
    model, train, heldout = _trained(3.0)
    decision = validate_breaking(model, [train], [heldout], loss_fn, parent="Td", finetune_steps=10)
    return model, decision


# ----------------------------------------------------------------------------- the decision
def test_isotropic_targets_validate_the_parent(isotropic):
    model, _, heldout, decision = isotropic
    assert isinstance(decision, BreakingDecision)
    assert decision.chosen == point_group("Td") and decision.validated
    assert decision.candidates[decision.chosen_index].is_parent
    assert decision.num_structures == 32 and decision.num_blocks == 32
    assert decision.candidates[decision.chosen_index].win_frequency > 0.9
    before = [p.detach().clone() for p in model.parameters()]
    applied = decision.apply(copy.deepcopy(model))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the input model is untouched
    graph = heldout

    def fn(pos):
        out = applied(replace(graph, pos=pos), compute_forces=True)
        return out["energy"][:, None].detach(), out["forces"].detach()

    error = equivariance_error(fn, [graph.pos], "cartesian_points", ["0e", "1o"], group=point_group("Td"), num_elements=24)
    assert error.max_rel < 1e-10


def test_field_along_c3_validates_c3v_about_the_field(in_field):
    _, decision = in_field
    chosen = decision.chosen
    assert decision.validated
    assert chosen.is_subgroup_of(point_group("Td")) and chosen != point_group("Td")
    assert point_group("C3v", frame=frame_from_axes(C3_AXIS)).is_subgroup_of(chosen)
    assert abs(float(chosen.principal_axis.numpy() @ C3_AXIS)) >= 0.99
    parent = next(c for c in decision.candidates if c.is_parent)
    assert not parent.accepted and parent.relative_excess > 1.0  # the field is real: Td costs a lot


def test_decision_reports(in_field):
    _, decision = in_field
    record = json.loads(json.dumps(decision.to_dict()))
    assert record["chosen"]["group"] == decision.chosen.schoenflies
    assert record["margin"] == 0.05 and len(record["candidates"]) == len(decision.candidates)
    assert abs(sum(c["win_frequency"] for c in record["candidates"]) - 1) < 1e-12
    summary = decision.summary()
    assert summary.startswith("C1 at 0.001") and "validated: C3v about [1 1 1]" in summary and "at 95%" in summary
    assert "<- chosen" in decision.table()


def test_candidates_are_ordered_by_inclusion_and_merged(in_field):
    model, _ = in_field
    candidates = candidate_groups(model, "Td")
    assert candidates[0].is_parent
    counts = [c.num_invariants for c in candidates]
    assert counts == sorted(counts) and len(set(counts)) == len(counts)
    for k, a in enumerate(candidates):  # a later candidate never contains an earlier one
        assert not any(a.group.is_subgroup_of(b.group) for b in candidates[k + 1:])
    tightest = [c for c in candidates if 1e-3 in c.tolerances]
    assert len(tightest) == 1
    assert len(candidates) <= 8


def test_candidates_follow_the_model_frame():
    """A rotated frame: θ = R θ_0 in the model frame gives the candidates of θ_0 carried by R^T."""
    model = RelaxedNetwork(_config(irreps_relaxed="0e+1o"), dtype=torch.float64)
    axis = np.array([0.0, 0.6, 0.8])
    with torch.no_grad():
        for _, _, theta in relaxed_parameters(model):
            theta.copy_(torch.tensor([1.0, *axis]))
    frame = _random_rotation(np.random.default_rng(3))
    model.set_frame(frame)
    candidates = candidate_groups(model, "O3")
    groups = {c.group.schoenflies: c.group for c in candidates}
    assert set(groups) == {"O3", "Cinfv"}
    assert abs(float(groups["Cinfv"].principal_axis.numpy() @ (frame.T @ axis))) > 1 - 1e-9


def test_breaking_must_be_supported_by_the_evidence():
    """The rule puts the burden of proof on breaking: an uncertain small excess keeps the symmetry
    (lower bound within the margin even though the upper bound is not), a clear one gives it up."""
    from relaxed_e3nn.symmetry._validate import _decide, _evidence

    rng = np.random.default_rng(0)
    free = rng.uniform(0.5, 1.5, size=20)
    noisy_small = free * (1.02 + 0.3 * rng.standard_normal(20))  # +2% on average, very noisy
    clear_large = free * (1.5 + 0.05 * rng.standard_normal(20))  # +50%, consistently
    codes = np.arange(20)
    losses = np.stack([clear_large, noisy_small, free])  # most symmetric first; the last is the free model
    excess, lcb, ucb, wins = _evidence(np.abs(losses), free, codes, [0, 1, 2], 0.05, 2, 1000, 0.95, 0)
    assert lcb[0] > 0.05 and lcb[1] <= 0.05 < ucb[1]
    assert int(_decide(lcb[:, None], [0, 1, 2], 0.05, 2)[0]) == 1
    assert abs(wins.sum() - 1.0) < 1e-12 and wins[0] == 0.0


@pytest.mark.slow
def test_dose_response_moves_from_parent_to_broken_group(isotropic, in_field):
    """Field 0 -> Td; small -> the parent's cost grows; large -> C3v. The parent's excess rises with E."""
    small_model, train, heldout = _trained(0.3)
    small = validate_breaking(small_model, [train], [heldout], loss_fn, parent="Td", finetune_steps=10)
    excess = [next(c for c in d.candidates if c.is_parent).relative_excess
              for d in (isotropic[3], small, in_field[1])]
    assert excess[0] < excess[1] < excess[2]
    assert isotropic[3].chosen == point_group("Td")
    assert in_field[1].chosen.schoenflies == "C3v"


# ----------------------------------------------------------------------------- bad input
def test_bad_inputs_raise_clear_errors(isotropic):
    model, train, heldout, _ = isotropic
    with pytest.raises(ValueError, match="1-D tensor of per-structure losses"):
        validate_breaking(model, [train], [heldout], lambda m, b: loss_fn(m, b).mean(), parent="Td",
                          finetune_steps=1, num_bootstrap=10)
    for margin in (0.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match="margin"):
            validate_breaking(model, [train], [heldout], loss_fn, parent="Td", margin=margin)
    with pytest.raises(ValueError, match="heldout_batches is empty"):
        validate_breaking(model, [train], [], loss_fn, parent="Td")
    with pytest.raises(ValueError, match="train_batches is empty"):
        validate_breaking(model, [], [heldout], loss_fn, parent="Td", finetune_steps=5)
    with pytest.raises(ValueError, match="block_ids"):
        validate_breaking(model, [train], [heldout], loss_fn, parent="Td", finetune_steps=0, block_ids=[0, 1])
    with pytest.raises(TypeError, match="parent"):
        validate_breaking(model, [train], [heldout], loss_fn, parent=None)
    with pytest.raises(ValueError, match="confidence"):
        validate_breaking(model, [train], [heldout], loss_fn, parent="Td", confidence=1.5)
    with pytest.raises(ValueError, match="tols"):
        candidate_groups(model, "Td", tols=[0.0, 0.1])
