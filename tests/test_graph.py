"""Approximate permutation symmetry on a fixed graph: layers, limits, projector, coarsening, theory."""
import itertools

import networkx as nx
import numpy as np
import pytest
import torch

from relaxed_e3nn.graph import (
    ApproxEquivariantGNN,
    ClusterEquivariantLinear,
    DeepSetsInvariant,
    DeepSetsLayer,
    automorphism_orbits,
    bias_variance_gap,
    cluster_labels,
    coarsen,
    equivariant_dimension,
    project,
    projector,
)

CLUSTERS = ["a", "a", "a", "b", "b", "c", "d", "d", "d", "d"]  # sizes 3, 2, 1, 4


def relative_tolerance(dtype):
    return 1e-5 if dtype == torch.float32 else 1e-10


def within_cluster_permutation(labels, rng):
    labels = np.asarray(labels)
    perm = np.arange(labels.shape[0])
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        perm[members] = rng.permutation(members)
    return torch.as_tensor(perm)


def equivariance_error(module, x, perm, invariant=False):
    """Relative error of f(P x) = P f(x) (or f(P x) = f(x)) with perm acting on the node axis."""
    out = module(x)
    expected = out if invariant else out[..., perm, :]
    return float((module(x[..., perm, :]) - expected).norm() / out.norm())


