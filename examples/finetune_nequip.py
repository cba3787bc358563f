"""Fine-tune a NequIP potential into a field it cannot see: strict vs relaxed, and the validated group.

1. Train a small NequIP model (float64) on bulk fcc Cu: rattled, strained 2x2x2 cubic cells with EMT
   energies and forces. It is strictly E(3)-equivariant, as any NequIP model.
2. Fine-tune it on a Cu13 cuboctahedron (rattled) in a uniform electric field E along z, with fixed
   site charges (centre +1.2 e, each surface atom -0.1 e):
   ``energy = EMT - sum_i q_i E . r_i``, ``forces = EMT forces + q_i E``. The field picks a direction,
   which no rotation-invariant energy can represent.
   * strict: the pretrained model as it is, fine-tuned;
   * relaxed: the same model with its θ free (identical at the start: θ_breaking = 0), fine-tuned with
     the package's optimizer (Adam on the weights, the irrep-wise rule on θ).
   The model is built once with ``relaxed_nequip_model`` (NequIP's builder, then ``relax``, with a
   recipe for ``relaxed_e3nn.save``) and pretrained with θ frozen at 0, where it is NequIP's model bit
   for bit; ``relax(nequip_model)`` of a model trained elsewhere gives the same.
3. Print the held-out energy and force errors of both, and ask ``validate_breaking`` which symmetry
   the relaxed model's breaking is worth on held-out data (expected: C∞v about the field, z).

Usage: python examples/finetune_nequip.py [--quick] [--seed 0]   (--quick: the CI size, a few minutes)
"""
import argparse
import copy
import sys
import time

import numpy as np
import torch
from ase import Atoms
from ase.build import bulk
from ase.calculators.emt import EMT

try:
    from nequip.data import AtomicDataDict, compute_neighborlist_, from_dict
except ImportError as err:  # an optional dependency: say how to get it
    raise SystemExit(f"this example needs NequIP: pip install relaxed_e3nn[nequip] ({err})")

from relaxed_e3nn.nn import make_optimizer, relaxed_nequip_model, relaxed_parameters
from relaxed_e3nn.symmetry import breaking_beyond, validate_breaking

R_MAX = 4.0
FIELD = np.array([0.0, 0.0, 1.0])  # V/Å, along z
CENTRE_CHARGE, SURFACE_CHARGE = 1.2, -0.1  # e; sums to zero over the 13 atoms
# θ: scalars and vectors of both parities; the group lasso zeroes the copies the data does not need
IRREPS_RELAXED = 1
THETA_OPTIONS = dict(theta_lr=1e-2, theta_penalty=1e-2)
SIZES = {"quick": dict(bulk=16, bulk_steps=150, cluster=20, finetune_steps=200, validate_steps=15, bootstrap=200),
         "full": dict(bulk=64, bulk_steps=600, cluster=60, finetune_steps=400, validate_steps=60, bootstrap=1000)}


def emt_bulk(num: int, rng: np.random.Generator) -> list:
    """Rattled, strained 32-atom fcc Cu cells with EMT energy and forces."""
    structures = []
    for _ in range(num):
        atoms = bulk("Cu", "fcc", a=3.61 * (1 + rng.uniform(-0.02, 0.02)), cubic=True) * (2, 2, 2)
        atoms.positions += rng.normal(0.0, 0.08, atoms.positions.shape)
        atoms.calc = EMT()
        structures.append((atoms, atoms.get_potential_energy(), atoms.get_forces()))
    return structures


def field_clusters(num: int, rng: np.random.Generator) -> list:
    """Rattled Cu13 cuboctahedra in the field: EMT plus the site charges' coupling to ``FIELD``."""
    half = 3.61 / 2
    shell = [(x, y, 0) for x in (-1, 1) for y in (-1, 1)] + [(x, 0, z) for x in (-1, 1) for z in (-1, 1)] \
        + [(0, y, z) for y in (-1, 1) for z in (-1, 1)]
    ideal = np.array([(0, 0, 0)] + shell, dtype=float) * half
    charges = np.array([CENTRE_CHARGE] + [SURFACE_CHARGE] * 12)
    structures = []
    for _ in range(num):
        atoms = Atoms("Cu13", positions=ideal + rng.normal(0.0, 0.1, ideal.shape))
        atoms.calc = EMT()
        energy = atoms.get_potential_energy() - float(charges @ (atoms.positions @ FIELD))
        forces = atoms.get_forces() + charges[:, None] * FIELD[None, :]
        structures.append((atoms, energy, forces))
    return structures


def to_batches(structures: list, batch_size: int) -> list:
    """NequIP input dicts (with neighbor lists), batched, with their reference energies and forces."""
    batches = []
    for start in range(0, len(structures), batch_size):
        chunk = structures[start:start + batch_size]
        graphs = []
        for atoms, _, _ in chunk:
            fields = {"pos": torch.tensor(atoms.positions), "atom_types": torch.zeros(len(atoms), dtype=torch.long)}
            if atoms.pbc.any():
                fields.update(cell=torch.tensor(atoms.cell.array), pbc=torch.tensor(atoms.pbc))
            graphs.append(compute_neighborlist_(from_dict(fields), R_MAX))
        batches.append((AtomicDataDict.batched_from_list(graphs),
                        torch.tensor([energy for _, energy, _ in chunk]),
                        torch.tensor(np.concatenate([forces for _, _, forces in chunk]))))
    return batches


