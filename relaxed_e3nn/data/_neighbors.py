"""Neighbor lists for molecules, slabs, wires and bulk crystals."""
from typing import Tuple

import numpy as np
import torch

__all__ = ["neighbor_list"]

# distinct atoms closer than this are rejected: their edge vector has no direction
_COINCIDENT = 1e-8


def _as_array(name, value, shape_tail, dtype=np.float64):
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as err:
        raise TypeError(f"neighbor_list: {name} must be array-like numbers, got {type(value).__name__}") from err
    if array.ndim != len(shape_tail) or any(
        want is not None and got != want for got, want in zip(array.shape, shape_tail)
    ):
        want = "[" + ", ".join("N" if w is None else str(w) for w in shape_tail) + "]"
        raise ValueError(f"neighbor_list: {name} must have shape {want}, got {array.shape}")
    return array


def _orthonormal_complement(periodic_rows: np.ndarray) -> np.ndarray:
    """Orthonormal rows spanning the complement of the span of ``periodic_rows`` (``[p, 3]``)."""
    if periodic_rows.shape[0] == 0:
        return np.eye(3)
    # the last 3 - p right-singular vectors span the orthogonal complement
    _, _, vt = np.linalg.svd(periodic_rows)
    return vt[periodic_rows.shape[0]:]


def _molecule_pairs(positions: np.ndarray, cutoff: float):
    """All ordered pairs of a non-periodic set closer than ``cutoff`` (k-d tree; any spread of atoms)."""
    from scipy.spatial import cKDTree

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


def neighbor_list(
    positions,
    cutoff: float,
    cell=None,
    pbc=None,
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

    Returns
    -------
    edge_src, edge_dst : numpy.ndarray
        ``[E]`` int64 sender (ase's ``j``) and receiver (ase's ``i``).
    edge_shift : numpy.ndarray
        ``[E, 3]`` int64 cell shifts.

    Raises
    ------
    ValueError
        Non-finite positions, a non-positive cutoff, a periodic cell of zero volume (or
        zero length along a periodic direction), mismatched shapes, or two distinct atoms
        at the same point.
    """
    from matscipy.neighbours import neighbour_list as _matscipy_neighbor_list

    positions = _as_array("positions", positions, (None, 3))
    if not np.all(np.isfinite(positions)):
        raise ValueError("neighbor_list: positions contain NaN or inf")
    try:
        cutoff = float(cutoff)
    except (TypeError, ValueError) as err:
        raise TypeError(f"neighbor_list: cutoff must be a number, got {cutoff!r}") from err
    if not np.isfinite(cutoff) or cutoff <= 0:
        raise ValueError(f"neighbor_list: cutoff must be a positive finite number, got {cutoff}")

    if pbc is None:
        pbc = np.zeros(3, dtype=bool) if cell is None else np.ones(3, dtype=bool)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy() if np.ndim(pbc) == 0 else _as_array(
        "pbc", pbc, (3,), dtype=bool
    )
    if cell is None:
        if pbc.any():
            raise ValueError(f"neighbor_list: pbc={pbc.tolist()} needs a cell, got cell=None")
        cell = np.zeros((3, 3))
    cell = _as_array("cell", cell, (3, 3))
    if not np.all(np.isfinite(cell)):
        raise ValueError("neighbor_list: cell contains NaN or inf")

    n = positions.shape[0]
    empty = (np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros((0, 3), dtype=np.int64))
    periodic = cell[pbc]
    if pbc.any():
        # volume (area, length) spanned by the periodic lattice vectors must be nonzero
        gram = periodic @ periodic.T
        scale = float(np.prod(np.einsum("ij,ij->i", periodic, periodic)))
        if scale == 0.0 or np.linalg.det(gram) <= 1e-12 * scale:
            raise ValueError(
                f"neighbor_list: the periodic lattice vectors of cell (pbc={pbc.tolist()}) span zero "
                f"volume; cell=\n{cell}"
            )
    if n == 0:
        return empty

    if not pbc.any():
        src, dst, shift = _molecule_pairs(positions, cutoff)
        _reject_coincident(src, dst, shift, np.linalg.norm(positions[src] - positions[dst], axis=1))
        return src, dst, shift

    # non-periodic directions: an orthogonal box spanning the atoms plus a margin, with the
    # atoms translated into it (a common translation changes no pair and no shift)
    search_cell = cell.copy()
    search_positions = positions.copy()
    complement = _orthonormal_complement(periodic)
    for row, direction in zip(np.flatnonzero(~pbc), complement):
        coordinate = positions @ direction
        low, extent = coordinate.min(), np.ptp(coordinate)
        search_positions += (cutoff - low) * direction
        search_cell[row] = (extent + 2.0 * cutoff) * direction

    dst, src, shift, distance = _matscipy_neighbor_list(
        "ijSd", positions=search_positions, cell=search_cell, pbc=pbc, cutoff=cutoff
    )
    dst = dst.astype(np.int64, copy=False)
    src = src.astype(np.int64, copy=False)
    shift = shift.astype(np.int64, copy=False)
    _reject_coincident(src, dst, shift, distance)
    return src, dst, shift
