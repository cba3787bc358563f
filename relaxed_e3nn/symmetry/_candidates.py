r"""The fixed sequence of symmetry hypotheses that validated breaking tests.

A trained :math:`\theta` proposes groups: its residual group at each tolerance of a fixed,
log-spaced scan (tight tolerances keep only what :math:`\theta` respects almost exactly, loose ones
ignore small breaking), each intersected with the parent (the input's own symmetry). Together with the
parent itself they are the candidates :math:`H`. The sequence is fixed before any held-out loss is seen
(no open-ended subgroup enumeration), which is what keeps the later test honest.

The scan of :math:`\theta` alone finds nothing when unrelated blocks carry noise as large as the
signal (rattled structures in one orientation: a 1o block roughly along a field, with 1e, 2e and 2o
blocks of the same size fitting orientation-dependent noise). A second, data-driven proposal follows
Curie's principle: at a :math:`\theta \in V_\text{parent}` the gradient of the training loss with respect
to :math:`\theta` is invariant under the symmetry the training data has, so the *demanded breaking*

.. math::
    \delta = -\nabla_\theta \bar L_\text{train}\big|_{\theta = P_\text{parent}\theta}

(:func:`breaking_demand`) names the breaking the data ask for first (a field along a C3 axis of a
tetrahedral molecule: :math:`C_{\infty v}` about the field, :math:`C_{3v}` within :math:`T_d`). The
residual groups of :math:`\delta` along the same scan are candidates too. Both proposals use the
training data only, never held-out data, so the sequence is fixed before the test, and at most
``2 * len(tols) + 1`` long before merging.

Candidates are compared through what they do to the model, not through their names: two groups whose
projections :math:`P_H\theta` coincide (e.g. :math:`C_{3v}` and :math:`C_{\infty v}` about the same axis
when :math:`\theta` holds :math:`l \le 2` only) define the same constrained model and are merged; the
larger group is kept (the projected model is equivariant under it). Candidates are ordered by
:math:`\sum_\ell \dim V_H`, the number of free :math:`\theta` parameters left: :math:`H' \supsetneq H`
implies :math:`V_{H'} \subseteq V_H` and, after merging, a strictly smaller dimension, so this order is
consistent with inclusion (most symmetric first).
"""
from dataclasses import dataclass, field
from typing import List, Optional, Sequence

import numpy as np
import torch

from relaxed_e3nn._checks import is_number
from relaxed_e3nn.groups import PointGroup
from relaxed_e3nn.symmetry import SCAN_TOLERANCES, group_label, residual_group  # public; loaded before this module
from relaxed_e3nn.symmetry._projection import ThetaProjector, _as_group, _frame_of
from relaxed_e3nn.symmetry._theta import collect_thetas, concatenate

__all__ = ["BreakingCandidate", "candidate_groups", "scan_text"]


_THETA, _DEMAND = "theta", "demand"  # sources of a proposal: the θ scan, the demanded-breaking scan


def _format_tol(tol: float) -> str:
    return f"{tol:.2g}"


