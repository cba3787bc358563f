r"""Is a learned breaking real or noise? A per-block test against a noise level with a floor.

A finite, noisy data set never has an exact symmetry, so relaxed weights trained on it break
every symmetry a little. Per layer and irrep block, the statistic is the breaking norm
:math:`b = \lVert\theta_{l,p} - P_G\theta_{l,p}\rVert` (``G`` the group the breaking is measured
against, default O(3)), living in a subspace of dimension ``d`` (the non-invariant directions of
that block). The null hypothesis is "pure noise": ``d`` independent components drawn from a
noise distribution with per-component scale :math:`\sigma`.

The noise model has to be right in both directions: large real blocks must not inflate it (or
real breaking is called noise), and round-off must not pass for breaking (or a model trained on
exactly symmetric data shows "significant" :math:`10^{-9}` blocks). Per block,

.. math::

    \sigma_\text{block} = \max\Big(\sigma_\text{est},\;
        \frac{\max(\mathrm{tol},\, c\,\epsilon)\,\lVert\theta\rVert}{\sqrt d}\Big),

* the **floor**: a block whose breaking norm is below :math:`\mathrm{tol}\lVert\theta\rVert` (the
  tolerance of :func:`~relaxed_e3nn.symmetry.residual_group`, :math:`\lVert\theta\rVert` the whole
  weight vector of the model) or below the precision of the weights
  (:math:`c = 100` times the machine epsilon of their dtype) is never significant;
* the **estimate** :math:`\sigma_\text{est}`, in order of preference:

  - ``symmetric_control`` a relaxed model with the same relaxed weights, trained on symmetrised
    data: whatever breaking it learned is noise (the RMS of its non-invariant components; they
    also form the bootstrap pool);
  - ``symmetric_control`` a number :math:`\sigma` or a dict ``{(layer, irrep): sigma}``;
  - nothing: the spread of the components of :math:`\theta` that a *candidate group*
    :math:`H \subseteq G` forbids, :math:`\sigma_\text{est} = 1.4826\,\mathrm{median}|c|` over
    an orthonormal basis of :math:`(1 - P_H)\theta` in every layer and irrep. Components that
    :math:`H` allows never enter, so large real blocks cannot inflate the noise. ``candidate``
    is e.g. the validated group of :func:`~relaxed_e3nn.symmetry.validate_breaking` (held-out
    evidence); by default it is the residual group of :math:`\theta` at ``tol`` within ``G``,
    whose forbidden part is at most :math:`\mathrm{tol}\lVert\theta\rVert`, so that the floor
    decides.

p-values: ``method="chi2"`` (default) uses the Gaussian tail,
:math:`p = P(\chi^2_d \ge b^2/\sigma^2)`; ``method="bootstrap"`` draws ``n_boot`` vectors of ``d``
components with replacement from the pool (scaled to :math:`\sigma_\text{block}`; Gaussian draws
when there is no pool), :math:`p = (1 + \#\{\lVert v\rVert \ge b\}) / (n_\mathrm{boot} + 1)`, free
of the Gaussian assumption but never below :math:`1/(n_\mathrm{boot}+1)`, so ``n_boot`` must
exceed the number of blocks divided by ``alpha`` for anything to be significant. A block is
significant when its p-value is below ``alpha`` divided by the number of blocks tested
(Bonferroni).

:func:`significant_part` projects the non-significant blocks out of :math:`\theta`; the residual
group of what is left is the group that :class:`~relaxed_e3nn.symmetry.SymmetryReport` names, so
its summary and its per-block table always agree.
"""
import math
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from scipy.special import gammaincc  # chi2_d survival function: Q(d/2, x/2)

from relaxed_e3nn._checks import is_number, model_dtype
from relaxed_e3nn.groups import as_point_group

from ._residual import entries_as_pairs, residual_group
from ._theta import ThetaEntry, collect_thetas

__all__ = ["breaking_significance", "SignificanceRow", "significant_part", "noise_floor", "PRECISION_FACTOR"]

#: the precision floor is this many machine epsilons of the weights' dtype (relative to |θ|)
PRECISION_FACTOR = 100.0


