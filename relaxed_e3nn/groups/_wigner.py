"""Wigner D matrices of O(3) elements without Euler angles.

``e3nn.o3.Irreps.D_from_matrix`` has two precision limits that matter when representations of
point-group elements are compared at tight tolerances: it builds its Lie-algebra generators in
the *default* dtype, so float64 matrices under a float32 default give errors ~1e-6; and its
Euler angles use ``acos``, which loses precision for elements that map y to *almost* ±y
(measured: ~1e-8 in float64 for a rotation about y perturbed by 1e-9). Here ``D^l`` is built
from ``D^1 = R`` by the Clebsch–Gordan recursion

    D^l(R) = C_lᵀ (D^{l-1}(R) ⊗ D^1(R)) C_l,

with ``C_l`` the e3nn Wigner 3j symbol ``(l-1, 1, l)`` reshaped to ``[(2l-1)·3, 2l+1]`` and
normalised to orthonormal columns; it is an intertwiner, so the result is e3nn's ``D^l`` in
e3nn's basis, in float64 whatever the default dtype, accurate to ~1e-14 for every element.
Improper elements use ``D_{l,p}(R) = p · D^l(−R)``.
"""
import functools

import torch
from e3nn import o3

from relaxed_e3nn._checks import check_number, orthogonality_error, parse_irreps

__all__ = ["D_from_matrix", "proper_D_blocks"]


@functools.lru_cache(maxsize=None)
def _coupling(l):
    c = o3.wigner_3j(l - 1, 1, l, dtype=torch.float64)
    return c.reshape((2 * l - 1) * 3, 2 * l + 1) * (2 * l + 1) ** 0.5


def proper_D_blocks(q, lmax):
    """``[D^0(q), ..., D^lmax(q)]`` for proper rotations ``q``, one block per ``l``.

    The building block of :func:`D_from_matrix`, for callers that apply ``D^l`` per ``l``
    rather than to a whole irreps vector.

    Parameters
    ----------
    q : torch.Tensor ``[N, 3, 3]``, float64
        Proper rotations (not checked).
    lmax : int

    Returns
    -------
    list of torch.Tensor ``[N, 2l+1, 2l+1]`` for ``l = 0 .. lmax``, float64.
    """
    n = q.shape[0]
    blocks = [torch.ones(n, 1, 1, dtype=torch.float64)]
    if lmax >= 1:
        blocks.append(q)
    for l in range(2, lmax + 1):
        prev = blocks[-1]
        kron = torch.einsum("nab,ncd->nacbd", prev, q).reshape(n, (2 * l - 1) * 3, (2 * l - 1) * 3)
        c = _coupling(l)
        blocks.append(c.T @ kron @ c)
    return blocks


#: largest max|R Rᵀ − I| D_from_matrix accepts, by the dtype of R (float32 rounding accumulates in
#: products of rotations; a float32 matrix cast to float64 is off by ~1e-7)
_ORTHOGONALITY_TOLERANCE = {torch.float64: 1e-6, torch.float32: 1e-4}


def D_from_matrix(irreps, R, *, tol=None):
    r"""Representation matrices of ``irreps`` at the orthogonal matrices ``R``.

    A precise replacement of ``o3.Irreps(irreps).D_from_matrix(R)`` (same basis and parity
    convention: for ``det R = −1`` the block of irrep ``(l, p)`` is ``p · D^l(−R)``).

    Parameters
    ----------
    irreps : e3nn.o3.Irreps or str
    R : torch.Tensor ``[..., 3, 3]``
        Orthogonal matrices (proper or improper), finite.
    tol : float, optional
        Largest accepted :math:`\max|R R^\top - I|` over all matrices; by default ``1e-6`` for
        float64 ``R`` and ``1e-4`` otherwise. A matrix that is not
        orthogonal has no Wigner D matrix: the recursion would silently return a wrong one.

    Returns
    -------
    torch.Tensor ``[..., irreps.dim, irreps.dim]`` in the dtype of ``R`` (computed in float64).

    Raises
    ------
    ValueError
        Malformed ``irreps``; ``R`` of another shape, with NaN/inf, or not orthogonal within ``tol``
        (the error and the tolerance are quoted).
    """
    irreps = parse_irreps("irreps", irreps)
    if not isinstance(R, torch.Tensor):
        R = torch.as_tensor(R)
    if R.dim() < 2 or R.shape[-2:] != (3, 3):
        raise ValueError(f"D_from_matrix: R must have shape [..., 3, 3], got {tuple(R.shape)}")
    if tol is None:
        tol = _ORTHOGONALITY_TOLERANCE.get(R.dtype, _ORTHOGONALITY_TOLERANCE[torch.float32])
    tol = check_number("tol", tol, "D_from_matrix", positive=True)
    error = orthogonality_error(R)  # inf for NaN/inf entries
    if not error <= tol:
        raise ValueError(f"D_from_matrix: R must be orthogonal (R Rᵀ = I): max|R Rᵀ - I| = {error:.3g} exceeds "
                         f"the tolerance {tol:.1e} (finite entries required)")
    batch = R.shape[:-2]
    r = R.reshape(-1, 3, 3).to(torch.float64)
    det = torch.linalg.det(r)
    sign = torch.where(det < 0, -1.0, 1.0).to(torch.float64)
    q = r * sign[:, None, None]
    lmax = max((ir.l for _, ir in irreps), default=0)
    blocks = proper_D_blocks(q, lmax)
    out = torch.zeros(r.shape[0], irreps.dim, irreps.dim, dtype=torch.float64)
    start = 0
    for mul, ir in irreps:
        block = blocks[ir.l]
        if ir.p == -1:
            block = block * sign[:, None, None]
        for _ in range(mul):
            out[:, start : start + ir.dim, start : start + ir.dim] = block
            start += ir.dim
    return out.reshape(*batch, irreps.dim, irreps.dim).to(R.dtype if R.is_floating_point() else torch.float64)
