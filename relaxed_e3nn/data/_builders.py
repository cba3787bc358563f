"""Atomic graphs from plain arrays: the builder every reader goes through."""
from typing import Dict, Mapping, Optional

import numpy as np
import torch

from relaxed_e3nn._checks import check_finite, check_float_dtype, check_number
from relaxed_e3nn.data._graph import AtomicGraph
from relaxed_e3nn.data._neighbors import DEFAULT_MAX_PAIRS, neighbor_list, pbc_array

__all__ = ["from_arrays", "numeric_array", "resolve_dtype", "where_suffix"]


def where_suffix(structure_index: Optional[int]) -> str:
    """`` (structure i)`` for error messages, or nothing."""
    return "" if structure_index is None else f" (structure {structure_index})"


def resolve_dtype(dtype, where: str = "") -> torch.dtype:
    """``dtype`` (``None``: ``torch.get_default_dtype()``) if float32 or float64, else a ``TypeError``."""
    return check_float_dtype("dtype", torch.get_default_dtype() if dtype is None else dtype, where)


def numeric_array(name: str, value, where: str) -> np.ndarray:
    """``value`` as a numpy array of bools, integers or reals; strings and objects raise ``TypeError``."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as err:  # ragged nested sequences
        raise TypeError(f"{name} must be an array of numbers{where}, got {type(value).__name__}") from err
    if array.dtype.kind == "c":
        raise TypeError(f"{name} must be real{where}: complex arrays are not supported, got dtype {array.dtype}")
    if array.dtype.kind not in "biuf":
        raise TypeError(f"{name} must be an array of numbers{where}, got dtype {array.dtype} ({value!r:.60})")
    return array


def _tensor(name: str, value, dtype: torch.dtype, where: str) -> torch.Tensor:
    """Floating arrays take ``dtype`` (after a finiteness check); integer and bool arrays keep their kind."""
    array = numeric_array(name, value, where)
    if array.dtype == bool:
        return torch.as_tensor(array.copy(), dtype=torch.bool)
    if np.issubdtype(array.dtype, np.integer):
        return torch.as_tensor(array.astype(np.int64))
    check_finite(name + where, array)
    return torch.as_tensor(array.astype(np.float64), dtype=dtype)


def _atomic_numbers(atomic_numbers, n: int, where: str) -> np.ndarray:
    numbers = numeric_array("atomic_numbers", atomic_numbers, where)
    if numbers.ndim != 1 or numbers.shape[0] != n:
        raise ValueError(f"atomic_numbers must have shape [{n}] to match positions{where}, got {numbers.shape}")
    if numbers.dtype == bool:
        raise TypeError(f"atomic_numbers must be integers{where}, got bools")
    if not np.issubdtype(numbers.dtype, np.integer):
        if not (np.all(np.isfinite(numbers)) and np.all(np.equal(np.mod(numbers, 1), 0))):
            raise TypeError(f"atomic_numbers must be integers{where}, got dtype {numbers.dtype}")
        numbers = numbers.astype(np.int64)
    if np.any(numbers < 0):
        raise ValueError(f"atomic_numbers must be non-negative{where}")
    return numbers.astype(np.int64)


def _per_atom(kind: str, values: Optional[Mapping[str, object]], n: int, dtype, where: str) -> Dict[str, torch.Tensor]:
    """Per-atom arrays, each with ``n`` rows (a per-atom scalar ``[n, 1]`` is stored as ``[n]``)."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise TypeError(f"{kind} must be a dict of arrays{where}, got {type(values).__name__}")
    out = {}
    for name, value in values.items():
        tensor = _tensor(f"{kind}[{name!r}]", value, dtype, where)
        if tensor.dim() == 0 or tensor.shape[0] != n:
            label = kind[:-1].replace("_", " ")  # "node feature", "node target"
            raise ValueError(f"{kind}: {label} {name!r} must have {n} rows (one per atom){where}, "
                             f"got shape {tuple(tensor.shape)}")
        if tensor.dim() == 2 and tensor.shape[1] == 1:
            tensor = tensor[:, 0]  # per-atom scalars are stored as [N]
        out[name] = tensor
    return out


def _per_graph(values: Optional[Mapping[str, object]], dtype, where: str) -> Dict[str, torch.Tensor]:
    """Per-structure values: a scalar is stored as ``[1]``, an array ``a`` as ``[1, *a.shape]``."""
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise TypeError(f"graph_targets must be a dict of arrays{where}, got {type(values).__name__}")
    return {name: _tensor(f"graph_targets[{name!r}]", value, dtype, where).reshape(1, *np.shape(value))
            for name, value in values.items()}