@dataclass
class SignificanceRow:
    """Test result for one layer and irrep.

    Attributes
    ----------
    layer, irrep : str
    dim : int
        Dimension of the non-invariant subspace of the block.
    broken : float
        Breaking norm of the block.
    noise : float
        Expected norm under the null, :math:`\\sigma_\\text{block}\\sqrt{d}` (at least ``floor``).
    p_value : float
    significant : bool
    floor : float
        The noise floor :math:`\\max(\\mathrm{tol}, c\\,\\epsilon)\\lVert\\theta\\rVert`; ``broken``
        below it is round-off or below the tolerance (:attr:`below_floor`).
    """

    layer: str
    irrep: str
    dim: int
    broken: float
    noise: float
    p_value: float
    significant: bool
    floor: float = 0.0

    @property
    def ratio(self) -> float:
        """``broken / noise`` (``inf`` when the noise level is zero and the block is not)."""
        if self.noise > 0:
            return self.broken / self.noise
        return math.inf if self.broken > 0 else 0.0

    @property
    def below_floor(self) -> bool:
        """Whether the breaking norm is at or below the noise floor (shown as zero)."""
        return self.broken <= self.floor


class _Block:
    """One layer and irrep: its components beyond ``G`` (orthonormal basis) and where they live."""

    __slots__ = ("layer", "irrep", "index", "components")

    def __init__(self, layer, irrep, index, components):
        self.layer, self.irrep, self.index, self.components = layer, irrep, index, components


def _irrep_indices(entry: ThetaEntry) -> Dict[str, np.ndarray]:
    """Per distinct irrep of one relaxed weight, the indices of all its copies."""
    groups: Dict[str, List[slice]] = {}
    for (mul, ir), sl in zip(entry.irreps, entry.irreps.slices()):
        groups.setdefault(str(ir), []).append(sl)
    return {ir: np.concatenate([np.arange(sl.start, sl.stop) for sl in slices]) for ir, slices in groups.items()}


