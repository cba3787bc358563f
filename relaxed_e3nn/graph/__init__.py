r"""Approximate permutation symmetry of signals on one fixed graph (Huang, Levie, Villar 2023).

Coarsening the graph into clusters (:func:`coarsen`) gives the group of within-cluster
permutations, between the automorphisms of the graph (:func:`automorphism_orbits`) and the
full symmetric group. :class:`ClusterEquivariantLinear` is every linear map equivariant to it
(:class:`DeepSetsLayer` for one cluster, an unconstrained map for singletons);
:class:`ApproxEquivariantGNN` stacks them. :func:`projector`, :func:`project` and
:func:`bias_variance_gap` quantify the bias–variance trade-off that the number of clusters
controls.
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
