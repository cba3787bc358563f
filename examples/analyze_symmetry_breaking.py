"""Discover the symmetry of ferroelectric distortions: train, then read the breaking back.

For each polar phase of a cubic perovskite (P4mm, Amm2, R3m) this script

1. generates ideal cubic ABO3 cells with the displacements of that phase
   (``relaxed_e3nn.data.generators.perovskite_distortion``, generator ``perovskite_distortion``),
2. trains a small relaxed network on them with ``relaxed_e3nn.train.train`` (the generator is
   named in the config; the model is saved as ``OUT/PHASE/model.pt``),
3. takes the symmetry of the *input* from a structure (``relaxed_e3nn.groups.point_group_of`` of
   an ideal cubic cell: Oh) and builds a ``relaxed_e3nn.symmetry.SymmetryReport`` within it: the
   chain ``Oh -> residual group``, its axes, the irreps that carry the breaking, their
   significance, and the spectrum / spherical-signal plots,
4. prints one summary table and checks every phase against the answer the generator documents.

The same analysis of any saved model from the command line::

    relaxed-e3nn analyze OUT/P4mm/model.pt --within Oh --json report.json --plot spectrum.png
    relaxed-e3nn analyze OUT/P4mm/model.pt --within cubic_cell.cif

Run: ``python examples/analyze_symmetry_breaking.py [--phases P4mm Amm2 R3m] [--epochs 30]
[--out runs/discovery]`` (about a minute per phase on one CPU core; ``--quick`` for a smoke run).
"""
import argparse
import time
from pathlib import Path

import numpy as np
from ase.data import atomic_numbers

from relaxed_e3nn.data.generators import PEROVSKITE_PHASES, perovskite_compositions, perovskite_distortion
from relaxed_e3nn.groups import point_group_of
from relaxed_e3nn.symmetry import SymmetryReport, format_axis
from relaxed_e3nn.train import train


def train_phase(phase: str, out: Path, epochs: int, num_train: int, seed: int):
    """Train a relaxed model on cubic -> ``phase`` data; return the trained model and test metrics."""
    train_compositions, test_compositions = perovskite_compositions()
    species = sorted({atomic_numbers[s] for pair in train_compositions + test_compositions for s in pair} | {8})
    config = {
        "output_dir": str(out / phase),
        "seed": seed,
        "dtype": "float64",
        "device": "cpu",
        "epochs": epochs,
        "batch_size": 8,
        "progress": False,
        "data": {
            "train": {"generator": "perovskite_distortion", "num_samples": num_train, "seed": seed, "phase": phase,
                      "split": "train", "supercells": [1]},
            "test": {"generator": "perovskite_distortion", "num_samples": 24, "seed": seed + 1, "phase": phase,
                     "split": "test", "supercells": [1, 2]},
            "node_targets": ["displacements"],
        },
        "model": {"species": species, "cutoff": 3.5, "output": "node", "irreps_out": "1o", "num_layers": 1,
                  "irreps_hidden": "16x0e+8x1o+4x2e", "lmax": 2, "irreps_relaxed": 2},
        "optim": {"lr": 1e-2},
    }
    stale = out / phase / "checkpoint.pt"
    if stale.is_file():
        stale.unlink()
    result = train(config)
    return result.model, result.test_metrics or {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phases", nargs="+", choices=list(PEROVSKITE_PHASES), default=list(PEROVSKITE_PHASES))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--num-train", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/discovery")
    parser.add_argument("--quick", action="store_true", help="3 epochs on 16 cells per phase")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.num_train = 3, 16
    out = Path(args.out)

    # the input's symmetry, from a structure: the point group of an ideal cubic cell
    cubic_cell = perovskite_distortion(num_samples=1, seed=args.seed, split="train", supercells=(1,))[0]
    input_group = point_group_of(cubic_cell)
    print(f"input symmetry (point group of the ideal cubic cell): {input_group.schoenflies}")

    rows = []
    for phase in args.phases:
        started = time.perf_counter()
        print(f"\n=== cubic -> {phase}: training ({args.epochs} epochs on {args.num_train} cells) ...", flush=True)
        model, metrics = train_phase(phase, out, args.epochs, args.num_train, args.seed)
        report = SymmetryReport(model, within=input_group)
        print(report.text())
        plots = report.save_plots(str(out / phase) + "/")
        report.to_json(out / phase / "report.json")
        print("plots: " + ", ".join(plots))

        axis_int, expected, hm = PEROVSKITE_PHASES[phase]
        group = report.residual.group
        axis = group.principal_axis
        expected_axis = np.asarray(axis_int, dtype=float) / np.linalg.norm(axis_int)
        aligned = axis is not None and abs(float(axis.numpy() @ expected_axis)) > 1 - 1e-6
        carriers = sorted({r.irrep for r in report.significance if r.significant})
        rows.append((phase, expected, group.schoenflies, format_axis(axis) if axis is not None else "-",
                     "+".join(carriers) or "-", metrics.get("displacements_rmse", float("nan")),
                     group.schoenflies == expected and aligned, time.perf_counter() - started))

    print(f"\n{'phase':8s}{'expected':10s}{'found':8s}{'axis':12s}{'breaking in':14s}{'test RMSE (Å)':>14s}  ok")
    for phase, expected, found, axis, carriers, rmse, ok, seconds in rows:
        print(f"{phase:8s}{expected:10s}{found:8s}{axis:12s}{carriers:14s}{rmse:14.5f}  {'yes' if ok else 'NO'}"
              f"   ({seconds:.0f} s)")
    return 0 if all(row[6] for row in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
