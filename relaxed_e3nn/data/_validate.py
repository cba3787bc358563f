"""Checks of an :class:`~relaxed_e3nn.data.AtomicGraph`'s shapes, indices and values.

Shapes and dtypes are Python-side metadata and are always checked. Index ranges and finiteness
read tensor values back to the host, which on an accelerator would stall the caller; they run
where graphs are built or collated on the CPU (the builders and :func:`~relaxed_e3nn.data.collate`
make graphs there), never per forward pass of a model.
"""
import torch

from relaxed_e3nn._checks import check_finite, check_number

__all__ = ["check_graph"]

# per-graph value dictionaries of an AtomicGraph, and what indexes their first dimension
_NODE_DICTS = ("node_features", "node_targets")
_GRAPH_DICTS = ("graph_targets",)


def _shape(name: str, tensor, expected, where: str, *, integer: bool = None) -> None:
    """``tensor`` is a tensor of shape ``expected`` (``None`` entries: any size), else raise naming ``name``."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{where}: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() != len(expected) or any(w is not None and g != w for g, w in zip(tensor.shape, expected)):
        want = "[" + ", ".join("*" if w is None else str(w) for w in expected) + "]"
        raise ValueError(f"{where}: {name} must have shape {want}, got {list(tensor.shape)}")
    if integer is True and (tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool):
        raise TypeError(f"{where}: {name} must be an integer tensor, got {tensor.dtype}")
    if integer is False and not tensor.is_floating_point():
        raise TypeError(f"{where}: {name} must be a floating-point tensor, got {tensor.dtype}")


def _check_structure(graph, where: str) -> None:
    """Shapes and dtypes: no tensor value is read."""
    check_number("cutoff", graph.cutoff, where, positive=True)
    _shape("pos", graph.pos, (None, 3), where, integer=False)
    n = graph.pos.shape[0]
    _shape("atomic_numbers", graph.atomic_numbers, (n,), where, integer=True)
    _shape("cell", graph.cell, (None, 3, 3), where, integer=False)
    b = graph.cell.shape[0]
    _shape("pbc", graph.pbc, (b, 3), where)
    _shape("edge_src", graph.edge_src, (None,), where, integer=True)
    e = graph.edge_src.shape[0]
    _shape("edge_dst", graph.edge_dst, (e,), where, integer=True)
    _shape("edge_shift", graph.edge_shift, (e, 3), where)
    _shape("batch", graph.batch, (n,), where, integer=True)
    if graph.origin is not None:
        _shape("origin", graph.origin, (b, 3), where, integer=False)
    for attribute, rows, count in (*((a, "atoms", n) for a in _NODE_DICTS), *((a, "graphs", b) for a in _GRAPH_DICTS)):
        values = getattr(graph, attribute)
        if not isinstance(values, dict):
            raise TypeError(f"{where}: {attribute} must be a dict of tensors, got {type(values).__name__}")
        for key, value in values.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"{where}: {attribute}[{key!r}] must be a torch.Tensor, got {type(value).__name__}")
            if value.dim() == 0 or value.shape[0] != count:
                raise ValueError(f"{where}: {attribute}[{key!r}] must have {count} rows (one per {rows[:-1]}), "
                                 f"got shape {list(value.shape)}")


def _check_index(name: str, index: torch.Tensor, size: int, what: str, where: str) -> None:
    if index.numel() == 0:
        return
    low, high = int(index.min()), int(index.max())
    if low < 0 or high >= size:
        bad = int(torch.nonzero((index < 0) | (index >= size))[0, 0])
        raise ValueError(f"{where}: {name} must index the {size} {what} (0 .. {size - 1}); entry {bad} is "
                         f"{int(index[bad])} (range of {name}: {low} .. {high})")


def check_graph(graph, where: str = "AtomicGraph") -> None:
    """Raise a ``ValueError``/``TypeError`` naming the field if ``graph`` is malformed.

    Always: every tensor's shape and kind (``pos`` ``[N, 3]`` floating, ``edge_src``/``edge_dst``
    ``[E]`` integer, ``edge_shift`` ``[E, 3]``, ``cell`` ``[B, 3, 3]``, ``pbc`` ``[B, 3]``,
    ``batch`` ``[N]``, per-atom dictionaries with ``N`` rows, per-graph ones with ``B`` rows).
    For graphs on the CPU also the values: ``edge_src``/``edge_dst`` in ``[0, N)``, ``batch`` in
    ``[0, B)``, and ``pos``, ``cell``, ``edge_shift`` and every dictionary entry finite.
    """
    _check_structure(graph, where)
    tensors = [graph.pos, graph.cell, graph.edge_src, graph.edge_dst, graph.batch]
    if any(t.device.type != "cpu" for t in tensors) or torch.compiler.is_compiling():
        return
    n, b = graph.pos.shape[0], graph.cell.shape[0]
    _check_index("edge_src", graph.edge_src, n, "atoms", where)
    _check_index("edge_dst", graph.edge_dst, n, "atoms", where)
    _check_index("batch", graph.batch, b, "graphs", where)
    for name in ("pos", "cell", "edge_shift"):
        check_finite(name, getattr(graph, name), where)
    for attribute in _NODE_DICTS + _GRAPH_DICTS:
        for key, value in getattr(graph, attribute).items():
            if value.device.type == "cpu":
                check_finite(f"{attribute}[{key!r}]", value, where)