@dataclass
class BreakingCandidate:
    r"""One hypothesis :math:`H` of validated breaking, and (after :func:`validate_breaking`) its evidence.

    Attributes
    ----------
    group : PointGroup
        :math:`H`, in the coordinates of the input structures, a subgroup of the parent.
    tolerances : list of float
        The scan tolerances at which the residual group of the whole :math:`\theta` (within the
        parent) gave this candidate.
    demand_tolerances : list of float
        The scan tolerances at which the residual group of the demanded breaking
        (:func:`breaking_demand`, within the parent) gave it.
    num_invariants : int
        :math:`\sum_\ell \dim V_H`, the free :math:`\theta` parameters left by the projection (the
        ordering key: fewer is more symmetric).
    is_parent : bool
        Whether this is the parent group.
    mean_loss : float or None
        Mean held-out loss per structure after projection and fine-tuning.
    relative_excess : float or None
        :math:`\Delta = (\bar L_H - \bar L_\text{free}) / \bar L_\text{free}` on paired block means.
    lcb, ucb : float or None
        Bootstrap lower and upper confidence bounds of :math:`\Delta` (each one-sided, at the
        decision's ``confidence``).
    win_frequency : float or None
        Fraction of bootstrap resamples in which the decision rule picks this candidate.
    accepted : bool or None
        ``lcb <= margin``: the held-out data do not show that the symmetry costs more than the
        margin.
    """

    group: PointGroup
    tolerances: List[float] = field(default_factory=list)
    demand_tolerances: List[float] = field(default_factory=list)
    num_invariants: int = 0
    is_parent: bool = False
    mean_loss: Optional[float] = None
    relative_excess: Optional[float] = None
    lcb: Optional[float] = None
    ucb: Optional[float] = None
    win_frequency: Optional[float] = None
    accepted: Optional[bool] = None

    @property
    def label(self) -> str:
        """The group's name and axis, e.g. ``"Cs with mirror normal [1 0 1]"`` (see ``group_label``)."""
        return group_label(self.group)

    def to_dict(self) -> dict:
        """A JSON-able summary (group name, frame and axis, tolerances, evidence)."""
        axis = self.group.principal_axis
        return {
            "group": self.group.schoenflies,
            "label": self.label,
            "frame": self.group.frame.numpy().tolist(),
            "principal_axis": None if axis is None else axis.numpy().tolist(),
            "order": self.group.order if self.group.is_finite else "inf",
            "tolerances": list(self.tolerances),
            "demand_tolerances": list(self.demand_tolerances),
            "num_invariants": self.num_invariants,
            "is_parent": self.is_parent,
            "mean_loss": self.mean_loss,
            "relative_excess": self.relative_excess,
            "lcb": self.lcb,
            "ucb": self.ucb,
            "win_frequency": self.win_frequency,
            "accepted": self.accepted,
        }


def _check_tolerances(tols) -> List[float]:
    try:
        values = [float(t) for t in np.asarray(tols, dtype=np.float64).reshape(-1)]
    except (TypeError, ValueError) as err:
        raise TypeError(f"tols must be a sequence of floats in (0, 1), got {tols!r}") from err
    if not values or not all(0 < t < 1 for t in values):
        raise ValueError(f"tols must be a non-empty sequence of floats in (0, 1), got {tols!r}")
    return sorted(set(values))


def _in_input_frame(theta, tol: float, parent: PointGroup, frame: np.ndarray) -> PointGroup:
    """``residual_group(theta, tol) ∩ parent`` in input coordinates (``theta`` is in the model frame)."""
    identity = np.allclose(frame, np.eye(3))
    group = residual_group(theta, tol=tol, within=parent if identity else parent.rotated(frame))
    if not identity:
        group = group.rotated(frame.T)
    if not group.is_subgroup_of(parent):
        group = group.intersection(parent)
    return group


def _proposals(model, parent: PointGroup, tols: List[float], frame: np.ndarray, demand):
    """``(group, tol, source)`` for the parent, the θ scan and the demanded-breaking scan."""
    proposals = [(parent, None, None)]
    proposals += [(_in_input_frame(model, t, parent, frame), t, _THETA) for t in tols]
    if demand is not None:
        proposals += [(_in_input_frame(demand, t, parent, frame), t, _DEMAND) for t in tols]
    return proposals


def _larger(a: PointGroup, b: PointGroup) -> PointGroup:
    """The one of two groups giving the same projection that names it best (the larger)."""
    if a.is_subgroup_of(b):
        return b
    if b.is_subgroup_of(a):
        return a
    return a if a.order >= b.order else b


def _add_source(candidate: BreakingCandidate, tol, source) -> None:
    if source == _THETA:
        candidate.tolerances.append(tol)
    elif source == _DEMAND:
        candidate.demand_tolerances.append(tol)
    else:
        candidate.is_parent = True


