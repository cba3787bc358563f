"""Train a relaxed network on EMT molecular dynamics of small metal clusters, then evaluate it.

1. Runs short constant-energy MD (started at 600 K) of Cu/Ag clusters (7 to 13 atoms) with ase's EMT calculator and
   writes the snapshots to extended XYZ under user-named keys ``REF_energy`` / ``REF_forces``.
2. Trains an energy + forces model with ``relaxed_e3nn.train.train`` (the same code path as
   ``relaxed-e3nn train CONFIG.yaml``; the config used is written next to the run).
3. Evaluates the final model on a separate MD trajectory and prints the errors.

Run: ``python examples/train_molecules.py [--epochs 40] [--out runs/molecules]`` (a few
minutes on one CPU core; ``--quick`` for a smoke run).
"""
import time

import ase.io
import numpy as np
from ase.cluster import Icosahedron
from ase.calculators.emt import EMT
from ase.md.verlet import VelocityVerlet
from ase import units

import relaxed_e3nn
from _common import example_arguments, model_settings, train_from_config
from relaxed_e3nn.train import evaluate
from relaxed_e3nn.train import graphs_for_model


def md_snapshots(num_frames: int, seed: int):
    """Snapshots of constant-energy MD started at 600 K of random Cu/Ag clusters, labelled under REF_* keys."""
    rng = np.random.default_rng(seed)
    frames = []
    while len(frames) < num_frames:
        cluster = Icosahedron("Cu", noshells=2)  # 13 atoms
        keep = int(rng.integers(7, 14))
        cluster = cluster[np.sort(rng.permutation(len(cluster))[:keep])]
        numbers = cluster.numbers.copy()
        numbers[rng.random(len(cluster)) < 0.3] = 47  # some Ag
        cluster.numbers = numbers
        cluster.center(vacuum=5.0)
        cluster.calc = EMT()
        masses = cluster.get_masses()[:, None]  # Maxwell-Boltzmann momenta at 600 K
        cluster.set_momenta(rng.normal(size=(len(cluster), 3)) * np.sqrt(masses * units.kB * 600))
        dynamics = VelocityVerlet(cluster, timestep=2 * units.fs)
        for _ in range(5):
            dynamics.run(10)
            snapshot = cluster.copy()
            snapshot.pbc = False
            snapshot.info["REF_energy"] = cluster.get_potential_energy()
            snapshot.arrays["REF_forces"] = cluster.get_forces().copy()
            frames.append(snapshot)
    return frames[:num_frames]


def main():
    args = example_arguments(__doc__.split("\n")[0], "runs/molecules", "frames", 120, 20)
    out = args.out

    start = time.perf_counter()
    train_file, test_file = out / "md_train.xyz", out / "md_test.xyz"
    ase.io.write(str(train_file), md_snapshots(args.frames, seed=0), format="extxyz")
    ase.io.write(str(test_file), md_snapshots(max(10, args.frames // 4), seed=1), format="extxyz")
    print(f"EMT molecular dynamics: {time.perf_counter() - start:.1f} s")

    config = {
        "output_dir": str(out / "run"),
        "seed": 0,
        "dtype": "float64",
        "epochs": args.epochs,
        "batch_size": 8,
        "patience": 15,
        "progress": "auto",
        "data": {"train": str(train_file), "val_fraction": 0.15, "energy_key": "REF_energy",
                 "forces_key": "REF_forces"},
        "model": model_settings(num_neighbors=8.0),
        "loss": {"energy": 5.0, "forces": 10.0},
        "optim": {"lr": 0.01, "scheduler": "plateau", "lr_patience": 5, "theta_penalty": 1e-4},
    }
    result = train_from_config(config, out / "train_molecules.yaml")

    model = relaxed_e3nn.load(result.model_path)
    test_frames = ase.io.read(str(test_file), ":")
    graphs = graphs_for_model(model, test_frames, energy_key="REF_energy", forces_key="REF_forces")
    metrics = evaluate(model, graphs)
    forces = np.concatenate([a.arrays["REF_forces"] for a in test_frames])
    print(f"held-out MD trajectory ({len(test_frames)} frames): mean |force component| "
          f"{np.abs(forces).mean():.4f} eV/Å")
    for key in ("energy_mae", "energy_rmse", "energy_total_mae", "forces_mae", "forces_rmse"):
        unit = "eV/atom" if key.startswith("energy_") and "total" not in key else ("eV" if "total" in key else "eV/Å")
        print(f"  {key:<18} {metrics[key]:.4f} {unit}")
    print(f"same evaluation from the command line: relaxed-e3nn evaluate {result.model_path} {test_file} "
          f"--energy-key REF_energy --forces-key REF_forces")


if __name__ == "__main__":
    main()
