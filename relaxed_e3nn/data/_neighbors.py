"""Neighbor lists for molecules, slabs, wires and bulk crystals."""
from typing import Optional, Tuple

import numpy as np
import torch
from matscipy.neighbours import neighbour_list as _matscipy_neighbor_list
from scipy.spatial import cKDTree

from relaxed_e3nn._checks import check_finite, check_number

__all__ = ["neighbor_list", "estimate_num_pairs", "pbc_array", "DEFAULT_MAX_PAIRS", "MIN_CELL_LENGTH"]

# distinct atoms closer than this are rejected: their edge vector has no direction
_COINCIDENT = 1e-8
#: default bound on the estimated number of pairs a neighbor list may hold (memory: ~40 bytes a pair)
DEFAULT_MAX_PAIRS = 1e8
#: a periodic cell must span at least MIN_CELL_LENGTH**p (Å, Å², Å³ for p = 1, 2, 3 periodic directions)
MIN_CELL_LENGTH = 0.1


def _as_array(name, value, shape_tail, dtype=np.float64):
    """``value`` as a numpy array of ``dtype`` and shape ``shape_tail`` (``None``: any length).

    Strings, objects and (for floating ``dtype``) complex numbers are refused rather than converted:
    ``np.asarray(["1.0"], dtype=float)`` would parse them quietly.
    """
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as err:  # ragged nested sequences
        raise TypeError(f"neighbor_list: {name} must be an array of numbers, got {type(value).__name__}") from err
    if dtype is bool:  # bools, or integers 0/1
        if raw.dtype.kind not in "biu" or (raw.dtype.kind != "b" and not np.isin(raw, (0, 1)).all()):
            raise TypeError(f"neighbor_list: {name} must be bools, got {value!r}")
    elif raw.dtype.kind not in "biuf":
        raise TypeError(f"neighbor_list: {name} must be an array of real numbers, got dtype {raw.dtype}")
    array = raw.astype(dtype)
    if array.ndim != len(shape_tail) or any(
        want is not None and got != want for got, want in zip(array.shape, shape_tail)
    ):
        want = "[" + ", ".join("N" if w is None else str(w) for w in shape_tail) + "]"
        raise ValueError(f"neighbor_list: {name} must have shape {want}, got {array.shape}")
    return array


def pbc_array(pbc, cell) -> np.ndarray:
    """``pbc`` as a ``[3]`` bool array; ``None`` means periodic everywhere when a cell is given, else nowhere."""
    if pbc is None:
        return np.zeros(3, dtype=bool) if cell is None else np.ones(3, dtype=bool)
    if isinstance(pbc, (bool, np.bool_)):
        return np.full(3, bool(pbc))
    return _as_array("pbc", pbc, (3,), dtype=bool)


def _cell_measure(cell: np.ndarray, pbc: np.ndarray) -> float:
    r"""Volume (area, length) spanned by the periodic lattice vectors, :math:`\sqrt{\det(P P^\top)}`."""
    periodic = cell[pbc]
    return float(np.sqrt(max(np.linalg.det(periodic @ periodic.T), 0.0)))


def _check_cell(cell: np.ndarray, pbc: np.ndarray) -> None:
    """Refuse a periodic cell that is degenerate (zero or tiny measure) or near-singular (flat)."""
    periodic = cell[pbc]
    p = periodic.shape[0]
    lengths = np.linalg.norm(periodic, axis=1)
    measure = _cell_measure(cell, pbc)
    unit = {1: "Å", 2: "Å²", 3: "Å³"}[p]
    kind = {1: "length", 2: "area", 3: "volume"}[p]
    floor = MIN_CELL_LENGTH ** p
    flat = lengths.min() == 0.0 or measure <= 1e-6 * float(np.prod(lengths))
    if measure < floor or flat:
        reason = (f"below {floor:.0e} {unit}" if measure < floor
                  else f"the lattice vectors are nearly linearly dependent (lengths {lengths.round(6).tolist()} Å)")
        raise ValueError(
            f"neighbor_list: the periodic lattice vectors of cell (pbc={pbc.tolist()}) span zero {kind} or "
            f"nearly so ({kind} {measure:.3e} {unit}, {reason}): a degenerate or near-singular cell; cell=\n{cell}"
        )


# the measure of a ball of radius r in d dimensions, and how the messages write the estimate
_BALL = {1: lambda r: 2.0 * r, 2: lambda r: np.pi * r ** 2, 3: lambda r: 4.0 * np.pi / 3.0 * r ** 3}
_FORMULA = {0: "min(N(N-1), 4π/3·rc³·N²/V) with V the box spanning the atoms widened by rc",
            1: "2·rc·N²/L", 2: "π·rc²·N²/A", 3: "4π/3·rc³·N²/V"}
_UNIT = {0: "Å³", 1: "Å", 2: "Å²", 3: "Å³"}


