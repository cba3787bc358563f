"""The ``PointGroup`` class and its constructors."""
import math
import re

import numpy as np
import torch

from relaxed_e3nn._checks import parse_irreps

from ._catalogue import (
    ALIAS_GENERATORS,
    AXIAL_COMPONENTS,
    AXIAL_COSET_REPRESENTATIVES,
    CONTINUOUS_GROUPS,
    closure,
    hermann_mauguin,
    parse_name,
    standard_elements,
    standard_generators,
)
from ._identify import identify
from ._wigner import D_from_matrix
from ._linalg import (
    as_matrices,
    check_orthogonal,
    frame_from_axes as _frame_from_axes,
    index_of,
    nearest_orthogonal,
    perpendicular_unit,
    rotation_about,
    same_set,
    unique_matrices,
)

__all__ = [
    "PointGroup",
    "point_group",
    "point_group_from_elements",
    "point_group_from_generators",
    "frame_from_axes",
]

_FRAME_TOL = 1e-6  # max |RᵀR − I| accepted for a frame
_DEFAULT_MAX_ORDER = 240


def _as_frame(frame):
    """Validate ``frame`` and return a proper rotation (an improper ``R`` becomes ``-R``)."""
    if frame is None:
        return np.eye(3)
    try:
        mats = as_matrices(frame, "frame")
    except ValueError as err:
        raise ValueError(f"frame must be a single orthogonal 3x3 matrix: {err}") from None
    if mats.shape[0] != 1:
        raise ValueError(f"frame must be a single orthogonal 3x3 matrix, got {mats.shape[0]} matrices")
    check_orthogonal(mats, _FRAME_TOL, "frame")
    r = nearest_orthogonal(mats)[0]
    if np.linalg.det(r) < 0:
        r = -r  # R g Rᵀ = (−R) g (−R)ᵀ: the improper frame describes the same group
    return r


def _to_torch(mats):
    return torch.tensor(np.array(mats, dtype=np.float64))


