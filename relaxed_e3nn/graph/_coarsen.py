"""Coarsening a fixed graph into clusters, and its automorphism orbits."""
from typing import Optional, Sequence, Tuple

import networkx as nx
import numpy as np
import torch
from networkx.algorithms.isomorphism import GraphMatcher

__all__ = ["coarsen", "automorphism_orbits"]


def _adjacency(graph, argument: str = "graph") -> Tuple[np.ndarray, list]:
    """Dense symmetric adjacency ``[n, n]`` and the node list of a networkx graph or a matrix."""
    if isinstance(graph, nx.Graph):
        if graph.is_directed():
            raise ValueError(f"{argument} must be undirected, got a directed networkx graph")
        nodes = list(graph.nodes)
        if not nodes:
            raise ValueError(f"{argument} has no nodes")
        return nx.to_numpy_array(graph, nodelist=nodes, weight="weight", dtype=np.float64), nodes
    if isinstance(graph, torch.Tensor):
        graph = graph.detach().cpu().numpy()
    try:
        matrix = np.asarray(graph, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(
            f"{argument} must be a networkx graph or an [n, n] adjacency matrix, got {type(graph).__name__}"
        ) from None
    if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] == 0:
        raise ValueError(f"{argument} must be a square [n, n] adjacency matrix with n >= 1, got shape {matrix.shape}")
    if not np.all(np.isfinite(matrix)):
        raise ValueError(f"{argument} contains NaN or inf")
    if not np.allclose(matrix, matrix.T):
        raise ValueError(f"{argument} must be symmetric (an undirected graph)")
    if np.any(matrix < 0):
        raise ValueError(f"{argument} must have non-negative edge weights")
    return matrix, list(range(matrix.shape[0]))


def _normalised_adjacency(adjacency: np.ndarray) -> np.ndarray:
    r""":math:`D^{-1/2} A D^{-1/2}`, with isolated nodes (degree 0) left at zero."""
    degree = adjacency.sum(axis=1)
    scale = np.where(degree > 0, 1.0 / np.sqrt(np.where(degree > 0, degree, 1.0)), 0.0)
    return scale[:, None] * adjacency * scale[None, :]


def _first_appearance(labels: np.ndarray) -> np.ndarray:
    _, first, inverse = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty_like(first)
    rank[np.argsort(first)] = np.arange(first.shape[0])
    return rank[inverse].astype(np.int64)


