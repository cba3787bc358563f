"""Train a relaxed network on rattled EMT crystals read from CIF and extended XYZ files.

1. Builds rattled, strained fcc Cu, Au and ordered CuAu / Cu3Au cells, labels them with ase's
   EMT energies, forces and stresses, and writes half of them as CIF files (structure only,
   with the reference values in a JSON sidecar per file) and half as one extxyz file.
2. Trains energy + forces + stress (``relaxed_e3nn.train.train``; the config is written
   next to the run, so ``relaxed-e3nn train train_crystals.yaml`` repeats it).
3. Prints the test-set errors, and predicts a few new structures to extxyz
   (what ``relaxed-e3nn predict`` does).

Run: ``python examples/train_crystals.py [--epochs 40] [--out runs/crystals]`` (a few minutes
on one CPU core; ``--quick`` for a smoke run).
"""
import argparse
import shutil
import json
import time
from pathlib import Path

import ase.io
import numpy as np
import yaml
from ase.build import bulk
from ase.calculators.emt import EMT

import relaxed_e3nn
from relaxed_e3nn.train import predict, train


def crystals(n: int, seed: int):
    rng = np.random.default_rng(seed)
    prototypes = [("Cu", 3.61), ("Au", 4.08), ("CuAu", 3.85), ("Cu3Au", 3.75)]
    frames = []
    for k in range(n):
        name, a = prototypes[k % len(prototypes)]
        atoms = bulk("Cu", "fcc", a=a, cubic=True)
        if name == "Au":
            atoms.symbols[:] = "Au"
        elif name == "CuAu":
            atoms.symbols[[0, 1]] = "Au"
        elif name == "Cu3Au":
            atoms.symbols[0] = "Au"
        strain = np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3))
        atoms.set_cell(atoms.cell[:] @ (0.5 * (strain + strain.T)), scale_atoms=True)
        atoms.positions += rng.normal(scale=0.08, size=atoms.positions.shape)
        atoms.calc = EMT()
        frames.append((atoms, {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces().tolist(),
                               "stress": atoms.get_stress().tolist()}))
    return frames


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="runs/crystals")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--structures", type=int, default=96)
    parser.add_argument("--quick", action="store_true", help="a tiny run (seconds) to check that it works")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.structures = 2, 16
    out = Path(args.out)
    (out / "cif").mkdir(parents=True, exist_ok=True)

    labelled = crystals(args.structures, seed=0)
    half = len(labelled) // 2
    sources = []
    for k, (atoms, values) in enumerate(labelled[:half]):
        cif, sidecar = out / "cif" / f"crystal_{k:03d}.cif", out / "cif" / f"crystal_{k:03d}.json"
        ase.io.write(str(cif), atoms)
        sidecar.write_text(json.dumps([values]))
        sources.append({"path": str(cif), "targets": str(sidecar)})
    xyz = out / "crystals.xyz"
    frames = []
    for atoms, _ in labelled[half:]:
        atoms.get_stress()
        frames.append(atoms)
    ase.io.write(str(xyz), frames, format="extxyz")
    sources.append(str(xyz))

    config = {
        "output_dir": str(out / "run"),
        "dtype": "float64",
        "epochs": args.epochs,
        "batch_size": 8,
        "patience": 15,
        "ema_decay": 0.9,
        "data": {"train": sources, "val_fraction": 0.1, "test_fraction": 0.15},
        "model": {"cutoff": 4.5, "num_layers": 2, "irreps_hidden": "16x0e+8x1o+8x1e", "lmax": 2,
                  "irreps_relaxed": 2, "radial_neurons": 16, "num_neighbors": 30.0},
        "loss": {"energy": 1.0, "forces": 10.0, "stress": 100.0},
        "optim": {"lr": 0.01, "scheduler": "cosine"},
    }
    with open(out / "train_crystals.yaml", "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    shutil.rmtree(out / "run", ignore_errors=True)  # the example starts afresh each time
    start = time.perf_counter()
    result = train(config)
    print(f"training: {time.perf_counter() - start:.1f} s, best epoch {result.best_epoch}")
    forces = np.concatenate([np.asarray(v["forces"]) for _, v in labelled])
    print(f"mean |force component| of the data: {np.abs(forces).mean():.4f} eV/Å")
    for key, value in (result.test_metrics or {}).items():
        print(f"  test {key:<18} {value:.5f}")

    model = relaxed_e3nn.load(result.model_path)
    new = [atoms for atoms, _ in crystals(4, seed=7)]
    predicted = predict(model, new, compute_stress=True)
    ase.io.write(str(out / "predicted.xyz"), predicted, format="extxyz")
    for atoms, reference in zip(predicted, new):
        print(f"  {atoms.get_chemical_formula():<8} predicted {atoms.get_potential_energy():9.4f} eV, "
              f"EMT {reference.get_potential_energy():9.4f} eV")


if __name__ == "__main__":
    main()
