r"""Testing candidate axes, closing the passing elements into a group, continuous groups.

*Testing an axis.* In a frame whose polar axis is ``n``, a rotation by :math:`\alpha` about
``n`` multiplies the ``±m`` components by :math:`e^{\pm i m\alpha}`. With
:math:`P^{\pm}_m` the power of the parity ``p = ±1`` blocks at ``|m|``,

.. math::

    \lVert D(C_\alpha)\theta-\theta\rVert^2 = \sum_m (P^+_m + P^-_m)\,|e^{im\alpha}-1|^2,\qquad
    \lVert D(-C_\beta)\theta-\theta\rVert^2 = \sum_m P^+_m |e^{im\beta}-1|^2 + P^-_m |e^{im\beta}+1|^2,

so one change of basis per axis (:func:`relaxed_e3nn.symmetry._blocks.axis_components`) decides
every ``C_k``, ``S_k`` (``-C_{π + 2π/k}``) and the continuous rotation about it. Near misses (a
candidate a little off the true axis: noise moves critical points) are polished by Newton steps
on the element's error over the axis direction.

*Closing and naming.* Passing elements are closed into a group
(:func:`relaxed_e3nn.groups.point_group_from_generators`), which names it and finds its frame.
Every element of the named group is then checked against the bound; an element that fails
drops the generator that brought it in.

*The bound.* An element ``g`` belongs to the group when
:math:`\lVert D(g)\theta-\theta\rVert \le` :func:`threshold` ``= tol · |θ| + atol``, the one
place the tolerance rule is written. :math:`\lVert\theta\rVert` is the norm of the *whole*
weight vector, ``0e`` scalars included: they never break anything, but they set the size of
the weights, so a non-scalar part that is pure noise (say :math:`10^{-7}\lVert\theta\rVert`)
stays below the bound and reads as no breaking.
"""
import math
from typing import NamedTuple, Sequence

import numpy as np
import torch

from relaxed_e3nn.groups import (
    MAX_AXIS_ORDER,
    frame_from_axes,
    point_group,
    point_group_from_elements,
    point_group_from_generators,
    rotation_about,
)

from ._axes import candidate_axes
from ._blocks import Block, axis_components, blocks_norm, transform_blocks
from ._sphere import normalize, stencil_derivatives, stencil_points

__all__ = ["SearchResult", "search", "threshold", "element_errors", "intersect", "max_relative_error"]

_PROPER, _IMPROPER, _CONTINUOUS = 0, 1, 2


class SearchResult(NamedTuple):
    """What :func:`search` found: the group, the non-scalar norm, ``lmax`` and the bound."""

    group: object
    scale: float
    lmax: int
    threshold: float


def threshold(norm: float, tol: float, atol: float) -> float:
    r"""The largest :math:`\lVert D(g)\theta-\theta\rVert` allowed for ``g`` in the group.

    .. math::

        \mathrm{tol}\cdot\lVert\theta\rVert + \mathrm{atol},

    with :math:`\lVert\theta\rVert` the norm of the whole weight vector (``0e`` included).
    """
    return tol * norm + atol


# ---------------------------------------------------------------------------------------------
# errors
def element_errors(blocks: Sequence[Block], mats: np.ndarray) -> np.ndarray:
    r""":math:`\lVert D(g)\theta-\theta\rVert` for each matrix ``g`` of ``mats`` [N, 3, 3]."""
    if len(mats) == 0:
        return np.zeros(0)
    out = transform_blocks(blocks, mats)
    err2 = np.zeros(len(mats))
    for b, y in zip(blocks, out):
        err2 += ((y - b.values[None]) ** 2).sum((1, 2))
    return np.sqrt(err2)


def _within(errors: np.ndarray, thr: float) -> np.ndarray:
    return errors <= thr * (1 + 1e-9) + 1e-300


