"""``SymmetryReport``: the learned symmetry breaking of one model, as text, JSON and plots."""
import dataclasses
import json
import math
import os
from itertools import product
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from relaxed_e3nn._atomic import atomic_write
from relaxed_e3nn.groups import PointGroup, as_point_group, point_group

from ._projection import model_frame
from ._residual import SCAN_TOLERANCES, ResidualSymmetry, find_residual_symmetry, symmetry_axes, tolerance_scan
from ._significance import (
    _UNSET, SignificanceRow, breaking_significance, noise_floor, renamed_control, significant_part,
)
from ._spectrum import SpectrumRow, breaking_spectrum, plot_signal, plot_spectrum
from ._theta import collect_thetas

__all__ = ["SymmetryReport", "format_axis", "group_label", "scan_summary", "stored_group"]


def _simple_directions(max_index: int = 3) -> np.ndarray:
    dirs = [v for v in product(range(-max_index, max_index + 1), repeat=3) if any(v)]
    dirs = [v for v in dirs if math.gcd(math.gcd(abs(v[0]), abs(v[1])), abs(v[2])) == 1]
    return np.array(dirs, dtype=np.float64)


_DIRECTIONS = _simple_directions()
_UNIT_DIRECTIONS = _DIRECTIONS / np.linalg.norm(_DIRECTIONS, axis=1, keepdims=True)


def format_axis(v, tol: float = 1e-3) -> str:
    """An axis as text: ``"[0 0 1]"``, ``"[1 1 1]"`` (Miller-like, indices up to 3) when within
    ``tol`` (radians) of such a direction, else three decimals. The sign is made canonical
    (first nonzero index positive)."""
    v = np.asarray(v, dtype=np.float64)
    v = v / np.linalg.norm(v)
    cos = _UNIT_DIRECTIONS @ v
    i = int(np.argmax(np.abs(cos)))
    if abs(cos[i]) >= math.cos(tol):
        d = _DIRECTIONS[i] * np.sign(cos[i])
        first = d[np.nonzero(d)[0][0]]
        d = d * np.sign(first)
        return "[" + " ".join(str(int(x)) for x in d) + "]"
    first = v[np.argmax(np.abs(v) > 1e-6)]
    v = v * np.sign(first)
    return "[" + " ".join(f"{x:.3f}" for x in v) + "]"


def _principal_axis_text(group) -> str:
    if group.principal_axis is None:  # C1, Ci, SO3, O3
        return ""
    if group.schoenflies in ("T", "Td", "Th", "O", "Oh", "I", "Ih"):
        f = group.frame.numpy()
        if np.allclose(f, np.eye(3)):  # the standard frame goes without saying
            return ""
        return " with axes " + ", ".join(format_axis(f[:, k]) for k in range(3))
    principal = format_axis(group.principal_axis.numpy())
    if group.schoenflies == "Cs":
        return " with mirror normal " + principal
    return " about " + principal


def group_label(group) -> str:
    """A group as text, the one format of every report, scan and decision.

    The Schoenflies name and where it points: ``"C4v about [0 0 1]"`` (principal axis),
    ``"Cs with mirror normal [1 0 1]"``, ``"Oh with axes [1 1 0], [1 -1 0], [0 0 1]"`` (cubic and
    icosahedral groups outside the standard frame: their frame); ``"Oh"`` (standard frame),
    ``"C1"``, ``"Ci"``, ``"SO3"``, ``"O3"`` alone.
    """
    return f"{group.schoenflies}{_principal_axis_text(group)}"


def scan_summary(scan: Sequence[Tuple[float, PointGroup]]) -> str:
    """``"C1 at 0.001; Cs with mirror normal [1 0 1] from 0.03"``: where the scanned group changes."""
    parts, previous = [], None
    for tol, group in scan:
        if previous is not None and group == previous:
            continue
        parts.append(f"{group_label(group)} {'at' if previous is None else 'from'} {tol:.2g}")
        previous = group
    return "; ".join(parts)


def stored_group(entry) -> Optional[PointGroup]:
    """A group stored in a model file's symmetry record, as a PointGroup (None if absent).

    Accepts ``{"group" or "schoenflies": name, "frame": 3x3}`` or a label such as
    ``"C3v about [1 1 1]"`` (the standard frame: give ``frame`` to place it).
    """
    if entry is None:
        return None
    if isinstance(entry, PointGroup):
        return entry
    if isinstance(entry, str):
        return point_group(entry.split()[0])
    if isinstance(entry, dict):
        name = entry.get("group", entry.get("schoenflies"))
        if name is None:
            return None
        frame = entry.get("frame")
        return point_group(str(name).split()[0], frame=frame) if frame is not None else point_group(str(name).split()[0])
    raise TypeError(f"a stored group must be a dict, a name or a PointGroup, got {type(entry).__name__}")


