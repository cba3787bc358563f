"""Inpainting 8x8 digits with cluster-equivariant linear maps: the bias-variance trade-off of k.

Each 8x8 image of scikit-learn's offline ``load_digits`` (1797 images, scaled to [0, 1]) is a
signal on the 64 nodes of the grid graph. Half of the pixels of every image, chosen at random,
are hidden (set to 0), and a linear map on the grid has to predict them from the rest. The map
is constrained to be equivariant to permutations within the k blocks of a grid coarsening
(``relaxed_e3nn.graph.coarsen(..., method="grid")``): k = 1 is DeepSets (2 coefficients plus a
bias), k = 64 is an unconstrained 64 x 64 map. It is fitted by ridge-regularised least squares
*within* the equivariant subspace on the hidden pixels of ``n_train`` images (the problem splits
into one small regression per output cluster), loaded into a ``ClusterEquivariantLinear`` and
scored by the mean squared error on the hidden pixels of 497 held-out images.

    python examples/digits_inpainting.py [--repeats 10] [--output digits_inpainting.png]

Prints a table (test MSE x 100, mean +- standard deviation over repeats) and writes a plot of
test error against k for each training-set size.
"""
import argparse
import time

import numpy as np
import torch

from relaxed_e3nn._atomic import atomic_write
from relaxed_e3nn.graph import ClusterEquivariantLinear, coarsen, equivariant_dimension

CLUSTER_COUNTS = (1, 4, 16, 64)
TRAIN_SIZES = (50, 200, 1000)
N_TEST = 497
MASK_FRACTION = 0.5
RIDGE = 1e-3


def fit_cluster_equivariant(images, masked, labels, ridge=RIDGE):
    """Least squares within the equivariant subspace, one regression per output cluster.

    For a hidden pixel i of cluster c the prediction is
    ``a_c x_i + sum_d C_cd mean_d(x) + b_c`` (``a_c`` only when |c| > 1; it multiplies the
    hidden, zeroed value and so never helps here, but it is part of the model).
    """
    k = int(labels.max()) + 1
    inputs = np.where(masked, 0.0, images)
    sizes = np.bincount(labels, minlength=k)
    means = (inputs @ np.eye(k)[labels]) / sizes  # [n, k]
    layer = ClusterEquivariantLinear(1, 1, labels).double()
    with torch.no_grad():
        layer.identity.zero_()
        layer.constant.zero_()
        layer.bias.zero_()
        for c in range(k):
            members = np.flatnonzero(labels == c)
            sample, local = np.nonzero(masked[:, members])
            if sample.size == 0:
                continue
            pixel = members[local]
            columns = [means[sample], np.ones((sample.size, 1))]
            if sizes[c] > 1:
                columns.insert(0, inputs[sample, pixel][:, None])
            features = np.concatenate(columns, axis=1)
            target = images[sample, pixel]
            gram = features.T @ features + ridge * np.eye(features.shape[1])
            theta = np.linalg.solve(gram, features.T @ target)
            if sizes[c] > 1:
                layer.identity[c, 0, 0] = theta[0]
                theta = theta[1:]
            layer.constant[c, :, 0, 0] = torch.as_tensor(theta[:k])
            layer.bias[c, 0] = theta[k]
    return layer


def masked_mse(layer, images, masked):
    inputs = torch.as_tensor(np.where(masked, 0.0, images))[..., None]
    with torch.no_grad():
        prediction = layer(inputs)[..., 0].numpy()
    return float(((prediction - images) ** 2)[masked].mean())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10, help="random train/test splits and masks (default 10)")
    parser.add_argument("--output", default="digits_inpainting.png", help="plot file (default digits_inpainting.png)")
    args = parser.parse_args(argv)

    import networkx as nx
    from sklearn.datasets import load_digits

    start = time.perf_counter()
    images = load_digits().data / 16.0  # [1797, 64], row-major 8x8
    grid = nx.grid_2d_graph(8, 8)
    partitions = {k: coarsen(grid, k, method="grid", grid_shape=(8, 8)) for k in CLUSTER_COUNTS}
    errors = np.zeros((len(TRAIN_SIZES), len(CLUSTER_COUNTS), args.repeats))
    for repeat in range(args.repeats):
        rng = np.random.default_rng(repeat)
        order = rng.permutation(images.shape[0])
        masked = rng.random(images.shape) < MASK_FRACTION
        test = order[:N_TEST]
        for a, n_train in enumerate(TRAIN_SIZES):
            train = order[N_TEST:N_TEST + n_train]
            for b, k in enumerate(CLUSTER_COUNTS):
                layer = fit_cluster_equivariant(images[train], masked[train], partitions[k])
                errors[a, b, repeat] = masked_mse(layer, images[test], masked[test])

    mean, std = 100 * errors.mean(-1), 100 * errors.std(-1)
    header = "n_train | " + " | ".join(f"k={k} (dim {equivariant_dimension(partitions[k])})".center(19) for k in CLUSTER_COUNTS)
    print(f"test MSE x 100 on hidden pixels ({args.repeats} repeats, mean +- std); * = best k")
    print(header)
    print("-" * len(header))
    for a, n_train in enumerate(TRAIN_SIZES):
        best = int(np.argmin(mean[a]))
        cells = [f"{mean[a, b]:6.3f} +- {std[a, b]:5.3f}{'*' if b == best else ' '}".center(19) for b in range(len(CLUSTER_COUNTS))]
        print(f"{n_train:7d} | " + " | ".join(cells))
    print(f"({time.perf_counter() - start:.1f} s)")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5, 3.6))
    for a, n_train in enumerate(TRAIN_SIZES):
        axis.errorbar(CLUSTER_COUNTS, mean[a], yerr=std[a], marker="o", capsize=3, label=f"n_train = {n_train}")
    axis.set_xscale("log", base=2)
    axis.set_xticks(CLUSTER_COUNTS, [str(k) for k in CLUSTER_COUNTS])
    axis.set_yscale("log")
    axis.set_xlabel("number of clusters k")
    axis.set_ylabel("test MSE x 100 (hidden pixels)")
    axis.set_title(r"8x8 digits inpainting, $(S_{64/k})^k$-equivariant linear maps", fontsize=9)
    axis.legend()
    figure.tight_layout()
    with atomic_write(args.output, "wb") as handle:
        figure.savefig(handle, format="png", dpi=120)
    plt.close(figure)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
