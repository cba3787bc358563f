"""What the training examples share: their command line and the write-config-then-train step.

``train_crystals.py`` and ``train_molecules.py`` differ only in their data and their model
settings; both take ``--out``, ``--epochs``, a data-size option and ``--quick``, write the
config they train with next to the run (so ``relaxed-e3nn train <that file>`` repeats it) and
start afresh each time.
"""
import argparse
import shutil
import time
from pathlib import Path

import yaml

from relaxed_e3nn.train import train

__all__ = ["example_arguments", "model_settings", "train_from_config"]


def example_arguments(description: str, output_dir: str, size_option: str, size: int, quick_size: int):
    """Parse ``--out``, ``--epochs``, ``--<size_option>`` and ``--quick`` (2 epochs, ``quick_size``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--out", default=output_dir)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument(f"--{size_option}", type=int, default=size)
    parser.add_argument("--quick", action="store_true", help="a tiny run (seconds) to check that it works")
    args = parser.parse_args()
    if args.quick:
        args.epochs = 2
        setattr(args, size_option, quick_size)
    args.out = Path(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    return args


def model_settings(num_neighbors: float) -> dict:
    """The small two-layer relaxed network both examples train."""
    return {"cutoff": 4.5, "num_layers": 2, "irreps_hidden": "16x0e+8x1o+8x1e", "lmax": 2,
            "irreps_relaxed": 2, "radial_neurons": 16, "num_neighbors": num_neighbors}


def train_from_config(config: dict, config_path: Path):
    """Write ``config`` to ``config_path``, clear its ``output_dir`` and train; returns the result."""
    with open(config_path, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)
    shutil.rmtree(config["output_dir"], ignore_errors=True)  # the example starts afresh each time
    start = time.perf_counter()
    result = train(config)
    print(f"training: {time.perf_counter() - start:.1f} s, best epoch {result.best_epoch}")
    return result
