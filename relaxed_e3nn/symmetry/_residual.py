r"""The residual group: the largest point group that leaves relaxed weights invariant.

For a vector :math:`\theta` in a direct sum of O(3) irreps, the residual group is the largest
point group :math:`H` with

.. math::

    \lVert D(h)\theta - \theta \rVert \le \mathrm{tol}\cdot\lVert\theta_{\neq 0e}\rVert
    \qquad \forall h \in H,

where :math:`\theta_{\neq 0e}` is every entry that is not a ``0e`` scalar (``0e`` parts are
invariant under all of O(3) and never break anything; ``0o`` parts do count, they break parity).

How it is found
---------------
1. *Candidate axes.* Every symmetry element of a finite point group is a rotation ``C_n`` or an
   improper rotation ``S_n`` (mirrors ``S_1``, inversion ``S_2``) about some axis, and every
   such axis of :math:`H` is special for :math:`\theta`:

   * the ``l = 1`` parts are vectors lying on the axes;
   * the ``l = 2`` parts are symmetric traceless matrices ``M`` with :math:`h M h^T = M`, so the
     axes and mirror normals are eigenvectors; the same holds for the second moments
     :math:`\int f(\hat r)^2 \hat r \hat r^T d\hat r` of the spherical signal
     :math:`f(\hat r) = \theta_l \cdot Y_l(\hat r)` of every block;
   * every rotation axis of order >= 2 is a critical point of every invariant signal. Critical
     points (maxima, minima and saddles) of random mixtures of the block signals (blocks that
     transform alike under improper elements; once with their own weights, once each at unit
     weight so that a small block is not drowned) are found on a Fibonacci grid and refined by
     Newton's method;
   * the critical points form :math:`H`-orbits, and for two points ``p`` and ``q = h p`` of one
     orbit, ``p + q`` lies on the axis of ``h`` when ``h`` is a two-fold rotation, ``p - q`` is
     the normal of ``h`` when it is a mirror, and ``p x q`` is the axis of any rotation taking
     one to the other. Points of one orbit share the absolute values of every invariant signal,
     which is the (cheap) test for pairing them;
   * cross products and bisectors of the vector / eigenvector candidates.

2. *Testing an axis.* In a frame whose polar axis is ``n``, a rotation by :math:`\alpha` about
   ``n`` multiplies the ``\pm m`` components by :math:`e^{\pm i m\alpha}`. With
   :math:`P^{\pm}_m` the power of the parity ``p = \pm 1`` blocks at ``|m|``,

   .. math::

       \lVert D(C_\alpha)\theta-\theta\rVert^2 = \sum_m (P^+_m + P^-_m)\,|e^{im\alpha}-1|^2,\qquad
       \lVert D(-C_\beta)\theta-\theta\rVert^2 = \sum_m P^+_m |e^{im\beta}-1|^2 + P^-_m |e^{im\beta}+1|^2,

   so one change of basis per axis decides every ``C_k``, ``S_k`` (``-C_{\pi + 2\pi/k}``) and
   the continuous rotation about it.
   Near misses (a candidate a little off the true axis: noise moves critical points) are
   polished by Newton steps on the element's error over the axis direction.

3. *Closing and naming.* Passing elements are closed into a group
   (:func:`relaxed_e3nn.groups.point_group_from_generators`), which names it and finds its
   frame. Every element of the named group is then checked against the bound above; an
   element that fails drops the generator that brought it in.

Continuous groups: if the non-scalar part of :math:`\theta` is invariant under every rotation
about an axis (only ``m = 0`` components about it) the result is ``Cinf``, ``Cinfv``, ``Cinfh``,
``Dinf`` or ``Dinfh``; if it has no ``l >= 1`` part it is ``SO3`` (a nonzero ``0o`` part) or
``O3``.

Resolution: with irreps up to ``l = L``, a ``C_n`` axis with ``n > L`` cannot be told apart from
a continuous axis (no ``m = \pm n`` component exists), so the finest finite axis order reported
is ``min(L, 8)`` (8 is the catalogue's largest axis order); beyond that a continuous group is
returned.
"""
import functools
import math
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from e3nn import o3

from relaxed_e3nn.groups import (
    MAX_AXIS_ORDER,
    PointGroup,
    describe_element,
    frame_from_axes,
    point_group,
    point_group_from_elements,
    point_group_from_generators,
    point_group_of,
)

