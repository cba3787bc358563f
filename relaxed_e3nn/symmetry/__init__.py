"""Measuring learned symmetry breaking.

* :func:`residual_group` — the largest point group leaving relaxed weights invariant
  (:func:`find_residual_symmetry` adds errors, resolution and axes); :func:`symmetry_errors`
  for given elements; :func:`tolerance_scan` the group along a scan of tolerances.
* :func:`breaking_spectrum` — per layer and irrep norms of the weights and of their part beyond a
  group; :func:`plot_spectrum`, :func:`plot_signal`.
* :func:`breaking_significance` — is a block's breaking above the noise level (with a floor,
  :func:`noise_floor`)? :func:`significant_part` keeps only the significant blocks.
* :func:`equivariance_error` — equivariance error per output irrep block;
  :func:`model_equivariance_error` of a trained model on structures.
* :class:`SymmetryReport` — all of the above for one model, as text, JSON and plots.
* :func:`validate_breaking` — which breaking held-out data support (:class:`BreakingDecision`);
  :func:`project_thetas` imposes a group, :func:`breaking_beyond` measures what lies outside it,
  :func:`candidate_groups` and :func:`breaking_demand` propose the groups that are tested.
"""
from ._equivariance import BlockError, EquivarianceError, equivariance_error, model_equivariance_error
from ._report import SymmetryReport, format_axis, group_label, scan_summary, stored_group
from ._residual import (
    SCAN_TOLERANCES, ResidualSymmetry, find_residual_symmetry, residual_group, symmetry_errors, tolerance_scan,
)
from ._significance import SignificanceRow, breaking_significance, noise_floor, significant_part
from ._spectrum import SpectrumRow, breaking_spectrum, invariant_part, plot_signal, plot_spectrum
# validated breaking last: its modules import the public names above from this package
from ._projection import ThetaProjector, breaking_beyond, project_thetas
from ._candidates import BreakingCandidate, candidate_groups
from ._validate import BreakingDecision, breaking_demand, validate_breaking

__all__ = [
    "residual_group",
    "find_residual_symmetry",
    "ResidualSymmetry",
    "symmetry_errors",
    "tolerance_scan",
    "SCAN_TOLERANCES",
    "breaking_spectrum",
    "SpectrumRow",
    "invariant_part",
    "plot_spectrum",
    "plot_signal",
    "breaking_significance",
    "SignificanceRow",
    "significant_part",
    "noise_floor",
    "equivariance_error",
    "EquivarianceError",
    "BlockError",
    "model_equivariance_error",
    "SymmetryReport",
    "format_axis",
    "group_label",
    "scan_summary",
    "stored_group",
    "project_thetas",
    "ThetaProjector",
    "breaking_beyond",
    "candidate_groups",
    "BreakingCandidate",
    "breaking_demand",
    "validate_breaking",
    "BreakingDecision",
]