class PointGroup:
    """A subgroup of O(3): finite point group or one of the continuous groups.

    Build one with :func:`point_group`, :func:`point_group_from_elements`,
    :func:`point_group_from_generators` or :func:`point_group_of`; the constructor
    ``PointGroup(schoenflies, frame=None)`` takes a canonical name (``"C4v"``, ``"Cinfv"``) and
    an orthogonal frame.

    The group is ``{R g Rᵀ : g in G_std}`` where ``G_std`` is the group in its standard frame
    (principal axis z, C2' / σv direction x, cubic axes x, y, z, icosahedral 2-fold
    axes x, y, z with a 5-fold axis along (0, 1, φ)) and ``R = frame``.

    Continuous groups (``is_finite`` is False) have ``order == math.inf`` and no ``elements``;
    with ``n = frame[:, 2]`` their membership is exact:

    ========  =================================  ========
    name      elements R                          H-M
    ========  =================================  ========
    Cinf      det R = 1, R n = n                  inf
    Cinfv     R n = n                             infm
    Cinfh     R n = det(R) n                      inf/m
    Dinf      det R = 1, R n = ±n                 inf2
    Dinfh     R n = ±n                            inf/mm
    SO3       det R = 1                           infinf
    O3        all orthogonal R                    infinfm
    ========  =================================  ========

    Equality (``==``) compares the groups as sets of matrices (tolerance 1e-6), so two
    ``PointGroup`` objects with different frames can be equal (e.g. ``Oh`` in any frame that
    permutes x, y, z). Instances are immutable and unhashable.
    """

    __hash__ = None

    def __init__(self, schoenflies, frame=None):
        name = parse_name(schoenflies)
        if name in ALIAS_GENERATORS or name != schoenflies:
            raise ValueError(
                f"PointGroup() takes a canonical Schoenflies name, got {schoenflies!r}; use point_group()"
            )
        self._name = name
        self._frame = _as_frame(frame)
        if name in CONTINUOUS_GROUPS:
            self._elements = None
        else:
            self._elements = self._frame @ standard_elements(name) @ self._frame.T
            self._elements.setflags(write=False)
        self._frame.setflags(write=False)
        self._projectors = {}  # str(irreps) -> float64 projector (the group is immutable)

    # ------------------------------------------------------------------ description
    @property
    def schoenflies(self):
        """Canonical ASCII Schoenflies symbol: ``"C4v"``, ``"D3h"``, ``"Oh"``, ``"Cinfv"``, ``"SO3"``."""
        return self._name

    @property
    def hermann_mauguin(self):
        """Short Hermann–Mauguin symbol, ASCII: overbar as a leading ``-`` (``"-3m"``, ``"m-3m"``),
        ∞ spelled ``inf`` (``"infm"`` for C∞v, ``"inf/mm"`` for D∞h, ``"infinfm"`` for O(3))."""
        return hermann_mauguin(self._name)

    @property
    def is_finite(self):
        """``False`` for the continuous groups Cinf, Cinfv, Cinfh, Dinf, Dinfh, SO3, O3."""
        return self._elements is not None

    @property
    def order(self):
        """Number of elements (``math.inf`` for continuous groups)."""
        return len(self._elements) if self.is_finite else math.inf

    @property
    def frame(self):
        """Proper rotation ``R`` (float64 tensor ``[3, 3]``) mapping the standard frame to this one."""
        return _to_torch(self._frame)

    @property
    def elements(self):
        """All elements, float64 tensor ``[order, 3, 3]`` (identity first). Finite groups only."""
        if not self.is_finite:
            raise ValueError(
                f"{self._name} is a continuous group and has no finite element list; use sample(n), "
                f"contains() or invariant_projector()"
            )
        return _to_torch(self._elements)

    @property
    def principal_axis(self):
        """Unit principal axis ``frame[:, 2]`` (float64 tensor), ``None`` for C1, Ci, SO3, O3.

        For Cs it is the mirror normal; for cubic and icosahedral groups the z axis of the frame.
        """
        if self._name in ("C1", "Ci", "SO3", "O3"):
            return None
        return _to_torch(self._frame[:, 2].copy())

    def axes(self):
        """Describe the characteristic directions of the group (float64 tensors).

        Returns a dict with ``"frame"`` and, where defined, ``"principal"`` (z column: C_n / S_2n /
        C∞ axis, the mirror normal for Cs) and ``"secondary"`` (x column: a C2' axis of D groups,
        a direction in a σv plane of C_nv, the 4-fold (cubic O) or 2-fold (T, I) x axis).
        """
        out = {"frame": self.frame}
        if self.principal_axis is not None:
            out["principal"] = self.principal_axis
        if re.fullmatch(r"C\d+v|D\d+[hd]?|T[dh]?|Oh?|Ih?", self._name):
            out["secondary"] = _to_torch(self._frame[:, 0].copy())
        return out

    def rotated(self, R):
        """The same group carried by the rotation ``R``: elements ``R g Rᵀ``, frame ``R @ frame``.

        ``R`` is validated like ``frame`` in :func:`point_group` (an improper ``R`` acts as ``−R``).
        """
        return PointGroup(self._name, _as_frame(R) @ self._frame)

    def __repr__(self):
        def vec(v):
            return "(" + ", ".join(f"{x + 0.0:.4g}" for x in np.asarray(v).tolist()) + ")"

        parts = [repr(self._name), f"order={self.order}"]
        axes = self.axes()
        if "principal" in axes:
            parts.append(f"principal_axis={vec(axes['principal'])}")
        if "secondary" in axes:
            parts.append(f"secondary_axis={vec(axes['secondary'])}")
        return f"PointGroup({', '.join(parts)})"

    # ------------------------------------------------------------------ membership
    def contains(self, R, tol=1e-6):
        """Whether ``R`` is an element of the group.

        Parameters
        ----------
        R : array_like or torch.Tensor, shape ``[3, 3]`` or ``[N, 3, 3]``
        tol : float
            Entrywise tolerance (finite groups: distance to the nearest element; continuous
            groups: ``|R n − s n|`` and orthogonality).

        Returns
        -------
        bool for one matrix, a bool tensor ``[N]`` for a batch. Non-orthogonal matrices are
        never elements.
        """
        single = np.ndim(R.detach().cpu() if isinstance(R, torch.Tensor) else R) == 2
        mats = as_matrices(R, "R")
        ortho = np.abs(np.einsum("nji,njk->nik", mats, mats) - np.eye(3)).reshape(-1, 9).max(-1) <= tol
        if self.is_finite:
            inside = index_of(mats, self._elements, tol) >= 0
        else:
            inside = self._continuous_contains(mats, tol)
        result = ortho & inside
        return bool(result[0]) if single else torch.as_tensor(result)

    def _continuous_contains(self, mats, tol):
        det = np.sign(np.linalg.det(mats))
        if self._name == "O3":
            return np.ones(len(mats), dtype=bool)
        if self._name == "SO3":
            return det > 0
        n = self._frame[:, 2]
        image = mats @ n
        components = AXIAL_COMPONENTS[self._name]
        ok = np.zeros(len(mats), dtype=bool)
        for d, s in components:
            ok |= (det == d) & (np.abs(image - s * n).max(-1) <= tol)
        return ok

    def is_subgroup_of(self, other, tol=1e-6):
        """Whether every element of ``self`` lies in ``other`` (``H ⊆ G``, equality included).

        Supported for all pairs: finite in anything (element by element), continuous in finite
        (never), continuous in continuous (SO3 ⊂ O3; axial groups inside SO3 / O3, or inside an
        axial group with the same axis line and a superset of components).
        """
        if not isinstance(other, PointGroup):
            raise TypeError(f"other must be a PointGroup, got {type(other).__name__}")
        if self.is_finite:
            return bool(other.contains(self._elements, tol).all())
        if other.is_finite:
            return False
        if other._name == "O3":
            return True
        if other._name == "SO3":
            return self._name == "SO3" or (
                self._name in AXIAL_COMPONENTS and all(d > 0 for d, _ in AXIAL_COMPONENTS[self._name])
            )
        if self._name in ("SO3", "O3"):
            return False
        same_axis = abs(abs(self._frame[:, 2] @ other._frame[:, 2]) - 1.0) <= tol
        return bool(same_axis and AXIAL_COMPONENTS[self._name] <= AXIAL_COMPONENTS[other._name])

    def __eq__(self, other):
        if not isinstance(other, PointGroup):
            return NotImplemented
        if self.is_finite != other.is_finite:
            return False
        if self.is_finite:
            return same_set(self._elements, other._elements, 1e-6)
        return self.is_subgroup_of(other) and other.is_subgroup_of(self)

    def intersection(self, other, tol=1e-6):
        """The group ``self ∩ other``.

        Supported: finite ∩ anything (the elements of the finite one that the other contains);
        continuous ∩ continuous for every pair: O3 and SO3 with anything, axial groups with the
        same axis (component-wise), and axial groups with different axes (a finite group: the
        elements preserving both axis lines, which are determined by the images ``±n1, ±n2``).
        """
        if not isinstance(other, PointGroup):
            raise TypeError(f"other must be a PointGroup, got {type(other).__name__}")
        if self.is_finite or other.is_finite:
            finite, rest = (self, other) if self.is_finite else (other, self)
            mats = finite._elements
            kept = mats[rest.contains(mats, tol).numpy()]
            return point_group_from_elements(kept, tol=tol)
        for a, b in ((self, other), (other, self)):
            if a._name == "O3":
                return PointGroup(b._name, b._frame)
        for a, b in ((self, other), (other, self)):
            if a._name == "SO3":
                if b._name == "SO3":
                    return PointGroup("SO3")
                comps = frozenset(c for c in AXIAL_COMPONENTS[b._name] if c[0] > 0)
                return PointGroup(_axial_name(comps), b._frame)
        n1, n2 = self._frame[:, 2], other._frame[:, 2]
        if abs(abs(n1 @ n2) - 1.0) <= tol:
            comps = AXIAL_COMPONENTS[self._name] & AXIAL_COMPONENTS[other._name]
            return PointGroup(_axial_name(comps), self._frame)
        m = np.cross(n1, n2)
        m /= np.linalg.norm(m)
        basis = np.stack([n1, n2, m], axis=1)
        candidates = []
        for s1 in (1, -1):
            for s2 in (1, -1):
                for s3 in (1, -1):
                    r = np.stack([s1 * n1, s2 * n2, s3 * m], axis=1) @ np.linalg.inv(basis)
                    if np.abs(r.T @ r - np.eye(3)).max() <= tol:
                        candidates.append(r)
        mats = np.stack(candidates)
        keep = self.contains(mats, tol).numpy() & other.contains(mats, tol).numpy()
        return point_group_from_elements(mats[keep], tol=tol)

    # ------------------------------------------------------------------ sampling and projection
    def sample(self, n=None, generator=None):
        """Group elements as a float64 tensor ``[n, 3, 3]``.

        Finite groups: ``n=None`` returns all elements (same as :attr:`elements`); an integer
        ``n`` draws ``n`` elements uniformly at random with replacement. Continuous groups: ``n``
        is required and the draws are Haar-random (uniform angle about the axis and a uniformly
        chosen component for axial groups; uniform quaternions for SO3, times a random sign for
        O3). ``generator`` is an optional ``torch.Generator``.
        """
        if n is None:
            if not self.is_finite:
                raise ValueError(f"n is required to sample the continuous group {self._name}")
            return self.elements
        if not isinstance(n, int) or isinstance(n, bool) or n < 0:
            raise ValueError(f"n must be a non-negative int or None, got {n!r}")
        if self.is_finite:
            idx = torch.randint(len(self._elements), (n,), generator=generator)
            return self.elements[idx]
        if self._name in ("SO3", "O3"):
            q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
            q = q / q.norm(dim=1, keepdim=True)
            w, x, y, z = q.unbind(1)
            mats = torch.stack(
                [
                    1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
                    2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
                    2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
                ],
                dim=1,
            ).reshape(n, 3, 3)
            if self._name == "O3":
                sign = torch.randint(2, (n,), generator=generator).to(torch.float64) * 2 - 1
                mats = mats * sign[:, None, None]
            return mats
        angles = torch.rand(n, generator=generator, dtype=torch.float64) * (2 * math.pi)
        reps = _to_torch(np.stack(AXIAL_COSET_REPRESENTATIVES[self._name]))
        which = torch.randint(len(reps), (n,), generator=generator)
        c, s = torch.cos(angles), torch.sin(angles)
        zero, one = torch.zeros_like(c), torch.ones_like(c)
        rz = torch.stack([c, -s, zero, s, c, zero, zero, zero, one], dim=1).reshape(n, 3, 3)
        frame = self.frame
        return frame @ rz @ reps[which] @ frame.T

    def invariant_projector(self, irreps, dtype=None):
        """Reynolds operator ``P_H = mean_{h in H} D(h)`` on ``irreps``.

        ``P_H`` is the orthogonal projector onto the H-invariant vectors of the representation
        ``D = irreps.D_from_matrix`` (symmetric, idempotent, rank = number of invariants),
        evaluated with :func:`D_from_matrix` (float64 and precise to ~1e-14 whatever the default
        dtype, unlike e3nn's ``D_from_matrix``).

        Finite groups average over all elements. Continuous groups are exact too: for axial
        groups the average over C∞ is replaced by ``N = 2 L + 1`` equispaced rotations about
        the axis (``L = irreps.lmax``; the mean of ``e^{i m φ_k}`` vanishes for ``0 < |m| <= L < N``),
        combined with one representative of each coset of C∞; SO3 keeps the scalars ``0e`` and
        ``0o``, O3 only ``0e``.

        Parameters
        ----------
        irreps : e3nn.o3.Irreps or str
        dtype : torch.dtype, optional
            Default ``torch.get_default_dtype()``; computed in float64 and cast.

        Returns
        -------
        torch.Tensor of shape ``[irreps.dim, irreps.dim]``
            A fresh tensor (projectors are cached per irreps in float64 and copied out).
        """
        irreps = parse_irreps("irreps", irreps)
        dtype = torch.get_default_dtype() if dtype is None else dtype
        key = str(irreps)
        if key not in self._projectors:
            self._projectors[key] = self._projector_float64(irreps)
        return self._projectors[key].to(dtype, copy=True)

    def _projector_float64(self, irreps):
        if irreps.dim == 0:
            return torch.zeros(0, 0, dtype=torch.float64)
        if self._name in ("SO3", "O3"):
            diag = []
            for mul, ir in irreps:
                keep = ir.l == 0 and (ir.p == 1 or self._name == "SO3")
                diag.extend([1.0 if keep else 0.0] * (mul * ir.dim))
            return torch.diag(torch.tensor(diag, dtype=torch.float64))
        if self.is_finite:
            mats = self._elements
        else:
            count = 2 * irreps.lmax + 1
            turns = [rotation_about([0.0, 0.0, 1.0], 2.0 * math.pi * k / count) for k in range(count)]
            std = np.stack([t @ c for t in turns for c in AXIAL_COSET_REPRESENTATIVES[self._name]])
            mats = self._frame @ std @ self._frame.T
        return D_from_matrix(irreps, _to_torch(mats)).mean(dim=0)


