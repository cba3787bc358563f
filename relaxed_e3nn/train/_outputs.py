"""What a run writes and prints: metrics (CSV, JSON), the loss-curve plot, the config, progress lines.

Every file is written atomically (:func:`relaxed_e3nn._atomic.atomic_write`).
"""
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml
from matplotlib.figure import Figure
from tqdm import tqdm

from relaxed_e3nn._atomic import atomic_write

__all__ = ["write_metrics", "write_history_csv", "write_config", "plot_history", "log", "progress_bar",
           "epoch_summary"]


def write_history_csv(path: Path, history: List[Dict[str, float]]) -> None:
    """One row per epoch; the columns are every key seen, in first-seen order."""
    keys: List[str] = []
    for row in history:
        keys.extend(k for k in row if k not in keys)
    with atomic_write(path, "w") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        for row in history:
            writer.writerow(row)


def write_metrics(path: Path, summary: Dict[str, Any]) -> None:
    """``metrics.json``: a :func:`relaxed_e3nn.train.metrics_summary` (non-JSON numbers as floats)."""
    with atomic_write(path, "w") as handle:
        json.dump(summary, handle, indent=2, default=float)


def write_config(path: Path, config: Dict[str, Any]) -> None:
    """The resolved config as YAML (what a rerun takes)."""
    with atomic_write(path, "w") as handle:
        yaml.safe_dump(config, handle, sort_keys=False)


def plot_history(history: List[Dict[str, float]], path: Path) -> None:
    """Training and validation loss per epoch (log scale when positive), written as PNG.

    Drawn on a bare :class:`~matplotlib.figure.Figure` (no pyplot, no backend switch).
    """
    if not history:
        return
    fig = Figure(figsize=(5, 3.5))
    ax = fig.add_subplot(1, 1, 1)
    epochs = [row["epoch"] for row in history]
    ax.plot(epochs, [row["train_loss"] for row in history], label="train")
    if any("val_loss" in row for row in history):
        ax.plot(epochs, [row.get("val_loss", float("nan")) for row in history], label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if all(row["train_loss"] > 0 for row in history):
        ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())


def epoch_summary(row: Dict[str, float], epochs: int, target_names: List[str], output: str) -> str:
    """The one-line log of an epoch: losses, the main validation errors and the learning rate."""
    summary = f"epoch {row['epoch']}/{epochs} train_loss {row['train_loss']:.5g}"
    for key in ("val_loss", "val_energy_mae", "val_forces_mae"):
        if key in row:
            summary += f" {key} {row[key]:.5g}"
    for name in target_names:
        if output != "energy" and f"val_{name}_mae" in row:
            summary += f" val_{name}_mae {row[f'val_{name}_mae']:.5g}"
    return summary + f" lr {row['lr']:.3g}"


def log(message: str, show: bool = True) -> None:
    """Print a line to stdout without breaking an active progress bar."""
    if show:
        tqdm.write(message, file=sys.stdout)


def progress_bar(total: int, desc: str, show: bool) -> Optional[tqdm]:
    """A tqdm bar on stderr, or ``None`` when not shown."""
    if not show:
        return None
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)

