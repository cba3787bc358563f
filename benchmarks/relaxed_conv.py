"""Cost of relaxation: RelaxedConvolution vs the plain e3nn gate_points convolution, forward + backward.

System: 500-atom rattled fcc Cu (5x5x5 cubic cells, a = 3.6 A), cutoff 4.5 A, features
32x0e+16x1o+8x2e in and out, node attribute 0e, spherical harmonics up to l = 2, 10 smooth_finite
radial bases, one radial hidden layer of 32, num_neighbors = edges / atoms, float32, CPU.

Variants, all with the same weights (``RelaxedConvolution.from_equivariant``):
  plain       e3nn.nn.models.gate_points_2101.Convolution
  both/edge/node   RelaxedConvolution(relax_at=...), theta = 0e + 0o + 1o + 1e + 2e + 2o
  reference   the filter built per edge by FullyConnectedTensorProduct(theta x Y) into both-parity
              filter irreps, feeding a convolution over those irreps

Two settings: edge vectors requiring grad (spherical harmonics and radial embedding are recomputed
inside the timed region and backward also yields the geometry gradient, as in force training) and
not (edge attributes precomputed). Repeats are interleaved across variants; the script prints medians
of wall-clock and of process CPU time (less sensitive to other load on a shared machine) and their
ratios to ``plain`` measured in the same process.

Usage: python benchmarks/relaxed_conv.py [--repeats 15] [--threads 1 2]
"""
import argparse
import statistics
import time

import torch
from ase.build import bulk
from e3nn import o3
from e3nn.math import soft_one_hot_linspace
from e3nn.nn.models import gate_points_2101

from relaxed_e3nn.data import from_ase
from relaxed_e3nn.nn import RelaxedConvolution

IRREPS = o3.Irreps("32x0e+16x1o+8x2e")
IRREPS_SH = o3.Irreps.spherical_harmonics(2)
IRREPS_RELAXED = o3.Irreps("0e+0o+1o+1e+2e+2o")
NUMBER_OF_BASIS = 10
CUTOFF = 4.5


def copper_graph(seed=0):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((5, 5, 5))
    atoms.rattle(stdev=0.05, seed=seed)
    graph = from_ase(atoms, CUTOFF, dtype=torch.float32)
    return len(atoms), graph.edge_src, graph.edge_dst, graph.edge_vec()


def edge_features(edge_vec):
    edge_attr = o3.spherical_harmonics(IRREPS_SH, edge_vec, normalize=True, normalization="component")
    embedded = soft_one_hot_linspace(edge_vec.norm(dim=1), 0.0, CUTOFF, NUMBER_OF_BASIS, basis="smooth_finite",
                                     cutoff=True).mul(NUMBER_OF_BASIS**0.5)
    return edge_attr, embedded


class ReferenceRelaxedConvolution(torch.nn.Module):
    """The per-edge design: filter = FullyConnectedTensorProduct(theta, Y) in both-parity irreps."""

    def __init__(self, num_neighbors):
        super().__init__()
        irreps_filter = o3.Irreps("0e+0o+1o+1e+2e+2o")
        self.theta = torch.nn.Parameter(torch.tensor([1.0] + [0.0] * (IRREPS_RELAXED.dim - 1)))
        self.filter = o3.FullyConnectedTensorProduct(IRREPS_RELAXED, IRREPS_SH, irreps_filter)
        self.conv = gate_points_2101.Convolution(IRREPS, "0e", irreps_filter, IRREPS, NUMBER_OF_BASIS, 1, 32,
                                                 num_neighbors)

    def forward(self, node_input, node_attr, edge_src, edge_dst, edge_attr, edge_length_embedded):
        filters = self.filter(self.theta.expand(edge_attr.shape[0], -1), edge_attr)
        return self.conv(node_input, node_attr, edge_src, edge_dst, filters, edge_length_embedded)


def build(num_neighbors):
    torch.manual_seed(0)
    plain = gate_points_2101.Convolution(IRREPS, "0e", IRREPS_SH, IRREPS, NUMBER_OF_BASIS, 1, 32, num_neighbors)
    variants = {"plain": plain}
    for relax_at in ("both", "edge", "node"):
        variants[relax_at] = RelaxedConvolution.from_equivariant(plain, irreps_relaxed=IRREPS_RELAXED,
                                                                 relax_at=relax_at)
    variants["reference"] = ReferenceRelaxedConvolution(num_neighbors)
    return variants


def make_step(module, num_nodes, src, dst, edge_vec, geometry_grad):
    node_input = torch.randn(num_nodes, IRREPS.dim)
    node_attr = torch.ones(num_nodes, 1)
    if not geometry_grad:
        edge_attr, embedded = edge_features(edge_vec)

    def step():
        if geometry_grad:
            vec = edge_vec.detach().requires_grad_(True)
            attr, emb = edge_features(vec)
        else:
            attr, emb = edge_attr, embedded
        out = module(node_input, node_attr, src, dst, attr, emb)
        out.pow(2).sum().backward()
        module.zero_grad(set_to_none=True)

    return step


def measure(variants, graph, geometry_grad, repeats, warmup=2):
    num_nodes, src, dst, edge_vec = graph
    steps = {name: make_step(m, num_nodes, src, dst, edge_vec, geometry_grad) for name, m in variants.items()}
    wall = {name: [] for name in variants}
    cpu = {name: [] for name in variants}
    for _ in range(warmup):
        for step in steps.values():
            step()
    for _ in range(repeats):
        for name, step in steps.items():  # interleaved: machine noise hits every variant alike
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            step()
            cpu[name].append(time.process_time() - start_cpu)
            wall[name].append(time.perf_counter() - start_wall)
    return ({name: statistics.median(t) for name, t in wall.items()},
            {name: statistics.median(t) for name, t in cpu.items()})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    torch.set_default_dtype(torch.float32)
    graph = copper_graph()
    num_nodes, src = graph[0], graph[1]
    num_neighbors = src.shape[0] / num_nodes
    print(f"{num_nodes} atoms, {src.shape[0]} edges ({num_neighbors:.1f} per atom), irreps {IRREPS}, "
          f"theta {IRREPS_RELAXED}, float32, {args.repeats} interleaved repeats, medians")
    variants = build(num_neighbors)
    for threads in args.threads:
        torch.set_num_threads(threads)
        for geometry_grad in (True, False):
            label = "with geometry grad" if geometry_grad else "without geometry grad"
            for clock, medians in zip(("wall", "cpu"), measure(variants, graph, geometry_grad, args.repeats)):
                base = medians["plain"]
                ratios = "  ".join(f"{name} {medians[name] / base:.3f}x" for name in variants if name != "plain")
                print(f"threads={threads} {label:22s} {clock:4s} plain {1e3 * base:7.1f} ms | {ratios}")


if __name__ == "__main__":
    main()