def stored_parent(record: Optional[dict]) -> Optional[PointGroup]:
    """The parent group of a model file's symmetry record (``parent`` + ``parent_frame``, or a dict)."""
    if not record or record.get("parent") is None:
        return None
    parent = record["parent"]
    if isinstance(parent, str) and record.get("parent_frame") is not None:
        return point_group(parent.split()[0], frame=record["parent_frame"])
    return stored_group(parent)


class SymmetryReport:
    r"""Everything the symmetry tools say about one model.

    The named group is computed from the *significant* breaking only: every block that
    :func:`~relaxed_e3nn.symmetry.breaking_significance` calls noise is first projected onto its
    ``within``-invariant part (:func:`~relaxed_e3nn.symmetry.significant_part`), so the one-line
    summary and the per-block table always agree (no significant block: the group is ``within``,
    or O(3)).

    Parameters
    ----------
    model : torch.nn.Module or list of (irreps, tensor) pairs
        Holds the relaxed weights. A model's ``frame`` is honoured (groups are given and reported
        in the coordinates of its input structures) and its ``metadata["symmetry"]`` record
        (the validated decision and parent written by training) is read.
    within : PointGroup or str, optional
        The input's symmetry; the residual group is intersected with it and breaking is
        measured beyond it. Default: the parent stored in the model file, if any.
    tol : float
        Relative tolerance of :func:`relaxed_e3nn.symmetry.residual_group` and of the noise floor.
    symmetric_control : optional
        Noise level for :func:`relaxed_e3nn.symmetry.breaking_significance` (e.g. a relaxed
        model trained on symmetrised data).
    alpha : float
        Significance level.
    atol : float
        Absolute floor of the residual-group bound (units of :math:`\theta`).
    candidate : PointGroup or str, optional
        Group whose forbidden components estimate the noise; default the stored validated group.
    equivariance : EquivarianceError, optional
        The model's equivariance error under the named group on held-out inputs
        (:func:`~relaxed_e3nn.symmetry.model_equivariance_error`), shown and stored.
    decision : dict, optional
        A validated-breaking record (``BreakingDecision.to_dict()``); default the model's stored one.
    scan_tols : sequence of float
        The tolerance scan shown (:func:`~relaxed_e3nn.symmetry.tolerance_scan`).
    strict_control : deprecated
        The former name of ``symmetric_control`` (a ``DeprecationWarning``).

    Attributes
    ----------
    residual : ResidualSymmetry
        The named group: of the significant breaking, all relaxed weights together.
    raw : ResidualSymmetry
        Of the weights as they are (noise included).
    layers : list of (str, ResidualSymmetry)
        Per relaxed weight (significant breaking), with the model-wide threshold
        (``atol = tol * |theta|`` of the whole model), so that a layer holding only noise keeps
        the full group.
    spectrum : list of SpectrumRow
    significance : list of SignificanceRow
    scan : list of (float, PointGroup)
    decision : dict or None
    equivariance : EquivarianceError or None

    Examples
    --------
    >>> import torch
    >>> report = SymmetryReport([("0e+1o", torch.tensor([1.0, 0.0, 0.0, 1.0]))])
    >>> report.residual.group.schoenflies
    'Cinfv'
    """

    def __init__(
        self, model, within=None, tol: float = 1e-3, symmetric_control=None, alpha: float = 0.01, *,
        atol: float = 0.0, candidate=None, equivariance=None, decision=None, scan_tols=SCAN_TOLERANCES,
        strict_control=_UNSET,
    ):
        symmetric_control = renamed_control(symmetric_control, strict_control, "SymmetryReport")
        record = getattr(model, "metadata", {}).get("symmetry") if isinstance(model, torch.nn.Module) else None
        self.decision: Optional[dict] = decision if decision is not None else record
        self.stored_parent = stored_parent(self.decision)
        frame = model_frame(model) if isinstance(model, torch.nn.Module) else np.eye(3)
        self._frame = None if np.allclose(frame, np.eye(3)) else frame
        within = self.stored_parent if within is None else within
        raw = find_residual_symmetry(model, tol=tol, within=self._to_model(within), atol=atol)
        self.within = raw.parent
        if candidate is None and self.decision is not None:
            candidate = stored_group(self.decision.get("chosen"))
        if candidate is not None:
            candidate = self._to_model(stored_group(candidate) if isinstance(candidate, dict) else candidate)
            candidate = as_point_group(candidate, "candidate")
            candidate = candidate if self.within is None else candidate.intersection(self.within)
        self.significance: List[SignificanceRow] = breaking_significance(
            model, symmetric_control=symmetric_control, group=self.within, alpha=alpha, tol=tol, candidate=candidate
        )
        self.noise_floor = noise_floor(model, tol)
        cleaned = significant_part(model, self.significance, self.within)
        self.residual: ResidualSymmetry = self._to_input(find_residual_symmetry(cleaned, tol=tol, within=self.within,
                                                                                atol=atol))
        self.raw: ResidualSymmetry = self._to_input(raw)
        self.within = self.residual.parent
        names = [e.name for e in collect_thetas(model)]
        layer_atol = atol + tol * self.residual.norm
        self.layers: List[tuple] = [
            (name, self._to_input(find_residual_symmetry([pair], tol=tol, within=self._to_model(self.within),
                                                         atol=layer_atol)))
            for name, pair in zip(names, cleaned)
        ]
        self.spectrum: List[SpectrumRow] = breaking_spectrum(model, group=self._to_model(self.within))
        self.scan = [(t, self._group_to_input(g))
                     for t, g in tolerance_scan(model, tols=scan_tols, within=self._to_model(self.within), atol=atol)]
        self.equivariance = equivariance
        self._entries = collect_thetas(model)
        self._model = model

    # -------------------------------------------------------------------- frames
    def _to_model(self, group):
        """A group in input coordinates (or a name / structure) as seen by θ (the model frame)."""
        if group is None or self._frame is None:
            return group
        group = stored_group(group) if isinstance(group, dict) else as_point_group(group, "within")
        return group.rotated(self._frame)

    def _group_to_input(self, group):
        return group if group is None or self._frame is None else group.rotated(self._frame.T)

    def _to_input(self, res: ResidualSymmetry) -> ResidualSymmetry:
        if self._frame is None:
            return res
        group = self._group_to_input(res.group)
        return dataclasses.replace(res, group=group, parent=self._group_to_input(res.parent),
                                   unrestricted=self._group_to_input(res.unrestricted), axes=symmetry_axes(group))

    # -------------------------------------------------------------------- text
    def summary(self) -> str:
        """One sentence: input group, named group and its axis, the irreps carrying significant breaking."""
        g = self.residual.group
        parts = []
        if self.within is not None:
            parts.append(f"input {self.within.schoenflies}")
        parts.append(f"learned residual group {group_label(g)}")
        carriers = self._carriers()
        if carriers:
            parts.append("breaking carried by " + ", ".join(carriers))
        else:
            parts.append("no breaking beyond the input symmetry" if self.within is not None else "no breaking")
        return "; ".join(parts)

    def _carriers(self) -> List[str]:
        """The irreps with a significant block, largest breaking first."""
        per_irrep = {}
        for r in self.significance:
            if r.significant:
                per_irrep[r.irrep] = per_irrep.get(r.irrep, 0.0) + r.broken**2
        return [f"{ir} (significant)" for ir, _ in sorted(per_irrep.items(), key=lambda kv: -kv[1])]

    def scan_line(self) -> str:
        """``"C1 at 0.001; Cs with mirror normal [..] from 0.03; validated: Cs"`` (scan, then the stored decision)."""
        line = scan_summary(self.scan)
        # a record written with validation off carries the parent but no decision
        if self.decision is not None and self.decision.get("chosen") is not None:
            chosen = self.decision["chosen"]
            label = chosen.get("label", chosen.get("group", "?"))
            if self.decision.get("validated", True):
                line += f"; validated: {label}"
            elif self.decision.get("thin_evidence"):
                line += f"; validated: none, too little held-out evidence (kept the parent {label})"
            else:
                line += f"; validated: none within the margin (kept {label})"
        return line

    def text(self) -> str:
        """Multi-line report for a person."""
        res = self.residual
        lines = [self.summary() + ".", "", f"tolerance scan: {self.scan_line()}"]
        if self.decision is not None and self.decision.get("summary"):
            lines.append(f"stored decision: {self.decision['summary']}")
        lines.append(
            f"residual group: {res.chain()}  (tol {res.tol:g} relative to |theta| = {res.norm:.4g}, of which "
            f"non-scalar {res.scale:.4g}; max error {res.max_error:.2e}; finest resolvable axis order {res.resolution})"
        )
        if self.raw.group != res.group:
            lines.append(f"  the weights as they are (noise included) keep {self.raw.group.schoenflies}")
        if res.unrestricted.schoenflies != res.group.schoenflies:
            lines.append(f"  the significant weights alone keep {res.unrestricted.schoenflies}")
        for item in res.axes:
            axis = "" if item["axis"] is None else " " + format_axis(item["axis"])
            lines.append(f"  {item['symbol']}{axis}")
        lines += ["", "per layer:"]
        for name, r in self.layers:
            lines.append(f"  {name:<40} {r.group.schoenflies:<6}{_principal_axis_text(r.group)}")
        lines.append("")
        beyond = self.within.schoenflies if self.within is not None else "O3"
        lines.append(f"breaking spectrum (norm beyond {beyond}; noise floor {self.noise_floor:.2e}):")
        lines += self._table_lines()
        if self.equivariance is not None:
            lines += ["", str(self.equivariance)]
        return "\n".join(lines)

    def _table_lines(self) -> List[str]:
        sig = {(r.layer, r.irrep): r for r in self.significance}
        lines = []
        for r in self.spectrum:
            s = sig.get((r.layer, r.irrep))
            if s is None:
                flag, broken = "", f"{r.broken:.3e}"
            elif s.below_floor:
                flag, broken = "", "0 (below floor)"
            else:
                flag = f"  p={s.p_value:.1e} {'significant' if s.significant else 'noise'} (x{s.ratio:.3g} noise)"
                broken = f"{r.broken:.3e}"
            lines.append(f"  {r.layer:<40} {r.irrep:>3} x{r.multiplicity:<3} |theta| {r.norm:.3e}  broken {broken}{flag}")
        return lines

    def __str__(self) -> str:
        return self.text()

    # -------------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        res = self.residual
        return {
            "summary": self.summary(),
            "within": _group_dict(self.within),
            "residual_group": _group_dict(res.group),
            "unrestricted_group": _group_dict(res.unrestricted),
            "raw_residual_group": _group_dict(self.raw.group),
            "chain": res.chain(),
            "tol": res.tol,
            "atol": res.atol,
            "scale": res.scale,
            "norm": res.norm,
            "noise_floor": self.noise_floor,
            "max_error": res.max_error,
            "resolution": res.resolution,
            "axes": [
                {"symbol": a["symbol"], "axis": a["axis"], "direction": None if a["axis"] is None else format_axis(a["axis"])}
                for a in res.axes
            ],
            "layers": [{"name": n, "group": r.group.schoenflies, "max_error": r.max_error} for n, r in self.layers],
            "tolerance_scan": [{"tol": t, "group": g.schoenflies, "label": group_label(g)} for t, g in self.scan],
            "scan_summary": self.scan_line(),
            "spectrum": [
                {"layer": r.layer, "irrep": r.irrep, "multiplicity": r.multiplicity, "norm": r.norm, "broken": r.broken}
                for r in self.spectrum
            ],
            "significance": [
                {
                    "layer": r.layer, "irrep": r.irrep, "dim": r.dim, "broken": r.broken, "noise": r.noise,
                    "p_value": r.p_value, "significant": bool(r.significant), "floor": r.floor,
                    "below_floor": bool(r.below_floor),
                }
                for r in self.significance
            ],
            "stored_decision": self.decision,
            "stored_parent": _group_dict(self.stored_parent),
            "equivariance_error": None if self.equivariance is None else self.equivariance.to_dict(),
        }

    def to_json(self, path=None, indent: int = 2) -> str:
        """The report as JSON text; also written (atomically) to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, allow_nan=True)
        if path is not None:
            with atomic_write(path, "w") as handle:
                handle.write(text + "\n")
        return text

    # -------------------------------------------------------------------- plots
    def save_plots(self, dir_or_prefix) -> List[str]:
        """Write ``<prefix>spectrum.png`` and ``<prefix>signal.png``; return the paths.

        ``dir_or_prefix`` is a directory (existing, or ending with a path separator) or a
        file prefix such as ``"out/model_"``.
        """
        p = str(os.fspath(dir_or_prefix))
        prefix = os.path.join(p, "") if (os.path.isdir(p) or p.endswith(os.sep)) else p
        spectrum_path = prefix + "spectrum.png"
        signal_path = prefix + "signal.png"
        self.plot_spectrum(spectrum_path)
        plot_signal([(e.irreps, e.values) for e in self._entries], signal_path, group=self.residual.group,
                    title=f"relaxed weights (residual group {self.residual.group.schoenflies})")
        return [spectrum_path, signal_path]

    def plot_spectrum(self, path) -> None:
        """The breaking spectrum as a PNG: significant bars opaque, bars below the noise floor at zero."""
        significant = {(r.layer, r.irrep) for r in self.significance if r.significant}
        title = f"breaking beyond {self.within.schoenflies if self.within is not None else 'O3'}"
        plot_spectrum(self.spectrum, path, title=title, significant=significant, floor=self.noise_floor)


def _group_dict(g) -> Optional[dict]:
    return None if g is None else {
        "schoenflies": g.schoenflies,
        "hermann_mauguin": g.hermann_mauguin,
        "order": None if not g.is_finite else int(g.order),
        "frame": g.frame.numpy().tolist(),
    }
