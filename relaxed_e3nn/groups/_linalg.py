"""Small numpy helpers for 3x3 orthogonal matrices (float64 throughout).

Everything here works on ``numpy.ndarray`` of shape ``[..., 3, 3]``; the public classes convert
to and from torch at their boundary.
"""
import math

import numpy as np
import torch

from relaxed_e3nn._checks import orthogonality_error

__all__ = [
    "as_matrices",
    "check_orthogonal",
    "nearest_orthogonal",
    "rotation_about",
    "reflection",
    "rotation_axis_angle",
    "canonical_sign",
    "perpendicular_unit",
    "frame_from_axes",
    "unique_matrices",
    "index_of",
    "same_set",
]


def as_matrices(mats, name="mats"):
    """Convert a tensor / array / nested list to a float64 numpy array of shape ``[N, 3, 3]``."""
    if isinstance(mats, torch.Tensor):
        mats = mats.detach().cpu().double().numpy()
    if isinstance(mats, (list, tuple)):
        mats = [np.asarray(_to_numpy(m), dtype=np.float64) for m in mats]
        if not mats:
            raise ValueError(f"{name} must contain at least one 3x3 matrix, got an empty sequence")
        mats = np.stack(mats)
    arr = np.asarray(mats, dtype=np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (3, 3):
        raise ValueError(f"{name} must have shape [N, 3, 3] or [3, 3], got {tuple(np.shape(mats))}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} must contain at least one 3x3 matrix, got none")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf entries")
    return arr


def _to_numpy(m):
    if isinstance(m, torch.Tensor):
        return m.detach().cpu().double().numpy()
    return m


def check_orthogonal(mats, tol, name="mats"):
    r"""Raise ``ValueError`` unless every matrix satisfies :math:`\max|R R^\top - I| \le` ``tol``.

    The measure is :func:`relaxed_e3nn._checks.orthogonality_error`, the package's one
    orthogonality test; the message names the first offending matrix.
    """
    if orthogonality_error(mats) <= tol:
        return
    errors = [orthogonality_error(m) for m in mats]
    bad = next(i for i, err in enumerate(errors) if not err <= tol)
    raise ValueError(
        f"{name} must be orthogonal 3x3 matrices (max |R Rᵀ - I| <= {tol:g}); matrix {bad} "
        f"has error {errors[bad]:.3g}"
    )


def nearest_orthogonal(mats):
    """Polar projection ``U Vᵀ`` of each matrix onto O(3) (the nearest orthogonal matrix)."""
    u, _, vt = np.linalg.svd(mats)
    return u @ vt


def rotation_about(axis, angle):
    r"""Proper rotations by ``angle`` (radians, counter-clockwise) about ``axis`` (Rodrigues).

    .. math::

        R = I + \sin\alpha\, K + (1 - \cos\alpha)\, K^2, \qquad K v = \hat n \times v.

    Parameters
    ----------
    axis : array_like ``[..., 3]``
        Nonzero axis directions (normalised here).
    angle : float or array_like ``[...]``
        Broadcast against ``axis.shape[:-1]``.

    Returns
    -------
    numpy.ndarray ``[..., 3, 3]`` (``[3, 3]`` for one axis and one angle), float64.
    """
    n = np.asarray(axis, dtype=np.float64)
    n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    n, angle = np.broadcast_arrays(n, np.asarray(angle, dtype=np.float64)[..., None])
    angle = angle[..., 0]
    x, y, z = n[..., 0], n[..., 1], n[..., 2]
    zero = np.zeros_like(x)
    k = np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)], -2)
    sin, cos = np.sin(angle)[..., None, None], np.cos(angle)[..., None, None]
    return np.eye(3) + sin * k + (1.0 - cos) * (k @ k)


def reflection(normal):
    """Mirror ``I − 2 n nᵀ`` through the plane with unit normal ``n``."""
    n = np.asarray(normal, dtype=np.float64)
    n = n / np.linalg.norm(n)
    return np.eye(3) - 2.0 * np.outer(n, n)


def rotation_axis_angle(q):
    """Axis and angle of a proper rotation ``q``.

    Returns ``(axis, angle)`` with ``angle`` in ``[0, π]`` and ``q = rotation_about(axis, angle)``.
    The axis is the eigenvector of the symmetric part ``cos θ I + (1 − cos θ) n nᵀ`` with the
    largest eigenvalue (accurate also near θ = π); for θ = π, where ``±n`` describe the same
    rotation, the sign is fixed so that the first non-negligible component is positive. For the
    identity the axis is ``(0, 0, 1)`` by convention.
    """
    cos_t = np.clip((np.trace(q) - 1.0) / 2.0, -1.0, 1.0)
    anti = np.array([q[2, 1] - q[1, 2], q[0, 2] - q[2, 0], q[1, 0] - q[0, 1]]) / 2.0  # sin θ n
    sin_t = np.linalg.norm(anti)
    angle = math.atan2(sin_t, cos_t)
    if angle < 1e-12:
        return np.array([0.0, 0.0, 1.0]), 0.0
    _, vecs = np.linalg.eigh((q + q.T) / 2.0)
    n = vecs[:, -1]
    if sin_t > 1e-8:
        if n @ anti < 0:
            n = -n
    else:
        n = canonical_sign(n)
    return n, angle


def canonical_sign(v, eps=1e-9):
    """Flip ``v`` so that its first component with ``|v_i| > eps`` is positive."""
    for x in v:
        if abs(x) > eps:
            return v if x > 0 else -v
    return v


def perpendicular_unit(n):
    """A unit vector perpendicular to ``n`` (deterministic)."""
    n = np.asarray(n, dtype=np.float64)
    trial = np.eye(3)[int(np.argmin(np.abs(n)))]
    v = trial - (trial @ n) * n
    return v / np.linalg.norm(v)


def frame_from_axes(z, x):
    """Proper rotation ``[x, y, z]`` (columns) with ``z`` given and ``x`` orthogonalised against it."""
    z = np.asarray(z, dtype=np.float64)
    z = z / np.linalg.norm(z)
    x = np.asarray(x, dtype=np.float64)
    x = x - (x @ z) * z
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def _nearest(mats, pool):
    """Index of the Frobenius-nearest pool matrix for each matrix, and the entrywise max error.

    ``|A − B|_F² = |A|² + |B|² − 2 ⟨A, B⟩`` turns the search into one matrix product; the chosen
    candidate is then checked entrywise, so the tolerance test itself is exact.
    """
    a = mats.reshape(len(mats), 9)
    b = pool.reshape(len(pool), 9)
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2.0 * a @ b.T
    idx = d2.argmin(axis=1)
    err = np.abs(a - b[idx]).max(axis=1)
    return idx, err


def unique_matrices(mats, tol):
    """Remove duplicates (entrywise max difference ``<= tol``), keeping first occurrences."""
    kept = [mats[0]]
    for m in mats[1:]:
        _, err = _nearest(m[None], np.stack(kept))
        if err[0] > tol:
            kept.append(m)
    return np.stack(kept)


def index_of(mats, pool, tol):
    """For each matrix in ``mats`` the index of a matching matrix in ``pool`` (``-1`` if none)."""
    idx, err = _nearest(mats, pool)
    idx[err > tol] = -1
    return idx


def same_set(a, b, tol):
    """Whether two lists of matrices are equal as sets (within ``tol``, entrywise)."""
    if len(a) != len(b):
        return False
    return bool((index_of(a, b, tol) >= 0).all() and (index_of(b, a, tol) >= 0).all())
