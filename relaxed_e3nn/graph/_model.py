"""A node-regression network on a fixed graph, equivariant to within-cluster permutations."""
from typing import Optional

import torch
from torch import nn

from relaxed_e3nn.graph._clusters import cluster_labels
from relaxed_e3nn.graph._coarsen import _adjacency, _normalised_adjacency
from relaxed_e3nn.graph._layers import ClusterEquivariantLinear

__all__ = ["ApproxEquivariantGNN"]


class ApproxEquivariantGNN(nn.Module):
    r"""Stacked :class:`ClusterEquivariantLinear` layers with optional message passing.

    Each hidden layer is

    .. math::
        h^{(\ell+1)} = \sigma\big(L_\ell(h^{(\ell)}) + \hat A\, h^{(\ell)} M_\ell\big),
        \qquad \hat A = D^{-1/2} A D^{-1/2},

    where :math:`L_\ell` is cluster-equivariant and the message-passing term (present only
    when ``adjacency`` is given) aggregates neighbors along the fixed graph; a last
    :class:`ClusterEquivariantLinear` (plus message passing) maps to the outputs. The network
    is exactly equivariant to every node permutation that keeps each node in its cluster and,
    with message passing, is also an automorphism of the graph; choosing clusters sets how
    much of the permutation symmetry is imposed (``k = 1``: full :math:`S_n` without
    message passing; ``k = n``: none).

    Parameters
    ----------
    in_features, hidden_features, out_features : int
        Features per node at input, in the hidden layers and at output.
    clusters : sequence
        One cluster label per node (see :func:`coarsen`, :func:`automorphism_orbits`).
    num_layers : int
        Number of layers, at least 1 (``num_layers - 1`` hidden layers).
    adjacency : networkx.Graph or array_like, optional
        The fixed graph for message passing (node order as ``clusters``).
    activation : torch.nn.Module, optional
        Pointwise nonlinearity :math:`\sigma`; default SiLU.

    Notes
    -----
    ``[..., n, in_features] -> [..., n, out_features]``.
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        out_features: int,
        clusters,
        num_layers: int = 2,
        adjacency=None,
        activation: Optional[nn.Module] = None,
    ):
        super().__init__()
        labels, _ = cluster_labels(clusters)
        n = labels.shape[0]
        if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"ApproxEquivariantGNN: num_layers must be an integer >= 1, got {num_layers!r}")
        sizes = [in_features] + [hidden_features] * (num_layers - 1) + [out_features]
        self.layers = nn.ModuleList(
            ClusterEquivariantLinear(a, b, labels) for a, b in zip(sizes[:-1], sizes[1:])
        )
        self.activation = nn.SiLU() if activation is None else activation
        if adjacency is not None:
            matrix, _ = _adjacency(adjacency, "adjacency")
            if matrix.shape[0] != n:
                raise ValueError(f"ApproxEquivariantGNN: adjacency has {matrix.shape[0]} nodes but clusters has {n}")
            normalised = _normalised_adjacency(matrix)
            self.register_buffer("adjacency", torch.as_tensor(normalised, dtype=torch.get_default_dtype()))
            self.messages = nn.ModuleList(nn.Linear(a, b, bias=False) for a, b in zip(sizes[:-1], sizes[1:]))
        else:
            self.adjacency = None
            self.messages = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            out = layer(h)
            if self.messages is not None:
                out = out + self.messages[index](torch.matmul(self.adjacency.to(h.dtype), h))
            h = out if index == last else self.activation(out)
        return h