def per_structure_losses(model, batch) -> torch.Tensor:
    """(energy error per atom)² + mean squared force error, one entry per structure (eV², eV²/Å²)."""
    data, energy, forces = batch
    out = model(dict(data))
    num_atoms = data[AtomicDataDict.NUM_NODES_KEY].to(energy.dtype)
    energy_term = ((out["total_energy"].reshape(-1) - energy) / num_atoms).pow(2)
    force_term = torch.zeros_like(energy).index_add_(0, data[AtomicDataDict.BATCH_KEY],
                                                     (out["forces"] - forces).pow(2).mean(dim=1))
    return energy_term + force_term / num_atoms


def fit(model, batches, steps: int, lr: float, **optimizer_options) -> None:
    optimizer = make_optimizer(model, lr, **optimizer_options)
    model.train()
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        per_structure_losses(model, batches[step % len(batches)]).mean().backward()
        optimizer.step()


def errors(model, batches) -> tuple:
    """Held-out energy MAE (meV/atom) and force MAE (meV/Å)."""
    energy_errors, force_errors = [], []
    for data, energy, forces in batches:
        out = model(dict(data))
        num_atoms = data[AtomicDataDict.NUM_NODES_KEY].to(energy.dtype)
        energy_errors.append(((out["total_energy"].reshape(-1).detach() - energy) / num_atoms).abs())
        force_errors.append((out["forces"].detach() - forces).abs().reshape(-1))
    return 1e3 * float(torch.cat(energy_errors).mean()), 1e3 * float(torch.cat(force_errors).mean())


def pretrained_model(bulk_batches, steps: int, mean_energy: float):
    """A NequIP model trained on bulk EMT Cu with θ frozen at 0 (strict: NequIP's model bit for bit)."""
    config = dict(_target_="nequip.model.NequIPGNNModel", seed=0, model_dtype="float64", type_names=["Cu"],
                  r_max=R_MAX, num_layers=2, l_max=2, parity=True, num_features=8, radial_mlp_depth=1,
                  radial_mlp_width=16, avg_num_neighbors=18.0, per_type_energy_scales=1.0,
                  per_type_energy_shifts=mean_energy)
    model = relaxed_nequip_model(config, irreps_relaxed=IRREPS_RELAXED)
    for _, _, theta in relaxed_parameters(model):
        theta.requires_grad_(False)
    fit(model, bulk_batches, steps, 5e-3)
    return model


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the CI size (a few minutes of CPU)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # NequIP's data dicts take the default dtype
    try:
        run(SIZES["quick" if args.quick else "full"], args.seed)
    finally:
        torch.set_default_dtype(default)
    return 0


def run(sizes: dict, seed: int) -> None:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    start = time.perf_counter()

    bulk_data = emt_bulk(sizes["bulk"], rng)
    clusters = field_clusters(2 * sizes["cluster"], rng)
    train_batches = to_batches(clusters[:sizes["cluster"]], 4)
    heldout_batches = to_batches(clusters[sizes["cluster"]:], 4)
    mean_energy = float(np.mean([energy / len(atoms) for atoms, energy, _ in bulk_data]))
    pretrained = pretrained_model(to_batches(bulk_data, 4), sizes["bulk_steps"], mean_energy)
    print(f"pretrained on {len(bulk_data)} bulk Cu cells: held-out cluster error before fine-tuning "
          f"{errors(pretrained, heldout_batches)[0]:.1f} meV/atom, {errors(pretrained, heldout_batches)[1]:.0f} meV/Å")

    strict = copy.deepcopy(pretrained)  # θ frozen at 0: exactly the strict NequIP model
    fit(strict, train_batches, sizes["finetune_steps"], 2e-3)
    relaxed = copy.deepcopy(pretrained)  # the same model with θ free: identical at the start
    for _, _, theta in relaxed_parameters(relaxed):
        theta.requires_grad_(True)
    fit(relaxed, train_batches, sizes["finetune_steps"], 2e-3, **THETA_OPTIONS)
    relaxed.eval()
    strict.eval()
    print(f"fine-tuned on {sizes['cluster']} clusters in a field along z ({sizes['finetune_steps']} steps), "
          f"held-out errors on {sizes['cluster']} more:")
    for name, model in (("strict", strict), ("relaxed", relaxed)):
        energy_mae, force_mae = errors(model, heldout_batches)
        print(f"  {name:8s} energy {energy_mae:7.2f} meV/atom   forces {force_mae:6.1f} meV/Å")
    print("relaxed θ per layer:", "; ".join(f"{' '.join(f'{v:+.3f}' for v in theta.tolist())}"
                                            for _, _, theta in relaxed_parameters(relaxed)))
    print(f"relaxed θ breaking beyond C∞v about z (relative): "
          f"{max(breaking_beyond(relaxed, 'Cinfv', relative=True).values()):.3f}")

    decision = validate_breaking(relaxed, train_batches, heldout_batches, per_structure_losses, parent="O3",
                                 finetune_steps=sizes["validate_steps"], finetune_lr=1e-3,
                                 num_bootstrap=sizes["bootstrap"], seed=seed)
    print(decision.summary())
    print(f"validated residual group: {decision.chosen.schoenflies}")
    print(f"total time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    sys.exit(main())