from ._theta import collect_thetas, concatenate
from ._wigner import Block, apply_D, axis_frame_components, blocks_of, rotation_about

__all__ = ["residual_group", "find_residual_symmetry", "ResidualSymmetry", "symmetry_errors"]


# ---------------------------------------------------------------------------------------------
# result
@dataclass
class ResidualSymmetry:
    """Result of :func:`find_residual_symmetry`.

    Attributes
    ----------
    group : relaxed_e3nn.groups.PointGroup
        The residual group (intersected with ``parent`` when one was given).
    parent : PointGroup or None
        The ``within=`` group.
    unrestricted : PointGroup
        The residual group of :math:`\\theta` alone (before intersecting with ``parent``).
    tol : float
        Relative tolerance used.
    scale : float
        :math:`\\lVert\\theta_{\\neq 0e}\\rVert`, the norm the tolerance is relative to.
    max_error : float
        Largest relative error :math:`\\lVert D(h)\\theta-\\theta\\rVert / \\mathrm{scale}` over the
        elements of ``group`` (over a sample of 64 elements for continuous groups; 0 when
        ``scale`` is 0).
    lmax : int
        Largest ``l`` with a nonzero non-``0e`` part.
    resolution : int
        Largest finite axis order that can be resolved, ``min(lmax, 8)``.
    axes : list of dict
        The group's symmetry elements as ``{"symbol", "axis"}`` (one per distinct axis and kind).
    """

    group: object
    parent: Optional[object]
    unrestricted: object
    tol: float
    scale: float
    max_error: float
    lmax: int
    resolution: int
    axes: List[dict] = field(default_factory=list)

    def chain(self) -> str:
        """``"Oh -> C4v"`` when a parent was given, else the group's name."""
        if self.parent is None:
            return self.group.schoenflies
        return f"{self.parent.schoenflies} -> {self.group.schoenflies}"


# ---------------------------------------------------------------------------------------------
# sphere grid and spherical signals
_MAX_ORDER = MAX_AXIS_ORDER  # largest axis order of the catalogue


@functools.lru_cache(maxsize=8)
def _fibonacci_grid(n: int) -> Tuple[np.ndarray, np.ndarray]:
    """``n`` near-uniform unit vectors and the indices of each one's 8 nearest neighbours."""
    from scipy.spatial import cKDTree

    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + math.sqrt(5)) * i
    r = np.sqrt(1 - z * z)
    pts = np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)
    # an irrational tilt keeps grid points off the coordinate axes and planes
    tilt = rotation_about(np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8]), 0.4321)
    pts = pts @ tilt.T
    _, nbr = cKDTree(pts).query(pts, k=9)
    pts.setflags(write=False)
    return pts, nbr[:, 1:]


def _sh(ls: Sequence[int], pts: np.ndarray) -> np.ndarray:
    x = torch.as_tensor(np.ascontiguousarray(pts), dtype=torch.float64)
    return o3.spherical_harmonics(list(ls), x, normalize=True, normalization="component").numpy()


@functools.lru_cache(maxsize=None)
def _monomial_exponents(l: int) -> np.ndarray:
    return np.array([(a, b, l - a - b) for a in range(l, -1, -1) for b in range(l - a, -1, -1)])


@functools.lru_cache(maxsize=None)
def _sh_monomial_coefficients(l: int) -> np.ndarray:
    """``C`` [n_monomials, 2l+1] with ``Y_l(r) = monomials_l(r) @ C`` (e3nn's Y_l are homogeneous polynomials)."""
    exps = _monomial_exponents(l)
    rng = np.random.default_rng(l)
    r = rng.normal(size=(4 * len(exps) + 8, 3))
    x = torch.as_tensor(r, dtype=torch.float64)
    Y = o3.spherical_harmonics(l, x, normalize=False, normalization="component").numpy()
    coef, *_ = np.linalg.lstsq(_monomials(r, exps, l), Y, rcond=None)
    return coef


def _monomials(pts: np.ndarray, exps: np.ndarray, lmax: int) -> np.ndarray:
    powers = np.ones((3, lmax + 1, len(pts)))
    coords = pts.T
    for k in range(1, lmax + 1):
        powers[:, k] = powers[:, k - 1] * coords
    return (powers[0, exps[:, 0]] * powers[1, exps[:, 1]] * powers[2, exps[:, 2]]).T


