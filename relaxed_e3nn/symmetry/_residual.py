r"""The residual group: the largest point group that leaves relaxed weights invariant.

For a vector :math:`\theta` in a direct sum of O(3) irreps, the residual group is the largest
point group :math:`H` with

.. math::

    \lVert D(h)\theta - \theta \rVert \le \mathrm{tol}\cdot\lVert\theta\rVert + \mathrm{atol}
    \qquad \forall h \in H,

where :math:`\lVert\theta\rVert` is the norm of the whole vector, ``0e`` scalars included. The
``0e`` parts are invariant under all of O(3) and never break anything (``0o`` parts do count,
they break parity), but they set the size of the weights: a non-scalar part that is pure noise,
say :math:`10^{-7}\lVert\theta\rVert`, is below every useful tolerance and reads as no breaking
(``O3``), while a tolerance relative to the non-scalar part alone would blow that noise up to a
full breaking (``C1``). ``atol`` is an absolute floor on top (e.g. a noise level known in the
units of :math:`\theta`).

How it is found
---------------
1. *Candidate axes* (:mod:`relaxed_e3nn.symmetry._axes`): vectors (``l = 1``), eigenvectors
   (``l = 2`` and second moments of the spherical signals), critical points of the signals and
   the axes of pairs of critical points contain every rotation axis and mirror normal of
   :math:`H`.
2. *Testing, closing and naming* (:mod:`relaxed_e3nn.symmetry._search`): one change of basis
   per axis gives the error of every ``C_k``, ``S_k`` and continuous rotation about it; near
   misses are polished, and passing elements are closed into a named group whose every
   element is checked against the bound.

Continuous groups: if the non-scalar part of :math:`\theta` is invariant under every rotation
about an axis (only ``m = 0`` components about it) the result is ``Cinf``, ``Cinfv``, ``Cinfh``,
``Dinf`` or ``Dinfh``; if it has no ``l >= 1`` part it is ``SO3`` (a nonzero ``0o`` part) or
``O3``.

Resolution: with irreps up to ``l = L``, a ``C_n`` axis with ``n > L`` cannot be told apart from
a continuous axis (no ``m = \pm n`` component exists), so the finest finite axis order reported
is ``min(L, 8)`` (8 is the catalogue's largest axis order); beyond that a continuous group is
returned.
"""
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch

from relaxed_e3nn._checks import as_orthogonal_matrix, is_number
from relaxed_e3nn.groups import MAX_AXIS_ORDER, PointGroup, as_point_group, describe_element

from ._blocks import blocks_norm, non_scalar_blocks
from ._search import element_errors, intersect, max_relative_error, search, threshold
from ._sphere import canonical_axes
from ._theta import collect_thetas, concatenate

__all__ = [
    "residual_group", "find_residual_symmetry", "ResidualSymmetry", "symmetry_errors", "symmetry_axes",
    "tolerance_scan", "SCAN_TOLERANCES",
]

#: the default tolerance scan: seven log-spaced relative tolerances from 1e-3 to 0.3
SCAN_TOLERANCES = tuple(float(t) for t in np.geomspace(1e-3, 0.3, 7))


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
        :math:`\\lVert\\theta_{\\neq 0e}\\rVert`, the norm of the part that can break a symmetry.
    max_error : float
        Largest relative error :math:`\\lVert D(h)\\theta-\\theta\\rVert / \\lVert\\theta\\rVert` over the
        elements of ``group`` (over a sample of 64 elements for continuous groups; 0 when
        :math:`\\theta` is 0): the quantity the tolerance bounds, ``max_error <= tol`` when
        ``atol`` is 0.
    lmax : int
        Largest ``l`` with a nonzero non-``0e`` part.
    norm : float
        :math:`\\lVert\\theta\\rVert` of the whole vector (``0e`` included), the norm the tolerance
        is relative to.
    atol : float
        Absolute slack of the bound.
    resolution : int
        Largest finite axis order that can be resolved, ``min(lmax, 8)`` (derived from ``lmax``).
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
    axes: List[dict] = field(default_factory=list)
    norm: float = 0.0
    atol: float = 0.0

    @property
    def threshold(self) -> float:
        """The bound ``tol * norm + atol`` on :math:`\\lVert D(h)\\theta-\\theta\\rVert`."""
        return threshold(self.norm, self.tol, self.atol)

    @property
    def resolution(self) -> int:
        """Largest resolvable finite axis order: no ``m = ±n`` component exists for ``n > lmax``."""
        return min(self.lmax, MAX_AXIS_ORDER)

    def chain(self) -> str:
        """``"Oh -> C4v"`` when a parent was given, else the group's name."""
        if self.parent is None:
            return self.group.schoenflies
        return f"{self.parent.schoenflies} -> {self.group.schoenflies}"