def estimate_num_pairs(num_atoms: int, cutoff: float, measure: float, num_periodic: int) -> float:
    r"""Expected number of directed pairs closer than ``cutoff``, before a neighbor list is built.

    For :math:`p` periodic directions spanning a cell of measure :math:`M` (volume, area, length),
    every atom meets the :math:`N` atoms of each image cell within reach:

    .. math::
        E \approx N^2\, \frac{|B_p(r_c)|}{M}, \qquad
        |B_3| = \tfrac{4\pi}{3} r_c^3,\; |B_2| = \pi r_c^2,\; |B_1| = 2 r_c ,

    i.e. :math:`\tfrac{4\pi}{3} r_c^3 N^2 / V` for a bulk cell. Without periodic directions
    (``num_periodic=0``, ``measure`` the volume of the box spanning the atoms) the same density
    argument is capped by the :math:`N(N-1)` pairs a molecule has at most.

    Parameters
    ----------
    num_atoms : int
    cutoff : float
    measure : float
        Volume, area or length of the periodic cell (the box volume for a molecule).
    num_periodic : int
        Number of periodic directions, 0 to 3.
    """
    n2 = float(num_atoms) ** 2
    if num_periodic == 0:
        return min(_BALL[3](cutoff) * n2 / max(measure, 1e-300), float(num_atoms) * (num_atoms - 1))
    return _BALL[num_periodic](cutoff) * n2 / max(measure, 1e-300)


def _check_num_pairs(max_pairs, num_atoms: int, cutoff: float, measure: float, num_periodic: int) -> None:
    estimate = estimate_num_pairs(num_atoms, cutoff, measure, num_periodic)
    if max_pairs is not None and estimate > max_pairs:
        symbol = "V" if num_periodic in (0, 3) else "AL"[2 - num_periodic]
        raise ValueError(
            f"neighbor_list: about {estimate:.3g} pairs expected ({_FORMULA[num_periodic]}, rc={cutoff:g} Å, "
            f"N={num_atoms}, {symbol}={measure:.4g} {_UNIT[num_periodic]}), more than max_pairs={max_pairs:.3g}; "
            f"use a shorter cutoff (or pass a larger max_pairs)"
        )


def _orthonormal_complement(periodic_rows: np.ndarray) -> np.ndarray:
    """Orthonormal rows spanning the complement of the span of ``periodic_rows`` (``[p, 3]``)."""
    if periodic_rows.shape[0] == 0:
        return np.eye(3)
    # the last 3 - p right-singular vectors span the orthogonal complement
    _, _, vt = np.linalg.svd(periodic_rows)
    return vt[periodic_rows.shape[0]:]


def _molecule_pairs(positions: np.ndarray, cutoff: float):
    """All ordered pairs of a non-periodic set closer than ``cutoff`` (k-d tree; any spread of atoms)."""
    pairs = cKDTree(positions).query_pairs(cutoff, output_type="ndarray").astype(np.int64).reshape(-1, 2)
    if pairs.size:
        # query_pairs includes distance == cutoff; the list is strict, as ase's and matscipy's
        pairs = pairs[np.linalg.norm(positions[pairs[:, 0]] - positions[pairs[:, 1]], axis=1) < cutoff]
    first, second = pairs[:, 0], pairs[:, 1]
    dst = np.concatenate([first, second])
    src = np.concatenate([second, first])
    order = np.lexsort((src, dst))
    return src[order], dst[order], np.zeros((dst.shape[0], 3), dtype=np.int64)


def _reject_coincident(src, dst, shift, distance) -> None:
    close = distance < _COINCIDENT
    if close.any():
        e = int(np.flatnonzero(close)[0])
        raise ValueError(
            f"neighbor_list: atoms {int(dst[e])} and {int(src[e])} (shift {shift[e].tolist()}) "
            "coincide; an edge of zero length has no direction"
        )


def _search_box(positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, cutoff: float):
    """Positions and cell for the search: non-periodic rows become a box spanning the atoms.

    Along each non-periodic direction the lattice vector is replaced by an orthogonal one spanning
    the atoms plus a margin of ``cutoff`` on each side, and the atoms are translated into it (a
    common translation changes no pair and no shift).
    """
    search_cell = cell.copy()
    search_positions = positions.copy()
    complement = _orthonormal_complement(cell[pbc])
    for row, direction in zip(np.flatnonzero(~pbc), complement):
        coordinate = positions @ direction
        low, extent = coordinate.min(), np.ptp(coordinate)
        search_positions += (cutoff - low) * direction
        search_cell[row] = (extent + 2.0 * cutoff) * direction
    return search_positions, search_cell


