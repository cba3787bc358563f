"""Significance, tolerance floor, tolerance scan and the report's agreement, on trained models.

The trained runs fit a tiny float64 ``RelaxedNetwork`` (full batch, the package optimizer) to energies
computed here, on 4-atom clusters symmetrised by a group (every image present, so by Curie's
principle θ stays in that group's invariant subspace):

* C2v run: Morse pairs + charges in a field along z + a three-body term
  :math:`\\sum w_{ij} w_{ik} [(r_{ij}\\times r_{ik})_x r_{ik,y} + (r_{ij}\\times r_{ik})_y r_{ik,x}]`, which is
  C2v-invariant, odd under inversion and has m = ±2 about z: only a 2o θ (the C2v-invariant ``xy``
  pseudo-tensor) can express it, so the 2o block is *required* (a few % of |θ|).
* isotropic run: Morse pairs only, symmetrised by Oh (no Oh invariant with 1 <= l <= 2): nothing
  breaks beyond round-off.
"""
import math
import warnings

import numpy as np
import pytest
import torch
from ase import Atoms

from relaxed_e3nn.data import collate, from_ase
from relaxed_e3nn.groups import point_group
from relaxed_e3nn.models import RelaxedNetwork, RelaxedNetworkConfig
from relaxed_e3nn.nn import make_optimizer
from relaxed_e3nn.symmetry import (
    SymmetryReport, breaking_significance, breaking_spectrum, equivariance_error, model_equivariance_error,
    noise_floor, residual_group, scan_summary, significant_part, tolerance_scan,
)

CUTOFF = 3.0


def _energy(pos, numbers, field, twist):
    d = pos[:, None] - pos[None]
    n = len(pos)
    r = np.linalg.norm(d, axis=-1) + np.eye(n)
    off = 1 - np.eye(n)
    e = 0.5 * ((1 - np.exp(-(r - 1.2))) ** 2 * off).sum()
    e += field * (np.where(numbers == 1, 0.2, -0.4) * pos[:, 2]).sum()
    w = np.exp(-r) * off
    for i in range(n):
        for j in range(n):
            for k in range(n):
                if len({i, j, k}) == 3:
                    c, v = np.cross(d[j, i], d[k, i]), d[k, i]
                    e += twist * w[i, j] * w[i, k] * (c[0] * v[1] + c[1] * v[0])
    return e


def _dataset(group, field=0.0, twist=0.0, num=6, seed=0):
    rng = np.random.default_rng(seed)
    numbers = np.array([8, 1, 1, 1])
    out = []
    for _ in range(num):
        pos = rng.uniform(-1.1, 1.1, size=(4, 3))
        for g in point_group(group).elements.numpy():
            image = pos @ g.T
            out.append(Atoms(numbers, positions=image, info={"energy": _energy(image, numbers, field, twist)}))
    return out


def _train(structures, steps=150):
    torch.manual_seed(0)
    config = RelaxedNetworkConfig(species=[1, 8], cutoff=CUTOFF, output="energy", num_layers=1,
                                  irreps_hidden="8x0e+2x1o+2x1e+2x2e+2x2o", lmax=2, irreps_relaxed=2,
                                  num_radial_basis=6, radial_neurons=16, num_neighbors=3.0)
    model = RelaxedNetwork(config, dtype=torch.float64)
    batch = collate([from_ase(a, CUTOFF, energy_key="energy", dtype=torch.float64) for a in structures])
    optimizer = make_optimizer(model, 1e-2)
    for _ in range(steps):
        optimizer.zero_grad()
        loss = ((model(batch)["energy"] - batch.graph_targets["energy"]) ** 2).mean()
        loss.backward()
        optimizer.step()
    return model


@pytest.fixture(scope="module")
def c2v_model():
    return _train(_dataset("C2v", field=0.5, twist=0.3))


@pytest.fixture(scope="module")
def isotropic_model():
    return _train(_dataset("Oh", num=2), steps=60)


def _summary_matches_table(report):
    """The summary's carriers are the significant irreps; its group is that of the significant part."""
    significant = {r.irrep for r in report.significance if r.significant}
    carriers = {c.split()[0] for c in report._carriers()}
    assert carriers == significant
    cleaned = significant_part(report._model, report.significance, report.within)
    assert residual_group(cleaned, tol=report.residual.tol, within=report.within) == report.residual.group
    if not significant:
        assert "no breaking" in report.summary()


