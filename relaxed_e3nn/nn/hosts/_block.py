r"""``RelaxedHostBlock``: the relaxation a host model's convolution block gets, backend-independent."""
from typing import Optional

import torch
from e3nn import o3

from relaxed_e3nn._checks import RELAX_AT, parse_irreps
from relaxed_e3nn._dtype import default_dtype
from relaxed_e3nn.nn._maps import RelaxationSites, ThetaLinearMap
from relaxed_e3nn.nn._weights import RelaxedWeights, irreps_relaxed_from

__all__ = ["RelaxedHostBlock", "edge_reversal_signs"]


def edge_reversal_signs(irreps: o3.Irreps) -> torch.Tensor:
    r"""The diagonal of :math:`P = \mathrm{diag}((-1)^l)`, one entry per component of ``irreps`` (float64).

    Spherical harmonics of a reversed edge are :math:`Y_l(-\hat r) = (-1)^l Y_l(\hat r)`, whatever
    parity label the irreps carry: :math:`Y(-\hat r) = Y(\hat r)\,P`.
    """
    irreps = o3.Irreps(irreps)
    return torch.cat([torch.full((mul * ir.dim,), float((-1) ** ir.l), dtype=torch.float64)
                      for mul, ir in irreps]) if irreps.dim else torch.zeros(0, dtype=torch.float64)


class RelaxedHostBlock(RelaxationSites, torch.nn.Module):
    r"""A host model's convolution block (``self.block``) with learnable symmetry breaking.

    Subclasses implement ``forward`` for the host's calling convention; this base owns
    :math:`\theta` (``self.theta``) and the two ways it enters:

    * edges: the spherical harmonics the block receives become :math:`Y' = Y\,M(\theta)` with
      :math:`M(\theta) = \mathbb{1} + \sum w\,(\cdot\otimes\theta)` (:class:`~relaxed_e3nn.nn.ThetaLinearMap`,
      one ``[d_Y, d_Y]`` matrix per forward pass). Where the host shares one :math:`Y` between layers,
      each block relaxes its own copy with its own :math:`\theta`. :math:`\theta` is stated in the
      package's edge convention (edge vector = sender − receiver). For a host whose edge vectors are
      receiver − sender (``reversed_edges=True``), :math:`Y_\mathrm{host}(\hat r) = Y(\hat r)\,P` with
      :math:`P = \mathrm{diag}((-1)^l)`, and the block applies :math:`P\,M(\theta)\,P` to
      :math:`Y_\mathrm{host}`, so that :math:`Y_\mathrm{host} P M P = (Y M) P`: the host receives exactly
      the relaxed harmonics of the package's convention, written in its own sign.
    * nodes: a term :math:`x\,N(\theta)` from the block's input features to its output features is added
      to the block's output (``N = 0`` while :math:`\theta_\mathrm{breaking} = 0`).

    While :math:`\theta_\mathrm{breaking} = 0`, :math:`M = \mathbb{1}` and :math:`N = 0` entry by entry, so
    the relaxed block gives the plain block's outputs, bit for bit. For any :math:`\theta` the block
    is jointly equivariant in (inputs, geometry, :math:`\theta`), and with :math:`\theta` fixed exactly
    equivariant under :math:`\mathrm{Stab}(\theta)`.

    Parameters
    ----------
    block : torch.nn.Module
        The plain block; its parameters are shared, not copied.
    irreps_edge_attr : `e3nn.o3.Irreps`
        Irreps of the spherical harmonics the block receives.
    irreps_node_in, irreps_node_out : `e3nn.o3.Irreps`, optional
        Irreps of the block's node input and output features (needed for node relaxation).
    irreps_relaxed : int, str or `e3nn.o3.Irreps`
    relax_at : {"both", "edge", "node"}
    reversed_edges : bool
        The host's edge vectors are receiver − sender.
    """

    def __init__(self, block: torch.nn.Module, irreps_edge_attr, irreps_node_in=None, irreps_node_out=None, *,
                 irreps_relaxed=2, relax_at: str = "both", reversed_edges: bool = False) -> None:
        super().__init__()
        name = type(self).__name__
        if relax_at not in RELAX_AT:
            raise ValueError(f"{name}: relax_at must be one of {RELAX_AT}, got {relax_at!r}")
        self.relax_at = relax_at
        self.reversed_edges = bool(reversed_edges)
        self.irreps_edge_attr = parse_irreps("irreps_edge_attr", irreps_edge_attr, name)
        reference = next(iter(block.parameters()), None)
        dtype = reference.dtype if reference is not None else torch.get_default_dtype()
        with default_dtype(dtype):
            self.theta = RelaxedWeights(irreps_relaxed_from(irreps_relaxed, "irreps_relaxed"))
            self.irreps_relaxed = self.theta.irreps
            if self.relaxes_edges:
                self.edge_relaxation = ThetaLinearMap(self.irreps_edge_attr, self.irreps_relaxed,
                                                      self.irreps_edge_attr, identity=True)
            if self.relaxes_nodes:
                if irreps_node_in is None or irreps_node_out is None:
                    raise ValueError(f"{name}: relax_at={relax_at!r} needs the block's node irreps")
                self.irreps_node_in = parse_irreps("irreps_node_in", irreps_node_in, name)
                self.irreps_node_out = parse_irreps("irreps_node_out", irreps_node_out, name)
                self.node_relaxation = ThetaLinearMap(self.irreps_node_in, self.irreps_relaxed, self.irreps_node_out)
        signs = edge_reversal_signs(self.irreps_edge_attr).to(dtype)
        self.register_buffer("edge_signs", signs, persistent=False)
        self.block = block
        if reference is not None:
            self.to(device=reference.device)
        self.train(block.training)

    def edge_matrix(self, theta: Optional[torch.Tensor] = None) -> torch.Tensor:
        r"""The matrix applied to the host's harmonics: :math:`M(\theta)`, or :math:`P M(\theta) P` (reversed edges)."""
        theta = self.theta() if theta is None else theta
        matrix = self.edge_relaxation(theta)
        if self.reversed_edges:
            signs = self.edge_signs.to(matrix.dtype)
            matrix = signs[:, None] * matrix * signs[None, :]
        return matrix

    def relax_edge_attr(self, edge_attr: torch.Tensor) -> torch.Tensor:
        r"""The relaxed harmonics :math:`Y\,M(\theta)` (in the host's sign convention) of ``edge_attr``."""
        if edge_attr.shape[-1] != self.irreps_edge_attr.dim:
            raise ValueError(f"{type(self).__name__}: edge_attr must have last dimension {self.irreps_edge_attr.dim} "
                             f"({self.irreps_edge_attr}), got shape {tuple(edge_attr.shape)}")
        return edge_attr @ self.edge_matrix()

    def node_term(self, node_features: torch.Tensor) -> torch.Tensor:
        r""":math:`x\,N(\theta)`, the node relaxation of the block's input features."""
        return node_features @ self.node_relaxation(self.theta())

    def extra_repr(self) -> str:
        return (f"edge_attr={self.irreps_edge_attr}, irreps_relaxed={self.irreps_relaxed}, "
                f"relax_at={self.relax_at!r}, reversed_edges={self.reversed_edges}")
