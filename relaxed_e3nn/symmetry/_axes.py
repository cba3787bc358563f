r"""Candidate axes: directions that contain every rotation axis and mirror normal of the residual group.

Every symmetry element of a finite point group is a rotation ``C_n`` or an improper rotation
``S_n`` (mirrors ``S_1``, inversion ``S_2``) about some axis, and every such axis of :math:`H`
is special for :math:`\theta`:

* the ``l = 1`` parts are vectors lying on the axes;
* the ``l = 2`` parts are symmetric traceless matrices ``M`` with :math:`h M h^\top = M`, so the
  axes and mirror normals are eigenvectors; the same holds for the second moments
  :math:`\int f(\hat r)^2\, \hat r \hat r^\top d\hat r` of the spherical signal
  :math:`f(\hat r) = \theta_l \cdot Y_l(\hat r)` of every block;
* every rotation axis of order >= 2 is a critical point of every invariant signal. Critical
  points (maxima, minima and saddles) of random mixtures of the block signals (blocks that
  transform alike under improper elements; once with their own weights, once each at unit
  weight so that a small block is not drowned) are found on a Fibonacci grid and refined by
  Newton's method;
* the critical points form :math:`H`-orbits, and for two points ``p`` and ``q = h p`` of one
  orbit, ``p + q`` lies on the axis of ``h`` when ``h`` is a two-fold rotation, ``p - q`` is
  the normal of ``h`` when it is a mirror, and ``p × q`` is the axis of any rotation taking
  one to the other. Points of one orbit share the absolute values of every invariant signal,
  which is the (cheap) test for pairing them;
* cross products and bisectors of the vector / eigenvector candidates.
"""
import functools
import math
from typing import List, Optional, Sequence

import numpy as np
import torch
from e3nn import o3

from ._blocks import Block
from ._sphere import (
    fibonacci_grid,
    nonzero_rows,
    normalize,
    stencil_derivatives,
    stencil_points,
    tangent_basis,
    unique_axes,
)

__all__ = ["candidate_axes"]

_MIN_NORM = 1e-6  # shorter pair sums / differences / cross products carry no direction


# ---------------------------------------------------------------------------------------------
# spherical signals  f_s(r) = sum_l W_s,l . Y_l(r), evaluated as polynomials
@functools.lru_cache(maxsize=None)
def _monomial_exponents(l: int) -> np.ndarray:
    return np.array([(a, b, l - a - b) for a in range(l, -1, -1) for b in range(l - a, -1, -1)])


def _monomials(pts: np.ndarray, exps: np.ndarray, lmax: int) -> np.ndarray:
    powers = np.ones((3, lmax + 1, len(pts)))
    coords = pts.T
    for k in range(1, lmax + 1):
        powers[:, k] = powers[:, k - 1] * coords
    return (powers[0, exps[:, 0]] * powers[1, exps[:, 1]] * powers[2, exps[:, 2]]).T


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


class _Signals:
    """Spherical signals ``f_s(r) = sum_l W_s,l . Y_l(r)`` evaluated as polynomials (unit ``r``).

    ``weights`` [sum_l (2l+1), S] holds one column per signal, the ``l`` parts stacked in the
    order of ``ls`` (see :func:`_embed`).
    """

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


def _embed(ls: Sequence[int], l: int, v: np.ndarray) -> np.ndarray:
    """The weight column of a signal with only an ``l`` part ``v`` (layout of :class:`_Signals`)."""
    column = np.zeros(sum(2 * q + 1 for q in ls))
    start = sum(2 * q + 1 for q in ls if q < l)
    column[start : start + 2 * l + 1] = v
    return column


# ---------------------------------------------------------------------------------------------
# critical points
def _critical_points(signals: _Signals, n_search: int, grid_size: int, scales: np.ndarray) -> np.ndarray:
    """Critical points (any type) of the first ``n_search`` signals, as unit vectors.

    Seeds are the grid points whose gradient is smallest among their 8 neighbors; Newton steps
    on ``grad = 0`` (maxima, minima and saddles alike), damped where the Hessian is singular.
    """
    if n_search == 0:
        return np.zeros((0, 3))
    pts, nbr = fibonacci_grid(grid_size)
    h = 1e-3
    t1, t2 = tangent_basis(pts)
    ends = normalize(np.concatenate([pts[:, None] + h * s1 * t[:, None] for t in (t1, t2) for s1 in (1, -1)], 1))
    f = signals(ends)[..., :n_search]  # [P, 4, S]
    grad2 = ((f[:, 0] - f[:, 1]) ** 2 + (f[:, 2] - f[:, 3]) ** 2) / (2 * h) ** 2  # [P, S]
    is_min = (grad2[:, None, :] <= grad2[nbr]).all(1)  # [P, S]
    seed_pt, which = np.nonzero(is_min)
    p = pts[seed_pt]
    step_h = 1e-4
    for _ in range(7):
        g, H, t1, t2 = _derivatives(signals, p, which, step_h)
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
        p = normalize(p + delta[:, :1] * t1 + delta[:, 1:] * t2)
    g, _, _, _ = _derivatives(signals, p, which, step_h)
    converged = np.linalg.norm(g, axis=1) <= 1e-6 * np.maximum(scales[which], 1e-300)
    return p[converged]


def _derivatives(signals: _Signals, p: np.ndarray, which: np.ndarray, h: float):
    """Tangent gradient and Hessian of signal ``which[i]`` at ``p[i]``, and the tangent basis."""
    q, t1, t2 = stencil_points(p, h)
    f = signals(q)[np.arange(len(p)), :, which]  # [n, 9]
    g, H = stencil_derivatives(f, h)
    return g, H, t1, t2


