"""``relaxed-e3nn demo``: discover the symmetry of a ferroelectric distortion from data.

Ideal cubic ABO3 perovskites (input symmetry Oh at every site) are mapped to the ionic
displacements of a polar phase (P4mm by default: every displacement along [001]). A strictly
O(3)-equivariant network cannot predict anything but zero on centrosymmetric sites (Curie's
principle); its relaxed twin learns relaxed weights θ whose residual symmetry, read back by
:class:`relaxed_e3nn.symmetry.SymmetryReport`, is the polar group of the phase (C4v about [001]).
Both are trained with :func:`relaxed_e3nn.train.train` on generated data and compared on
held-out compositions; the relaxed run validates its breaking on a held-out selection split
(:func:`relaxed_e3nn.symmetry.validate_breaking`, within the parent Oh the generator records) and
the demo prints the validated group with its evidence.
"""
import argparse
import sys
import time
from pathlib import Path

__all__ = ["add_parser", "run"]

_PHASE_TEXT = {"P4mm": "tetragonal P4mm, displacements along [001]",
               "Amm2": "orthorhombic Amm2, displacements along [011]",
               "R3m": "rhombohedral R3m, displacements along [111]"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="train a strict and a relaxed model on cubic -> P4mm perovskites and report the learned symmetry",
        description="Generate ideal cubic ABO3 perovskites (input symmetry Oh) with the ionic displacements "
                    "of a polar phase, train the strictly equivariant twin and the relaxed model, compare "
                    "them on held-out compositions, and report the symmetry the relaxed model learned "
                    "(for P4mm: C4v about [0 0 1]). About 20-40 s of wall time on a 2-core machine (measured "
                    "20.7 s, 33.3 s of CPU, at load 0.5); --quick about 10 s (measured 7.7 s).",
    )
    parser.add_argument("--out", default="demo_output",
                        help="output directory (default: demo_output/); a previous demo run there is replaced")
    parser.add_argument("--phase", choices=sorted(_PHASE_TEXT), default="P4mm", help="polar phase (default: P4mm)")
    parser.add_argument("--quick", action="store_true", help="8 epochs on 48 cells, about 10 s in all (for tests and smoke runs)")
    parser.add_argument("--epochs", type=int, default=None, help="training epochs per model (default: 80, quick: 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of data and models (default: 0)")
    parser.add_argument("--no-progress", dest="progress", action="store_const", const=False, default="auto",
                        help="no progress bars (default: bars only when stderr is a terminal)")
    parser.set_defaults(func=run)
    return parser


def _settings(args):
    if args.quick:
        settings = dict(num_train=48, num_test=8, epochs=8, batch_size=8, selection=0.25)
    else:
        settings = dict(num_train=96, num_test=32, epochs=80, batch_size=8, selection=0.15)
    if args.epochs is not None:
        if args.epochs < 1:
            raise ValueError(f"--epochs must be >= 1, got {args.epochs}")
        settings["epochs"] = args.epochs
    return settings


def _train_config(out_dir: Path, data_dir: Path, settings, seed: int, strict: bool, progress, species):
    return {
        "output_dir": str(out_dir),
        "seed": seed,
        "dtype": "float64",
        "device": "cpu",
        "epochs": settings["epochs"],
        "batch_size": settings["batch_size"],
        # the strict twin's validation error cannot improve (it predicts zero): stop it early
        "patience": 5 if strict else None,
        "strict": strict,
        "progress": progress,
        "data": {
            "train": str(data_dir / "train.xyz"),
            "test": str(data_dir / "test.xyz"),
            "val_fraction": 0.125,
            "node_targets": ["displacements"],
        },
        "model": {
            "species": species,
            "cutoff": 3.5,
            "output": "node",
            "irreps_out": "1o",
            "num_layers": 1,
            "irreps_hidden": "16x0e+8x1o+4x2e",
            "lmax": 2,
            "irreps_relaxed": 2,
            "num_radial_basis": 6,
            "radial_neurons": 16,
            "num_neighbors": 10.0,
        },
        "optim": {"lr": 1e-2, "scheduler": "plateau", "lr_patience": 5},
        # held-out cells for the decision: 14 of 96 (12 of 48 with --quick), above symmetry.min_blocks
        "symmetry": {"fraction": settings["selection"]},
    }


def _rmse(model, structures, cutoff):
    # lazy: CLI startup time (--version / --help must not import torch, ase)
    import torch

    from relaxed_e3nn.data import collate, from_ase

    with torch.no_grad():
        batch = collate([from_ase(a, cutoff, node_targets=("displacements",), dtype=torch.float64) for a in structures])
        prediction = model(batch)["node_output"]
        target = batch.node_targets["displacements"]
        return float(((prediction - target) ** 2).mean().sqrt()), float((target ** 2).mean().sqrt())


