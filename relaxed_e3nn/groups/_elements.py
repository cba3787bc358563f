"""Classification of single O(3) elements: proper/improper, rotation order, axis."""
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

import numpy as np

from ._linalg import as_matrices, canonical_sign, check_orthogonal, rotation_axis_angle

__all__ = ["SymmetryElement", "describe_element"]

# largest denominator tried when recognising a rotation angle as a rational multiple of 2π
_MAX_DENOMINATOR = 120


@dataclass(frozen=True)
class SymmetryElement:
    """Geometric description of one orthogonal 3x3 matrix.

    Attributes
    ----------
    kind : str
        ``"identity"``, ``"rotation"`` (proper, ``C_n^k``), ``"inversion"``, ``"mirror"`` or
        ``"improper_rotation"`` (``S_n^k``, neither a mirror nor the inversion).
    proper : bool
        ``det R = +1``.
    axis : numpy.ndarray or None
        Unit rotation axis (proper), mirror normal, or axis of the improper rotation; ``None`` for
        the identity and the inversion. Oriented so that the element turns counter-clockwise by
        ``angle`` about it (for angle π the sign is fixed by the first non-zero component > 0).
    angle : float
        For a proper element ``R = C(axis, angle)``; for an improper one ``R = σ_axis C(axis, angle)``
        (an ``S`` element: rotation then reflection through the plane ⊥ axis). In ``[0, π]``.
    n, k : int or None
        ``angle = 2π k / n`` in lowest terms, giving the symbol ``C_n^k`` or ``S_n^k`` (a mirror is
        ``S_1``, the inversion ``S_2``); ``None`` when the angle is not a rational multiple of 2π
        with denominator <= 120.
    order : int or None
        Smallest ``m >= 1`` with ``R^m = I`` (``None`` when infinite).
    symbol : str
        ``"E"``, ``"i"``, ``"σ"``, ``"C4"``, ``"C5^2"``, ``"S6"``, ... (``"C(θ)"`` for irrational angles).
    """

    kind: str
    proper: bool
    axis: Optional[np.ndarray]
    angle: float
    n: Optional[int]
    k: Optional[int]
    order: Optional[int]
    symbol: str

    def __repr__(self):
        axis = "" if self.axis is None else f", axis=({self.axis[0]:.4f}, {self.axis[1]:.4f}, {self.axis[2]:.4f})"
        return f"SymmetryElement({self.symbol}{axis})"


def _rational_turn(angle, tol):
    """``(n, k)`` with ``angle ≈ 2π k/n`` in lowest terms, or ``(None, None)``."""
    turns = angle / (2.0 * math.pi)
    for n in range(1, _MAX_DENOMINATOR + 1):
        k = round(turns * n)
        if abs(turns * n - k) <= tol * n:
            frac = Fraction(k, n)
            return frac.denominator, frac.numerator
    return None, None


def describe_element(R, tol=1e-6):
    """Describe an orthogonal matrix as a symmetry element.

    Parameters
    ----------
    R : array_like or torch.Tensor, shape ``[3, 3]``
        Orthogonal matrix (``max|RᵀR − I| <= 1e-4``, else ``ValueError``).
    tol : float
        Tolerance on the rotation angle (radians) when recognising ``2π k/n`` and deciding whether
        it is 0 or π.

    Returns
    -------
    SymmetryElement

    Examples
    --------
    >>> import numpy as np
    >>> describe_element(np.diag([1.0, 1.0, -1.0])).kind
    'mirror'
    >>> describe_element(np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])).symbol
    'C4'
    """
    mats = as_matrices(R, "R")
    if mats.shape[0] != 1:
        raise ValueError(f"R must be a single [3, 3] matrix, got shape {tuple(mats.shape)}")
    check_orthogonal(mats, 1e-4, "R")
    r = mats[0]
    det = float(np.sign(np.linalg.det(r)))
    proper = det > 0
    q = det * r  # proper part: R = q (proper) or R = -q = σ_axis C(axis, angle + π)
    axis, angle = rotation_axis_angle(q)
    if not proper:
        # -C(n, θ) = σ_n C(n, θ + π); fold θ + π back into [0, π] by flipping the axis
        angle = angle + math.pi
        if angle > math.pi:
            angle = 2.0 * math.pi - angle
            axis = -axis
        if abs(angle) <= tol or abs(angle - math.pi) <= tol:
            axis = canonical_sign(axis)
    n, k = _rational_turn(angle, tol)
    if proper:
        if angle <= tol:
            return SymmetryElement("identity", True, None, 0.0, 1, 0, 1, "E")
        kind = "rotation"
        order = n
        symbol = "C(%.6g)" % angle if n is None else (f"C{n}" if k == 1 else f"C{n}^{k}")
    else:
        if angle <= tol:
            return SymmetryElement("mirror", False, axis, 0.0, 1, 0, 2, "σ")
        if abs(angle - math.pi) <= tol:
            return SymmetryElement("inversion", False, None, math.pi, 2, 1, 2, "i")
        kind = "improper_rotation"
        # S^m = σ^m C(mθ): identity needs m even and mθ ≡ 0 (mod 2π)
        order = None if n is None else (n if n % 2 == 0 else 2 * n)
        symbol = "S(%.6g)" % angle if n is None else (f"S{n}" if k == 1 else f"S{n}^{k}")
    return SymmetryElement(kind, proper, axis, float(angle), n, k, order, symbol)