def _axial_name(components):
    for name, comps in AXIAL_COMPONENTS.items():
        if comps == components:
            return name
    raise AssertionError(f"no axial group has components {sorted(components)}")  # pragma: no cover


def frame_from_axes(principal, secondary=None):
    """Proper rotation whose z column is ``principal`` and x column lies along ``secondary``.

    Parameters
    ----------
    principal : array_like or torch.Tensor ``[3]``
        Direction of the standard z axis (principal axis; mirror normal of Cs). Normalised.
    secondary : array_like or torch.Tensor ``[3]``, optional
        Direction for the standard x axis (a C2' axis, a direction in a σv plane); its component
        along ``principal`` is removed. Default: a deterministic perpendicular direction.

    Returns
    -------
    torch.Tensor ``[3, 3]`` float64, usable as ``frame`` in :func:`point_group`.

    Examples
    --------
    >>> g = point_group("Cinfv", frame_from_axes([1.0, 1.0, 0.0]))
    >>> bool(g.contains(torch.eye(3)))
    True
    """
    z = _as_vector(principal, "principal")
    z = z / np.linalg.norm(z)
    if secondary is None:
        x = perpendicular_unit(z)
    else:
        x = _as_vector(secondary, "secondary")
        x = x - (x @ z) * z
        if np.linalg.norm(x) < 1e-9 * max(1.0, np.linalg.norm(secondary)):
            raise ValueError("secondary must not be parallel to principal")
    return _to_torch(_frame_from_axes(z, x))