def neighbor_list(
    positions,
    cutoff: float,
    cell=None,
    pbc=None,
    max_pairs: Optional[float] = DEFAULT_MAX_PAIRS,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""All directed pairs closer than ``cutoff``, with periodic images.

    Returns every ``(src, dst, shift)`` with

    .. math::
        \mathbf{r} = \mathbf{x}_{\mathrm{src}} - \mathbf{x}_{\mathrm{dst}} + \mathbf{S}\,\mathbf{C},
        \qquad 0 < \lVert \mathbf{r} \rVert < r_c ,

    where :math:`\mathbf{C}` holds the lattice vectors as rows and the integer shift
    :math:`\mathbf{S}` is zero along non-periodic directions. This is ase's
    ``neighbor_list("ijS")`` with ``i = dst`` (the centre) and ``j = src``, pair for pair;
    periodic cells are searched with matscipy's linear-scaling cell list. A cutoff longer than the cell
    gives all the images it reaches (an atom may neighbor its own image, never itself
    with zero shift).

    Non-periodic directions need no cell vector: molecules (``cell=None`` or ``pbc`` all
    false) are searched with scipy's k-d tree, whatever the spread of the atoms, and the
    lattice vectors of the non-periodic directions of a slab or wire are replaced by a box
    spanning the atoms, which leaves the pairs unchanged.

    Before anything is searched, the number of pairs is estimated (:func:`estimate_num_pairs`:
    :math:`\tfrac{4\pi}{3} r_c^3 N^2 / V` for a bulk cell of volume :math:`V`, the same with the
    area or length for slabs and wires; at most :math:`N(N-1)` for molecules) and a list that would
    exceed ``max_pairs`` is refused, so a cutoff far longer than the cell fails at once instead
    of enumerating billions of periodic images.

    Parameters
    ----------
    positions : array_like
        ``[N, 3]`` Cartesian positions (float32 or float64; computed in float64).
    cutoff : float
        Radius, strictly positive.
    cell : array_like, optional
        ``[3, 3]`` lattice vectors as rows; required when any direction is periodic.
    pbc : bool or array_like of 3 bools, optional
        Periodicity per lattice direction; default: periodic in all directions when a
        cell is given, none otherwise.
    max_pairs : float or None
        Refuse lists whose estimated size exceeds this (default ``1e8``); ``None`` disables the guard.

    Returns
    -------
    edge_src, edge_dst : numpy.ndarray
        ``[E]`` int64 sender (ase's ``j``) and receiver (ase's ``i``).
    edge_shift : numpy.ndarray
        ``[E, 3]`` int64 cell shifts.

    Raises
    ------
    TypeError
        A cutoff that is not a number (a string such as ``"4.0"`` included), positions or a
        cell that are not arrays of real numbers, ``pbc`` that is not bools.
    ValueError
        Non-finite positions or cell, a non-positive cutoff, a degenerate or near-singular
        periodic cell (measure below ``MIN_CELL_LENGTH**p`` or lattice vectors nearly
        dependent; the volume is quoted), more than ``max_pairs`` estimated pairs (the estimate
        is quoted), mismatched shapes, or two distinct atoms at the same point.
    """
    positions = _as_array("positions", positions, (None, 3))
    check_finite("positions", positions, "neighbor_list")
    cutoff = check_number("cutoff", cutoff, "neighbor_list", positive=True)
    if max_pairs is not None:
        max_pairs = check_number("max_pairs", max_pairs, "neighbor_list", positive=True)
    pbc = pbc_array(pbc, cell)
    if cell is None:
        if pbc.any():
            raise ValueError(f"neighbor_list: pbc={pbc.tolist()} needs a cell, got cell=None")
        cell = np.zeros((3, 3))
    cell = _as_array("cell", cell, (3, 3))
    check_finite("cell", cell, "neighbor_list")
    if pbc.any():
        _check_cell(cell, pbc)

    n = positions.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 3), dtype=np.int64)
    search_positions, search_cell = _search_box(positions, cell, pbc, cutoff)
    if pbc.any():
        measure = _cell_measure(cell, pbc)
    else:  # the box spanning the atoms, widened by the cutoff: uniform density inside it
        measure = float(np.prod(np.ptp(positions, axis=0) + cutoff))
    _check_num_pairs(max_pairs, n, cutoff, measure, int(pbc.sum()))

    if not pbc.any():
        src, dst, shift = _molecule_pairs(positions, cutoff)
        _reject_coincident(src, dst, shift, np.linalg.norm(positions[src] - positions[dst], axis=1))
        return src, dst, shift

    dst, src, shift, distance = _matscipy_neighbor_list(
        "ijSd", positions=search_positions, cell=search_cell, pbc=pbc, cutoff=cutoff
    )
    dst = dst.astype(np.int64, copy=False)
    src = src.astype(np.int64, copy=False)
    shift = shift.astype(np.int64, copy=False)
    _reject_coincident(src, dst, shift, distance)
    return src, dst, shift
