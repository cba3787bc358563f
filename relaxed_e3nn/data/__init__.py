"""Atomic graphs, neighbour lists, readers, batching and data generators."""
from relaxed_e3nn.data._graph import AtomicGraph

__all__ = ["AtomicGraph"]