def find_residual_symmetry(theta, irreps=None, tol: float = 1e-3, within=None, atol: float = 0.0) -> ResidualSymmetry:
    """:func:`residual_group` with the details: errors, scale, resolution and the symmetry axes.

    Parameters and method as in :func:`residual_group`.
    """
    if not is_number(tol) or not (0 < tol < 1):
        raise ValueError(f"tol must be a float in (0, 1), got {tol!r}")
    if not is_number(atol) or not atol >= 0:
        raise ValueError(f"atol must be a float >= 0, got {atol!r}")
    parent = as_point_group(within, "within")
    irreps_all, values = concatenate(collect_thetas(theta, irreps))
    norm = float(np.linalg.norm(values))
    blocks = non_scalar_blocks(irreps_all, values)
    found = search(blocks, float(tol), float(atol), norm=norm)
    group = found.group if parent is None else intersect(blocks, found.group, parent, found.threshold)
    return ResidualSymmetry(
        group=group,
        parent=parent,
        unrestricted=found.group,
        tol=float(tol),
        scale=found.scale,
        max_error=max_relative_error(blocks, group, norm),
        lmax=found.lmax,
        axes=symmetry_axes(group),
        norm=norm,
        atol=float(atol),
    )


def residual_group(theta, irreps=None, tol: float = 1e-3, within=None, atol: float = 0.0):
    r"""The largest point group :math:`H` leaving :math:`\theta` invariant within ``tol``.

    .. math::

        \lVert D(h)\theta - \theta\rVert \le \mathrm{tol}\,\lVert\theta\rVert + \mathrm{atol}
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
        Relative tolerance, in (0, 1), with respect to the norm of the whole :math:`\theta`
        (``0e`` scalars included: they never break anything but set the weights' size). Noise
        below ``tol`` leaves the group unchanged (a non-scalar part that is pure noise gives
        ``O3``); an element moved by more than ``tol`` is not in the group, so strong noise
        gives ``C1``.
    within : PointGroup, str, ase.Atoms or pymatgen structure, optional
        A parent group (e.g. the input's symmetry; a structure stands for its point group): the
        result is :math:`\mathrm{Stab}(\theta)\cap` ``within``.
    atol : float
        Absolute floor added to the bound, in the units of :math:`\theta` (a non-``0e`` part
        with norm below ``atol / 2`` is treated as zero, giving ``O3``).

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


def tolerance_scan(theta, irreps=None, tols: Sequence[float] = SCAN_TOLERANCES, within=None,
                   atol: float = 0.0) -> List[Tuple[float, PointGroup]]:
    r"""The residual group at each tolerance of a scan: ``[(tol, H_tol), ...]``, tightest first.

    .. math::

        H_\mathrm{tol} = \mathrm{residual\_group}(\theta, \mathrm{tol}) \;(\cap\; \text{within}).

    The groups grow with the tolerance (a looser bound admits more elements). Read together they
    say how firm a breaking is: ``C1`` at 1e-3 and ``Cs`` from 0.03 means that everything but one
    mirror is broken by less than 3% of :math:`\lVert\theta\rVert`.

    Parameters
    ----------
    theta, irreps, within, atol
        As in :func:`residual_group`.
    tols : sequence of float
        Relative tolerances in (0, 1); default :data:`SCAN_TOLERANCES`.

    Returns
    -------
    list of (float, PointGroup)
        Sorted by tolerance.
    """
    try:
        values = sorted({float(t) for t in np.asarray(tols, dtype=np.float64).reshape(-1)})
    except (TypeError, ValueError) as err:
        raise TypeError(f"tols must be a sequence of floats in (0, 1), got {tols!r}") from err
    if not values or not all(0 < t < 1 for t in values):
        raise ValueError(f"tols must be a non-empty sequence of floats in (0, 1), got {tols!r}")
    entries = collect_thetas(theta, irreps)
    return [(t, residual_group(entries_as_pairs(entries), tol=t, within=within, atol=atol)) for t in values]


def entries_as_pairs(entries) -> List[tuple]:
    """Collected relaxed weights as ``(irreps, values)`` pairs, the list form :func:`residual_group` takes."""
    return [(e.irreps, e.values) for e in entries]


def symmetry_errors(theta, irreps=None, elements=None) -> np.ndarray:
    r"""Relative errors :math:`\lVert D(g)\theta-\theta\rVert / \lVert\theta_{\neq 0e}\rVert` for each ``g``.

    Relative to the part that can break (the non-``0e`` norm): the fraction of it that ``g``
    moves. The bound of :func:`residual_group` is relative to the whole :math:`\lVert\theta\rVert`
    (see :attr:`ResidualSymmetry.max_error`).

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
    blocks = non_scalar_blocks(*concatenate(collect_thetas(theta, irreps)))
    mats = _element_array(elements)
    scale = blocks_norm(blocks)
    return element_errors(blocks, mats) / (scale if scale > 0 else 1.0)


def _element_array(elements) -> np.ndarray:
    """``elements`` (a PointGroup, or one or several orthogonal matrices) as float64 [N, 3, 3]."""
    if isinstance(elements, PointGroup):
        return elements.elements.numpy()
    if not isinstance(elements, torch.Tensor):
        elements = torch.as_tensor(np.asarray(elements, dtype=np.float64))
    if elements.dim() == 2:
        elements = elements[None]
    mats = as_orthogonal_matrix(elements, "elements", tol=1e-6, batched=True)
    return mats.detach().to("cpu", torch.float64).numpy()


def symmetry_axes(group) -> List[dict]:
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
            axis = tuple(float(x) for x in np.round(canonical_axes(e.axis[None])[0], 6))
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
