r"""Approximate permutation symmetry of signals on one fixed graph (Huang, Levie, Villar 2023).

Coarsening the graph into clusters (:func:`coarsen`) gives the group of within-cluster
permutations, between the automorphisms of the graph (:func:`automorphism_orbits`) and the
full symmetric group. :class:`ClusterEquivariantLinear` is every linear map equivariant to it
(:class:`DeepSetsLayer` for one cluster, an unconstrained map for singletons);
:class:`ApproxEquivariantGNN` stacks them. :func:`projector`, :func:`project` and
:func:`bias_variance_gap` quantify the bias–variance trade-off that the number of clusters
controls.

How it relates to the rest of the package: this is a different symmetry altogether, the
permutations of the nodes of one *fixed* graph, with no positions and no rotations. It therefore
never imports e3nn nor the package's point groups (``relaxed_e3nn.groups``); node features are
plain ``(..., N, C)`` tensors, and the layers are ordinary ``torch.nn.Module`` s that can sit next
to e3nn layers in a model of your own.
"""
from relaxed_e3nn.graph._clusters import cluster_labels, equivariant_dimension
from relaxed_e3nn.graph._coarsen import automorphism_orbits, coarsen
from relaxed_e3nn.graph._layers import ClusterEquivariantLinear, DeepSetsInvariant, DeepSetsLayer
from relaxed_e3nn.graph._model import ApproxEquivariantGNN
from relaxed_e3nn.graph._theory import bias_variance_gap, project, projector

__all__ = [
    "DeepSetsLayer",
    "DeepSetsInvariant",
    "ClusterEquivariantLinear",
    "ApproxEquivariantGNN",
    "equivariant_dimension",
    "cluster_labels",
    "coarsen",
    "automorphism_orbits",
    "project",
    "projector",
    "bias_variance_gap",
]
