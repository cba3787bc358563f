"""Cluster labels: normalisation and the dimension of the equivariant maps they define."""
from typing import Tuple

import numpy as np
import torch

__all__ = ["cluster_labels", "equivariant_dimension"]


def cluster_labels(clusters, argument: str = "clusters") -> Tuple[np.ndarray, int]:
    """Relabel arbitrary per-node labels as ``0 .. k-1`` in order of first appearance.

    Parameters
    ----------
    clusters : sequence of hashable or array_like
        One label per node (ints, strings, ...); nodes sharing a label form a cluster.
    argument : str
        Name quoted in error messages.

    Returns
    -------
    labels : numpy.ndarray
        ``[n]`` int64 cluster index of each node.
    k : int
        Number of clusters.
    """
    if isinstance(clusters, torch.Tensor):
        clusters = clusters.detach().cpu().tolist()
    if isinstance(clusters, np.ndarray):
        if clusters.ndim != 1:
            raise ValueError(f"{argument} must be one label per node (1-D), got shape {clusters.shape}")
        clusters = clusters.tolist()
    if isinstance(clusters, (str, bytes)) or not hasattr(clusters, "__iter__"):
        raise TypeError(f"{argument} must be a sequence of labels, one per node, got {type(clusters).__name__}")
    index = {}
    labels = []
    for label in clusters:
        try:
            labels.append(index.setdefault(label, len(index)))
        except TypeError:
            raise TypeError(f"{argument}: labels must be hashable, got {label!r}") from None
    if not labels:
        raise ValueError(f"{argument} is empty: need one label per node")
    return np.asarray(labels, dtype=np.int64), len(index)


def equivariant_dimension(clusters) -> int:
    r"""Dimension of the space of linear maps :math:`\mathbb{R}^n \to \mathbb{R}^n` that commute
    with every permutation inside the clusters, :math:`G = S_{c_1} \times \dots \times S_{c_k}`.

    .. math::
        \dim \mathrm{Hom}_G = k^2 + k_{>1},

    where :math:`k_{>1}` counts the clusters with more than one node: one constant block per
    ordered pair of clusters (:math:`k^2`, the diagonal blocks included) plus an identity term
    per cluster, which coincides with the constant block for a singleton. With all clusters
    larger than one node this is :math:`k^2 + k`; one cluster gives 2 (DeepSets); ``n``
    singletons give :math:`n^2` (every linear map). A layer with ``in_features`` inputs and
    ``out_features`` outputs per node has ``in_features * out_features`` times as many
    coefficients.

    Parameters
    ----------
    clusters : sequence
        One label per node.

    Returns
    -------
    int
    """
    labels, k = cluster_labels(clusters)
    sizes = np.bincount(labels, minlength=k)
    return int(k * k + np.count_nonzero(sizes > 1))