# ---------------------------------------------------------------------------------------------
# axes from vectors, matrices and pairs
@functools.lru_cache(maxsize=1)
def _l2_basis() -> np.ndarray:
    """``B`` [5, 3, 3]: the symmetric traceless matrix ``M = sum_m v_m B_m`` with ``v·Y_2(r) = rᵀ M r``."""
    rng = np.random.default_rng(0)
    r = normalize(rng.normal(size=(40, 3)))
    Y = o3.spherical_harmonics(2, torch.as_tensor(r), normalize=True, normalization="component").numpy()
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


def _pair_axes(points: np.ndarray, signature: Optional[np.ndarray], sig_tol: float) -> np.ndarray:
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
    return nonzero_rows(np.concatenate([a + b, a - b, np.cross(a, b)]), _MIN_NORM)


def _tensor_axes(blocks: Sequence[Block], scale: float) -> np.ndarray:
    """The ``l = 1`` copies (vectors) and the eigenvectors of the ``l = 2`` copies (matrices)."""
    vectors = [nonzero_rows(b.values, 1e-9 * scale) for b in blocks if b.l == 1]
    B = _l2_basis()
    vectors += [_eigvecs(np.einsum("mk,kij->mij", b.values, B)) for b in blocks if b.l == 2]
    return unique_axes(nonzero_rows(np.concatenate(vectors), 1e-12)) if vectors else np.zeros((0, 3))


def _moment_axes(signals: _Signals, num_moments: int, grid_size: int, rng) -> np.ndarray:
    r"""Eigenvectors of the second moments :math:`\int f^2 r r^\top` of the first signals, and of a mixture."""
    pts, _ = fibonacci_grid(grid_size)
    values = signals(pts)[:, :num_moments]  # [P, S]
    moments = np.einsum("ps,pi,pj->sij", values**2, pts, pts) / len(pts)
    combined = np.einsum("s,sij->ij", rng.normal(size=len(moments)), moments)[None]
    return _eigvecs(np.concatenate([moments, combined]))


def _critical_axes(ls, active: List[Block], search_cols: List[np.ndarray], grid_size: int, big_norm: float, rng):
    """Critical points of random mixtures of the blocks whose signals transform alike under improper
    elements (``f(g r) = p (-1)^l f(r)``): each mixture's critical points form H-orbits. Two
    independent mixtures per class guard against an accidentally degenerate one."""
    mixtures = []
    for cls in (1, -1):
        members = [i for i, b in enumerate(active) if b.p * (-1) ** b.l == cls]
        if not members:
            continue
        mixtures.append(sum(rng.normal() * search_cols[i] for i in members))
        # the same with every block that can matter (norm above the threshold) at unit
        # weight, so that a small block carrying the finer symmetry is not drowned
        big = [i for i in members if np.linalg.norm(active[i].values) > big_norm]
        if big:
            mixtures.append(sum(rng.normal() * search_cols[i] / np.linalg.norm(search_cols[i]) for i in big))
    signals = _Signals(ls, np.stack(mixtures, 1))
    pts, _ = fibonacci_grid(grid_size)
    scales = np.abs(signals(pts)).max(0)
    return unique_axes(_critical_points(signals, len(mixtures), grid_size, scales))


def candidate_axes(blocks: Sequence[Block], lmax: int, scale: float, tol: float) -> np.ndarray:
    """Unit vectors (up to sign) that contain every axis and mirror normal of the residual group.

    Parameters
    ----------
    blocks : list of Block
        :math:`\\theta` without its ``0e`` part.
    lmax : int
        Largest ``l`` with a nonzero block.
    scale : float
        :math:`\\lVert\\theta_{\\neq 0e}\\rVert`.
    tol : float
        Relative tolerance of the search (blocks below ``tol * scale`` cannot matter).

    Returns
    -------
    numpy.ndarray ``[K, 3]``, canonical unit vectors without repeats (module documentation).
    """
    rng = np.random.default_rng(12345)
    basic = _tensor_axes(blocks, scale)
    # their cross products and bisectors are the mirror normals and C2' axes when nothing of
    # higher l pins them down
    derived = _pair_axes(basic[:40], None, 0.0)
    active = [b for b in blocks if b.l >= 1 and np.linalg.norm(b.values) > 1e-12 * scale]
    if not active:
        return unique_axes(np.concatenate([basic, derived]))
    # spherical signals: one random combination of copies per block (search), one per copy (signature)
    ls = sorted({b.l for b in blocks if b.l >= 1})
    search_cols = [_embed(ls, b.l, rng.normal(size=b.values.shape[0]) @ b.values) for b in active]
    sig_cols = [_embed(ls, b.l, v) for b in active for v in b.values]
    num_search = len(search_cols)
    # a random mixture of every block: its second moment is invariant under the rotations of H
    mix = sum(rng.normal() * c for c in search_cols)
    signals = _Signals(ls, np.stack(search_cols + [mix] + sig_cols, 1))
    grid_size = int(min(6000, max(600, 40 * lmax * lmax)))
    found = [basic, derived, _moment_axes(signals, num_search + 1, grid_size, rng)]
    if lmax >= 3:
        crit = _critical_axes(ls, active, search_cols, grid_size, tol * scale, rng)
        # points of one orbit have equal |signal| for every copy (up to the tolerance)
        signature = np.abs(signals(crit)[:, num_search + 1 :])
        sig_tol = max(3 * tol, 1e-9) * scale * math.sqrt(2 * lmax + 1)
        found += [crit, _pair_axes(crit, signature, sig_tol)]
    return unique_axes(np.concatenate(found))
