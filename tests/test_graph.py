"""Approximate permutation symmetry on a fixed graph: layers, limits, projector, coarsening, theory."""
import itertools

import networkx as nx
import numpy as np
import pytest
import torch

from relaxed_e3nn._dtype import default_dtype

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
    with torch.no_grad():
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
    with default_dtype(torch.float64):
        layer = ClusterEquivariantLinear(3, 4, CLUSTERS)
        with torch.no_grad():
            layer.bias.normal_()
        perm = torch.arange(len(CLUSTERS))
        perm[list(swap)] = perm[list(swap[::-1])]
        x = torch.randn(5, len(CLUSTERS), 3)
        assert equivariance_error(layer, x, perm) > 1e-2


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
    with default_dtype(torch.float64):
        assert equivariant_dimension(clusters) == expected
        in_f, out_f = 2, 3
        layer = ClusterEquivariantLinear(in_f, out_f, clusters, bias=False)
        # the dense weight is linear in the parameters: its matrix, one unit parameter at a time
        columns = []
        with torch.no_grad():
            for parameter in (layer.identity, layer.constant):
                for index in range(parameter.numel()):
                    layer.identity.zero_()
                    layer.constant.zero_()
                    parameter.view(-1)[index] = 1.0
                    columns.append(layer.dense_weight().reshape(-1))
            layer.identity.normal_()
            layer.constant.normal_()
        jac = torch.stack(columns, dim=1)
        # the reachable maps form a space of dimension in*out*dim Hom_G ...
        assert torch.linalg.matrix_rank(jac).item() == in_f * out_f * expected
        # ... and every one of them is G-equivariant (fixed by the projector, per channel pair)
        weight = layer.dense_weight().detach().permute(2, 3, 0, 1)  # [in, out, n, n]
        torch.testing.assert_close(project(weight, clusters), weight, rtol=0, atol=1e-12)


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
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.5 * first


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
    """Monte-Carlo of the estimators against the closed form (see its docstring)."""
    rng = np.random.default_rng(0)
    clusters = [0, 0, 0, 1, 1, 1]
    n_nodes, sigma, trials = 6, 1.0, 4000
    w_eq = project(torch.as_tensor(rng.normal(size=(n_nodes, n_nodes))), clusters).numpy()
    perturbation = rng.normal(size=(n_nodes, n_nodes))
    perturbation -= project(torch.as_tensor(perturbation), clusters).numpy()
    weight = w_eq + 0.25 * perturbation
    # orthonormal basis of Hom_G as [dim, N, N] matrices, for least squares inside the subspace
    eigenvalues, eigenvectors = torch.linalg.eigh(projector(clusters, dtype=torch.float64))
    basis = eigenvectors[:, eigenvalues > 0.5].T.reshape(-1, n_nodes, n_nodes).numpy()
    assert basis.shape[0] == equivariant_dimension(clusters) == 2 * 2 + 2

    def simulate(n_samples):
        x = rng.normal(size=(trials, n_nodes, n_samples))
        y = weight @ x + sigma * rng.normal(size=(trials, n_nodes, n_samples))
        fit = np.linalg.solve(x @ x.transpose(0, 2, 1), x @ y.transpose(0, 2, 1)).transpose(0, 2, 1)
        err_free = ((fit - weight) ** 2).sum((1, 2))
        err_projected = ((project(torch.as_tensor(fit), clusters).numpy() - weight) ** 2).sum((1, 2))
        # least squares within the subspace: y ~ sum_b theta_b B_b x
        features = np.einsum("bij,tjs->tisb", basis, x).reshape(trials, n_nodes * n_samples, -1)
        gram = features.transpose(0, 2, 1) @ features
        theta = np.linalg.solve(gram, features.transpose(0, 2, 1) @ y.reshape(trials, -1, 1))[..., 0]
        err_within = ((np.einsum("tb,bij->tij", theta, basis) - weight) ** 2).sum((1, 2))
        gains = {"projected": err_free - err_projected, "within": err_free - err_within}
        return {name: (g.mean(), g.std() / np.sqrt(trials)) for name, g in gains.items()}

    outcomes = {}
    for n_samples in (12, 20, 60):
        result = simulate(n_samples)
        mean, stderr = result["projected"]
        predicted = bias_variance_gap(torch.as_tensor(weight), clusters, n_samples, sigma)
        assert abs(mean - predicted) < 4 * stderr, (n_samples, mean, predicted, stderr)
        outcomes[n_samples] = (result, predicted)
    # the trade-off flips: the constraint helps with little data and hurts with plenty
    assert outcomes[12][0]["projected"][0] > 0 > outcomes[60][0]["projected"][0]
    # fitting inside the subspace: same sign and, for n >> N, the same gain to a few percent
    # (it is slightly better than projecting: at n = 12 the gain exceeds the formula)
    within_12, predicted_12 = outcomes[12][0]["within"], outcomes[12][1]
    within_60, predicted_60 = outcomes[60][0]["within"], outcomes[60][1]
    assert within_12[0] > predicted_12 + 2 * within_12[1]
    assert within_60[0] < 0 and abs(within_60[0] - predicted_60) < 0.05 * abs(predicted_60)
    # the check can fail: with the dimension of the wrong group (S_n: 2 instead of 6) in the
    # variance term, the prediction is far outside the simulation's noise
    bias = float(np.sum((weight - project(torch.as_tensor(weight), clusters).numpy()) ** 2))
    wrong = sigma**2 * (36 - 2) / (12 - 6 - 1) - bias
    mean, stderr = outcomes[12][0]["projected"]
    assert abs(mean - wrong) > 10 * stderr


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"shape \[\.\.\., 10, 3\]"):
        ClusterEquivariantLinear(3, 4, CLUSTERS)(torch.randn(9, 3))
    with pytest.raises(ValueError, match="clusters is empty"):
        ClusterEquivariantLinear(3, 4, [])
    with pytest.raises(ValueError, match="num_samples"):
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


@pytest.mark.slow
def test_digits_example_runs(tmp_path, capsys):
    pytest.importorskip("sklearn")
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "digits_inpainting.py"
    spec = importlib.util.spec_from_file_location("digits_inpainting", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    output = tmp_path / "digits.png"
    assert module.main(["--repeats", "1", "--output", str(output)]) == 0
    assert output.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if line.strip()[:4] in ("50 |", "200 ", "1000")]
    assert "k=64 (dim 4096)" in table and len(rows) == 3 and all(line.count("*") == 1 for line in rows)