def test_the_data_have_the_stated_symmetry():
    """C2v images share their energy; the inversion changes it (the three-body term is parity odd)."""
    numbers = np.array([8, 1, 1, 1])
    pos = np.random.default_rng(3).uniform(-1, 1, size=(4, 3))
    e = _energy(pos, numbers, 0.5, 0.3)
    for g in point_group("C2v").elements.numpy():
        assert abs(_energy(pos @ g.T, numbers, 0.5, 0.3) - e) < 1e-12
    assert abs(_energy(-pos, numbers, 0.0, 0.3) - _energy(pos, numbers, 0.0, 0.3)) > 1e-3


@pytest.mark.slow
def test_required_2o_block_is_significant(c2v_model):
    norm = math.sqrt(sum(r.norm**2 for r in breaking_spectrum(c2v_model)))
    two_odd = max((r for r in breaking_spectrum(c2v_model) if r.irrep == "2o"), key=lambda r: r.broken)
    assert 0.01 < two_odd.broken / norm < 0.2  # a few % of |θ|, next to much larger 1o and 2e blocks
    rows = {(r.layer, r.irrep): r for r in breaking_significance(c2v_model)}
    assert rows[(two_odd.layer, "2o")].significant
    # blocks that C2v forbids (1e, 0o) are round-off: below the floor, not significant
    assert not any(r.significant for r in rows.values() if r.irrep in ("1e", "0o"))
    report = SymmetryReport(c2v_model)
    assert report.residual.group == point_group("C2v")
    assert "2o (significant)" in report.summary()
    _summary_matches_table(report)
    # the named group is exact: the model's energies and forces are C2v-equivariant to round-off
    error = model_equivariance_error(c2v_model, _dataset("C1", num=2, seed=5), report.residual.group)
    assert error.max_rel < 1e-10
    # ... and not Oh-equivariant (negative control)
    assert model_equivariance_error(c2v_model, _dataset("C1", num=2, seed=5), "Oh").max_rel > 1e-4


@pytest.mark.slow
def test_isotropic_run_has_nothing_significant(isotropic_model):
    spectrum = breaking_spectrum(isotropic_model)
    assert max(r.broken for r in spectrum) < 1e-8  # only round-off breaks O(3)
    rows = breaking_significance(isotropic_model)
    assert rows and not any(r.significant for r in rows)
    assert all(r.below_floor for r in rows)
    report = SymmetryReport(isotropic_model)
    assert report.residual.group.schoenflies == "O3"
    assert "no breaking" in report.summary()
    _summary_matches_table(report)
    assert "below floor" in report.text() and "significant" not in report.text().split("breaking spectrum")[1]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scalars_plus_tiny_noise_is_o3(dtype):
    """A θ whose non-scalar part is 1e-7 of |θ|: no breaking (the tolerance is relative to |θ|)."""
    g = torch.Generator().manual_seed(0)
    irreps = "0e+0o+1o+1e+2e+2o"
    theta = torch.cat([torch.tensor([1.0], dtype=torch.float64),
                       1e-7 * torch.randn(17, generator=g, dtype=torch.float64)]).to(dtype)
    assert residual_group(theta, irreps).schoenflies == "O3"
    rows = breaking_significance([(irreps, theta)])
    assert not any(r.significant for r in rows)
    report = SymmetryReport([(irreps, theta)])
    assert report.residual.group.schoenflies == "O3" and "no breaking" in report.summary()
    # negative control: the same noise at 10% of |θ| is a breaking (C1), and significant
    loud = theta.clone()
    loud[1:] *= 1e6
    assert residual_group(loud, irreps).schoenflies == "C1"
    assert any(r.significant for r in breaking_significance([(irreps, loud)]))


def test_round_off_is_not_significant_with_a_tight_tolerance():
    """Even at tol = 1e-12 the precision floor keeps 1e-15 round-off from being significant."""
    theta = torch.tensor([1.0, 0.0, 0.0, 0.5, 3e-16, -2e-16, 1e-16], dtype=torch.float64)  # 0e + 1o(z) + 1e noise
    rows = {r.irrep: r for r in breaking_significance([("0e+1o+1e", theta)], tol=1e-12)}
    assert rows["1o"].significant and not rows["1e"].significant
    assert noise_floor([("0e+1o+1e", theta)], tol=0.0) == pytest.approx(100 * 2.220446049250313e-16 * theta.norm())


