"""Cost of relaxing a NequIP model: one training step with forces, relaxed vs plain, in one process.

System: 108-atom rattled fcc Cu (3x3x3 cubic cells, a = 3.6 A), periodic, cutoff 4.5 A. Model:
NequIP 0.19.1 ``NequIPGNNModel`` with 3 layers, l_max = 2, 32 features, radial MLP 1 x 32, float32
(NequIP's training dtype; positions in float64 as NequIP's data has them), CPU. A step is: forward
(energy and forces by autograd), loss = energy MSE + force MSE against fixed random targets,
backward, optimizer step (the package's ``make_optimizer`` for every variant: Adam on ordinary
weights, the irrep-wise rule on θ).

Variants, all from the same plain weights: ``plain`` (NequIP's model) and ``relax(plain, relax_at=...)``
for ``edge``, ``node`` and ``both`` with θ = 0e + 0o + 1o + 1e + 2e + 2o, θ_breaking set to small
random values (so no branch is skipped). Repeats are interleaved across variants; the script prints
medians of wall-clock and process CPU time and their ratios to ``plain`` measured in the same process.

Usage: python benchmarks/relaxed_hosts.py [--repeats 15] [--threads 1]
"""
import argparse
import copy
import statistics
import time

import torch
from ase.build import bulk

try:
    from nequip.data import compute_neighborlist_, from_dict
    from nequip.model import NequIPGNNModel
    from nequip.utils.global_state import set_global_state
except ImportError as err:  # an optional dependency: say how to get it
    raise SystemExit(f"this benchmark needs NequIP: pip install relaxed_e3nn[nequip] ({err})")

from relaxed_e3nn.nn import make_optimizer, relax, relaxed_parameters

CUTOFF = 4.5
VARIANTS = ("plain", "edge", "node", "both")


def copper_data(seed=0) -> dict:
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((3, 3, 3))
    atoms.rattle(stdev=0.05, seed=seed)
    data = from_dict({"pos": torch.tensor(atoms.positions, dtype=torch.float64),
                      "cell": torch.tensor(atoms.cell.array, dtype=torch.float64),
                      "pbc": torch.tensor(atoms.pbc), "atom_types": torch.zeros(len(atoms), dtype=torch.long)})
    return compute_neighborlist_(data, CUTOFF)


def build_models() -> dict:
    set_global_state()
    plain = NequIPGNNModel(seed=0, model_dtype="float32", type_names=["Cu"], r_max=CUTOFF, num_layers=3, l_max=2,
                           parity=True, num_features=32, radial_mlp_depth=1, radial_mlp_width=32,
                           avg_num_neighbors=40.0, per_type_energy_scales=1.0, per_type_energy_shifts=0.0)
    models = {"plain": plain}
    generator = torch.Generator().manual_seed(0)
    for relax_at in VARIANTS[1:]:
        model = relax(copy.deepcopy(plain), irreps_relaxed=2, relax_at=relax_at)
        with torch.no_grad():
            for _, _, theta in relaxed_parameters(model):
                theta.add_(1e-3 * torch.randn(theta.shape, generator=generator))
        models[relax_at] = model
    return models


def training_step(model, optimizer, data, target_energy, target_forces) -> None:
    out = model(dict(data))
    loss = (out["total_energy"].reshape(-1) - target_energy).pow(2).mean() \
        + (out["forces"] - target_forces).pow(2).mean()
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    models = build_models()
    data = copper_data()
    num_atoms, num_edges = len(data["pos"]), data["edge_index"].shape[1]
    target_energy = torch.zeros(1)
    target_forces = 0.1 * torch.randn(num_atoms, 3)
    optimizers = {name: make_optimizer(model, 1e-6) for name, model in models.items()}
    wall = {name: [] for name in models}
    cpu = {name: [] for name in models}
    for repeat in range(args.repeats + 2):
        for name in VARIANTS:  # interleaved
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            training_step(models[name], optimizers[name], data, target_energy, target_forces)
            if repeat >= 2:  # two warm-up rounds
                wall[name].append(time.perf_counter() - start_wall)
                cpu[name].append(time.process_time() - start_cpu)
    print(f"NequIP training step with forces: {num_atoms} atoms, {num_edges} edges, float32, "
          f"{args.threads} thread(s), median of {args.repeats} interleaved repeats")
    base_wall, base_cpu = statistics.median(wall["plain"]), statistics.median(cpu["plain"])
    for name in VARIANTS:
        median_wall, median_cpu = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"  {name:6s} wall {1e3 * median_wall:8.1f} ms ({median_wall / base_wall:5.3f}x)   "
              f"cpu {1e3 * median_cpu:8.1f} ms ({median_cpu / base_cpu:5.3f}x)")


if __name__ == "__main__":
    main()