def candidate_groups(
    model: torch.nn.Module,
    parent,
    tols: Sequence[float] = SCAN_TOLERANCES,
    *,
    frame=None,
    demand=None,
    merge_rtol: float = 1e-8,
) -> List[BreakingCandidate]:
    r"""The parent and the residual groups of :math:`\theta` along a fixed tolerance scan, merged and ordered.

    For every ``tol`` in ``tols``, :math:`H_\text{tol} = \mathrm{residual\_group}(\theta, \mathrm{tol})
    \cap \text{parent}` (computed in the model frame, reported in input coordinates), and the same for the
    demanded breaking ``demand`` when given (see the module notes). Candidates whose projections
    agree, :math:`\lVert P_{H_a}\theta - P_{H_b}\theta\rVert \le \text{merge\_rtol}\lVert\theta\rVert`,
    are merged (the larger group is kept, the sources are pooled). The list is ordered by
    :attr:`BreakingCandidate.num_invariants` (most symmetric first; consistent with inclusion), ties
    by group order, larger first.

    Parameters
    ----------
    model : torch.nn.Module
        A relaxed model (e.g. :class:`~relaxed_e3nn.models.RelaxedNetwork`).
    parent : PointGroup, str or structure
        The symmetry of the inputs (the largest group the model could keep), in input coordinates;
        ``"O3"`` when the inputs have no special orientation.
    tols : sequence of float
        Relative tolerances in (0, 1) of :func:`~relaxed_e3nn.symmetry.residual_group`; default
        :data:`~relaxed_e3nn.symmetry.SCAN_TOLERANCES` (seven log-spaced values from 1e-3 to 0.3).
    frame : array-like ``[3, 3]``, optional
        The model frame :math:`F`; default the model's own.
    demand : list of (irreps, tensor) pairs, optional
        A θ-shaped direction in the model frame, e.g. :func:`breaking_demand`; its residual groups
        along ``tols`` are proposed too.
    merge_rtol : float
        Relative tolerance of the merge.

    Returns
    -------
    list of BreakingCandidate
        The parent is always one of them; exactly one has the tightest tolerance in ``tols``.
    """
    parent = _as_group(parent, "parent")
    tols = _check_tolerances(tols)
    if not (is_number(merge_rtol) and merge_rtol > 0):
        raise ValueError(f"merge_rtol must be a positive number, got {merge_rtol!r}")
    frame = _frame_of(model, frame)
    scale = max(float(np.linalg.norm(concatenate(collect_thetas(model))[1])), 1e-300)
    candidates, projections = [], []
    for group, tol, source in _proposals(model, parent, tols, frame, demand):
        projector = ThetaProjector(model, group, frame=frame)
        projected = projector.projected()
        for candidate, other in zip(candidates, projections):
            if np.linalg.norm(projected - other) <= merge_rtol * scale:
                candidate.group = _larger(candidate.group, group)
                break
        else:
            candidate = BreakingCandidate(group, num_invariants=projector.num_invariants)
            candidates.append(candidate)
            projections.append(projected)
        _add_source(candidate, tol, source)
    for candidate in candidates:  # a merged group may have grown: recount its invariants
        candidate.num_invariants = ThetaProjector(model, candidate.group, frame=frame).num_invariants
    order = sorted(range(len(candidates)), key=lambda i: (
        candidates[i].num_invariants, -(candidates[i].group.order if candidates[i].group.is_finite else np.inf), i,
    ))
    return [candidates[i] for i in order]


def scan_text(candidates: Sequence[BreakingCandidate]) -> str:
    """``"C1 at 0.001; Cs with mirror normal [..] from 0.03"``: the tolerance scan, tightest tolerance first."""
    scanned = sorted((c for c in candidates if c.tolerances), key=lambda c: min(c.tolerances))
    parts = []
    for k, c in enumerate(scanned):
        parts.append(f"{c.label} {'at' if k == 0 else 'from'} {_format_tol(min(c.tolerances))}")
    return "; ".join(parts)