def test_deepsets_layer_equivariant_to_all_permutations(dtype):
    layer = DeepSetsLayer(3, 5)
    x = torch.randn(4, 7, 3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        perm = torch.as_tensor(rng.permutation(7))
        assert equivariance_error(layer, x, perm) < relative_tolerance(dtype)
    # negative control: a position-dependent term breaks it and the check sees it
    broken = lambda y: layer(y) + torch.arange(7, dtype=dtype).view(7, 1)  # noqa: E731
    assert equivariance_error(broken, x, torch.as_tensor(rng.permutation(7))) > 1e-2


def test_deepsets_invariant_readout(dtype):
    readout = DeepSetsInvariant(3, 2, hidden_features=16)
    x = torch.randn(4, 6, 3)
    rng = np.random.default_rng(1)
    for _ in range(5):
        perm = torch.as_tensor(rng.permutation(6))
        assert equivariance_error(readout, x, perm, invariant=True) < relative_tolerance(dtype)
    position = torch.linspace(-1, 1, 6).view(6, 1).expand(4, 6, 1)
    broken = DeepSetsInvariant(4, 2, hidden_features=16)
    with_position = lambda y: broken(torch.cat([y, position], dim=-1))  # noqa: E731
    assert equivariance_error(with_position, x, torch.as_tensor([5, 4, 3, 2, 1, 0]), invariant=True) > 1e-3


def test_cluster_layer_equivariant_within_clusters(dtype):
    layer = ClusterEquivariantLinear(3, 4, CLUSTERS)
    with torch.no_grad():
        layer.bias.normal_()
    x = torch.randn(2, 5, len(CLUSTERS), 3)
    rng = np.random.default_rng(2)
    for _ in range(6):
        perm = within_cluster_permutation(cluster_labels(CLUSTERS)[0], rng)
        assert not torch.equal(perm, torch.arange(len(CLUSTERS)))
        assert equivariance_error(layer, x, perm) < relative_tolerance(dtype)


@pytest.mark.parametrize("swap", [(0, 3), (2, 5), (4, 9), (5, 6)])
def test_cluster_layer_not_equivariant_across_clusters(swap):
    torch.set_default_dtype(torch.float64)
    try:
        layer = ClusterEquivariantLinear(3, 4, CLUSTERS)
        with torch.no_grad():
            layer.bias.normal_()
        perm = torch.arange(len(CLUSTERS))
        perm[list(swap)] = perm[list(swap[::-1])]
        x = torch.randn(5, len(CLUSTERS), 3)
        assert equivariance_error(layer, x, perm) > 1e-2
    finally:
        torch.set_default_dtype(torch.float32)


def test_one_cluster_is_deepsets(dtype):
    deepsets = DeepSetsLayer(3, 4)
    layer = ClusterEquivariantLinear(3, 4, [7] * 6)
    with torch.no_grad():
        layer.identity.copy_(deepsets.identity.weight.T[None])
        layer.constant.copy_(deepsets.mean.weight.T[None, None])
        layer.bias.copy_(deepsets.mean.bias[None])
    x = torch.randn(5, 6, 3)
    torch.testing.assert_close(layer(x), deepsets(x), rtol=relative_tolerance(dtype), atol=relative_tolerance(dtype))
    assert equivariant_dimension([7] * 6) == 2 and layer.num_coefficients == 3 * 4 * 2


def test_singletons_are_an_arbitrary_linear_map(dtype):
    n = 6
    matrix = torch.randn(n, n)
    layer = ClusterEquivariantLinear(1, 1, list(range(n)), bias=False)
    with torch.no_grad():
        layer.identity.normal_()  # masked out: for singletons identity and mean coincide
        layer.constant.copy_(matrix[:, :, None, None])
    x = torch.randn(4, n, 1)
    torch.testing.assert_close(layer(x)[..., 0], x[..., 0] @ matrix.T, rtol=10 * relative_tolerance(dtype),
                               atol=10 * relative_tolerance(dtype))
    assert equivariant_dimension(range(n)) == n * n
    # so it is equivariant to nothing: the identity is the only permutation it commutes with in general
    assert equivariance_error(layer, x, torch.as_tensor([1, 0, 2, 3, 4, 5])) > 1e-2


@pytest.mark.parametrize(
    "clusters, expected",
    [
        ([0, 0, 1, 1, 2, 2], 9 + 3),  # k^2 + k when every cluster has > 1 node
        ([0, 0, 0, 0], 2),  # DeepSets
        ([0, 1, 2, 3], 16),  # unconstrained
        (CLUSTERS, 16 + 3),  # one singleton: k^2 + k_{>1}
    ],
)
def test_layer_spans_exactly_the_equivariant_maps(clusters, expected):
    torch.set_default_dtype(torch.float64)
    try:
        assert equivariant_dimension(clusters) == expected
        in_f, out_f = 2, 3
        layer = ClusterEquivariantLinear(in_f, out_f, clusters, bias=False)
        params = (layer.identity, layer.constant)

        def dense(identity, constant):
            with torch.no_grad():
                pass
            layer_identity, layer_constant = layer.identity, layer.constant
            del layer.identity, layer.constant
            layer.identity, layer.constant = identity, constant
            try:
                return layer.dense_weight()
            finally:
                del layer.identity, layer.constant
                layer.identity, layer.constant = layer_identity, layer_constant

        jac = torch.autograd.functional.jacobian(dense, tuple(p.detach() for p in params))
        n = len(clusters)
        jac = torch.cat([j.reshape(n * n * in_f * out_f, -1) for j in jac], dim=1)
        # the reachable maps form a space of dimension in*out*dim Hom_G ...
        assert torch.linalg.matrix_rank(jac).item() == in_f * out_f * expected
        # ... and every one of them is G-equivariant (fixed by the projector, per channel pair)
        weight = layer.dense_weight().detach().permute(2, 3, 0, 1)  # [in, out, n, n]
        torch.testing.assert_close(project(weight, clusters), weight, rtol=0, atol=1e-12)
    finally:
        torch.set_default_dtype(torch.float32)


def test_projector_is_symmetric_idempotent_with_rank_dim_hom(dtype):
    tol = 10 * relative_tolerance(dtype)
    for clusters in (CLUSTERS, [0] * 5, list(range(5)), [0, 0, 1, 1, 1]):
        p = projector(clusters)
        n = len(clusters)
        assert p.shape == (n * n, n * n) and p.dtype == dtype
        torch.testing.assert_close(p, p.T, rtol=0, atol=tol)
        torch.testing.assert_close(p @ p, p, rtol=0, atol=tol)
        assert torch.linalg.matrix_rank(p.double()).item() == equivariant_dimension(clusters)
        w = torch.randn(n, n)
        torch.testing.assert_close((p @ w.reshape(-1)).reshape(n, n), project(w, clusters), rtol=tol, atol=tol)


def test_project_is_the_group_average():
    """Reynolds operator: the mean of P_g W P_g^T over all |G| = 3! 2! 1! 2! = 24 elements."""
    clusters = [0, 0, 0, 1, 1, 2, 3, 3]
    labels, _ = cluster_labels(clusters)
    w = torch.randn(8, 8, dtype=torch.float64)
    members = [np.flatnonzero(labels == c) for c in range(4)]
    total = torch.zeros_like(w)
    count = 0
    for images in itertools.product(*(itertools.permutations(m) for m in members)):
        perm = np.arange(8)
        for m, image in zip(members, images):
            perm[m] = image
        p = torch.eye(8, dtype=torch.float64)[perm]
        total += p @ w @ p.T
        count += 1
    assert count == 24
    torch.testing.assert_close(project(w, clusters), total / count, rtol=0, atol=1e-12)
    # and its output commutes with the group, but not with a swap across clusters
    projected = project(w, clusters)
    p = torch.eye(8, dtype=torch.float64)[[1, 0, 2, 4, 3, 5, 7, 6]]
    torch.testing.assert_close(p @ projected @ p.T, projected, rtol=0, atol=1e-12)
    q = torch.eye(8, dtype=torch.float64)[[3, 1, 2, 0, 4, 5, 6, 7]]
    assert (q @ projected @ q.T - projected).abs().max() > 1e-3


def test_gnn_equivariance_without_and_with_message_passing(dtype):
    rng = np.random.default_rng(3)
    model = ApproxEquivariantGNN(2, 8, 3, CLUSTERS, num_layers=3)
    x = torch.randn(4, len(CLUSTERS), 2)
    labels, _ = cluster_labels(CLUSTERS)
    for _ in range(4):
        assert equivariance_error(model, x, within_cluster_permutation(labels, rng)) < 10 * relative_tolerance(dtype)
    assert equivariance_error(model, x, torch.as_tensor([3, 1, 2, 0, 4, 5, 6, 7, 8, 9])) > 1e-3

    # ring of 8 with alternating clusters: rotation by 2 and the reflection i -> -i (mod 8)
    # keep both the clusters and the graph; a swap inside a cluster keeps clusters only
    ring = nx.cycle_graph(8)
    clusters = [i % 2 for i in range(8)]
    model = ApproxEquivariantGNN(2, 8, 3, clusters, num_layers=3, adjacency=ring)
    x = torch.randn(4, 8, 2)
    for perm in ([(i + 2) % 8 for i in range(8)], [(-i) % 8 for i in range(8)]):
        assert equivariance_error(model, x, torch.as_tensor(perm)) < 10 * relative_tolerance(dtype)
    not_an_automorphism = torch.as_tensor([2, 1, 0, 3, 4, 5, 6, 7])
    assert equivariance_error(model, x, not_an_automorphism) > 1e-3


def test_gnn_trains():
    torch.manual_seed(0)
    model = ApproxEquivariantGNN(1, 16, 1, [0, 0, 1, 1, 2, 2], num_layers=2, adjacency=nx.path_graph(6))
    x = torch.randn(64, 6, 1)
    y = x.flip(-2) ** 2
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss = (model(x) - y).pow(2).mean()
        first = float(loss) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss) < 0.5 * first


