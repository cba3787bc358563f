"""Atomic graphs, neighbor lists, readers, batching and data generators."""
from relaxed_e3nn.data._batch import GraphDataset, collate
from relaxed_e3nn.data._builders import from_arrays
from relaxed_e3nn.data._graph import AtomicGraph
from relaxed_e3nn.data._neighbors import DEFAULT_MAX_PAIRS, estimate_num_pairs, neighbor_list
from relaxed_e3nn.data._readers import from_ase, from_pymatgen, read
from relaxed_e3nn.data._validate import check_graph
from relaxed_e3nn.data._orbits import ORBIT_ID_KEY, orbit_batches, orbit_ids_of, orbit_split, symmetrize

__all__ = [
    "AtomicGraph",
    "neighbor_list",
    "estimate_num_pairs",
    "DEFAULT_MAX_PAIRS",
    "check_graph",
    "from_arrays",
    "from_ase",
    "from_pymatgen",
    "read",
    "collate",
    "GraphDataset",
    "symmetrize",
    "orbit_ids_of",
    "orbit_split",
    "orbit_batches",
    "ORBIT_ID_KEY",
]
