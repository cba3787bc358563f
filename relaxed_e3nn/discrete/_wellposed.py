r"""Well-posed outputs for the dynamics models: baselines, scalar normalisation, bounded residuals.

A model predicts the target positions as a baseline plus a learned residual,

.. math::
    \hat x = b(x, v) + \mathrm{squash}_B\big(S\, \tilde\Delta\big), \qquad
    \mathrm{squash}_B(r) = \frac{B\, r}{\sqrt{B^2 + |r|^2}},

where :math:`\tilde\Delta` is the network's equivariant displacement computed on normalised
inputs :math:`\tilde x = (x - c)/L`, :math:`\tilde v = v / V`, :math:`\tilde a = a / A`
(``A`` per channel of the invariant node scalars), ``S`` the typical size of the residual
``target - baseline`` and ``B`` a bound on it. ``L``, ``V``, ``S`` and ``B`` are *scalars*, so
every step commutes with every orthogonal matrix: the normalised model is exactly as equivariant
as the network inside it. (A per-axis length would commute only with the groups of sign flips.)

Baselines:

- ``"free_flight"``: :math:`b = x + v\,\Delta t` (E(3)-equivariant);
- ``"reflected"``: free flight folded back into the box by the walls, per axis the triangle wave
  :math:`f(r) = L_a - |((r + L_a) \bmod 4L_a) - 2L_a|` of :math:`r = x_a + v_a \Delta t - c_a`.
  It commutes with the sign flip of each axis and with the exchange of axes of equal width,
  that is with the point group of the box, and with nothing else: models get it only when their
  group is a subgroup of the box group (:func:`check_box_subgroup`).
"""
import math
from typing import Dict, Optional

import torch

__all__ = ["BASELINES", "reflect_into_box", "check_box_subgroup", "squash", "robust_scale", "fitted_statistics",
           "checked_option", "bounded", "zero_last_layer"]

#: values of a dynamics model's ``baseline`` option
BASELINES = ("none", "free_flight", "reflected")

_TOLERANCE = 1e-6


def reflect_into_box(rel: torch.Tensor, half_widths: torch.Tensor) -> torch.Tensor:
    r"""Fold positions relative to the box centre back into ``|r_a| <= L_a`` (specular walls).

    Axes with an infinite (open) or zero (planar) half-width are left unchanged.

    Parameters
    ----------
    rel : torch.Tensor
        ``(..., 3)`` positions relative to the centre.
    half_widths : torch.Tensor
        ``(3,)`` half-widths.
    """
    walls = torch.isfinite(half_widths) & (half_widths > 0)
    width = torch.where(walls, half_widths, torch.ones_like(half_widths))
    folded = width - (torch.remainder(rel + width, 4 * width) - 2 * width).abs()
    return torch.where(walls, folded, rel)


def check_box_subgroup(elements: torch.Tensor, half_widths, where: str) -> None:
    """Raise ``ValueError`` unless every element maps the box ``|r_a| <= L_a`` onto itself.

    Such an element is a signed permutation matrix exchanging only axes of equal width.
    """
    widths = torch.as_tensor(half_widths, dtype=torch.float64)
    widths = torch.where(torch.isfinite(widths), widths, torch.full_like(widths, 1e300))
    for index, g in enumerate(elements.to(torch.float64)):
        pattern = g.abs().round()
        signed_permutation = bool((g.abs() - pattern).abs().max() < _TOLERANCE) and bool(
            (pattern.sum(0) == 1).all() and (pattern.sum(1) == 1).all()
        )
        if not (signed_permutation and bool(torch.isclose(pattern @ widths, widths).all())):
            raise ValueError(
                f"{where}: the reflected baseline needs a subgroup of the box group; element {index} "
                f"{g.tolist()} does not map the box with half-widths {widths.tolist()} onto itself"
            )


def bounded(values: torch.Tensor, bound: Optional[float]) -> torch.Tensor:
    """``bound * tanh(values / bound)`` (identity when ``bound`` is None): a coefficient network's output."""
    return values if bound is None else bound * torch.tanh(values / bound)


