r"""Irrep blocks of a weight vector, and the two transforms the residual-group search runs most.

The search (:mod:`relaxed_e3nn.symmetry._search`) works on ``θ`` split into one block per
distinct irrep ``(l, p)`` (all copies stacked, :class:`Block`) and needs

* :func:`transform_blocks`: ``D(g) θ`` for a batch of group elements (closing and checking
  candidate groups). ``D^l`` comes from :func:`relaxed_e3nn.groups.proper_D_blocks`, the
  package's one representation kernel (Clebsch–Gordan recursion, float64-exact); an improper
  ``g`` acts on an irrep of parity ``p`` as ``p D^l(-g)`` (e3nn's convention).
* :func:`axis_components`: the components of ``θ`` in a frame whose polar axis is ``n``, for
  thousands of candidate axes ``n``. Building ``D^l`` for each frame would cost
  :math:`O(K\,l^3)`; instead the frame rotation is factored in e3nn's Euler angles
  (polar axis ``y``), ``Q = R_y(\alpha) R_x(\beta)`` with ``Q e_y = n``, and

  .. math::

      D^l(Q)^\top\theta = J_l^\top D^l_y(-\beta)\, J_l\, D^l_y(-\alpha)\,\theta,

  where ``D^l_y`` (rotation about ``y``) only mixes components ``l+m`` and ``l-m`` with
  :math:`\cos m\phi` and :math:`\sin m\phi` (:func:`rotate_about_y`), and ``J_l = D^l(R_0)``
  for the fixed rotation ``R_0`` taking ``x`` to ``y`` (from ``proper_D_blocks``, cached). The
  angles are computed with ``arctan2`` (no ``arccos``), so the result stays float64-precise
  for axes near ``±y``. The tests compare both transforms with e3nn and with
  :func:`relaxed_e3nn.groups.D_from_matrix`.
"""
import functools
import math
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from e3nn import o3

from relaxed_e3nn.groups import proper_D_blocks

__all__ = [
    "Block",
    "blocks_of",
    "non_scalar_blocks",
    "blocks_norm",
    "transform_blocks",
    "axis_components",
    "rotate_about_y",
]

# rotation by +90 degrees about z: takes x to y
_R0 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


class Block:
    """One irrep block of a flat e3nn vector: ``mul`` copies of ``(l, p)``, as [mul, 2l+1]."""

    __slots__ = ("l", "p", "values")

    def __init__(self, l: int, p: int, values: np.ndarray):
        self.l, self.p, self.values = l, p, values

    def __repr__(self):
        return f"Block({self.values.shape[0]}x{self.l}{'e' if self.p == 1 else 'o'})"


def blocks_of(irreps: o3.Irreps, theta: np.ndarray) -> List[Block]:
    """Split a flat float64 vector into merged blocks, one per distinct ``(l, p)``, sorted."""
    grouped: Dict[Tuple[int, int], List[np.ndarray]] = {}
    for (mul, ir), sl in zip(irreps, irreps.slices()):
        part = theta[sl].reshape(mul, ir.dim)
        grouped.setdefault((ir.l, ir.p), []).append(part)
    return [Block(l, p, np.concatenate(parts, 0)) for (l, p), parts in sorted(grouped.items())]


def non_scalar_blocks(irreps: o3.Irreps, theta: np.ndarray) -> List[Block]:
    """:func:`blocks_of` without the ``0e`` block (invariant under all of O(3): it never breaks)."""
    return [b for b in blocks_of(irreps, theta) if not (b.l == 0 and b.p == 1)]


def blocks_norm(blocks: Sequence[Block]) -> float:
    r""":math:`\lVert\theta\rVert` over the given blocks."""
    return math.sqrt(sum(float((b.values**2).sum()) for b in blocks))


@functools.lru_cache(maxsize=None)
def _J(l: int) -> np.ndarray:
    """``D^l(R_0)``, float64."""
    return proper_D_blocks(torch.as_tensor(_R0)[None], l)[l][0].numpy().copy()


def rotate_about_y(l: int, angle: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Apply ``D^l`` of the rotation by ``angle`` about y to ``x`` (last axis of size 2l+1).

    ``angle`` broadcasts against ``x.shape[:-1]``.
    """
    m = np.arange(-l, l + 1)
    a = np.asarray(angle, dtype=np.float64)[..., None] * m
    return np.cos(a) * x - np.sin(a) * x[..., ::-1]


def transform_blocks(blocks: Sequence[Block], g: np.ndarray) -> List[np.ndarray]:
    """``D(g) θ`` for each element ``g`` of a batch [N,3,3] (proper or improper).

    Returns one array [N, mul, 2l+1] per block.
    """
    g = np.asarray(g, dtype=np.float64).reshape(-1, 3, 3)
    det = np.sign(np.linalg.det(g))
    proper = torch.as_tensor(g * det[:, None, None])
    D = proper_D_blocks(proper, max((b.l for b in blocks), default=0))
    out = []
    for b in blocks:
        sign = np.where(det < 0, float(b.p), 1.0)[:, None, None]
        out.append(sign * np.einsum("nij,mj->nmi", D[b.l].numpy(), b.values))
    return out


def axis_components(blocks: Sequence[Block], axes: np.ndarray) -> List[np.ndarray]:
    """Components of each block in frames whose y axis is ``axes[k]`` (unit vectors [K,3]).

    Returns per block [K, mul, 2l+1] with ``u = D(Q_k)^T θ``, ``Q_k e_y = axes[k]``;
    the entries ``l ± m`` are then the ``|m|`` components about the axis.
    """
    axes = np.asarray(axes, dtype=np.float64).reshape(-1, 3)
    beta = np.arctan2(np.hypot(axes[:, 0], axes[:, 2]), axes[:, 1])
    alpha = np.arctan2(axes[:, 0], axes[:, 2])
    # blocks of equal l (both parities) are transformed together
    by_l: Dict[int, List[int]] = {}
    for i, b in enumerate(blocks):
        by_l.setdefault(b.l, []).append(i)
    out: List[np.ndarray] = [None] * len(blocks)
    for l, idx in by_l.items():
        values = np.concatenate([blocks[i].values for i in idx], 0)
        x = np.broadcast_to(values, (len(axes),) + values.shape)
        if l > 0:
            J = _J(l)
            # D(Q)^T = J^T Dy(-beta) J Dy(-alpha), applied to row vectors
            x = rotate_about_y(l, -alpha[:, None], x) @ J.T
            x = rotate_about_y(l, -beta[:, None], x) @ J
        start = 0
        for i in idx:
            mul = blocks[i].values.shape[0]
            out[i] = x[:, start : start + mul]
            start += mul
    return out
