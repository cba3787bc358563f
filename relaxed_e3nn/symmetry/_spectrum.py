r"""Breaking spectra (per layer, per irrep norms) and plots of relaxed weights."""
import io
import math
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import torch
from e3nn import o3

from relaxed_e3nn._atomic import atomic_write
from relaxed_e3nn.groups import as_point_group

from ._residual import symmetry_axes
from ._theta import collect_thetas, concatenate

__all__ = ["SpectrumRow", "breaking_spectrum", "plot_spectrum", "plot_signal", "invariant_part"]


@dataclass
class SpectrumRow:
    r"""One irrep of one relaxed weight.

    Attributes
    ----------
    layer : str
        Module path of the relaxed weight (``"theta"`` for a bare vector).
    irrep : str
        ``"1o"``, ``"2e"``, ... (all copies of that irrep in the layer together).
    multiplicity : int
    norm : float
        :math:`\lVert\theta_{l,p}\rVert`.
    broken : float
        :math:`\lVert\theta_{l,p} - P_H\theta_{l,p}\rVert`, the part not invariant under the group
        ``H`` (default O(3): everything but ``0e``).
    """

    layer: str
    irrep: str
    multiplicity: int
    norm: float
    broken: float

    @property
    def fraction(self) -> float:
        """``broken / norm`` (0 for a zero block)."""
        return self.broken / self.norm if self.norm > 0 else 0.0


def invariant_part(irreps: o3.Irreps, values: np.ndarray, group) -> np.ndarray:
    r""":math:`P_H\theta` with the Reynolds projector of ``group`` (float64)."""
    group = as_point_group(group, "group", default="O3")
    P = group.invariant_projector(irreps, dtype=torch.float64).numpy()
    return P @ values


def breaking_spectrum(model_or_theta, irreps=None, group=None) -> List[SpectrumRow]:
    r"""Per layer and irrep: the norm of :math:`\theta` and of its part not invariant under ``group``.

    Parameters
    ----------
    model_or_theta : torch.nn.Module, list of (irreps, tensor) pairs or flat tensor
        As in :func:`relaxed_e3nn.symmetry.residual_group`.
    irreps : irreps, optional
        For a flat vector.
    group : PointGroup or str, optional
        Default O(3): the broken part is everything but ``0e``. With ``H`` the broken part is
        :math:`\theta - P_H\theta`, :math:`P_H = \mathrm{mean}_{h\in H} D(h)` (e.g. the input's
        symmetry: breaking *beyond* it).

    Returns
    -------
    list of SpectrumRow
        One row per layer and distinct irrep, in layer order and ``l`` order.
    """
    group = as_point_group(group, "group", default="O3")
    rows = []
    for entry in collect_thetas(model_or_theta, irreps):
        inv = invariant_part(entry.irreps, entry.values, group)
        broken = entry.values - inv
        per = {}
        for (mul, ir), sl in zip(entry.irreps, entry.irreps.slices()):
            key = (ir.l, -ir.p * (-1) ** ir.l, str(ir))  # natural parity first, as e3nn sorts
            n2, b2, m = per.get(key, (0.0, 0.0, 0))
            per[key] = (n2 + float((entry.values[sl] ** 2).sum()), b2 + float((broken[sl] ** 2).sum()), m + mul)
        for key in sorted(per):
            n2, b2, m = per[key]
            rows.append(SpectrumRow(entry.name, key[2], m, math.sqrt(n2), math.sqrt(b2)))
    return rows


