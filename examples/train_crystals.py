"""Train a relaxed network on rattled EMT crystals read from CIF and extended XYZ files.

1. Builds rattled, strained fcc Cu, Au and ordered CuAu / Cu3Au cells, labels them with ase's
   EMT energies, forces and stresses, and writes half of them as CIF files (structure only,
   with the reference values in a JSON sidecar per file that names their Cartesian frame by
   the cell they were computed in) and half as one extxyz file.
2. Trains energy + forces + stress (``relaxed_e3nn.train.train``; the config is written
   next to the run, so ``relaxed-e3nn train train_crystals.yaml`` repeats it).
3. Prints the test-set errors, and predicts a few new structures to extxyz
   (what ``relaxed-e3nn predict`` does).

Run: ``python examples/train_crystals.py [--epochs 40] [--out runs/crystals]`` (a few minutes
on one CPU core; ``--quick`` for a smoke run).
"""
import json

import ase.io
import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT

import relaxed_e3nn
from _common import example_arguments, model_settings, train_from_config
from relaxed_e3nn.train import predict


def crystals(num_structures: int, seed: int):
    rng = np.random.default_rng(seed)
    prototypes = [("Cu", 3.61), ("Au", 4.08), ("CuAu", 3.85), ("Cu3Au", 3.75)]
    frames = []
    for k in range(num_structures):
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
    args = example_arguments(__doc__.split("\n")[0], "runs/crystals", "structures", 96, 16)
    out = args.out
    (out / "cif").mkdir(exist_ok=True)

    labelled = crystals(args.structures, seed=0)
    half = len(labelled) // 2
    sources = []
    for k, (atoms, values) in enumerate(labelled[:half]):
        cif, sidecar = out / "cif" / f"crystal_{k:03d}.cif", out / "cif" / f"crystal_{k:03d}.json"
        ase.io.write(str(cif), atoms)
        # a CIF keeps only lengths and angles: name the frame the forces and stress are in
        sidecar.write_text(json.dumps([dict(values, frame={"cell": atoms.cell[:].tolist()})]))
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
        "model": model_settings(num_neighbors=30.0),
        "loss": {"energy": 1.0, "forces": 10.0, "stress": 100.0},
        "optim": {"lr": 0.01, "scheduler": "cosine"},
    }
    result = train_from_config(config, out / "train_crystals.yaml")
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