def _as_vector(v, name):
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().double().numpy()
    arr = np.asarray(v, dtype=np.float64)
    if arr.shape != (3,) or not np.all(np.isfinite(arr)) or np.linalg.norm(arr) < 1e-12:
        raise ValueError(f"{name} must be a finite nonzero vector of shape [3], got {v!r}")
    return arr


def point_group(name, frame=None):
    """The point group called ``name`` in the frame ``frame``.

    Parameters
    ----------
    name : str
        Schoenflies symbol: ``C1, Ci, Cs, Cn, Cnv, Cnh, S2n, Dn, Dnh, Dnd`` (n = 2..8), ``T, Td,
        Th, O, Oh, I, Ih`` and the continuous ``Cinf, Cinfv, Cinfh, Dinf, Dinfh, SO3, O3``.
        Case-insensitive; ``∞`` may replace ``inf``, underscores and ``(3)`` are ignored
        (``"C∞v"``, ``"D_inf_h"``, ``"SO(3)"``). Standard aliases: ``C1h, S1 -> Cs`` (mirror ⊥ z),
        ``C1v -> Cs`` (mirror ⊥ y), ``S2 -> Ci``, ``D1 -> C2`` (axis x), ``D1h -> C2v`` (axis x),
        ``D1d -> C2h`` (axis x), ``Kh -> O3``; the result has the canonical name and a frame
        describing the alias' geometry.
    frame : array_like or torch.Tensor ``[3, 3]``, optional
        Orthogonal ``R`` (``max|RᵀR − I| <= 1e-6``); the elements are ``R g Rᵀ`` for ``g`` in the
        standard frame. An improper ``R`` is accepted and replaced by the proper ``−R``, which
        gives the same elements.

    Examples
    --------
    >>> point_group("C4v").order
    8
    >>> point_group("C∞v").schoenflies
    'Cinfv'
    """
    canonical = parse_name(name)
    R = _as_frame(frame)
    if canonical in ALIAS_GENERATORS:
        gens = np.stack(standard_generators(canonical))
        pg = point_group_from_generators(R @ gens @ R.T)
        return pg
    return PointGroup(canonical, R)