def test_hand_set_large_blocks_do_not_hide_a_small_required_block():
    """Extra to the trained test: C2v-invariant 1o and 2e of size 1 next to a 4% 2o block."""
    c2v = point_group("C2v")
    irreps = "0e+1o+2e+2o"
    g = torch.Generator().manual_seed(1)
    theta = c2v.invariant_projector(irreps, dtype=torch.float64) @ torch.randn(14, generator=g, dtype=torch.float64)
    theta[9:] *= 0.04 * theta.norm() / theta[9:].norm()
    rows = {r.irrep: r for r in breaking_significance([(irreps, theta)])}
    assert all(rows[ir].significant for ir in ("1o", "2e", "2o"))
    report = SymmetryReport([(irreps, theta)])
    assert report.residual.group == c2v
    _summary_matches_table(report)


def test_tolerance_scan_and_its_summary():
    """Cs (mirror normal along x) plus a 1% part that breaks it: C1 at 1e-3, Cs from a looser tolerance."""
    cs = point_group("Cs", frame=[[0, 0, 1], [0, 1, 0], [-1, 0, 0]])
    irreps = "0e+1o+1e+2e+2o"
    g = torch.Generator().manual_seed(2)
    theta = cs.invariant_projector(irreps, dtype=torch.float64) @ torch.randn(17, generator=g, dtype=torch.float64)
    noise = torch.randn(17, generator=g, dtype=torch.float64)
    noise[0] = 0.0
    theta = theta + 0.01 * theta.norm() * noise / noise.norm()
    scan = tolerance_scan(theta, irreps)
    assert [t for t, _ in scan] == sorted(t for t, _ in scan) and scan[0][0] == pytest.approx(1e-3)
    assert scan[0][1].schoenflies == "C1"
    loose = [grp for t, grp in scan if t >= 0.03]
    assert loose and all(grp.schoenflies in ("Cs", "C2h", "C2v", "D2h") or cs.is_subgroup_of(grp) for grp in loose)
    text = scan_summary(scan)
    assert text.startswith("C1 at 0.001; Cs with mirror normal [1.000 0.0") and text.endswith(" from 0.017")
    report = SymmetryReport([(irreps, theta)], decision={"chosen": {"group": "Cs", "label": "Cs about [1 0 0]",
                                                                    "frame": cs.frame.tolist()},
                                                         "validated": True, "parent": "O3", "summary": "s"})
    assert report.scan_line() == text + "; validated: Cs about [1 0 0]"
    assert report.to_dict()["stored_decision"]["chosen"]["group"] == "Cs"
    # a run with validation off stores its parent but no decision: the scan line says nothing more
    off = SymmetryReport([(irreps, theta)], decision={"chosen": None, "validated": None, "parent": "O3"})
    assert off.scan_line() == text
    # too few held-out blocks: the parent was kept untested, and the line says so
    thin = SymmetryReport([(irreps, theta)], decision={"chosen": {"group": "O3", "label": "O3"}, "validated": False,
                                                       "thin_evidence": True, "parent": "O3", "summary": "s"})
    assert thin.scan_line() == text + "; validated: none, too little held-out evidence (kept the parent O3)"
    with pytest.raises(ValueError, match="tols"):
        tolerance_scan(theta, irreps, tols=[0.0, 0.1])


def test_equivariance_error_propagates_nan_and_does_not_warn():
    x = torch.randn(5, 3, dtype=torch.float64)
    nan = equivariance_error(lambda p: p * float("nan"), [x], "cartesian_points", "cartesian_points", num_elements=4)
    assert math.isnan(nan.max_abs) and math.isnan(nan.max_rel)
    assert all(math.isnan(b.abs_error) for b in nan.blocks)
    weight = torch.ones(1, dtype=torch.float64, requires_grad=True)

    def with_grad(p):  # a model computing forces by autograd returns tensors that require grad
        with torch.enable_grad():
            return p * weight

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = equivariance_error(with_grad, [x], "cartesian_points", "cartesian_points", num_elements=4)
    assert ok.max_abs < 1e-12
    # negative control: a non-equivariant function is caught
    bad = equivariance_error(lambda p: p + torch.tensor([1.0, 0, 0], dtype=torch.float64), [x],
                             "cartesian_points", "cartesian_points", num_elements=4)
    assert bad.max_abs > 0.1
