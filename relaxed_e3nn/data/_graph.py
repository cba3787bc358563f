"""The atomic graph: one structure (or a batch of them) with its neighbor list."""
from dataclasses import dataclass, field, fields, replace
from typing import Dict, Optional

import torch

from relaxed_e3nn.data._validate import check_graph

__all__ = ["AtomicGraph"]


@dataclass
class AtomicGraph:
    r"""Atoms, their cell and their directed edges, for one structure or a batch of them.

    Edge convention (the e3nn ``gate_points`` one): an edge goes from the neighbor that
    sends, ``edge_src``, to the centre that receives, ``edge_dst``, and

    .. math::
        \mathbf{r}_{e} = \mathbf{x}_{\mathrm{src}} - \mathbf{x}_{\mathrm{dst}}
                         + \mathbf{S}_e \, \mathbf{C}_{b(\mathrm{dst})}

    with integer cell shifts :math:`\mathbf{S}_e` (a row vector) and the cell
    :math:`\mathbf{C}` (lattice vectors as rows) of the edge's graph. The sign of every
    odd-l relaxed weight depends on this convention. ``edge_vec`` is computed from
    ``pos`` on demand, so forces follow by autograd when ``pos.requires_grad``.

    Attributes
    ----------
    pos : torch.Tensor
        ``[N, 3]`` Cartesian positions (Å).
    atomic_numbers : torch.Tensor
        ``[N]`` int64 atomic numbers.
    cell : torch.Tensor
        ``[B, 3, 3]`` lattice vectors as rows, one cell per graph (zeros when no cell).
    pbc : torch.Tensor
        ``[B, 3]`` bool periodicity per lattice direction.
    edge_src, edge_dst : torch.Tensor
        ``[E]`` int64 sender and receiver of each edge; never ``src == dst`` with zero shift.
    edge_shift : torch.Tensor
        ``[E, 3]`` integer cell shifts (stored in the positions' dtype for the matmul).
    batch : torch.Tensor
        ``[N]`` int64 graph index of each atom (all zeros for a single graph).
    node_features : dict of str to torch.Tensor
        Per-atom inputs beyond species, e.g. ``"velocities"`` ``[N, 3]``, ``"charges"`` ``[N]``.
    node_targets : dict of str to torch.Tensor
        Per-atom targets, e.g. ``"forces"`` ``[N, 3]``, ``"displacements"`` ``[N, 3]``.
    graph_targets : dict of str to torch.Tensor
        Per-graph targets, e.g. ``"energy"`` ``[B]``, ``"stress"`` ``[B, 3, 3]``.
    cutoff : float
        The radius the neighbor list was built with.
    periodic : bool
        Whether any graph has a periodic direction (``pbc.any()``), read once where the graph is
        built or collated (``None`` there: derived from ``pbc``) and kept as a plain Python bool,
        so that :meth:`edge_vec` never reads a device tensor back to the host. Moving the graph
        (:meth:`to`) keeps it; ``dataclasses.replace`` with a new ``pbc`` must pass
        ``periodic=None`` to derive it again.
    origin : torch.Tensor or None
        ``[B, 3]`` float64 point subtracted from each graph's input positions before they were
        cast to the graph's dtype (the builders subtract the centroid), so that ``pos`` holds
        small coordinates and edge vectors keep their digits in float32 far from the origin:
        the input positions are ``pos + origin[batch]``. ``None`` (graphs made by hand) means zero.
        Kept in float64 by :meth:`to`.

    Notes
    -----
    Every graph is checked when it is made (:func:`~relaxed_e3nn.data._validate.check_graph`):
    shapes always; index ranges and finiteness when its tensors are on the CPU, where the
    builders and :func:`~relaxed_e3nn.data.collate` make graphs, so a model's forward pass on an
    accelerator never waits for such a check.
    """

    pos: torch.Tensor
    atomic_numbers: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    edge_src: torch.Tensor
    edge_dst: torch.Tensor
    edge_shift: torch.Tensor
    batch: torch.Tensor
    cutoff: float
    node_features: Dict[str, torch.Tensor] = field(default_factory=dict)
    node_targets: Dict[str, torch.Tensor] = field(default_factory=dict)
    graph_targets: Dict[str, torch.Tensor] = field(default_factory=dict)
    periodic: Optional[bool] = None
    origin: Optional[torch.Tensor] = None

    def __post_init__(self):
        if self.periodic is None:
            self.periodic = bool(self.pbc.any())  # the one host read, where the graph is built
        elif not isinstance(self.periodic, bool):
            raise TypeError(f"AtomicGraph: periodic must be a bool or None, got {type(self.periodic).__name__}")
        elif self.pbc.device.type == "cpu" and self.periodic != bool(self.pbc.any()):
            raise ValueError(f"AtomicGraph: periodic={self.periodic} disagrees with pbc; pass periodic=None "
                             f"to derive it from pbc")
        check_graph(self)

    @property
    def num_nodes(self) -> int:
        return int(self.pos.shape[0])

    @property
    def num_edges(self) -> int:
        return int(self.edge_src.shape[0])

    @property
    def num_graphs(self) -> int:
        return int(self.cell.shape[0])

    def edge_vec(self, pos: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Edge vectors ``pos[src] - pos[dst] + shift @ cell`` (``[E, 3]``), differentiable in ``pos``."""
        pos = self.pos if pos is None else pos
        vec = pos[self.edge_src] - pos[self.edge_dst]
        if self.periodic and self.num_edges > 0:  # Python values only: no host synchronisation
            cell = self.cell.to(pos.dtype)[self.batch[self.edge_dst]]  # [E, 3, 3]
            vec = vec + torch.einsum("ei,eij->ej", self.edge_shift.to(pos.dtype), cell)
        return vec

    def to(self, device=None, dtype=None) -> "AtomicGraph":
        """Move to ``device`` and cast floating-point tensors to ``dtype``; integer tensors keep theirs."""

        def move(t):
            if not isinstance(t, torch.Tensor):
                return t
            if t.is_floating_point() and dtype is not None:
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        changes = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict):
                changes[f.name] = {k: move(v) for k, v in value.items()}
            elif f.name == "origin" and value is not None:
                changes[f.name] = value.to(device=device)  # float64 whatever the graph's dtype
            else:
                changes[f.name] = move(value)
        return replace(self, **changes)