def _axis_power(blocks: Sequence[Block], axes: np.ndarray, lmax: int) -> np.ndarray:
    """``P[k, parity_index, m]``: power at ``|m|`` about ``axes[k]`` (parity index 0: p=+1, 1: p=-1)."""
    comps = axis_components(blocks, axes)
    lmax = max([lmax] + [b.l for b in blocks])
    P = np.zeros((len(axes), 2, lmax + 1))
    for b, u in zip(blocks, comps):
        sq = (u**2).sum(1)  # [K, 2l+1]
        l = b.l
        pm = np.concatenate([sq[:, l : l + 1], sq[:, l + 1 :] + sq[:, :l][:, ::-1]], 1)  # [K, l+1]
        P[:, 0 if b.p == 1 else 1, : l + 1] += pm
    return P


def _proper_err2(P: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Squared error of rotations by ``angles`` [A] about each axis -> [K, A]."""
    m = np.arange(P.shape[-1])
    w = 2 - 2 * np.cos(angles[:, None] * m)  # [A, M]
    return np.einsum("kpm,am->ka", P, w)


def _improper_err2(P: np.ndarray, angles: np.ndarray) -> np.ndarray:
    """Squared error of ``-C(angle)`` about each axis (``S_k`` has angle π + 2π/k) -> [K, A]."""
    m = np.arange(P.shape[-1])
    c = np.cos(angles[:, None] * m)
    return np.einsum("km,am->ka", P[:, 0], 2 - 2 * c) + np.einsum("km,am->ka", P[:, 1], 2 + 2 * c)


def _row_err2(P: np.ndarray, angles: np.ndarray, flags: np.ndarray) -> np.ndarray:
    """Squared error per row: proper rotation, improper ``-C(angle)``, or the off-axis power."""
    m = np.arange(P.shape[-1])
    c = np.cos(angles[:, None] * m)
    proper = ((P[:, 0] + P[:, 1]) * (2 - 2 * c)).sum(1)
    improper = (P[:, 0] * (2 - 2 * c) + P[:, 1] * (2 + 2 * c)).sum(1)
    off_axis = (P[:, 0, 1:] + P[:, 1, 1:]).sum(1)
    return np.where(flags == _PROPER, proper, np.where(flags == _IMPROPER, improper, off_axis))


def _refine_axes(blocks, axes, angles, flags, lmax, iters: int = 4, h: float = 1e-3):
    """Newton steps on the squared error of each (axis, element) row over the axis direction."""
    n = len(axes)
    if n == 0:
        return axes.reshape(0, 3), np.zeros(0)
    rep_angles, rep_flags = np.repeat(angles, 9), np.repeat(flags, 9)
    best = axes.copy()
    best_err = _row_err2(_axis_power(blocks, best, lmax), angles, flags)
    current = best.copy()
    for _ in range(iters):
        q, t1, t2 = stencil_points(current, h)
        f = _row_err2(_axis_power(blocks, q.reshape(-1, 3), lmax), rep_angles, rep_flags).reshape(n, 9)
        g, H = stencil_derivatives(f, h)
        h11, h22, h12 = H[:, 0, 0], H[:, 1, 1], H[:, 0, 1]
        det = h11 * h22 - h12**2
        ok = (det > 0) & (h11 > 0)
        safe = np.where(ok, det, 1.0)
        d1 = -(h22 * g[:, 0] - h12 * g[:, 1]) / safe
        d2 = -(-h12 * g[:, 0] + h11 * g[:, 1]) / safe
        step = np.stack([d1, d2], 1)
        step[~ok] = 0.0
        size = np.linalg.norm(step, axis=1, keepdims=True)
        step *= np.minimum(1.0, 0.05 / np.maximum(size, 1e-300))
        current = normalize(current + step[:, :1] * t1 + step[:, 1:] * t2)
        err = _row_err2(_axis_power(blocks, current, lmax), angles, flags)
        better = err < best_err
        best[better], best_err[better] = current[better], err[better]
    return best, best_err


# ---------------------------------------------------------------------------------------------
# groups
def _generic_angles(lmax: int) -> np.ndarray:
    return np.linspace(0, 2 * math.pi, 8 * max(lmax, 1) + 3)[1:-1]


def _continuous_group(blocks, axis, P_axis, thr, lmax):
    """Name the axial group of ``theta`` whose continuous axis is ``axis``."""
    frame = frame_from_axes(axis)
    perp = frame[:, 0].numpy()
    P_perp = _axis_power(blocks, perp[None], lmax)
    sigma_h = _improper_err2(P_axis[None], np.array([math.pi]))[0, 0] <= thr**2
    c2_perp = _proper_err2(P_perp, np.array([math.pi]))[0, 0] <= thr**2
    sigma_v = _improper_err2(P_perp, np.array([math.pi]))[0, 0] <= thr**2
    if (sigma_h and (c2_perp or sigma_v)) or (c2_perp and sigma_v):
        name = "Dinfh"
    elif c2_perp:
        name = "Dinf"
    elif sigma_v:
        name = "Cinfv"
    elif sigma_h:
        name = "Cinfh"
    else:
        name = "Cinf"
    return point_group(name, frame=frame)


def _continuous_candidate(blocks, axes, P, lmax, thr):
    """The axial group about the best candidate axis if ``theta`` is invariant under every rotation about it, else None.

    ``P`` is :func:`_axis_power` of ``axes``.
    """
    off_axis = _row_err2(P, np.zeros(len(axes)), np.full(len(axes), _CONTINUOUS))
    best = np.argsort(off_axis)[:8]
    refined, _ = _refine_axes(blocks, axes[best], np.zeros(len(best)), np.full(len(best), _CONTINUOUS), lmax)
    P_best = _axis_power(blocks, refined, lmax)
    cont_err2 = _proper_err2(P_best, _generic_angles(lmax)).max(1)
    i = int(np.argmin(cont_err2))
    if cont_err2[i] <= thr**2:
        return _continuous_group(blocks, refined[i], P_best[i], thr, lmax)
    return None


def _finite_generators(blocks, axes, P, lmax, thr):
    """Every ``C_k`` and ``S_k`` about the candidate axes that moves ``theta`` by at most ``thr``, with its squared error.

    ``P`` is :func:`_axis_power` of ``axes``.
    """
    kmax = min(lmax, MAX_AXIS_ORDER)
    # C_k (k = 2..kmax) and S_k (k = 1, 3..2 kmax; S_2 is the inversion, handled apart)
    kinds = [(2 * math.pi / k, _PROPER) for k in range(2, kmax + 1)]
    kinds += [(math.pi + 2 * math.pi / k, _IMPROPER) for k in [1] + list(range(3, 2 * kmax + 1))]
    angles = np.array([kd[0] for kd in kinds])
    flags = np.array([kd[1] for kd in kinds])
    err2 = np.concatenate([_proper_err2(P, angles[flags == _PROPER]), _improper_err2(P, angles[flags == _IMPROPER])], 1)
    # near misses are candidate axes a little off the true one (noise moves critical points):
    # polish them by minimising the element's error over the axis direction
    near_axis, near_kind = np.nonzero(err2 <= (30 * thr) ** 2)
    order = np.argsort(err2[near_axis, near_kind])[:300]
    near_axis, near_kind = near_axis[order], near_kind[order]
    polished, polished_err2 = _refine_axes(blocks, axes[near_axis], angles[near_kind], flags[near_kind], lmax)
    gens, errs = [], []
    for a, kd, e in zip(polished, near_kind, polished_err2):
        if e > thr**2:
            continue
        g = rotation_about(a, angles[kd])
        gens.append(g if flags[kd] == _PROPER else -g)
        errs.append(float(e))
    return gens, errs


def _close(blocks, gens, errs, thr):
    """Greedy closure: add generators (smallest error first), keep those whose group stays within ``thr``."""
    group = point_group("C1")
    if not gens:
        return group
    order = np.argsort(errs, kind="stable")
    accepted = []
    for i in order:
        g = gens[i]
        if group.contains(g[None], 1e-2).all():
            continue  # already in the group (or a less accurate copy of one of its elements)
        trial = accepted + [g]
        try:
            candidate = point_group_from_generators(np.stack(trial), tol=1e-2, max_order=120)
        except (ValueError, RuntimeError):
            continue  # not a finite group of the catalogue (e.g. axis order > 8): drop this generator
        if _within(element_errors(blocks, candidate.elements.numpy()), thr).all():
            accepted = trial
            group = candidate
    return group


def search(blocks: Sequence[Block], tol: float, atol: float, norm: float = None) -> SearchResult:
    r"""The residual group of the blocks (``0e`` already removed), with their norm, ``lmax`` and bound.

    ``norm`` is :math:`\lVert\theta\rVert` of the whole vector (``0e`` included) that the
    tolerance is relative to; default the norm of ``blocks``.
    """
    scale = blocks_norm(blocks)
    thr = threshold(scale if norm is None else max(norm, scale), tol, atol)
    norms = {}
    for b in blocks:
        norms[b.l] = norms.get(b.l, 0.0) + float((b.values**2).sum())
    high = [l for l, v in norms.items() if l >= 1 and math.sqrt(v) > 1e-12 * max(scale, 1e-300)]
    lmax = max(high, default=0)
    norm_l_ge_1 = math.sqrt(sum(v for l, v in norms.items() if l >= 1))
    norm_odd = blocks_norm([b for b in blocks if b.p == -1])
    # every rotation moves theta by at most 2 |theta_{l>=1}|
    if 2 * norm_l_ge_1 <= thr:
        return SearchResult(point_group("O3" if 2 * norm_odd <= thr else "SO3"), scale, lmax, thr)
    # the axis search resolves details down to the bound, expressed relative to the non-scalar norm
    axes = candidate_axes(blocks, lmax, scale, thr / scale)
    P = _axis_power(blocks, axes, lmax)
    group = _continuous_candidate(blocks, axes, P, lmax, thr)
    if group is None:
        gens, errs = _finite_generators(blocks, axes, P, lmax, thr)
        # the inversion (axis independent): odd-parity blocks change sign
        if 2 * norm_odd <= thr:
            gens.append(-np.eye(3))
            errs.append(4 * norm_odd**2)
        group = _close(blocks, gens, errs, thr)
    return SearchResult(group, scale, lmax, thr)


def intersect(blocks: Sequence[Block], group, parent, thr: float):
    r"""The elements of ``parent`` that keep ``theta`` within ``thr`` (finite parent), else ``group ∩ parent``.

    Near the bound the kept elements need not form a group (:math:`\lVert D(gh)\theta-\theta\rVert`
    is only bounded by the sum of the two errors); they are then closed greedily, smallest error
    first, keeping a generator only while the whole group stays within ``thr`` (as in the search).
    """
    if parent.is_finite:
        mats = parent.elements.numpy()
        errors = element_errors(blocks, mats)
        keep = _within(errors, thr)
        try:
            return point_group_from_elements(mats[keep], tol=1e-6)
        except ValueError:
            return _close(blocks, list(mats[keep]), list(errors[keep]), thr)
    return group.intersection(parent, tol=1e-6)


def max_relative_error(blocks: Sequence[Block], group, scale: float) -> float:
    """Largest ``|D(h)θ − θ| / scale`` over the elements of ``group`` (64 samples of a continuous one)."""
    if scale == 0:
        return 0.0
    if group.is_finite:
        mats = group.elements.numpy()
    else:
        gen = torch.Generator().manual_seed(0)
        mats = group.sample(64, generator=gen).numpy()
    return float(element_errors(blocks, mats).max(initial=0.0) / scale)
