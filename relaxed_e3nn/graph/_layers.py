"""Permutation-equivariant layers: DeepSets and its cluster-wise generalisation."""
import math

import numpy as np
import torch
from torch import nn

from relaxed_e3nn._scatter import scatter
from relaxed_e3nn.graph._clusters import cluster_labels, equivariant_dimension

__all__ = ["DeepSetsLayer", "DeepSetsInvariant", "ClusterEquivariantLinear"]


def _check_nodes(x: torch.Tensor, num_nodes, in_features: int, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name}: input must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < 2 or x.shape[-1] != in_features or (num_nodes is not None and x.shape[-2] != num_nodes):
        nodes = "n" if num_nodes is None else str(num_nodes)
        raise ValueError(f"{name}: input must have shape [..., {nodes}, {in_features}], got {tuple(x.shape)}")


class DeepSetsLayer(nn.Module):
    r"""The permutation-equivariant linear layer of Deep Sets.

    .. math::
        L(X) = X W_1 + \mathbf{1}\,\overline{X}\, W_2 + \mathbf{1} b,
        \qquad \overline{X} = \tfrac{1}{n} \mathbf{1}^\top X,

    for a set of ``n`` elements with ``in_features`` features each. It commutes with every
    permutation of the set, :math:`L(P X) = P L(X)`; it is
    :class:`ClusterEquivariantLinear` with a single cluster.

    Parameters
    ----------
    in_features, out_features : int
        Feature sizes.
    bias : bool
        Whether to add :math:`b`.

    Notes
    -----
    ``[..., n, in_features] -> [..., n, out_features]``; ``n`` may vary between calls.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True):
        super().__init__()
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.identity = nn.Linear(self.in_features, self.out_features, bias=False)
        self.mean = nn.Linear(self.in_features, self.out_features, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_nodes(x, None, self.in_features, "DeepSetsLayer")
        return self.identity(x) + self.mean(x.mean(dim=-2, keepdim=True))


class DeepSetsInvariant(nn.Module):
    r"""Permutation-invariant readout :math:`\rho\big(\tfrac{1}{n}\sum_i \phi(x_i)\big)`.

    :math:`\phi` and :math:`\rho` are two-layer perceptrons with a SiLU nonlinearity.

    Parameters
    ----------
    in_features, out_features : int
        Per-element input size and output size.
    hidden_features : int
        Width of :math:`\phi`'s output and of both hidden layers.

    Notes
    -----
    ``[..., n, in_features] -> [..., out_features]``.
    """

    def __init__(self, in_features: int, out_features: int, hidden_features: int = 64):
        super().__init__()
        self.in_features = int(in_features)
        self.phi = nn.Sequential(
            nn.Linear(in_features, hidden_features), nn.SiLU(), nn.Linear(hidden_features, hidden_features)
        )
        self.rho = nn.Sequential(
            nn.Linear(hidden_features, hidden_features), nn.SiLU(), nn.Linear(hidden_features, out_features)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_nodes(x, None, self.in_features, "DeepSetsInvariant")
        return self.rho(self.phi(x).mean(dim=-2))


class ClusterEquivariantLinear(nn.Module):
    r"""Every linear map equivariant to permutations within clusters of a fixed node set.

    With nodes partitioned into clusters :math:`c_1, \dots, c_k` the symmetry group is
    :math:`G = S_{c_1} \times \dots \times S_{c_k}`, and the general G-equivariant linear map is

    .. math::
        y_i = x_i A_{c(i)} + \sum_{d=1}^{k} \overline{x}_{d}\, C_{c(i) d} + b_{c(i)},
        \qquad \overline{x}_d = \frac{1}{|c_d|} \sum_{j \in c_d} x_j ,

    with an identity weight :math:`A_c` per cluster, one constant block :math:`C_{cd}` per
    ordered pair of clusters (the within-cluster mean when :math:`c = d`) and a bias per
    cluster. For a singleton the identity and the mean coincide, so :math:`A_c` is dropped:
    the map has :math:`k^2 + k_{>1}` coefficients per (input, output) channel pair (see
    :func:`equivariant_dimension`), :math:`k^2 + k` when every cluster has more than one
    node. One cluster gives :class:`DeepSetsLayer`; ``n`` singletons give an unconstrained
    linear map on the nodes, :math:`y_i = \sum_j x_j C_{ij}`.

    Parameters
    ----------
    in_features, out_features : int
        Features per node.
    clusters : sequence
        One label per node, any hashable labels (see :func:`coarsen`).
    bias : bool
        Whether to add the per-cluster bias :math:`b_c`.

    Notes
    -----
    ``[..., n, in_features] -> [..., n, out_features]`` with ``n = len(clusters)``.
    """

    def __init__(self, in_features: int, out_features: int, clusters, bias: bool = True):
        super().__init__()
        labels, k = cluster_labels(clusters)
        sizes = np.bincount(labels, minlength=k)
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.num_nodes = int(labels.shape[0])
        self.num_clusters = int(k)
        self.register_buffer("labels", torch.as_tensor(labels), persistent=False)
        self.register_buffer("cluster_sizes", torch.as_tensor(sizes), persistent=False)
        # identity weights only where they differ from the within-cluster mean
        self.register_buffer("identity_mask", torch.as_tensor(sizes > 1).to(torch.get_default_dtype()).view(k, 1, 1),
                             persistent=False)
        fan = math.sqrt(1.0 / self.in_features)
        self.identity = nn.Parameter(torch.randn(k, self.in_features, self.out_features) * fan * self.identity_mask)
        self.constant = nn.Parameter(torch.randn(k, k, self.in_features, self.out_features) * fan / math.sqrt(k))
        self.bias = nn.Parameter(torch.zeros(k, self.out_features)) if bias else None

    @property
    def num_coefficients(self) -> int:
        """Free weights (bias excluded): ``in * out * (k**2 + k_{>1})``."""
        return self.in_features * self.out_features * equivariant_dimension(self.labels.tolist())

    def cluster_means(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., n, f] -> [..., k, f]``: the mean of each cluster."""
        return scatter(x, self.labels, dim=-2, dim_size=self.num_clusters, reduce="mean")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_nodes(x, self.num_nodes, self.in_features, "ClusterEquivariantLinear")
        identity = (self.identity * self.identity_mask.to(self.identity.dtype))[self.labels]  # [n, in, out]
        out = torch.einsum("...ni,nio->...no", x, identity)
        constant = torch.einsum("...di,cdio->...co", self.cluster_means(x), self.constant)  # [..., k, out]
        out = out + constant[..., self.labels, :]
        if self.bias is not None:
            out = out + self.bias[self.labels]
        return out

    def dense_weight(self) -> torch.Tensor:
        r"""The layer's linear part as a dense tensor ``M[i, j, a, b]``, with
        :math:`y_{ib} = \sum_{j,a} M_{ijab}\, x_{ja} + b_{c(i) b}`."""
        n, labels = self.num_nodes, self.labels
        identity = self.identity * self.identity_mask.to(self.identity.dtype)
        eye = torch.eye(n, dtype=identity.dtype, device=identity.device)
        dense = eye[:, :, None, None] * identity[labels][:, None]
        size = self.cluster_sizes.to(identity.dtype)
        dense = dense + (self.constant[labels][:, labels] / size[labels].view(1, n, 1, 1))
        return dense