def point_group_from_elements(mats, tol=1e-6):
    """Name the finite group formed by ``mats`` and find its frame.

    Parameters
    ----------
    mats : array_like or torch.Tensor ``[N, 3, 3]``
        Orthogonal matrices (``max|RᵀR − I| <= tol``) that form a group under multiplication;
        duplicates (within ``tol``) are removed.
    tol : float
        Entrywise tolerance for equality of matrices.

    Returns
    -------
    PointGroup
        With ``pg.schoenflies`` and ``pg.frame`` such that ``point_group(pg.schoenflies,
        pg.frame) == pg`` and whose elements equal ``mats`` as a set (checked: the catalogue
        group in the found frame is compared with the input element by element).

    Raises
    ------
    ValueError
        If the matrices are not orthogonal, do not contain the identity, are not closed under
        multiplication, or form a group outside the catalogue (axis order > 8).
    """
    arr = unique_matrices(_prepare(mats, tol, "mats"), tol)
    if index_of(np.eye(3)[None], arr, tol)[0] < 0:
        raise ValueError("mats is not a group: it does not contain the identity")
    products = (arr[:, None] @ arr[None]).reshape(-1, 3, 3)
    missing = index_of(products, arr, tol) < 0
    if missing.any():
        raise ValueError(
            f"mats is not a group: {int(missing.sum())} of the {len(products)} pairwise products are "
            f"not in the set (closure fails; use point_group_from_generators to close it)"
        )
    name, frame = identify(arr, tol)
    return PointGroup(name, frame)