def _kmeans(points: np.ndarray, k: int, rng: np.random.Generator, iterations: int = 100) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding; every one of the k clusters is kept non-empty."""
    n = points.shape[0]
    centres = [points[rng.integers(n)]]
    for _ in range(1, k):
        distance = np.min(((points[:, None, :] - np.asarray(centres)[None]) ** 2).sum(-1), axis=1)
        total = distance.sum()
        choice = rng.integers(n) if total <= 0 else rng.choice(n, p=distance / total)
        centres.append(points[choice])
    centres = np.asarray(centres)
    labels = np.full(n, -1)
    for _ in range(iterations):
        distance = ((points[:, None, :] - centres[None]) ** 2).sum(-1)
        new = distance.argmin(axis=1)
        # an empty cluster takes the point farthest from its centre (from a cluster of >1 point)
        for c in range(k):
            if not np.any(new == c):
                counts = np.bincount(new, minlength=k)
                own = distance[np.arange(n), new]
                own[counts[new] <= 1] = -1.0
                new[int(own.argmax())] = c
        if np.array_equal(new, labels):
            break
        labels = new
        centres = np.stack([points[labels == c].mean(axis=0) for c in range(k)])
    return labels


def _grid_blocks(k: int, shape: Tuple[int, int]) -> Tuple[int, int]:
    """Factor ``k = kr * kc`` with ``kr <= rows``, ``kc <= cols`` and blocks closest to square."""
    rows, cols = shape
    best = None
    for kr in range(1, k + 1):
        if k % kr:
            continue
        kc = k // kr
        if kr > rows or kc > cols:
            continue
        score = abs(np.log((rows / kr) / (cols / kc)))
        if best is None or score < best[0] - 1e-12:
            best = (score, kr, kc)
    if best is None:
        raise ValueError(f"coarsen: k={k} cannot be written as kr * kc with kr <= {rows} and kc <= {cols}")
    return best[1], best[2]


def coarsen(
    graph, k: int, method: str = "spectral", grid_shape: Optional[Sequence[int]] = None, seed: int = 0
) -> np.ndarray:
    r"""Partition the nodes of a fixed graph into ``k`` clusters.

    The clusters define the symmetry group :math:`S_{c_1} \times \dots \times S_{c_k}` of
    :class:`ClusterEquivariantLinear`: ``k = 1`` is full permutation symmetry, ``k = n`` none.

    Parameters
    ----------
    graph : networkx.Graph or array_like
        Undirected graph, or its ``[n, n]`` symmetric adjacency matrix. Labels follow
        ``list(graph.nodes)`` (or the matrix rows).
    k : int
        Number of clusters, ``1 <= k <= n``.
    method : {"spectral", "grid"}
        ``"spectral"``: k-means (k-means++ seeding, seeded) on the rows of the ``k`` lowest
        eigenvectors of the normalised Laplacian :math:`I - D^{-1/2} A D^{-1/2}`, each row
        scaled to unit length (Ng–Jordan–Weiss). ``"grid"``: nodes of an ``rows x cols`` grid
        (row-major order, or the ``(row, col)`` node names of ``networkx.grid_2d_graph``) cut
        into ``kr x kc = k`` rectangular blocks as close to square as the factorisation of
        ``k`` allows.
    grid_shape : (int, int), optional
        ``(rows, cols)``, required for ``method="grid"``.
    seed : int
        Seed of the k-means initialisation.

    Returns
    -------
    numpy.ndarray
        ``[n]`` int64 labels ``0 .. k-1`` in order of first appearance; every cluster is non-empty.
    """
    adjacency, nodes = _adjacency(graph)
    n = adjacency.shape[0]
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= n:
        raise ValueError(f"coarsen: k must be an integer between 1 and the number of nodes {n}, got {k!r}")
    k = int(k)
    if method == "grid":
        if grid_shape is None or len(grid_shape) != 2:
            raise ValueError(f"coarsen: method='grid' needs grid_shape=(rows, cols), got {grid_shape!r}")
        rows, cols = int(grid_shape[0]), int(grid_shape[1])
        if rows * cols != n:
            raise ValueError(f"coarsen: grid_shape {(rows, cols)} has {rows * cols} cells but the graph has {n} nodes")
        if all(isinstance(v, tuple) and len(v) == 2 for v in nodes):
            coords = np.asarray(nodes, dtype=np.int64)
            if coords.min() < 0 or coords[:, 0].max() >= rows or coords[:, 1].max() >= cols:
                raise ValueError(f"coarsen: (row, col) node names do not fit grid_shape {(rows, cols)}")
        else:
            coords = np.stack(np.divmod(np.arange(n), cols), axis=1)
        kr, kc = _grid_blocks(k, (rows, cols))
        labels = (coords[:, 0] * kr // rows) * kc + coords[:, 1] * kc // cols
        return _first_appearance(labels)
    if method != "spectral":
        raise ValueError(f"coarsen: method must be 'spectral' or 'grid', got {method!r}")
    if k == 1:
        return np.zeros(n, dtype=np.int64)
    if k == n:
        return np.arange(n, dtype=np.int64)
    laplacian = np.eye(n) - _normalised_adjacency(adjacency)
    _, vectors = np.linalg.eigh(laplacian)
    embedding = vectors[:, :k]
    norms = np.linalg.norm(embedding, axis=1, keepdims=True)
    embedding = embedding / np.where(norms > 0, norms, 1.0)
    labels = _kmeans(embedding, k, np.random.default_rng(seed))
    return _first_appearance(labels)


def automorphism_orbits(graph) -> np.ndarray:
    r"""Orbits of the nodes under the automorphism group :math:`\mathrm{Aut}(G)`.

    Two nodes share an orbit when some automorphism maps one onto the other; each test is a
    networkx (VF2) isomorphism search with the two nodes pinned, so this is meant for small
    graphs (hundreds of nodes at most). Edge weights must match too.

    Parameters
    ----------
    graph : networkx.Graph or array_like
        Undirected graph or its symmetric adjacency matrix.

    Returns
    -------
    numpy.ndarray
        ``[n]`` int64 orbit labels in order of first appearance (usable as ``clusters``).
    """
    adjacency, _ = _adjacency(graph)
    n = adjacency.shape[0]
    g = nx.from_numpy_array(adjacency)
    degree = adjacency.sum(axis=1)
    edge_match = lambda a, b: np.isclose(a.get("weight", 1.0), b.get("weight", 1.0))  # noqa: E731

    def related(u: int, v: int) -> bool:
        nx.set_node_attributes(g, {w: 0 for w in range(n)}, "pin")
        h = g.copy()
        g.nodes[u]["pin"] = 1
        h.nodes[v]["pin"] = 1
        matcher = GraphMatcher(g, h, node_match=lambda a, b: a["pin"] == b["pin"], edge_match=edge_match)
        return matcher.is_isomorphic()

    labels = np.full(n, -1, dtype=np.int64)
    representatives = []
    for v in range(n):
        for orbit, r in enumerate(representatives):
            if np.isclose(degree[r], degree[v]) and related(r, v):
                labels[v] = orbit
                break
        else:
            labels[v] = len(representatives)
            representatives.append(v)
    return labels
