"""Fast batched Wigner matrices in e3nn's real basis (numpy, float64): the residual-group search kernel.

The representation matrices of the package are :func:`relaxed_e3nn.groups.D_from_matrix`
(precise, general). The search needs the components of a weight vector in thousands of
frames, and ``D(g)`` for whole groups many times over, so here a rotation is written in e3nn's
Euler angles, ``R = R_y(alpha) R_x(beta) R_y(gamma)``, and

.. math::

    D^l(R) = D^l_y(\\alpha)\\, J_l^T D^l_y(\\beta) J_l\\, D^l_y(\\gamma),

where ``D^l_y`` (rotation about y, e3nn's polar axis) only mixes the components ``l+m`` and
``l-m`` with ``cos(m angle)`` and ``sin(m angle)``, and ``J_l = D^l(R_0)`` for the fixed
rotation ``R_0`` taking x to y (fitted once from e3nn's float64 spherical harmonics and
cached). The tests compare every ``l <= 8`` with e3nn and :func:`relaxed_e3nn.groups.D_from_matrix`. An improper ``g``
acts on an irrep of parity ``p`` as ``p D^l(-g)`` (e3nn's convention).
"""
import functools
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from e3nn import o3

__all__ = [
    "rot_y",
    "wigner_D",
    "apply_D",
    "axis_frame_components",
    "rotation_about",
    "Block",
    "blocks_of",
]

# rotation by +90 degrees about z: takes x to y
_R0 = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


@functools.lru_cache(maxsize=None)
def _J(l: int) -> np.ndarray:
    """``D^l(R_0)`` from ``Y_l(R_0 x) = D^l(R_0) Y_l(x)`` on random points, in float64.

    (e3nn's ``D_from_matrix`` builds its generators in the default dtype, so it is only float32
    accurate unless the default dtype is float64; the spherical harmonics are plain float64
    polynomials.)
    """
    rng = np.random.default_rng(1234 + l)
    x = torch.as_tensor(rng.normal(size=(4 * l + 8, 3)), dtype=torch.float64)
    R0 = torch.as_tensor(_R0, dtype=torch.float64)
    Y = o3.spherical_harmonics(l, x, normalize=True, normalization="component")
    Y_rot = o3.spherical_harmonics(l, x @ R0.T, normalize=True, normalization="component")
    # Y_rot = Y D^T  ->  D^T = lstsq(Y, Y_rot)
    DT = torch.linalg.lstsq(Y, Y_rot).solution
    return DT.T.numpy().copy()


def rot_y(l: int, angle: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Apply ``D^l`` of the rotation by ``angle`` about y to ``x`` (last axis of size 2l+1).

    ``angle`` broadcasts against ``x.shape[:-1]``.
    """
    m = np.arange(-l, l + 1)
    a = np.asarray(angle, dtype=np.float64)[..., None] * m
    return np.cos(a) * x - np.sin(a) * x[..., ::-1]


def _euler(R: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """e3nn's ``matrix_to_angles`` for proper rotations [N,3,3]."""
    y = R[:, :, 1]  # R @ e_y
    beta = np.arctan2(np.hypot(y[:, 0], y[:, 2]), y[:, 1])  # not arccos: precise near +-y
    alpha = np.arctan2(y[:, 0], y[:, 2])
    A = _angles_to_matrix(alpha, beta, np.zeros_like(alpha))
    Rp = np.einsum("nji,njk->nik", A, R)
    gamma = np.arctan2(Rp[:, 0, 2], Rp[:, 0, 0])
    return alpha, beta, gamma


def _ry(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, z, s], -1), np.stack([z, o, z], -1), np.stack([-s, z, c], -1)], -2)


def _rx(a):
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def _angles_to_matrix(alpha, beta, gamma):
    return _ry(alpha) @ _rx(beta) @ _ry(gamma)


