"""Cost of validated symmetry breaking: (training + validation) / training wall time.

EMT molecular dynamics of a Cu(111) slab (27 atoms, ``relaxed_e3nn.train._testing.emt_slab_md``)
is written to extxyz and trained with the default config of ``relaxed-e3nn train`` (relaxed model,
validated breaking on); the decision's own wall time is stored in the run's symmetry record
(``time_s``). Printed per repeat and as medians: the training wall time (everything but the
decision), the decision's, and the ratio (goal: at most 1.25 for the default settings).

Also printed: the parent's relative held-out loss excess ΔL/L (its cost against the unconstrained
model) and whether the evidence was too thin to test (fewer than ``symmetry.min_blocks`` blocks).
``--restricted-fraction 0`` switches the restricted training steps off, for comparison.

    python benchmarks/validated_breaking.py                 # the default config (100 epochs)
    python benchmarks/validated_breaking.py --epochs 20     # shorter runs: the ratio grows
    python benchmarks/validated_breaking.py --frames 240 --restricted-fraction 0   # 24 held-out frames
"""
import argparse
import statistics
import tempfile
import time
from pathlib import Path

import ase.io

from relaxed_e3nn.train import train
from relaxed_e3nn.train._testing import emt_slab_md


def one_run(data: Path, out: Path, epochs: int, seed: int, restricted_fraction: float):
    config = {"data": {"train": str(data)}, "output_dir": str(out), "epochs": epochs, "seed": seed,
              "progress": False, "symmetry": {"restricted_fraction": restricted_fraction}}
    start = time.perf_counter()
    result = train(config)
    total = time.perf_counter() - start
    record = result.metrics["symmetry"]
    decision = record["time_s"]
    parent = next(c for c in record["decision"]["candidates"] if c["is_parent"])
    evidence = (f"parent {parent['group']} ΔL/L {parent['relative_excess']:+.3f} (≤ {parent['ucb']:.3f}), "
                f"{record['decision']['num_blocks']} blocks" + (", too few: parent kept untested"
                                                                 if record["decision"]["thin_evidence"] else ""))
    return total - decision, decision, record["decision"]["summary"], evidence


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=60, help="MD frames (default 60)")
    parser.add_argument("--epochs", type=int, default=100, help="training epochs (default: the config default, 100)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats (default 3)")
    parser.add_argument("--size", type=int, nargs=3, default=(3, 3, 3),
                        help="slab size in fcc(111) cells (default 3 3 3: 27 atoms)")
    parser.add_argument("--restricted-fraction", type=float, default=0.5,
                        help="symmetry.restricted_fraction (default 0.5, the config default; 0: off)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as root:
        data = Path(root) / "slab.xyz"
        ase.io.write(str(data), emt_slab_md(args.frames, seed=0, size=tuple(args.size)), format="extxyz")
        rows = []
        for k in range(args.repeats):
            train_s, decide_s, summary, evidence = one_run(data, Path(root) / f"run{k}", args.epochs, seed=k,
                                                           restricted_fraction=args.restricted_fraction)
            rows.append((train_s, decide_s))
            print(f"repeat {k}: training {train_s:.1f} s, validation {decide_s:.1f} s, "
                  f"ratio {(train_s + decide_s) / train_s:.3f}; {evidence}; {summary}", flush=True)
    train_s = statistics.median(r[0] for r in rows)
    decide_s = statistics.median(r[1] for r in rows)
    ratio = statistics.median((a + b) / a for a, b in rows)
    print(f"median over {args.repeats}: training {train_s:.1f} s, validation {decide_s:.1f} s, "
          f"(training + validation) / training = {ratio:.3f} (goal <= 1.25; {args.frames} frames of "
          f"{'x'.join(map(str, args.size))} slab cells, {args.epochs} epochs)")


if __name__ == "__main__":
    main()