class _Signals:
    """Spherical signals ``f_s(r) = sum_l W_s,l . Y_l(r)`` evaluated as polynomials (unit ``r``)."""

    def __init__(self, ls: Sequence[int], weights: np.ndarray):
        self.ls = list(ls)
        self.lmax = max(self.ls, default=0)
        exps, coefs, o = [], [], 0
        for l in self.ls:
            d = 2 * l + 1
            exps.append(_monomial_exponents(l))
            coefs.append(_sh_monomial_coefficients(l) @ weights[o : o + d])
            o += d
        self.exps = np.concatenate(exps) if exps else np.zeros((0, 3), int)
        self.M = np.concatenate(coefs) if coefs else np.zeros((0, weights.shape[1]))

    def __call__(self, pts: np.ndarray) -> np.ndarray:
        shape = pts.shape[:-1]
        mono = _monomials(pts.reshape(-1, 3), self.exps, self.lmax)
        return (mono @ self.M).reshape(shape + (self.M.shape[1],))


def _tangent_basis(p: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    a = np.where(np.abs(p[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
    t1 = np.cross(p, a)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(p, t1)
    return t1, t2


def _normalize(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


_STENCIL = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1], [1, 1], [1, -1], [-1, 1], [-1, -1]], float)


def _derivatives(signals: _Signals, p: np.ndarray, which: np.ndarray, h: float):
    """Value, tangent gradient and Hessian of signal ``which[i]`` at ``p[i]`` (finite differences)."""
    t1, t2 = _tangent_basis(p)
    q = p[:, None] + h * (_STENCIL[None, :, :1] * t1[:, None] + _STENCIL[None, :, 1:] * t2[:, None])
    q = _normalize(q)
    f = signals(q)[np.arange(len(p)), :, which]  # [n, 9]
    g = np.stack([f[:, 1] - f[:, 2], f[:, 3] - f[:, 4]], 1) / (2 * h)
    h11 = (f[:, 1] - 2 * f[:, 0] + f[:, 2]) / h**2
    h22 = (f[:, 3] - 2 * f[:, 0] + f[:, 4]) / h**2
    h12 = (f[:, 5] - f[:, 6] - f[:, 7] + f[:, 8]) / (4 * h**2)
    H = np.stack([np.stack([h11, h12], -1), np.stack([h12, h22], -1)], -2)
    return f[:, 0], g, H, t1, t2


def _critical_points(signals: _Signals, n_search: int, grid_size: int, scales: np.ndarray) -> np.ndarray:
    """Critical points (any type) of the first ``n_search`` signals, as unit vectors."""
    if n_search == 0:
        return np.zeros((0, 3))
    pts, nbr = _fibonacci_grid(grid_size)
    h = 1e-3
    t1, t2 = _tangent_basis(pts)
    stencil = _normalize(np.concatenate([pts[:, None] + h * s1 * t[:, None] for t in (t1, t2) for s1 in (1, -1)], 1))
    f = signals(stencil)[..., :n_search]  # [P, 4, S]
    grad2 = ((f[:, 0] - f[:, 1]) ** 2 + (f[:, 2] - f[:, 3]) ** 2) / (2 * h) ** 2  # [P, S]
    is_min = (grad2[:, None, :] <= grad2[nbr]).all(1)  # [P, S]
    seed_pt, seed_sig = np.nonzero(is_min)
    p = pts[seed_pt]
    which = seed_sig
    step_h = 1e-4
    for _ in range(7):
        _, g, H, t1, t2 = _derivatives(signals, p, which, step_h)
        # Newton on grad = 0 (works for maxima, minima and saddles); damped where H is singular
        det = H[:, 0, 0] * H[:, 1, 1] - H[:, 0, 1] ** 2
        norm_h = np.abs(H).reshape(len(H), -1).max(1) + 1e-300
        ok = np.abs(det) > 1e-6 * norm_h**2
        Hinv = np.stack(
            [np.stack([H[:, 1, 1], -H[:, 0, 1]], -1), np.stack([-H[:, 0, 1], H[:, 0, 0]], -1)], -2
        ) / np.where(ok, det, 1.0)[:, None, None]
        delta = -np.einsum("nij,nj->ni", Hinv, g)
        delta[~ok] = 0.0
        size = np.linalg.norm(delta, axis=1, keepdims=True)
        delta *= np.minimum(1.0, 0.2 / np.maximum(size, 1e-300))
        p = _normalize(p + delta[:, :1] * t1 + delta[:, 1:] * t2)
    _, g, _, _, _ = _derivatives(signals, p, which, step_h)
    converged = np.linalg.norm(g, axis=1) <= 1e-6 * np.maximum(scales[which], 1e-300)
    return p[converged]


# ---------------------------------------------------------------------------------------------
# axes
def _canonical(v: np.ndarray) -> np.ndarray:
    """Unit vectors with the sign fixed (first component with |x| > 1e-6 positive)."""
    v = _normalize(v)
    big = np.abs(v) > 1e-6
    first = np.argmax(big, axis=1)
    sign = np.sign(v[np.arange(len(v)), first])
    sign[sign == 0] = 1
    return v * sign[:, None]


def _dedup_axes(v: np.ndarray, resolution: float = 1e-4) -> np.ndarray:
    if len(v) == 0:
        return v.reshape(0, 3)
    v = _canonical(v)
    keys = np.round(v / resolution).astype(np.int64)
    _, idx = np.unique(keys, axis=0, return_index=True)
    return v[np.sort(idx)]


def _valid(v: np.ndarray, min_norm: float) -> np.ndarray:
    v = v.reshape(-1, 3)
    return v[np.linalg.norm(v, axis=1) > min_norm]


@functools.lru_cache(maxsize=1)
def _l2_basis_cached() -> np.ndarray:
    rng = np.random.default_rng(0)
    r = _normalize(rng.normal(size=(40, 3)))
    Y = _sh([2], r)  # [40, 5]
    iu = [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]
    A = np.stack([r[:, i] * r[:, j] * (1 if i == j else 2) for i, j in iu], 1)  # [40, 6]
    coef, *_ = np.linalg.lstsq(A, Y, rcond=None)  # [6, 5]
    B = np.zeros((5, 3, 3))
    for c, (i, j) in enumerate(iu):
        B[:, i, j] = coef[c]
        B[:, j, i] = coef[c]
    # remove the trace (r^T I r = 1 is a constant; Y_2 has none)
    B -= np.trace(B, axis1=1, axis2=2)[:, None, None] / 3 * np.eye(3)
    return B


def _eigvecs(mats: np.ndarray) -> np.ndarray:
    if len(mats) == 0:
        return np.zeros((0, 3))
    _, vecs = np.linalg.eigh(mats)
    return vecs.transpose(0, 2, 1).reshape(-1, 3)


def _pair_axes(points: np.ndarray, signature: Optional[np.ndarray], sig_tol: float, min_norm: float) -> np.ndarray:
    """Sums, differences and cross products of pairs of points (of matching signature)."""
    n = len(points)
    if n < 2:
        return np.zeros((0, 3))
    i, j = np.triu_indices(n, 1)
    if signature is not None:
        match = np.abs(signature[i] - signature[j]).max(1) <= sig_tol
        i, j = i[match], j[match]
    if len(i) == 0:
        return np.zeros((0, 3))
    a, b = points[i], points[j]
    # points are only known up to sign: a + b and a - b cover both
    out = np.concatenate([a + b, a - b, np.cross(a, b)])
    return _valid(out, min_norm)


# ---------------------------------------------------------------------------------------------
# testing axes
def _axis_power(blocks: Sequence[Block], axes: np.ndarray, lmax: int) -> np.ndarray:
    """``P[k, parity_index, m]``: power at ``|m|`` about ``axes[k]`` (parity index 0: p=+1, 1: p=-1)."""
    comps = axis_frame_components(blocks, axes)
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


def symmetry_errors(theta, irreps=None, elements=None) -> np.ndarray:
    r"""Relative errors :math:`\lVert D(g)\theta-\theta\rVert / \lVert\theta_{\neq 0e}\rVert` for each ``g``.

    Parameters
    ----------
    theta, irreps
        As in :func:`residual_group`.
    elements : array_like ``[N, 3, 3]`` or PointGroup
        Orthogonal matrices (proper or improper); a finite PointGroup contributes its elements.

    Returns
    -------
    numpy.ndarray ``[N]`` (absolute errors when the non-``0e`` part is zero).
    """
    irreps_all, values = concatenate(collect_thetas(theta, irreps))
    blocks = [b for b in blocks_of(irreps_all, values) if not (b.l == 0 and b.p == 1)]
    mats = _element_array(elements)
    scale = math.sqrt(sum(float((b.values**2).sum()) for b in blocks))
    return _errors(blocks, mats) / (scale if scale > 0 else 1.0)


def _element_array(elements) -> np.ndarray:
    if isinstance(elements, PointGroup):
        return elements.elements.numpy()
    if isinstance(elements, torch.Tensor):
        elements = elements.detach().to("cpu", torch.float64).numpy()
    mats = np.asarray(elements, dtype=np.float64)
    if mats.ndim == 2:
        mats = mats[None]
    if mats.ndim != 3 or mats.shape[1:] != (3, 3):
        raise ValueError(f"elements must have shape [N, 3, 3], got {mats.shape}")
    if np.abs(mats @ mats.transpose(0, 2, 1) - np.eye(3)).max(initial=0.0) > 1e-6:
        raise ValueError("elements must be orthogonal 3x3 matrices")
    return mats


def _errors(blocks: Sequence[Block], mats: np.ndarray) -> np.ndarray:
    if len(mats) == 0:
        return np.zeros(0)
    out = apply_D(blocks, mats)
    err2 = np.zeros(len(mats))
    for b, y in zip(blocks, out):
        err2 += ((y - b.values[None]) ** 2).sum((1, 2))
    return np.sqrt(err2)


# ---------------------------------------------------------------------------------------------
# the search
def _as_parent(within):
    if within is None or isinstance(within, PointGroup):
        return within
    if isinstance(within, str):
        return point_group(within)
    try:
        return point_group_of(within)
    except TypeError:
        raise TypeError(
            "within must be a PointGroup, a group name, or an ase Atoms / pymatgen structure, "
            f"got {type(within).__name__}"
        ) from None


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


def _generic_angles(lmax: int) -> np.ndarray:
    return np.linspace(0, 2 * math.pi, 8 * max(lmax, 1) + 3)[1:-1]


def _candidate_axes(blocks: Sequence[Block], lmax: int, scale: float, tol: float) -> np.ndarray:
    """Unit vectors (up to sign) that contain every axis and mirror normal of the residual group."""
    rng = np.random.default_rng(12345)
    min_norm = 1e-6
    # l = 1 copies are vectors; l = 2 copies are symmetric matrices whose eigenvectors are axes
    vectors = [_valid(b.values, 1e-9 * scale) for b in blocks if b.l == 1]
    B = _l2_basis_cached()
    vectors += [_eigvecs(np.einsum("mk,kij->mij", b.values, B)) for b in blocks if b.l == 2]
    basic = _dedup_axes(_valid(np.concatenate(vectors), 1e-12)) if vectors else np.zeros((0, 3))
    # their cross products and bisectors are the mirror normals and C2' axes when nothing of
    # higher l pins them down
    derived = _pair_axes(basic[:40], None, 0.0, min_norm)
    # spherical signals: one random combination of copies per block (search), one per copy (signature)
    ls = sorted({b.l for b in blocks if b.l >= 1})
    offsets = {l: sum(2 * q + 1 for q in ls if q < l) for l in ls}
    dim = sum(2 * l + 1 for l in ls)

    def column(l, v):
        c = np.zeros(dim)
        c[offsets[l] : offsets[l] + 2 * l + 1] = v
        return c

    active = [b for b in blocks if b.l >= 1 and np.linalg.norm(b.values) > 1e-12 * scale]
    search_cols = [column(b.l, rng.normal(size=b.values.shape[0]) @ b.values) for b in active]
    sig_cols = [column(b.l, v) for b in active for v in b.values]
    n_search = len(search_cols)
    if n_search == 0:
        return _dedup_axes(np.concatenate([basic, derived]))
    # a random mixture of every block: its second moment is invariant under the rotations of H
    mix = sum(rng.normal() * c for c in search_cols)
    W = np.stack(search_cols + [mix] + sig_cols, 1)
    signals = _Signals(ls, W)
    grid_size = int(min(6000, max(600, 40 * lmax * lmax)))
    pts, _ = _fibonacci_grid(grid_size)
    values = signals(pts)  # [P, S]
    scales = np.abs(values).max(0)
    # second moments  int f^2 r r^T  of the search signals and of the mixture
    moments = np.einsum("ps,pi,pj->sij", values[:, : n_search + 1] ** 2, pts, pts) / len(pts)
    combined = np.einsum("s,sij->ij", rng.normal(size=len(moments)), moments)[None]
    moment_axes = _eigvecs(np.concatenate([moments, combined]))
    # critical points of random mixtures of the blocks whose signals transform alike under improper
    # elements (f(g r) = p (-1)^l f(r)): each mixture's critical points form H-orbits. Two
    # independent mixtures per class guard against an accidentally degenerate one.
    crit = np.zeros((0, 3))
    if lmax >= 3:
        mixtures = []
        for cls in (1, -1):
            members = [i for i, b in enumerate(active) if b.p * (-1) ** b.l == cls]
            if not members:
                continue
            mixtures.append(sum(rng.normal() * search_cols[i] for i in members))
            # the same with every block that can matter (norm above the threshold) at unit
            # weight, so that a small block carrying the finer symmetry is not drowned
            big = [i for i in members if np.linalg.norm(active[i].values) > tol * scale]
            if big:
                mixtures.append(sum(rng.normal() * search_cols[i] / np.linalg.norm(search_cols[i]) for i in big))
        crit_signals = _Signals(ls, np.stack(mixtures, 1))
        crit_scales = np.abs(crit_signals(pts)).max(0)
        crit = _dedup_axes(_critical_points(crit_signals, len(mixtures), grid_size, crit_scales))
    from_pairs = np.zeros((0, 3))
    if len(crit):
        # points of one orbit have equal |signal| for every copy (up to the tolerance)
        sig = np.abs(signals(crit)[:, n_search + 1 :])
        sig_tol = max(3 * tol, 1e-9) * scale * math.sqrt(2 * lmax + 1)
        from_pairs = _pair_axes(crit, sig, sig_tol, min_norm)
    return _dedup_axes(np.concatenate([basic, derived, moment_axes, crit, from_pairs]))


def _search(blocks: Sequence[Block], tol: float, atol: float):
    """Return (group, scale, lmax) for the residual group of the blocks (0e already removed)."""
    scale = math.sqrt(sum(float((b.values**2).sum()) for b in blocks))
    thr = tol * scale + atol
    norms = {}
    for b in blocks:
        norms[b.l] = norms.get(b.l, 0.0) + float((b.values**2).sum())
    high = [l for l, v in norms.items() if l >= 1 and math.sqrt(v) > 1e-12 * max(scale, 1e-300)]
    lmax = max(high, default=0)
    norm_l_ge_1 = math.sqrt(sum(v for l, v in norms.items() if l >= 1))
    norm_odd = math.sqrt(sum(float((b.values**2).sum()) for b in blocks if b.p == -1))
    # every rotation moves theta by at most 2 |theta_{l>=1}|
    if 2 * norm_l_ge_1 <= thr:
        inversion_ok = 2 * norm_odd <= thr
        return point_group("O3" if inversion_ok else "SO3"), scale, lmax
    kmax = min(lmax, _MAX_ORDER)
    axes = _candidate_axes(blocks, lmax, scale, tol)
    P = _axis_power(blocks, axes, lmax)
    # continuous rotation about an axis: refine the best few, then test every angle
    off_axis = _row_err2(P, np.zeros(len(axes)), np.full(len(axes), _CONTINUOUS))
    best = np.argsort(off_axis)[:8]
    refined, _ = _refine_axes(blocks, axes[best], np.zeros(len(best)), np.full(len(best), _CONTINUOUS), lmax)
    P_best = _axis_power(blocks, refined, lmax)
    cont_err2 = _proper_err2(P_best, _generic_angles(lmax)).max(1)
    i = int(np.argmin(cont_err2))
    if cont_err2[i] <= thr**2:
        return _continuous_group(blocks, refined[i], P_best[i], thr, lmax), scale, lmax
    # every C_k (k = 2..kmax) and S_k (k = 1, 3..2 kmax; S_2 is the inversion) about every axis
    ks = np.arange(2, kmax + 1)
    ks_imp = np.array([1] + list(range(3, 2 * kmax + 1)))
    kinds = [(int(k), 2 * math.pi / k, _PROPER) for k in ks] + [
        (int(k), math.pi + 2 * math.pi / k, _IMPROPER) for k in ks_imp
    ]
    angles = np.array([kd[1] for kd in kinds])
    flags = np.array([kd[2] for kd in kinds])
    err2 = np.concatenate([_proper_err2(P, angles[flags == _PROPER]), _improper_err2(P, angles[flags == _IMPROPER])], 1)
    # near misses are candidate axes a little off the true one (noise moves critical points):
    # polish them by minimising the element's error over the axis direction
    near_axis, near_kind = np.nonzero(err2 <= (30 * thr) ** 2)
    order = np.argsort(err2[near_axis, near_kind])[:300]
    near_axis, near_kind = near_axis[order], near_kind[order]
    polished, polished_err2 = _refine_axes(blocks, axes[near_axis], angles[near_kind], flags[near_kind], lmax)
    gens, errs, labels = [], [], []
    for a, kd, e in zip(polished, near_kind, polished_err2):
        if e > thr**2:
            continue
        k, angle, flag = kinds[kd]
        g = rotation_about(a, angle)
        gens.append(g if flag == _PROPER else -g)
        errs.append(float(e))
    # the inversion (axis independent): odd-parity blocks change sign
    if 2 * norm_odd <= thr:
        gens.append(-np.eye(3))
        errs.append(4 * norm_odd**2)
    return _close(blocks, gens, errs, thr), scale, lmax


_PROPER, _IMPROPER, _CONTINUOUS = 0, 1, 2


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
        t1, t2 = _tangent_basis(current)
        q = _normalize(current[:, None] + h * (_STENCIL[None, :, :1] * t1[:, None] + _STENCIL[None, :, 1:] * t2[:, None]))
        f = _row_err2(_axis_power(blocks, q.reshape(-1, 3), lmax), rep_angles, rep_flags).reshape(n, 9)
        g = np.stack([f[:, 1] - f[:, 2], f[:, 3] - f[:, 4]], 1) / (2 * h)
        h11 = (f[:, 1] - 2 * f[:, 0] + f[:, 2]) / h**2
        h22 = (f[:, 3] - 2 * f[:, 0] + f[:, 4]) / h**2
        h12 = (f[:, 5] - f[:, 6] - f[:, 7] + f[:, 8]) / (4 * h**2)
        det = h11 * h22 - h12**2
        ok = (det > 0) & (h11 > 0)
        safe = np.where(ok, det, 1.0)
        d1 = -(h22 * g[:, 0] - h12 * g[:, 1]) / safe
        d2 = -(-h12 * g[:, 0] + h11 * g[:, 1]) / safe
        step = np.stack([d1, d2], 1)
        step[~ok] = 0.0
        size = np.linalg.norm(step, axis=1, keepdims=True)
        step *= np.minimum(1.0, 0.05 / np.maximum(size, 1e-300))
        current = _normalize(current + step[:, :1] * t1 + step[:, 1:] * t2)
        err = _row_err2(_axis_power(blocks, current, lmax), angles, flags)
        better = err < best_err
        best[better], best_err[better] = current[better], err[better]
    return best, best_err


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
        if (_errors(blocks, candidate.elements.numpy()) <= thr * (1 + 1e-9) + 1e-300).all():
            accepted = trial
            group = candidate
    return group


def find_residual_symmetry(theta, irreps=None, tol: float = 1e-3, within=None, atol: float = 0.0) -> ResidualSymmetry:
    """:func:`residual_group` with the details: errors, scale, resolution and the symmetry axes.

    Parameters and method as in :func:`residual_group`.
    """
    if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not (0 < tol < 1):
        raise ValueError(f"tol must be a float in (0, 1), got {tol!r}")
    if not isinstance(atol, (int, float)) or isinstance(atol, bool) or atol < 0:
        raise ValueError(f"atol must be a float >= 0, got {atol!r}")
    parent = _as_parent(within)
    irreps_all, values = concatenate(collect_thetas(theta, irreps))
    blocks = [b for b in blocks_of(irreps_all, values) if not (b.l == 0 and b.p == 1)]
    group, scale, lmax = _search(blocks, float(tol), float(atol))
    unrestricted = group
    if parent is not None:
        group = _intersect(blocks, group, parent, tol * scale + atol)
    max_error = _max_error(blocks, group, scale)
    return ResidualSymmetry(
        group=group,
        parent=parent,
        unrestricted=unrestricted,
        tol=float(tol),
        scale=scale,
        max_error=max_error,
        lmax=lmax,
        resolution=min(lmax, _MAX_ORDER),
        axes=_describe_axes(group),
    )


def _intersect(blocks, group, parent, thr):
    if parent.is_finite:
        mats = parent.elements.numpy()
        keep = _errors(blocks, mats) <= thr * (1 + 1e-9) + 1e-300
        return point_group_from_elements(mats[keep], tol=1e-6)
    return group.intersection(parent, tol=1e-6)


def _max_error(blocks, group, scale) -> float:
    if scale == 0:
        return 0.0
    if group.is_finite:
        mats = group.elements.numpy()
    else:
        gen = torch.Generator().manual_seed(0)
        mats = group.sample(64, generator=gen).numpy()
    return float(_errors(blocks, mats).max(initial=0.0) / scale)


def _describe_axes(group) -> List[dict]:
    """One entry per symmetry axis and kind: the highest-order rotation ``C_n``, the highest
    improper ``S_n`` not implied by them (n >= 3), mirrors ``σ`` (axis = normal), inversion ``i``."""
    if not group.is_finite:
        if group.schoenflies in ("SO3", "O3"):
            return []
        axis = group.frame.numpy()[:, 2]
        return [{"symbol": "Cinf", "axis": [float(x) for x in axis]}]
    best = {}
    order = []
    for R in group.elements.numpy():
        e = describe_element(R)
        if e.kind == "identity":
            continue
        if e.kind == "inversion":
            key, n = ("i", None), 0
        else:
            axis = tuple(float(x) for x in np.round(_canonical(e.axis[None])[0], 6))
            kind = "C" if e.proper else ("σ" if e.kind == "mirror" else "S")
            key, n = (kind, axis), (e.n or 0)
        if key not in best:
            order.append(key)
            best[key] = n
        best[key] = max(best[key], n)
    out = []
    for key in order:
        kind, axis = key
        if kind == "i":
            out.append({"symbol": "i", "axis": None})
        elif kind == "σ":
            out.append({"symbol": "σ", "axis": list(axis)})
        else:
            out.append({"symbol": f"{kind}{best[key]}", "axis": list(axis)})
    return out


def residual_group(theta, irreps=None, tol: float = 1e-3, within=None, atol: float = 0.0):
    r"""The largest point group :math:`H` leaving :math:`\theta` invariant within ``tol``.

    .. math::

        \lVert D(h)\theta - \theta\rVert \le \mathrm{tol}\,\lVert\theta_{\neq 0e}\rVert + \mathrm{atol}
        \qquad \forall h \in H.

    Parameters
    ----------
    theta : torch.nn.Module, list of (irreps, tensor) pairs, or flat tensor / array
        A model contributes all its relaxed weights (found by
        :func:`relaxed_e3nn.nn.relaxed_parameters`); several weights are stacked into one vector,
        so the answer is the intersection of their stabilizers.
    irreps : str or `e3nn.o3.Irreps`, optional
        Irreps of a flat ``theta``.
    tol : float
        Relative tolerance, in (0, 1), with respect to the norm of the non-``0e`` part (``0e``
        scalars never break anything). Noise below ``tol`` leaves the group unchanged; an
        element moved by more than ``tol`` is not in the group, so strong noise gives ``C1``.
    within : PointGroup, str, ase.Atoms or pymatgen structure, optional
        A parent group (e.g. the input's symmetry; a structure stands for its point group): the
        result is :math:`\mathrm{Stab}(\theta)\cap` ``within``.
    atol : float
        Absolute slack added to the bound (a non-``0e`` part with norm below ``atol / 2`` is
        treated as zero, giving ``O3``).

    Returns
    -------
    relaxed_e3nn.groups.PointGroup
        Named (Schoenflies and Hermann–Mauguin) with its frame; continuous groups included.
        Axis orders above ``min(L, 8)`` (``L`` the largest ``l`` in ``theta``) are not resolvable
        and come back as a continuous axis.

    Notes
    -----
    The result is frame independent: ``residual_group(D(R) theta)`` is ``R H R^T``. See the
    module documentation for the search.

    Examples
    --------
    >>> import torch
    >>> residual_group(torch.tensor([1.0, 0.0, 0.0, 2.0]), "0e+1o").schoenflies
    'Cinfv'
    """
    return find_residual_symmetry(theta, irreps, tol=tol, within=within, atol=atol).group
