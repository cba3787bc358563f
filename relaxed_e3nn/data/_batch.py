"""Batching graphs into one disjoint graph, and a ``Dataset`` of graphs."""
from typing import Dict, List, Sequence

import torch
from torch.utils.data import Dataset

from relaxed_e3nn.data._graph import AtomicGraph
from relaxed_e3nn.data._validate import check_graph

__all__ = ["collate", "GraphDataset"]


def _merge_dicts(graphs: Sequence[AtomicGraph], attribute: str) -> Dict[str, torch.Tensor]:
    keys = set(getattr(graphs[0], attribute))
    for index, graph in enumerate(graphs[1:], start=1):
        other = set(getattr(graph, attribute))
        if other != keys:
            raise ValueError(
                f"collate: graph {index} has {attribute} keys {sorted(other)} but graph 0 has "
                f"{sorted(keys)}; every graph of a batch needs the same keys"
            )
    merged = {}
    for key in sorted(keys):
        values = [getattr(graph, attribute)[key] for graph in graphs]
        tail = values[0].shape[1:]
        for index, value in enumerate(values):
            if value.shape[1:] != tail:
                raise ValueError(
                    f"collate: {attribute}[{key!r}] of graph {index} has shape {tuple(value.shape)}, "
                    f"incompatible with graph 0's {tuple(values[0].shape)}"
                )
        merged[key] = torch.cat(values, dim=0)
    return merged


def collate(graphs: Sequence[AtomicGraph]) -> AtomicGraph:
    r"""Join graphs (single or already batched) into one disjoint batch graph.

    Node indices of graph :math:`b` are offset by the number of atoms before it, ``batch``
    by the number of graphs before it; cells, pbc flags and every per-atom / per-graph
    dictionary entry are concatenated along dimension 0. Usable directly as the
    ``collate_fn`` of a ``torch.utils.data.DataLoader`` over a :class:`GraphDataset`.

    Parameters
    ----------
    graphs : sequence of AtomicGraph
        At least one graph; all with the same cutoff, position dtype and dictionary keys.

    Returns
    -------
    AtomicGraph
        The batch; ``num_graphs`` is the total number of structures.

    Raises
    ------
    ValueError
        An empty sequence, mismatched dictionary keys or shapes, different cutoffs or dtypes, and
        (for graphs on the CPU) out-of-range indices or NaN/inf values in any graph, named with
        the graph's position (see :func:`~relaxed_e3nn.data.check_graph`).
    """
    graphs = list(graphs)
    if not graphs:
        raise ValueError("collate: got an empty list of graphs")
    for index, graph in enumerate(graphs):
        if not isinstance(graph, AtomicGraph):
            raise TypeError(f"collate: item {index} is a {type(graph).__name__}, expected AtomicGraph")
        check_graph(graph, f"collate: graph {index}")  # graphs may have been changed in place since built
    first = graphs[0]
    for index, graph in enumerate(graphs[1:], start=1):
        if graph.cutoff != first.cutoff:
            raise ValueError(
                f"collate: graph {index} was built with cutoff {graph.cutoff}, graph 0 with {first.cutoff}"
            )
        if graph.pos.dtype != first.pos.dtype:
            raise ValueError(
                f"collate: graph {index} has positions of dtype {graph.pos.dtype}, graph 0 {first.pos.dtype}"
            )

    node_offsets: List[int] = []
    graph_offsets: List[int] = []
    nodes = num_graphs = 0
    for graph in graphs:
        node_offsets.append(nodes)
        graph_offsets.append(num_graphs)
        nodes += graph.num_nodes
        num_graphs += graph.num_graphs

    def offset_cat(attribute: str, offsets: List[int]) -> torch.Tensor:
        return torch.cat([getattr(g, attribute) + o for g, o in zip(graphs, offsets)], dim=0)

    return AtomicGraph(
        pos=torch.cat([g.pos for g in graphs], dim=0),
        atomic_numbers=torch.cat([g.atomic_numbers for g in graphs], dim=0),
        cell=torch.cat([g.cell for g in graphs], dim=0),
        pbc=torch.cat([g.pbc for g in graphs], dim=0),
        edge_src=offset_cat("edge_src", node_offsets),
        edge_dst=offset_cat("edge_dst", node_offsets),
        edge_shift=torch.cat([g.edge_shift for g in graphs], dim=0),
        batch=offset_cat("batch", graph_offsets),
        cutoff=first.cutoff,
        node_features=_merge_dicts(graphs, "node_features"),
        node_targets=_merge_dicts(graphs, "node_targets"),
        graph_targets=_merge_dicts(graphs, "graph_targets"),
        periodic=any(g.periodic for g in graphs),
        origin=_merged_origin(graphs),
    )


def _merged_origin(graphs: Sequence[AtomicGraph]):
    """The graphs' origins concatenated (zeros for graphs without one), or ``None`` if none has one."""
    if all(g.origin is None for g in graphs):
        return None
    return torch.cat([torch.zeros(g.num_graphs, 3, dtype=torch.float64, device=g.cell.device)
                      if g.origin is None else g.origin for g in graphs], dim=0)


class GraphDataset(Dataset):
    r"""A map-style ``torch`` dataset over prebuilt :class:`AtomicGraph` objects.

    Use with ``DataLoader(dataset, batch_size=..., collate_fn=collate)`` (or
    ``GraphDataset.collate``).

    Parameters
    ----------
    graphs : sequence of AtomicGraph
        The graphs, typically from :func:`read` or :func:`from_ase`.
    """

    collate = staticmethod(collate)

    def __init__(self, graphs: Sequence[AtomicGraph]):
        graphs = list(graphs)
        for index, graph in enumerate(graphs):
            if not isinstance(graph, AtomicGraph):
                raise TypeError(f"GraphDataset: item {index} is a {type(graph).__name__}, expected AtomicGraph")
        self.graphs = graphs

    def __len__(self) -> int:
        return len(self.graphs)

    def __getitem__(self, index: int) -> AtomicGraph:
        return self.graphs[index]