def wigner_D(l: int, R: np.ndarray) -> np.ndarray:
    """``D^l(R)`` for a batch of proper rotations ``R`` [N,3,3] -> [N, 2l+1, 2l+1]."""
    R = np.asarray(R, dtype=np.float64).reshape(-1, 3, 3)
    alpha, beta, gamma = _euler(R)
    d = 2 * l + 1
    eye = np.broadcast_to(np.eye(d), (len(R), d, d))
    J = _J(l)
    # build column by column: D = Dy(a) J^T Dy(b) J Dy(g) applied to the identity
    X = rot_y(l, gamma[:, None], eye.transpose(0, 2, 1))  # rows = columns of Dy(g)
    X = X @ J.T
    X = rot_y(l, beta[:, None], X)
    X = X @ J
    X = rot_y(l, alpha[:, None], X)
    return X.transpose(0, 2, 1)


def rotation_about(axis: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Rodrigues: rotation matrices by ``angle`` about unit ``axis`` (broadcast) -> [..., 3, 3]."""
    axis = np.asarray(axis, dtype=np.float64)
    angle = np.asarray(angle, dtype=np.float64)
    axis, angle = np.broadcast_arrays(axis, angle[..., None])
    angle = angle[..., 0]
    x, y, z = axis[..., 0], axis[..., 1], axis[..., 2]
    zero = np.zeros_like(x)
    K = np.stack([np.stack([zero, -z, y], -1), np.stack([z, zero, -x], -1), np.stack([-y, x, zero], -1)], -2)
    s, c = np.sin(angle)[..., None, None], np.cos(angle)[..., None, None]
    return np.eye(3) + s * K + (1 - c) * (K @ K)


class Block:
    """One irrep block of a flat e3nn vector: ``mul`` copies of ``(l, p)``, as [mul, 2l+1]."""

    __slots__ = ("l", "p", "values")

    def __init__(self, l: int, p: int, values: np.ndarray):
        self.l, self.p, self.values = l, p, values

    def __repr__(self):
        return f"Block({self.values.shape[0]}x{self.l}{'e' if self.p == 1 else 'o'})"


def blocks_of(irreps: o3.Irreps, theta: np.ndarray) -> List[Block]:
    """Split a flat float64 vector into merged blocks, one per distinct ``(l, p)``."""
    grouped: Dict[Tuple[int, int], List[np.ndarray]] = {}
    for (mul, ir), sl in zip(irreps, irreps.slices()):
        part = theta[sl].reshape(mul, ir.dim)
        grouped.setdefault((ir.l, ir.p), []).append(part)
    return [Block(l, p, np.concatenate(parts, 0)) for (l, p), parts in sorted(grouped.items())]


def apply_D(blocks: Sequence[Block], g: np.ndarray) -> List[np.ndarray]:
    """``D(g) theta`` for each element ``g`` of a batch [N,3,3] (proper or improper).

    Returns one array [N, mul, 2l+1] per block.
    """
    g = np.asarray(g, dtype=np.float64).reshape(-1, 3, 3)
    det = np.sign(np.linalg.det(g))
    R = g * det[:, None, None]
    out = []
    cache = {}
    for b in blocks:
        if b.l not in cache:
            cache[b.l] = wigner_D(b.l, R) if b.l > 0 else np.ones((len(g), 1, 1))
        D = cache[b.l]
        sign = np.where(det < 0, float(b.p), 1.0)[:, None, None]
        out.append(sign * np.einsum("nij,mj->nmi", D, b.values))
    return out


def axis_frame_components(blocks: Sequence[Block], axes: np.ndarray) -> List[np.ndarray]:
    """Components of each block in frames whose y axis is ``axes[k]`` (unit vectors [K,3]).

    Returns per block [K, mul, 2l+1] with ``u = D(Q_k)^T theta``, ``Q_k e_y = axes[k]``;
    the entries ``l +- m`` are then the ``|m|`` components about the axis.
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
        if l == 0:
            x = np.broadcast_to(values, (len(axes),) + values.shape)
        else:
            J = _J(l)
            # D(Q)^T = J^T Dy(-beta) J Dy(-alpha)
            x = rot_y(l, -alpha[:, None], np.broadcast_to(values, (len(axes),) + values.shape))
            x = x @ J.T
            x = rot_y(l, -beta[:, None], x)
            x = x @ J
        start = 0
        for i in idx:
            mul = blocks[i].values.shape[0]
            out[i] = x[:, start : start + mul]
            start += mul
    return out