def _outside(P: np.ndarray, idx: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Components of ``values[idx]`` in an orthonormal basis of the range of ``1 - P`` on ``idx``."""
    Q = np.eye(len(idx)) - P[np.ix_(idx, idx)]
    w, V = np.linalg.eigh(Q)
    return V[:, w > 0.5].T @ values[idx]


def _blocks(entries: Sequence[ThetaEntry], group) -> List[_Block]:
    """Every layer and irrep with a non-``group``-invariant part (``dim > 0``)."""
    out = []
    for entry in entries:
        P = group.invariant_projector(entry.irreps, dtype=torch.float64).numpy()
        for ir, idx in _irrep_indices(entry).items():
            comps = _outside(P, idx, entry.values)
            if len(comps):
                out.append(_Block(entry.name, ir, idx, comps))
    return out


def _forbidden(entries: Sequence[ThetaEntry], candidate) -> np.ndarray:
    """Components of :math:`(1 - P_H)\\theta` over every layer and irrep (orthonormal bases)."""
    parts = [np.zeros(0)]
    for entry in entries:
        P = candidate.invariant_projector(entry.irreps, dtype=torch.float64).numpy()
        parts += [_outside(P, idx, entry.values) for idx in _irrep_indices(entry).values()]
    return np.concatenate(parts)


def _dtype_of(model) -> torch.dtype:
    return model_dtype(model) if isinstance(model, torch.nn.Module) else torch.float64


def noise_floor(model, tol: float = 1e-3) -> float:
    r"""The noise floor :math:`\max(\mathrm{tol},\, c\,\epsilon)\,\lVert\theta\rVert` of a model's weights.

    :math:`\lVert\theta\rVert` is the norm of all relaxed weights together, :math:`\epsilon` the
    machine epsilon of their dtype (float64 for tensors handed over directly) and :math:`c` =
    :data:`PRECISION_FACTOR`. A breaking norm below it is never significant.
    """
    norm = float(np.linalg.norm(np.concatenate([e.values for e in collect_thetas(model)])))
    return max(float(tol), PRECISION_FACTOR * _precision(model)) * norm


def _precision(model) -> float:
    return float(torch.finfo(_dtype_of(model)).eps)


#: default of a deprecated keyword: tells "not given" from an explicit None
_UNSET = object()


def _check_arguments(n_boot, alpha, method, tol) -> None:
    if not isinstance(n_boot, int) or isinstance(n_boot, bool) or n_boot < 10:
        raise ValueError(f"n_boot must be an int >= 10, got {n_boot!r}")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if method not in ("chi2", "bootstrap"):
        raise ValueError(f"method must be 'chi2' or 'bootstrap', got {method!r}")
    if not (is_number(tol) and 0 <= tol < 1):
        raise ValueError(f"tol must be a float in [0, 1), got {tol!r}")


def breaking_significance(
    model,
    symmetric_control=None,
    group=None,
    n_boot: int = 2000,
    alpha: float = 0.01,
    seed: int = 0,
    method: str = "chi2",
    *,
    tol: float = 1e-3,
    candidate=None,
    strict_control=_UNSET,
) -> List[SignificanceRow]:
    r"""Per layer and irrep block: is the breaking above the noise level?

    Parameters
    ----------
    model : torch.nn.Module or list of (irreps, tensor) pairs
        Holds the relaxed weights (see :func:`relaxed_e3nn.symmetry.residual_group`).
    symmetric_control : model, float, dict, or None
        The noise level: a relaxed model with the same relaxed weights trained on symmetrised
        data, a per-component :math:`\sigma`, a dict ``{(layer, irrep): sigma}``, or ``None``
        for the estimate from ``model`` itself (module documentation).
    group : PointGroup or str, optional
        Breaking is measured beyond this group :math:`G` (default O(3)), e.g. the input's symmetry.
    n_boot : int
        Bootstrap draws.
    alpha : float
        Family-wise significance level (Bonferroni over the blocks tested).
    seed : int
        Seeds the bootstrap.
    method : {"chi2", "bootstrap"}
        How p-values are computed (module documentation).
    tol : float
        Relative tolerance in [0, 1) that sets the noise floor (as in ``residual_group``; 0 keeps
        only the precision floor).
    candidate : PointGroup or str, optional
        The group :math:`H \subseteq G` whose forbidden components estimate the noise when
        ``symmetric_control`` is None (e.g. the validated group); default the residual group of
        :math:`\theta` at ``tol`` within ``group``. Same coordinates as :math:`\theta`.
    strict_control : deprecated
        The former name of ``symmetric_control`` (a ``DeprecationWarning``).

    Returns
    -------
    list of SignificanceRow
        One per layer and irrep that has a non-invariant part (``dim > 0``).
    """
    symmetric_control = renamed_control(symmetric_control, strict_control)
    _check_arguments(n_boot, alpha, method, tol)
    group = as_point_group(group, "group", default="O3")
    entries = collect_thetas(model)
    blocks = _blocks(entries, group)
    if not blocks:
        return []
    floor = noise_floor(model, tol)
    sigma_of, pool = _noise_level(entries, blocks, symmetric_control, group, candidate, max(tol, _precision(model)))
    rng = np.random.default_rng(seed)
    threshold = alpha / len(blocks)
    rows = []
    for block in blocks:
        d = len(block.components)
        b = float(np.linalg.norm(block.components))
        sigma = max(sigma_of[(block.layer, block.irrep)], floor / math.sqrt(d))
        if method == "bootstrap":
            p = _bootstrap_p(b, d, sigma, pool, n_boot, rng)
        else:
            p = float(gammaincc(d / 2, b * b / (2 * sigma * sigma))) if sigma > 0 else (0.0 if b > 0 else 1.0)
        rows.append(SignificanceRow(block.layer, block.irrep, d, b, sigma * math.sqrt(d), p, p < threshold, floor))
    return rows


def _bootstrap_p(b: float, d: int, sigma: float, pool: Optional[np.ndarray], n_boot: int, rng) -> float:
    """Bootstrap p-value of a breaking norm ``b`` in ``d`` dimensions (pool scaled to ``sigma``)."""
    if pool is not None and len(pool) and float(np.sqrt(np.mean(pool**2))) > 0:
        draws = rng.choice(pool / np.sqrt(np.mean(pool**2)), size=(n_boot, d), replace=True) * sigma
    else:
        draws = rng.normal(scale=sigma, size=(n_boot, d))
    null = np.linalg.norm(draws, axis=1)
    return (1 + int((null >= b).sum())) / (n_boot + 1)


def significant_part(model, rows: Sequence[SignificanceRow], group=None) -> List[Tuple[object, np.ndarray]]:
    r""":math:`\theta` with every non-significant block projected onto its ``group``-invariant part.

    .. math::

        \theta'_{l,p} = \begin{cases} \theta_{l,p} & \text{block significant} \\
                                      P_G\,\theta_{l,p} & \text{otherwise} \end{cases}

    Parameters
    ----------
    model : torch.nn.Module or list of (irreps, tensor) pairs
    rows : list of SignificanceRow
        From :func:`breaking_significance` with the same ``group``.
    group : PointGroup or str, optional
        :math:`G` (default O(3)).

    Returns
    -------
    list of (e3nn.o3.Irreps, numpy.ndarray)
        One pair per relaxed weight, in the list form :func:`residual_group` takes.
    """
    group = as_point_group(group, "group", default="O3")
    significant = {(r.layer, r.irrep) for r in rows if r.significant}
    entries = collect_thetas(model)
    for entry in entries:
        P = group.invariant_projector(entry.irreps, dtype=torch.float64).numpy()
        for ir, idx in _irrep_indices(entry).items():
            if (entry.name, ir) not in significant:
                entry.values[idx] = P[np.ix_(idx, idx)] @ entry.values[idx]
    return entries_as_pairs(entries)


def renamed_control(symmetric_control, strict_control, where: str = "breaking_significance"):
    """``symmetric_control``, or the value given under its deprecated name ``strict_control``."""
    if strict_control is _UNSET:
        return symmetric_control
    if symmetric_control is not None:
        raise TypeError(f"{where}: give symmetric_control only (strict_control is its deprecated name)")
    warnings.warn(
        f"{where}(strict_control=...) is deprecated; use symmetric_control=...",
        DeprecationWarning,
        stacklevel=3,
    )
    return strict_control


def _noise_level(entries, blocks, control, group, candidate, tol) -> Tuple[Dict[Tuple[str, str], float], Optional[np.ndarray]]:
    r"""Per-block estimate :math:`\sigma_\text{est}` (before the floor) and the bootstrap pool (None without one)."""
    keys = [(b.layer, b.irrep) for b in blocks]
    if control is None:
        if candidate is None:
            candidate = residual_group(entries_as_pairs(entries), tol=tol, within=group)
        else:
            candidate = as_point_group(candidate, "candidate")
        pool = _forbidden(entries, candidate)
        sigma = 1.4826 * float(np.median(np.abs(pool))) if len(pool) else 0.0
        return {k: sigma for k in keys}, (pool if len(pool) else None)
    if isinstance(control, (int, float)) and not isinstance(control, bool):
        if not (control >= 0 and math.isfinite(control)):
            raise ValueError(f"symmetric_control as a number is the per-component noise and must be >= 0, got {control}")
        return {k: float(control) for k in keys}, None
    if isinstance(control, dict):
        missing = [k for k in keys if k not in control]
        if missing:
            raise ValueError(f"symmetric_control has no noise level for layer {missing[0][0]!r}, irrep {missing[0][1]!r}")
        return {k: float(control[k]) for k in keys}, None
    reference = _blocks(collect_thetas(control), group)
    if sorted((b.layer, b.irrep, len(b.components)) for b in reference) != \
            sorted((b.layer, b.irrep, len(b.components)) for b in blocks):
        raise ValueError(
            "symmetric_control must hold the same relaxed weights (names and irreps) as model; got "
            f"{sorted((b.layer, b.irrep) for b in reference)} vs {sorted(keys)}"
        )
    pool = np.concatenate([b.components for b in reference])
    return {k: float(np.sqrt(np.mean(pool**2))) for k in keys}, pool
