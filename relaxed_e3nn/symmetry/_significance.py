r"""Is a learned breaking real or noise? A per-block test against a noise level.

A finite, noisy data set never has an exact symmetry, so relaxed weights trained on it break
every symmetry a little. Per layer and irrep block, the statistic is the breaking norm
:math:`b = \lVert\theta_{l,p} - P_H\theta_{l,p}\rVert` (``H`` the group the breaking is measured
against, default O(3)), living in a subspace of dimension ``d`` (the non-invariant directions of
that block). The null hypothesis is "pure noise": ``d`` independent components drawn from a
noise distribution with per-component scale :math:`\sigma`.

Noise level, in order of preference:

* ``symmetric_control`` a relaxed model with the same relaxed weights, trained on symmetrised
  data (a "symmetric control"): whatever breaking it learned is noise. Its non-invariant
  components form the noise pool.
* ``symmetric_control`` a number :math:`\sigma` (per-component noise) or a dict
  ``{(layer, irrep): sigma}``.
* nothing: a robust estimate from the model itself, :math:`\sigma = 1.4826\,\mathrm{median}|c|`
  over all non-invariant components ``c`` of all blocks, which is the noise scale when most
  components are noise (breaking is sparse); when breaking is dense it overestimates
  :math:`\sigma` and the test becomes conservative. The pool is those components scaled to unit
  median absolute deviation times :math:`\sigma`.

p-values: ``method="chi2"`` (default) uses the Gaussian tail,
:math:`p = P(\chi^2_d \ge b^2/\sigma^2)`; ``method="bootstrap"`` (needs a pool: a symmetric control
model or the self-estimate) draws ``n_boot`` vectors of ``d`` components with replacement from the pool,
:math:`p = (1 + \#\{\lVert v\rVert \ge b\}) / (n_\mathrm{boot} + 1)`, free of the Gaussian
assumption but never below :math:`1/(n_\mathrm{boot}+1)`, so ``n_boot`` must exceed the number of
blocks divided by ``alpha`` for anything to be significant. A block is significant
when its p-value is below ``alpha`` divided by the number of blocks tested (Bonferroni). A
floor of :math:`\sigma \ge 10\,\epsilon\,\lVert\theta\rVert` (machine epsilon of the weights' dtype)
keeps an exactly symmetric control (SGD keeps symmetry to the last digit) from making rounding
errors significant.
"""
import math
import warnings
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from scipy.special import gammaincc  # chi2_d survival function: Q(d/2, x/2)

from relaxed_e3nn._checks import model_dtype
from relaxed_e3nn.groups import as_point_group

from ._theta import collect_thetas