def point_group_from_generators(mats, tol=1e-6, max_order=_DEFAULT_MAX_ORDER):
    """The finite group generated by ``mats`` (closure under multiplication), named.

    Parameters
    ----------
    mats : array_like or torch.Tensor ``[k, 3, 3]`` or ``[3, 3]``
        Orthogonal generators (``max|RᵀR − I| <= tol``).
    tol : float
        Entrywise tolerance for equality of matrices.
    max_order : int
        Stop with ``ValueError`` once the closure exceeds this many elements (generators of an
        infinite group, e.g. a rotation by an irrational angle).

    Returns
    -------
    PointGroup
        As :func:`point_group_from_elements`.
    """
    arr = _prepare(mats, tol, "mats")
    if not isinstance(max_order, int) or max_order < 1:
        raise ValueError(f"max_order must be a positive int, got {max_order!r}")
    elements = closure(arr, tol, max_order)
    name, frame = identify(elements, max(tol, 1e-9))
    return PointGroup(name, frame)


def _prepare(mats, tol, name):
    if not (isinstance(tol, (int, float)) and tol > 0):
        raise ValueError(f"tol must be a positive float, got {tol!r}")
    arr = as_matrices(mats, name)
    check_orthogonal(arr, max(tol, 1e-9), name)
    return nearest_orthogonal(arr)