def _savefig(fig, path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    with atomic_write(path, "wb") as handle:
        handle.write(buf.getvalue())


def _figure(*args, **kwargs):
    """A bare matplotlib Figure (no pyplot, no GUI backend): ``savefig`` renders with Agg."""
    # matplotlib is imported on first plot, not with the package: it adds about a second to
    # every `import relaxed_e3nn.symmetry` (no import cycle is involved)
    from matplotlib.figure import Figure

    return Figure(*args, **kwargs)


def plot_spectrum(rows: Sequence[SpectrumRow], path, title: Optional[str] = None, significant=None,
                  floor: float = 0.0) -> None:
    """Bar chart (PNG) of the broken norm per layer and irrep.

    Parameters
    ----------
    rows : list of SpectrumRow
        From :func:`breaking_spectrum`.
    path : str or os.PathLike
        Output PNG (written atomically).
    title : str, optional
    significant : set of (layer, irrep), optional
        Bars drawn opaque (the others faded), e.g. the significant blocks from
        :func:`relaxed_e3nn.symmetry.breaking_significance`.
    floor : float
        Noise floor (e.g. :func:`relaxed_e3nn.symmetry.noise_floor`): bars at or below it are
        drawn at zero and the floor as a dashed line, and the axis reaches at least twice the
        floor, so that round-off never looks like breaking.
    """
    rows = list(rows)
    if not rows:
        raise ValueError("rows is empty: nothing to plot")
    import matplotlib  # on first plot (see _figure)

    layers = list(dict.fromkeys(r.layer for r in rows))
    irreps = list(dict.fromkeys(r.irrep for r in rows))
    width = 0.8 / max(len(irreps), 1)
    fig = _figure(figsize=(max(5.0, 1.2 * len(layers) + 2), 3.6))
    ax = fig.add_subplot(1, 1, 1)
    cmap = matplotlib.colormaps["tab10"]
    for j, ir in enumerate(irreps):
        xs, hs, alphas = [], [], []
        for i, layer in enumerate(layers):
            for r in rows:
                if r.layer == layer and r.irrep == ir:
                    xs.append(i + (j - (len(irreps) - 1) / 2) * width)
                    hs.append(r.broken if r.broken > floor else 0.0)
                    alphas.append(1.0 if significant is None or (layer, ir) in significant else 0.35)
        for x, h, a in zip(xs, hs, alphas):
            ax.bar(x, h, width=width, color=cmap(j % 10), alpha=a, label=ir if x == xs[0] else None)
    if floor > 0:
        ax.axhline(floor, color="0.4", linestyle="--", linewidth=0.8, label="noise floor")
        ax.set_ylim(0, max(2 * floor, 1.1 * max((r.broken for r in rows), default=0.0)))
    ax.set_xticks(range(len(layers)))
    ax.set_xticklabels(layers, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("breaking norm")
    ax.set_title(title or "symmetry breaking per layer and irrep")
    ax.legend(fontsize=7, ncol=2)
    _savefig(fig, path)


def _signal_values(irreps: o3.Irreps, values: np.ndarray, pts: np.ndarray, parity: int) -> np.ndarray:
    x = torch.as_tensor(pts, dtype=torch.float64)
    out = np.zeros(len(pts))
    for (mul, ir), sl in zip(irreps, irreps.slices()):
        if ir.l == 0 or ir.p != parity:
            continue
        Y = o3.spherical_harmonics(ir.l, x, normalize=True, normalization="component").numpy()
        out += Y @ values[sl].reshape(mul, ir.dim).sum(0)
    return out


def plot_signal(theta, path, irreps=None, group=None, title: Optional[str] = None) -> None:
    r"""Mollweide maps (PNG) of the even and odd parts of :math:`\theta` as spherical functions.

    :math:`f_\pm(\hat r) = \sum_{l \ge 1,\, p = \pm 1} \sum_{\mathrm{copies}} \theta_c \cdot Y_l(\hat r)`
    (all copies of an irrep summed; all relaxed weights of a model stacked). The symmetry
    axes of ``group`` (if given, e.g. the residual group) are marked: rotation axes as dots
    labelled with their order, mirror normals as crosses.

    Parameters
    ----------
    theta : model, list of (irreps, tensor) pairs, or flat tensor
    path : str or os.PathLike
        Output PNG (written atomically).
    irreps : irreps, optional
        For a flat vector.
    group : PointGroup, optional
    title : str, optional
    """
    ir_all, values = concatenate(collect_thetas(theta, irreps))
    lon = np.linspace(-math.pi, math.pi, 181)
    lat = np.linspace(-math.pi / 2, math.pi / 2, 91)
    LON, LAT = np.meshgrid(lon, lat)
    pts = np.stack([np.cos(LAT) * np.cos(LON), np.cos(LAT) * np.sin(LON), np.sin(LAT)], -1).reshape(-1, 3)
    fig = _figure(figsize=(10, 3.4))
    marks = _axis_marks(group) if group is not None else []
    for k, (parity, label) in enumerate(((1, "even part (p = +1)"), (-1, "odd part (p = -1)"))):
        ax = fig.add_subplot(1, 2, k + 1, projection="mollweide")
        f = _signal_values(ir_all, values, pts, parity).reshape(LAT.shape)
        vmax = max(float(np.abs(f).max()), 1e-300)
        mesh = ax.pcolormesh(LON, LAT, f, cmap="RdBu_r", vmin=-vmax, vmax=vmax, shading="auto")
        fig.colorbar(mesh, ax=ax, orientation="horizontal", fraction=0.05, pad=0.08)
        for v, symbol, marker in marks:
            for s in (1, -1):
                u = s * v
                ax.plot(math.atan2(u[1], u[0]), math.asin(max(-1.0, min(1.0, u[2]))), marker, color="k", ms=5)
                ax.annotate(symbol, (math.atan2(u[1], u[0]), math.asin(max(-1.0, min(1.0, u[2])))), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")
        ax.set_title(label, fontsize=9, pad=14)
        ax.set_xticklabels([])
        ax.grid(True, alpha=0.3)
    fig.suptitle(title or "relaxed weights as spherical functions", fontsize=10)
    _savefig(fig, path)


def _axis_marks(group) -> list:
    """``(axis, label, marker)`` for each rotation axis (highest order) and mirror normal."""
    marks = []
    for item in symmetry_axes(group):
        if item["axis"] is None:
            continue
        symbol = "m" if item["symbol"] == "σ" else item["symbol"]
        marks.append((np.asarray(item["axis"]), symbol, "x" if symbol == "m" else "o"))
    return marks
