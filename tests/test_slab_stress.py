"""Stress of slabs: never divided by a cell volume that includes the vacuum.

A bulk cell gets sigma = W / V (eV/Å³); a slab (pbc T, T, F) gets a NaN ``"stress"`` and its
area-normalised 2-D stress P W P / A (eV/Å²) from ``surface_stress_from_virial``.
"""
import numpy as np
import pytest
import torch
from ase.build import bulk, fcc111
from ase.calculators.calculator import PropertyNotImplementedError

from _geometry import random_orthogonal
from _tolerance import tolerance
from test_models import CUTOFF, make, rel_err, transform

from relaxed_e3nn.calculators import RelaxedCalculator
from relaxed_e3nn.data import collate, from_ase
from relaxed_e3nn.models import surface_stress_from_virial
from relaxed_e3nn.train import predict


def slab(vacuum=6.0, seed=0):
    atoms = fcc111("Cu", size=(2, 2, 3), vacuum=vacuum, a=3.6)
    atoms.numbers[0] = 79
    atoms.rattle(0.05, seed=seed)
    return atoms


def _surface_stress(model, atoms, dtype):
    graph = from_ase(atoms, CUTOFF, dtype=dtype)
    out = model(graph, compute_forces=True, compute_stress=True, compute_virial=True)
    return out, surface_stress_from_virial(graph, out["virial"])


def test_slab_stress_is_excluded_and_bulk_kept():
    model = make(torch.float64)
    slab_graph, bulk_graph = from_ase(slab(), CUTOFF, dtype=torch.float64), from_ase(
        bulk("Cu", "fcc", a=3.6, cubic=True), CUTOFF, dtype=torch.float64)
    out = model(collate([slab_graph, bulk_graph]), compute_forces=True, compute_stress=True, compute_virial=True)
    assert torch.isnan(out["stress"][0]).all()
    volume = abs(float(np.linalg.det(bulk_graph.cell[0].numpy())))
    assert torch.allclose(out["stress"][1], out["virial"][1] / volume, rtol=1e-12, atol=0)
    surface = surface_stress_from_virial(collate([slab_graph, bulk_graph]), out["virial"])
    assert torch.isfinite(surface[0]).all() and torch.isnan(surface[1]).all()


def test_surface_stress_does_not_depend_on_the_vacuum():
    model = make(torch.float64)
    thin, thick = (_surface_stress(model, slab(vacuum), torch.float64) for vacuum in (5.0, 11.0))
    assert rel_err(thick[1], thin[1]) < 1e-12
    assert rel_err(thick[0]["virial"], thin[0]["virial"]) < 1e-12
    # the control: W / V of the whole cell changes with the vacuum (what a slab must not get)
    volumes = [abs(np.linalg.det(slab(v).cell[:])) for v in (5.0, 11.0)]
    assert abs(volumes[0] / volumes[1] - 1) > 0.3


def test_surface_stress_matches_finite_differences_of_in_plane_strain():
    model = make(torch.float64)
    atoms = slab()
    _, surface = _surface_stress(model, atoms, torch.float64)
    area = float(np.linalg.norm(np.cross(atoms.cell[0], atoms.cell[1])))
    h = 1e-5
    for i, j in ((0, 0), (1, 1), (0, 1)):
        energies = []
        for sign in (1, -1):
            strain = np.eye(3)
            strain[i, j] += sign * h / 2  # symmetric: a diagonal entry gets h
            strain[j, i] += sign * h / 2
            strained = atoms.copy()
            strained.set_cell(atoms.cell[:] @ strain, scale_atoms=True)
            energies.append(float(model(from_ase(strained, CUTOFF, dtype=torch.float64))["energy"].detach().sum()))
        numeric = (energies[0] - energies[1]) / (2 * h) / area
        assert numeric == pytest.approx(float(surface[0, i, j].detach()), rel=1e-6, abs=1e-9)
    assert torch.allclose(surface[0, 2], torch.zeros(3, dtype=torch.float64), atol=1e-14)  # zero along the normal


def test_surface_stress_is_equivariant(dtype):
    model = make(dtype)
    graph = from_ase(slab(), CUTOFF, dtype=dtype)
    out = model(graph, compute_virial=True)
    reference = surface_stress_from_virial(graph, out["virial"])
    tol = tolerance(dtype, "rel")
    for R in random_orthogonal(4, seed=3):  # parity included
        moved = transform(graph, R)
        rotated = surface_stress_from_virial(moved, model(moved, compute_virial=True)["virial"])
        Rt = R.to(dtype)
        assert rel_err(rotated, Rt @ reference @ Rt.T) < tol
    # negative control: an unrotated answer is not the rotated one
    R = random_orthogonal(1, seed=5)[0].to(dtype)
    moved = transform(graph, R)
    assert rel_err(surface_stress_from_virial(moved, model(moved, compute_virial=True)["virial"]), reference) > 1e-3


def test_wires_and_molecules_get_no_surface_stress():
    model = make(torch.float64)
    wire = slab()
    wire.pbc = (True, False, False)
    _, surface = _surface_stress(model, wire, torch.float64)
    out, _ = _surface_stress(model, wire, torch.float64)
    assert torch.isnan(surface).all() and torch.isnan(out["stress"]).all()


def test_calculator_and_predict_give_no_vacuum_stress():
    model = make(torch.float64)
    atoms = slab()
    atoms.calc = RelaxedCalculator(model)
    with pytest.raises(PropertyNotImplementedError, match="surface_stress_from_virial"):
        atoms.get_stress()
    assert np.isfinite(atoms.get_potential_energy())
    predicted = predict(model, [slab(), bulk("Cu", "fcc", a=3.6, cubic=True)], compute_stress=True)
    assert "stress" not in predicted[0].calc.results and "stress" in predicted[1].calc.results
