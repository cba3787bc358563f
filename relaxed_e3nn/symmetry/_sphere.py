r"""Geometry on the unit sphere for the residual-group search: grids, tangent stencils, axis sets.

Directions are unit vectors ``[..., 3]`` (float64 numpy). Axes are directions up to sign
(:func:`canonical_axes` fixes the sign, :func:`unique_axes` removes repeats). Derivatives along
the sphere come from a 9-point stencil in the tangent plane (:func:`stencil_points`,
:func:`stencil_derivatives`): with step ``h`` and tangent basis ``t_1, t_2`` at ``p``,

.. math::

    g_i = \frac{f(p + h t_i) - f(p - h t_i)}{2h},\qquad
    H_{ii} = \frac{f(p + h t_i) - 2 f(p) + f(p - h t_i)}{h^2},\qquad
    H_{12} = \frac{f_{++} - f_{+-} - f_{-+} + f_{--}}{4h^2}.
"""
import functools
import math
from typing import Tuple

import numpy as np
from scipy.spatial import cKDTree

from relaxed_e3nn.groups import rotation_about

__all__ = [
    "normalize",
    "tangent_basis",
    "stencil_points",
    "stencil_derivatives",
    "fibonacci_grid",
    "canonical_axes",
    "unique_axes",
    "nonzero_rows",
]

# (t1, t2) offsets: centre, ±t1, ±t2, then the four diagonals
_STENCIL = np.array([[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1], [1, 1], [1, -1], [-1, 1], [-1, -1]], float)


def normalize(v: np.ndarray) -> np.ndarray:
    """``v / |v|`` along the last axis."""
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def tangent_basis(p: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Orthonormal tangent vectors ``t1, t2`` [n, 3] at the unit vectors ``p`` [n, 3]."""
    a = np.where(np.abs(p[:, :1]) < 0.9, np.array([[1.0, 0, 0]]), np.array([[0, 1.0, 0]]))
    t1 = np.cross(p, a)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(p, t1)
    return t1, t2


def stencil_points(p: np.ndarray, h: float):
    """The 9 stencil points around each ``p`` [n, 3] (on the sphere) -> ``(q [n, 9, 3], t1, t2)``."""
    t1, t2 = tangent_basis(p)
    q = p[:, None] + h * (_STENCIL[None, :, :1] * t1[:, None] + _STENCIL[None, :, 1:] * t2[:, None])
    return normalize(q), t1, t2


def stencil_derivatives(f: np.ndarray, h: float) -> Tuple[np.ndarray, np.ndarray]:
    """Tangent gradient ``[n, 2]`` and Hessian ``[n, 2, 2]`` from values ``f`` [n, 9] at :func:`stencil_points`."""
    g = np.stack([f[:, 1] - f[:, 2], f[:, 3] - f[:, 4]], 1) / (2 * h)
    h11 = (f[:, 1] - 2 * f[:, 0] + f[:, 2]) / h**2
    h22 = (f[:, 3] - 2 * f[:, 0] + f[:, 4]) / h**2
    h12 = (f[:, 5] - f[:, 6] - f[:, 7] + f[:, 8]) / (4 * h**2)
    H = np.stack([np.stack([h11, h12], -1), np.stack([h12, h22], -1)], -2)
    return g, H


@functools.lru_cache(maxsize=8)
def fibonacci_grid(n: int) -> Tuple[np.ndarray, np.ndarray]:
    """``n`` near-uniform unit vectors and the indices of each one's 8 nearest neighbors."""
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (1 + math.sqrt(5)) * i
    r = np.sqrt(1 - z * z)
    pts = np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)
    # an irrational tilt keeps grid points off the coordinate axes and planes
    pts = pts @ rotation_about([0.3, 0.5, 0.8], 0.4321).T
    _, nbr = cKDTree(pts).query(pts, k=9)
    pts.setflags(write=False)
    return pts, nbr[:, 1:]


def canonical_axes(v: np.ndarray) -> np.ndarray:
    """Unit vectors with the sign fixed (first component with |x| > 1e-6 positive)."""
    v = normalize(v)
    big = np.abs(v) > 1e-6
    first = np.argmax(big, axis=1)
    sign = np.sign(v[np.arange(len(v)), first])
    sign[sign == 0] = 1
    return v * sign[:, None]


def unique_axes(v: np.ndarray, resolution: float = 1e-4) -> np.ndarray:
    """Canonical axes with repeats (within ``resolution``) removed, in first-seen order."""
    if len(v) == 0:
        return v.reshape(0, 3)
    v = canonical_axes(v)
    keys = np.round(v / resolution).astype(np.int64)
    _, idx = np.unique(keys, axis=0, return_index=True)
    return v[np.sort(idx)]


def nonzero_rows(v: np.ndarray, min_norm: float) -> np.ndarray:
    """The rows of ``v`` (reshaped to [n, 3]) with norm above ``min_norm``."""
    v = v.reshape(-1, 3)
    return v[np.linalg.norm(v, axis=1) > min_norm]