def zero_last_layer(mlp: torch.nn.Sequential) -> None:
    """Zero the last linear layer of ``mlp``: its coefficient starts at 0 (the model at its baseline)."""
    torch.nn.init.zeros_(mlp[-1].weight)
    torch.nn.init.zeros_(mlp[-1].bias)


def squash(residual: torch.Tensor, bound: torch.Tensor) -> torch.Tensor:
    r"""``B r / sqrt(B^2 + |r|^2)``: length below ``B``, about ``r`` when ``|r| << B``, smooth at 0."""
    squared = (residual * residual).sum(-1, keepdim=True)
    return residual * (bound / torch.sqrt(bound * bound + squared))


def robust_scale(norms: torch.Tensor) -> float:
    r"""A per-component scale from per-particle vector lengths: ``median(|u|) / sqrt(3)`` (1 if none is > 0).

    The median, not the root mean square: a few fast particles from close encounters (speeds
    a hundred times the median) would otherwise set the scale of every input. Non-finite entries
    are ignored (the training loss reports them).
    """
    norms = norms.reshape(-1).to(torch.float64)
    norms = norms[torch.isfinite(norms)]
    for value in (norms.median() if norms.numel() else torch.tensor(0.0), norms.max() if norms.numel() else 0.0):
        if float(value) > 0:
            return float(value) / math.sqrt(3.0)
    return 1.0


def fitted_statistics(pos, vel, node_attr, residual, center) -> Dict[str, torch.Tensor]:
    """The normalisation statistics of a training set (all arguments ``(S, N, ...)`` tensors).

    ``length_scale``: the root mean square of ``|x - c|``; ``velocity_scale`` and
    ``target_scale``: :func:`robust_scale` of the speeds and of the residual lengths;
    ``attr_scale``: the root mean square of each node scalar (1 where it is 0); ``output_bound``:
    1.5 times the largest residual length.
    """
    rel = (pos - center).reshape(-1, 3).to(torch.float64)
    length = float(torch.sqrt((rel * rel).sum(-1).mean()))
    attr = node_attr.reshape(-1, node_attr.shape[-1]).to(torch.float64)
    attr_scale = torch.sqrt((attr * attr).mean(0))
    residual_norm = residual.reshape(-1, 3).to(torch.float64).norm(dim=-1)
    finite = residual_norm[torch.isfinite(residual_norm)]
    largest = float(finite.max()) if finite.numel() else 1.0
    return {
        "length_scale": torch.tensor(length if length > 0 else 1.0),
        "velocity_scale": torch.tensor(robust_scale(vel.reshape(-1, 3).norm(dim=-1))),
        "attr_scale": torch.where(attr_scale > 0, attr_scale, torch.ones_like(attr_scale)),
        "target_scale": torch.tensor(robust_scale(residual_norm)),
        "output_bound": torch.tensor(max(1.5 * largest, 1e-12)),
    }


def checked_option(baseline: str, time_step: Optional[float], half_widths, where: str):
    """Validate ``baseline`` / ``time_step`` / ``half_widths``; return the half-widths as a list or None."""
    if baseline not in BASELINES:
        raise ValueError(f"{where}: baseline must be one of {BASELINES}, got {baseline!r}")
    if baseline != "none" and (time_step is None or not float(time_step) > 0 or not math.isfinite(time_step)):
        raise ValueError(
            f"{where}: the {baseline!r} baseline needs time_step, the positive time from input to target "
            f"(the data's dt), got {time_step!r}"
        )
    if half_widths is None:
        if baseline == "reflected":
            raise ValueError(f"{where}: the 'reflected' baseline needs the box half_widths")
        return None
    widths = [float(w) for w in half_widths]
    if len(widths) != 3 or any(math.isnan(w) or w < 0 for w in widths):
        raise ValueError(f"{where}: half_widths must be 3 non-negative numbers (inf allowed), got {half_widths!r}")
    return widths
