"""``SymmetryReport``: the learned symmetry breaking of one model, as text, JSON and plots."""
import json
import math
import os
from itertools import product
from typing import List

import numpy as np

from relaxed_e3nn._atomic import atomic_write

from ._residual import ResidualSymmetry, find_residual_symmetry
from ._significance import _UNSET, SignificanceRow, breaking_significance, renamed_control
from ._spectrum import SpectrumRow, breaking_spectrum, plot_signal, plot_spectrum
from ._theta import collect_thetas

__all__ = ["SymmetryReport", "format_axis"]


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
        return " with axes " + ", ".join(format_axis(f[:, k]) for k in range(3))
    principal = format_axis(group.principal_axis.numpy())
    if group.schoenflies == "Cs":
        return " with mirror normal " + principal
    return " about " + principal


class SymmetryReport:
    """Everything the symmetry tools say about one model.

    Parameters
    ----------
    model : torch.nn.Module or list of (irreps, tensor) pairs
        Holds the relaxed weights.
    within : PointGroup or str, optional
        The input's symmetry; the residual group is intersected with it and breaking is
        measured beyond it.
    tol : float
        Relative tolerance of :func:`relaxed_e3nn.symmetry.residual_group`.
    symmetric_control : optional
        Noise level for :func:`relaxed_e3nn.symmetry.breaking_significance` (e.g. a relaxed
        model trained on symmetrised data).
    alpha : float
        Significance level.
    strict_control : deprecated
        The former name of ``symmetric_control`` (a ``DeprecationWarning``).

    Attributes
    ----------
    residual : ResidualSymmetry
        For all relaxed weights together.
    layers : list of (str, ResidualSymmetry)
        Per relaxed weight, with the model-wide threshold (``atol = tol * |theta_non-scalar|`` of
        the whole model), so that a layer holding only noise keeps the full group.
    spectrum : list of SpectrumRow
    significance : list of SignificanceRow

    Examples
    --------
    >>> import torch
    >>> report = SymmetryReport([("0e+1o", torch.tensor([1.0, 0.0, 0.0, 1.0]))])
    >>> report.residual.group.schoenflies
    'Cinfv'
    """

    def __init__(
        self, model, within=None, tol: float = 1e-3, symmetric_control=None, alpha: float = 0.01, *, strict_control=_UNSET
    ):
        symmetric_control = renamed_control(symmetric_control, strict_control, "SymmetryReport")
        entries = collect_thetas(model)
        self.residual: ResidualSymmetry = find_residual_symmetry(model, tol=tol, within=within)
        self.within = self.residual.parent
        self.layers: List[tuple] = []
        # per layer, the model-wide threshold: a layer holding only noise far below the model's
        # breaking keeps the full group instead of reading its noise as breaking
        atol = tol * self.residual.scale
        for e in entries:
            layer = find_residual_symmetry([(e.irreps, e.values)], tol=tol, within=self.within, atol=atol)
            self.layers.append((e.name, layer))
        self.spectrum: List[SpectrumRow] = breaking_spectrum(model, group=self.within)
        self.significance: List[SignificanceRow] = breaking_significance(
            model, symmetric_control=symmetric_control, group=self.within, alpha=alpha
        )
        self._entries = entries
        self._model = model

    # -------------------------------------------------------------------- text
    def summary(self) -> str:
        """One sentence: input group, residual group and its axis, irreps carrying the breaking."""
        g = self.residual.group
        parts = []
        if self.within is not None:
            parts.append(f"input {self.within.schoenflies}")
        parts.append(f"learned residual group {g.schoenflies} ({g.hermann_mauguin}){_principal_axis_text(g)}")
        carriers = self._carriers()
        if carriers:
            parts.append("breaking carried by " + ", ".join(carriers))
        else:
            parts.append("no breaking beyond the input symmetry" if self.within is not None else "no breaking")
        return "; ".join(parts)

    def _carriers(self) -> List[str]:
        per_irrep = {}
        for r in self.spectrum:
            per_irrep[r.irrep] = per_irrep.get(r.irrep, 0.0) + r.broken**2
        sig = {}
        for r in self.significance:
            sig[r.irrep] = sig.get(r.irrep, False) or r.significant
        total = math.sqrt(sum(per_irrep.values()))
        out = []
        for ir, b2 in sorted(per_irrep.items(), key=lambda kv: -kv[1]):
            if total == 0 or math.sqrt(b2) <= 1e-3 * total:
                continue
            out.append(f"{ir} ({'significant' if sig.get(ir) else 'not significant'})")
        return out

    def text(self) -> str:
        """Multi-line report for a person."""
        res = self.residual
        lines = [self.summary() + ".", ""]
        lines.append(
            f"residual group: {res.chain()}  (tol {res.tol:g} relative to |theta_non-scalar| = {res.scale:.4g}; "
            f"max error {res.max_error:.2e}; finest resolvable axis order {res.resolution})"
        )
        if res.unrestricted.schoenflies != res.group.schoenflies:
            lines.append(f"  the weights alone keep {res.unrestricted.schoenflies}")
        for item in res.axes:
            axis = "" if item["axis"] is None else " " + format_axis(item["axis"])
            lines.append(f"  {item['symbol']}{axis}")
        lines.append("")
        lines.append("per layer:")
        for name, r in self.layers:
            lines.append(f"  {name:<40} {r.group.schoenflies:<6}{_principal_axis_text(r.group)}")
        lines.append("")
        beyond = self.within.schoenflies if self.within is not None else "O3"
        lines.append(f"breaking spectrum (norm beyond {beyond}):")
        sig = {(r.layer, r.irrep): r for r in self.significance}
        for r in self.spectrum:
            s = sig.get((r.layer, r.irrep))
            flag = "" if s is None else (
                f"  p={s.p_value:.1e} {'significant' if s.significant else 'noise'} (x{s.ratio:.3g} noise)"
            )
            lines.append(f"  {r.layer:<40} {r.irrep:>3} x{r.multiplicity:<3} |theta| {r.norm:.3e}  broken {r.broken:.3e}{flag}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.text()

    # -------------------------------------------------------------------- JSON
    def to_dict(self) -> dict:
        res = self.residual

        def group_dict(g):
            return None if g is None else {
                "schoenflies": g.schoenflies,
                "hermann_mauguin": g.hermann_mauguin,
                "order": None if not g.is_finite else int(g.order),
                "frame": g.frame.numpy().tolist(),
            }

        return {
            "summary": self.summary(),
            "within": group_dict(self.within),
            "residual_group": group_dict(res.group),
            "unrestricted_group": group_dict(res.unrestricted),
            "chain": res.chain(),
            "tol": res.tol,
            "scale": res.scale,
            "max_error": res.max_error,
            "resolution": res.resolution,
            "axes": [
                {"symbol": a["symbol"], "axis": a["axis"], "direction": None if a["axis"] is None else format_axis(a["axis"])}
                for a in res.axes
            ],
            "layers": [{"name": n, "group": r.group.schoenflies, "max_error": r.max_error} for n, r in self.layers],
            "spectrum": [
                {"layer": r.layer, "irrep": r.irrep, "multiplicity": r.multiplicity, "norm": r.norm, "broken": r.broken}
                for r in self.spectrum
            ],
            "significance": [
                {
                    "layer": r.layer, "irrep": r.irrep, "dim": r.dim, "broken": r.broken, "noise": r.noise,
                    "p_value": r.p_value, "significant": bool(r.significant),
                }
                for r in self.significance
            ],
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
        significant = {(r.layer, r.irrep) for r in self.significance if r.significant}
        title = f"breaking beyond {self.within.schoenflies if self.within is not None else 'O3'}"
        plot_spectrum(self.spectrum, spectrum_path, title=title, significant=significant)
        plot_signal([(e.irreps, e.values) for e in self._entries], signal_path, group=self.residual.group,
                    title=f"relaxed weights (residual group {self.residual.group.schoenflies})")
        return [spectrum_path, signal_path]