def _print_validation(record, run_dir: Path) -> None:
    """The validated group and its evidence, two lines (from the run's symmetry record)."""
    decision = (record or {}).get("decision")
    if not decision:
        return
    chosen = decision["chosen"]
    print(f"\nvalidated breaking (held-out selection split, within {decision['parent']}): {decision['summary']}")
    print(f"    evidence: {chosen['label']} wins {chosen['win_frequency']:.0%} of {decision['num_bootstrap']} "
          f"bootstrap resamples of {decision['num_structures']} held-out cells; every candidate in "
          f"{run_dir}/symmetry.txt")


def run(args) -> int:
    # lazy: CLI startup time (--version / --help must not import torch, ase)
    import ase.io
    from ase.data import atomic_numbers

    from relaxed_e3nn._atomic import atomic_write
    from relaxed_e3nn.data.generators import perovskite_compositions, perovskite_distortion
    from relaxed_e3nn.symmetry import SymmetryReport
    from relaxed_e3nn.train import train

    settings = _settings(args)
    out = Path(args.out)
    data_dir = out / "data"
    started = time.perf_counter()
    print(f"relaxed-e3nn demo: ideal cubic ABO3 perovskites (input symmetry Oh) -> {_PHASE_TEXT[args.phase]}")

    train_set = perovskite_distortion(num_samples=settings["num_train"], seed=args.seed, phase=args.phase, split="train",
                                      supercells=(1,))
    test_set = perovskite_distortion(num_samples=settings["num_test"], seed=args.seed + 1, phase=args.phase, split="test",
                                     supercells=(1, 2))
    for name, structures in (("train.xyz", train_set), ("test.xyz", test_set)):
        with atomic_write(data_dir / name, mode="w") as handle:
            ase.io.write(handle, structures, format="extxyz")
    train_compositions, test_compositions = perovskite_compositions()
    # every species of every composition, so the saved models accept any of the 28 perovskites
    species = sorted({atomic_numbers[s] for pair in train_compositions + test_compositions for s in pair} | {8})
    print(f"data: {len(train_set)} training cells from {len(train_compositions)} compositions; "
          f"{len(test_set)} test cells (1x1x1 and 2x2x2) of {len(test_compositions)} held-out compositions "
          f"({', '.join(a + b + 'O3' for a, b in test_compositions)}) -> {data_dir}/")

    models, errors, records = {}, {}, {}
    for label, strict in (("strict", True), ("relaxed", False)):
        kind = "strictly O(3)-equivariant twin" if strict else "relaxed model (learnable symmetry breaking θ)"
        length = f"up to {settings['epochs']} epochs, stopping after 5 without progress" if strict \
            else f"{settings['epochs']} epochs"
        print(f"\ntraining the {kind}, {length} ...", flush=True)
        config = _train_config(out / label, data_dir, settings, args.seed, strict, args.progress, species)
        stale = out / label / "checkpoint.pt"
        if stale.is_file():  # a previous demo run in the same --out: start afresh, do not resume it
            print(f"(replacing the previous demo run in {out / label}/)")
            stale.unlink()
        result = train(config)
        models[label] = result.model
        records[label] = result.metrics.get("symmetry")
        errors[label] = _rmse(result.model, test_set, config["model"]["cutoff"])

    target_rms = errors["relaxed"][1]
    print("\nheld-out compositions, displacement error (Å):")
    print(f"    {'':24s}{'strict':>12s}{'relaxed':>12s}")
    print(f"    {'RMSE':24s}{errors['strict'][0]:12.5f}{errors['relaxed'][0]:12.5f}")
    print(f"    {'RMSE / target RMS':24s}{errors['strict'][0] / target_rms:12.3f}{errors['relaxed'][0] / target_rms:12.3f}")
    print("    (the strict model predicts exactly zero on the centrosymmetric input sites: Curie's principle)")

    _print_validation(records["relaxed"], out / "relaxed")
    report = SymmetryReport(models["relaxed"], within="Oh")
    print("\n" + report.text())
    with atomic_write(out / "report.txt", mode="w") as handle:
        handle.write(report.text() + "\n")
    with atomic_write(out / "report.json", mode="w") as handle:
        handle.write(report.to_json())
    plots = report.save_plots(str(out) + "/")
    print("\nfiles:")
    print(f"    {out}/report.txt, {out}/report.json   symmetry report (text, JSON)")
    for path in plots:
        print(f"    {path}")
    for label in ("strict", "relaxed"):
        print(f"    {out}/{label}/   trained model (model.pt), metrics, loss curve"
              + (", validated breaking (symmetry.txt, symmetry.json)" if label == "relaxed" else ""))
    print(f"    {data_dir}/train.xyz, test.xyz   the generated data (extxyz)")
    print(f"\ndone in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return 0