def test_grid_coarsening_blocks():
    grid = nx.grid_2d_graph(8, 8)
    for k, block in [(1, 8), (4, 4), (16, 2), (64, 1)]:
        labels = coarsen(grid, k, method="grid", grid_shape=(8, 8)).reshape(8, 8)
        assert len(np.unique(labels)) == k
        for r in range(8):
            for c in range(8):
                assert labels[r, c] == labels[r - r % block, c - c % block]
    # the adjacency-matrix form uses row-major node order
    matrix = nx.to_numpy_array(nx.grid_2d_graph(4, 6))
    labels = coarsen(matrix, 6, method="grid", grid_shape=(4, 6)).reshape(4, 6)
    assert len(np.unique(labels)) == 6 and labels[0, 0] == labels[1, 1] and labels[0, 0] != labels[3, 5]


def test_spectral_coarsening_finds_communities():
    graph = nx.disjoint_union(nx.complete_graph(5), nx.complete_graph(6))
    graph = nx.disjoint_union(graph, nx.complete_graph(4))
    graph.add_edges_from([(0, 5), (6, 11)])
    labels = coarsen(graph, 3, seed=1)
    assert [len(set(labels[a:b])) for a, b in [(0, 5), (5, 11), (11, 15)]] == [1, 1, 1]
    assert len(set(labels)) == 3
    assert np.array_equal(coarsen(graph, 1), np.zeros(15))
    assert np.array_equal(coarsen(graph, 15), np.arange(15))
    # every requested cluster is non-empty even for a very symmetric graph
    assert len(set(coarsen(nx.cycle_graph(12), 5, seed=3))) == 5