__all__ = ["breaking_significance", "SignificanceRow"]


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
        Expected norm under the null, :math:`\\sigma\\sqrt{d}`.
    p_value : float
    significant : bool
    """

    layer: str
    irrep: str
    dim: int
    broken: float
    noise: float
    p_value: float
    significant: bool

    @property
    def ratio(self) -> float:
        """``broken / noise`` (``inf`` when the noise level is zero and the block is not)."""
        if self.noise > 0:
            return self.broken / self.noise
        return math.inf if self.broken > 0 else 0.0


def _blocks(model, group) -> List[Tuple[str, str, np.ndarray, float]]:
    """``(layer, irrep, broken components in an orthonormal basis of the non-invariant subspace, eps)``."""
    out = []
    rounding = 10 * float(np.finfo(np.float32).eps if _dtype_of(model) == torch.float32 else np.finfo(np.float64).eps)
    for entry in collect_thetas(model):
        P = group.invariant_projector(entry.irreps, dtype=torch.float64).numpy()
        eps = rounding * max(float(np.linalg.norm(entry.values)), 1.0)
        groups: Dict[str, List[slice]] = {}
        for (mul, ir), sl in zip(entry.irreps, entry.irreps.slices()):
            groups.setdefault(str(ir), []).append(sl)
        for ir, slices in groups.items():
            idx = np.concatenate([np.arange(sl.start, sl.stop) for sl in slices])
            Q = np.eye(len(idx)) - P[np.ix_(idx, idx)]  # projector onto the non-invariant part
            w, V = np.linalg.eigh(Q)
            basis = V[:, w > 0.5]
            out.append((entry.name, ir, basis.T @ entry.values[idx], eps))
    return out


def _dtype_of(model) -> torch.dtype:
    return model_dtype(model) if isinstance(model, torch.nn.Module) else torch.float64


#: default of a deprecated keyword: tells "not given" from an explicit None
_UNSET = object()


def breaking_significance(
    model,
    symmetric_control=None,
    group=None,
    n_boot: int = 2000,
    alpha: float = 0.01,
    seed: int = 0,
    method: str = "chi2",
    *,
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
        for the robust estimate from ``model`` itself (module documentation).
    group : PointGroup or str, optional
        Breaking is measured beyond this group (default O(3)), e.g. the input's symmetry.
    n_boot : int
        Bootstrap draws.
    alpha : float
        Family-wise significance level (Bonferroni over the blocks tested).
    seed : int
        Seeds the bootstrap.
    method : {"chi2", "bootstrap"}
        How p-values are computed (module documentation).
    strict_control : deprecated
        The former name of ``symmetric_control`` (a ``DeprecationWarning``).

    Returns
    -------
    list of SignificanceRow
        One per layer and irrep that has a non-invariant part (``dim > 0``).
    """
    symmetric_control = renamed_control(symmetric_control, strict_control)
    if not isinstance(n_boot, int) or isinstance(n_boot, bool) or n_boot < 10:
        raise ValueError(f"n_boot must be an int >= 10, got {n_boot!r}")
    if not (isinstance(alpha, (int, float)) and 0 < alpha < 1):
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    if method not in ("chi2", "bootstrap"):
        raise ValueError(f"method must be 'chi2' or 'bootstrap', got {method!r}")
    group = as_point_group(group, "group", default="O3")
    blocks = [b for b in _blocks(model, group) if len(b[2]) > 0]
    if not blocks:
        return []
    sigma_of, pool = _noise_level(blocks, symmetric_control, group)
    rng = np.random.default_rng(seed)
    threshold = alpha / len(blocks)
    rows = []
    for layer, ir, comps, _ in blocks:
        d = len(comps)
        b = float(np.linalg.norm(comps))
        sigma = sigma_of[(layer, ir)]
        if method == "bootstrap":
            if pool is None or len(pool) == 0:
                raise ValueError(
                    "method='bootstrap' needs a nonzero noise pool: a symmetric_control model or "
                    "symmetric_control=None with some nonzero non-invariant components"
                )
            draws = rng.choice(pool, size=(n_boot, d), replace=True)
            null = np.linalg.norm(draws, axis=1)
            p = (1 + int((null >= b).sum())) / (n_boot + 1)
        else:
            p = float(gammaincc(d / 2, b * b / (2 * sigma * sigma))) if sigma > 0 else (0.0 if b > 0 else 1.0)
        rows.append(SignificanceRow(layer, ir, d, b, sigma * math.sqrt(d), p, p < threshold))
    return rows


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


def _noise_level(blocks, control, group) -> Tuple[Dict[Tuple[str, str], float], Optional[np.ndarray]]:
    r"""Per-block noise scale :math:`\sigma` and the bootstrap pool (None without one), from ``control``."""
    floor = max(b[3] for b in blocks)
    if control is None:
        comps = np.concatenate([b[2] for b in blocks])
        mad = float(np.median(np.abs(comps)))
        sigma = max(1.4826 * mad, floor)
        pool = comps * (sigma / (1.4826 * mad)) if mad > 0 else None
        return {(b[0], b[1]): sigma for b in blocks}, pool
    if isinstance(control, (int, float)) and not isinstance(control, bool):
        if not (control >= 0 and math.isfinite(control)):
            raise ValueError(f"symmetric_control as a number is the per-component noise and must be >= 0, got {control}")
        return {(b[0], b[1]): max(float(control), floor) for b in blocks}, None
    if isinstance(control, dict):
        sigma_of = {}
        for b in blocks:
            key = (b[0], b[1])
            if key not in control:
                raise ValueError(f"symmetric_control has no noise level for layer {b[0]!r}, irrep {b[1]!r}")
            sigma_of[key] = max(float(control[key]), floor)
        return sigma_of, None
    reference = [b for b in _blocks(control, group) if len(b[2]) > 0]
    if sorted((b[0], b[1], len(b[2])) for b in reference) != sorted((b[0], b[1], len(b[2])) for b in blocks):
        raise ValueError(
            "symmetric_control must hold the same relaxed weights (names and irreps) as model; got "
            f"{sorted((b[0], b[1]) for b in reference)} vs {sorted((b[0], b[1]) for b in blocks)}"
        )
    comps = np.concatenate([b[2] for b in reference])
    rms = float(np.sqrt(np.mean(comps**2)))
    sigma = max(rms, floor)
    # a control below the rounding floor is scaled up to it (an all-zero one becomes Gaussian)
    pool = comps * (sigma / rms) if rms > 0 else None
    return {(b[0], b[1]): sigma for b in blocks}, pool
