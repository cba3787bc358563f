"""Time ``residual_group`` on the relaxed weights of a 6-layer model (6 x ``2x(0e+0o+...+4e+4o)``).

Prints the median wall time of the search for several symmetries of the stacked weights, and
its ratio to one e3nn ``Irreps.D_from_matrix`` call on 48 matrices for the same irreps (the cost
of merely checking the elements of Oh by brute force), timed in the same process.
"""
import statistics
import time

import torch
from e3nn import o3

from relaxed_e3nn.groups import point_group
from relaxed_e3nn.symmetry import residual_group


def median_time(fn, repeats=5):
    fn()  # warm-up (caches, grids)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    torch.manual_seed(0)
    layer_irreps = o3.Irreps("2x0e+2x0o+2x1o+2x1e+2x2e+2x2o+2x3o+2x3e+2x4e+2x4o")
    layers = 6
    baseline_mats = point_group("Oh").elements
    baseline = median_time(lambda: layer_irreps.D_from_matrix(baseline_mats))
    print(f"baseline: e3nn D_from_matrix of {layer_irreps} on 48 matrices: {1e3 * baseline:.1f} ms")
    for name in ["C1", "C2v", "C4v", "D3d", "Oh", "Cinfv", "O3"]:
        frame = o3.rand_matrix(dtype=torch.float64)
        group = point_group(name, frame=frame)
        P = group.invariant_projector(layer_irreps, dtype=torch.float64)
        thetas = [(layer_irreps, P @ torch.randn(layer_irreps.dim, dtype=torch.float64)) for _ in range(layers)]
        if name == "O3":
            thetas = [(ir, t * (torch.arange(ir.dim) < 2)) for ir, t in thetas]
        found = residual_group(thetas)
        assert found == group, (name, found)
        t = median_time(lambda: residual_group(thetas))
        print(f"residual_group, {layers} layers, true group {name:>6}: {1e3 * t:7.1f} ms  ({t / baseline:6.1f}x baseline)")


if __name__ == "__main__":
    main()