def test_automorphism_orbits():
    assert automorphism_orbits(nx.path_graph(5)).tolist() == [0, 1, 2, 1, 0]
    assert automorphism_orbits(nx.star_graph(4)).tolist() == [0, 1, 1, 1, 1]
    assert set(automorphism_orbits(nx.petersen_graph()).tolist()) == {0}
    # a graph with trivial automorphism group: every node its own orbit
    asymmetric = nx.Graph([(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (2, 6), (6, 7), (3, 7)])
    orbits = automorphism_orbits(asymmetric)
    from networkx.algorithms.isomorphism import GraphMatcher

    automorphisms = list(GraphMatcher(asymmetric, asymmetric).isomorphisms_iter())
    expected = {v: {a[v] for a in automorphisms} for v in asymmetric}
    for u in asymmetric:
        for v in asymmetric:
            assert (orbits[u] == orbits[v]) == (v in expected[u])


def test_bias_variance_gap_matches_simulation():
    """Monte-Carlo of the two estimators against the closed form (see its docstring)."""
    rng = np.random.default_rng(0)
    clusters = [0, 0, 0, 1, 1, 1]
    n_nodes, sigma, trials = 6, 1.0, 4000
    w_eq = project(torch.as_tensor(rng.normal(size=(n_nodes, n_nodes))), clusters).numpy()
    perturbation = rng.normal(size=(n_nodes, n_nodes))
    perturbation -= project(torch.as_tensor(perturbation), clusters).numpy()
    weight = w_eq + 0.25 * perturbation

    def simulate(n_samples):
        x = rng.normal(size=(trials, n_nodes, n_samples))
        y = weight @ x + sigma * rng.normal(size=(trials, n_nodes, n_samples))
        fit = np.linalg.solve(x @ x.transpose(0, 2, 1), x @ y.transpose(0, 2, 1)).transpose(0, 2, 1)
        err_free = ((fit - weight) ** 2).sum((1, 2))
        err_equivariant = ((project(torch.as_tensor(fit), clusters).numpy() - weight) ** 2).sum((1, 2))
        gain = err_free - err_equivariant
        return gain.mean(), gain.std() / np.sqrt(trials)

    outcomes = {}
    for n_samples in (12, 20, 60):
        mean, stderr = simulate(n_samples)
        predicted = bias_variance_gap(torch.as_tensor(weight), clusters, n_samples, sigma)
        assert abs(mean - predicted) < 4 * stderr, (n_samples, mean, predicted, stderr)
        outcomes[n_samples] = (mean, predicted)
    # the trade-off flips: the constraint helps with little data and hurts with plenty
    assert outcomes[12][0] > 0 > outcomes[60][0]
    # the check can fail: the variance term of a wrong group (S_n, dim 2) is far off at n = 12
    wrong = sigma**2 * (36 - 2) / (12 - 6 - 1) - float(np.sum((weight - project(torch.as_tensor(weight), [0] * 6).numpy()) ** 2))
    mean, stderr = simulate(12)
    assert abs(mean - wrong) > 10 * stderr


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 10, 3\]"):
        ClusterEquivariantLinear(3, 4, CLUSTERS)(torch.randn(9, 3))
    with pytest.raises(ValueError, match="clusters is empty"):
        ClusterEquivariantLinear(3, 4, [])
    with pytest.raises(ValueError, match="n_samples"):
        bias_variance_gap(torch.eye(4), [0, 0, 1, 1], 5, 1.0)
    with pytest.raises(ValueError, match="k must be an integer"):
        coarsen(nx.path_graph(4), 5)
    with pytest.raises(ValueError, match="method"):
        coarsen(nx.path_graph(4), 2, method="metis")
    with pytest.raises(ValueError, match="grid_shape"):
        coarsen(nx.path_graph(4), 2, method="grid")
    with pytest.raises(ValueError, match="cannot be written"):
        coarsen(nx.grid_2d_graph(2, 3), 5, method="grid", grid_shape=(2, 3))
    with pytest.raises(ValueError, match="symmetric"):
        coarsen(np.triu(np.ones((4, 4))), 2)
    with pytest.raises(ValueError, match="adjacency has 4 nodes"):
        ApproxEquivariantGNN(1, 4, 1, [0, 0, 1], adjacency=nx.path_graph(4))
    with pytest.raises(ValueError, match="project"):
        projector(list(range(80)))