def from_arrays(
    positions,
    atomic_numbers,
    cutoff: float,
    *,
    cell=None,
    pbc=None,
    node_features: Optional[Mapping[str, object]] = None,
    node_targets: Optional[Mapping[str, object]] = None,
    graph_targets: Optional[Mapping[str, object]] = None,
    dtype: Optional[torch.dtype] = None,
    structure_index: Optional[int] = None,
    max_pairs: Optional[float] = DEFAULT_MAX_PAIRS,
) -> AtomicGraph:
    r"""One :class:`AtomicGraph` from plain arrays; the builder every other reader goes through.

    The positions are read in float64 and their centroid :math:`\mathbf{o}` is subtracted there,
    *before* the cast to ``dtype``: the graph stores :math:`\mathbf{x}_i - \mathbf{o}` in ``pos`` and
    :math:`\mathbf{o}` (float64) in ``origin``, and the neighbor list is searched on these small
    coordinates. Energies and forces of a translation-invariant model are unchanged; in float32 a
    structure 10⁶ Å from the origin keeps the digits of its edge vectors (cast first, they would
    be lost for good). Node features and targets are not shifted: they must not be absolute
    positions.

    Parameters
    ----------
    positions : array_like
        ``[N, 3]`` Cartesian positions (Å), finite real numbers, ``N >= 1``.
    atomic_numbers : array_like
        ``[N]`` integer atomic numbers.
    cutoff : float
        Neighbor-list radius (Å), a positive finite number (a string such as ``"4.0"`` is refused).
    cell : array_like, optional
        ``[3, 3]`` lattice vectors as rows (stored as zeros when omitted).
    pbc : bool or array_like of 3 bools, optional
        Periodicity; default periodic when a cell is given, else not.
    node_features, node_targets : mapping of str to array_like, optional
        Per-atom arrays with ``N`` rows, finite. A per-atom scalar is stored with shape ``[N]``.
    graph_targets : mapping of str to array_like, optional
        Per-structure values, finite; a scalar is stored as ``[1]``, an array ``a`` as ``[1, *a.shape]``.
    dtype : torch.dtype, optional
        ``torch.float32`` or ``torch.float64`` (half precision is refused): the dtype of positions,
        cell, shifts and float arrays; default ``torch.get_default_dtype()``.
    structure_index : int, optional
        Index of the structure in its file, quoted in error messages.
    max_pairs : float or None
        Refuse a neighbor list whose estimated size exceeds this (see
        :func:`~relaxed_e3nn.data.neighbor_list`); ``None`` disables the guard.

    Returns
    -------
    AtomicGraph
        A single graph (``batch`` all zeros, ``cell`` ``[1, 3, 3]``, ``pbc`` ``[1, 3]``,
        ``origin`` ``[1, 3]``).

    Raises
    ------
    TypeError
        Non-numeric input (strings, objects, complex), a ``dtype`` other than float32/float64,
        non-integer atomic numbers; the message names the argument.
    ValueError
        Wrong shapes, an empty structure, NaN or inf in any array (named, with the first bad
        index), a non-positive cutoff, a degenerate cell, too many estimated pairs, coincident atoms.

    Examples
    --------
    >>> graph = from_arrays([[0.0, 0.0, 1.0e6], [0.0, 0.0, 1.0e6 + 0.96]], [8, 1], cutoff=2.0,
    ...                     dtype=torch.float32)
    >>> graph.num_edges, graph.pos[:, 2].tolist(), graph.origin.tolist()
    (2, [-0.47999998927116394, 0.47999998927116394], [[0.0, 0.0, 1000000.48]])
    >>> copper = [[0, 0, 0], [1.8, 1.8, 0], [1.8, 0, 1.8], [0, 1.8, 1.8]]
    >>> from_arrays(copper, [29] * 4, cutoff=1e4, cell=3.6 * np.eye(3))
    Traceback (most recent call last):
    ...
    ValueError: neighbor_list: about 1.44e+12 pairs expected (...), more than max_pairs=1e+08; ...
    """
    where = where_suffix(structure_index)
    dtype = resolve_dtype(dtype, "from_arrays")
    cutoff = check_number("cutoff", cutoff, "from_arrays", positive=True)
    positions = numeric_array("positions", positions, where).astype(np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape [N, 3]{where}, got {positions.shape}")
    n = positions.shape[0]
    if n == 0:
        raise ValueError(f"empty structure{where}: positions has no atoms")
    check_finite("positions" + where, positions)
    numbers = _atomic_numbers(atomic_numbers, n, where)
    if cell is not None:
        cell = numeric_array("cell", cell, where).astype(np.float64)
        check_finite("cell" + where, cell)
    origin = positions.mean(axis=0)
    local = positions - origin  # in float64, before any cast
    try:
        src, dst, shift = neighbor_list(local, cutoff, cell=cell, pbc=pbc, max_pairs=max_pairs)
    except ValueError as err:
        raise ValueError(f"{err}{where}") from None
    pbc = pbc_array(pbc, cell)
    cell = np.zeros((3, 3)) if cell is None else cell
    return AtomicGraph(
        pos=torch.tensor(local, dtype=dtype),
        atomic_numbers=torch.as_tensor(numbers, dtype=torch.int64),
        cell=torch.as_tensor(cell, dtype=dtype).reshape(1, 3, 3),
        pbc=torch.as_tensor(pbc.copy(), dtype=torch.bool).reshape(1, 3),
        edge_src=torch.as_tensor(src, dtype=torch.int64),
        edge_dst=torch.as_tensor(dst, dtype=torch.int64),
        edge_shift=torch.as_tensor(shift, dtype=dtype),
        batch=torch.zeros(n, dtype=torch.int64),
        cutoff=float(cutoff),
        node_features=_per_atom("node_features", node_features, n, dtype, where),
        node_targets=_per_atom("node_targets", node_targets, n, dtype, where),
        graph_targets=_per_graph(graph_targets, dtype, where),
        origin=torch.as_tensor(origin, dtype=torch.float64).reshape(1, 3),
    )
