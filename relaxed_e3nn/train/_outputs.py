"""What a run writes and prints: metrics (CSV, JSON), the loss-curve plot, the config, progress lines.

Every file is written atomically (:func:`relaxed_e3nn._atomic.atomic_write`). A run holds its
output directory with :func:`output_dir_lock` so that a second run on it fails at once.
"""
import contextlib
import csv
import errno
import io
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Union

try:
    import fcntl
except ImportError:  # not a POSIX system: runs are not locked
    fcntl = None

import yaml
from matplotlib.figure import Figure
from tqdm import tqdm

from relaxed_e3nn._atomic import atomic_write
from relaxed_e3nn.train._result import ENERGY_UNITS, display_value, metric_unit, to_display_units

__all__ = ["output_dir_lock", "OutputDirectoryBusy", "LOCK_NAME", "write_metrics", "write_history_csv", "write_config", "plot_history", "log", "progress_bar",
           "epoch_summary", "config_type_table"]

LOCK_NAME = ".lock"


class OutputDirectoryBusy(OSError):
    """Another run holds the output directory's lock (``filename`` is the directory)."""

    def __str__(self) -> str:
        return f"{self.strerror} ({self.filename})"


@contextlib.contextmanager
def output_dir_lock(directory: Optional[Union[str, os.PathLike]], enabled: bool = True) -> Iterator[None]:
    """Hold ``directory/.lock`` (``fcntl.flock``, exclusive, non-blocking) for the body.

    The lock belongs to the open file, so the kernel releases it when the process ends in any
    way (``kill -9`` included): a killed run is continued with ``resume`` at once. On a normal
    or failing exit the lock file is removed, and the directory too when this call created it
    and nothing else was written. The lock file holds the holder's process id.

    Parameters
    ----------
    directory : str, os.PathLike or None
        The run's output directory (created if needed); ``None`` locks nothing.
    enabled : bool
        ``False`` locks nothing (the ranks other than 0 of a data-parallel run).

    Raises
    ------
    OutputDirectoryBusy
        Another process holds the lock.
    """
    if directory is None or not enabled or fcntl is None:
        yield
        return
    directory = Path(directory)
    created = not directory.exists()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_NAME
    fd = _acquire(path, directory)
    try:
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # before the unlock: a run waiting on this inode sees it is gone
        os.close(fd)
        if created:
            with contextlib.suppress(OSError):
                directory.rmdir()  # only when empty


def _acquire(path: Path, directory: Path) -> int:
    """Open, lock and return ``path``'s descriptor; retried while the locked file is not the one at ``path``."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip()
            os.close(fd)
            raise OutputDirectoryBusy(
                errno.EBUSY, f"output_dir is in use: another run{f' (process {holder})' if holder else ''} "
                f"holds its lock {LOCK_NAME}; wait for it to end or choose another output_dir",
                str(directory)) from None
        try:
            current = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:  # the lock file holds a pid for the message above, written in place (not data)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            return fd
        os.close(fd)  # the holder removed the file between our open and our lock: take the new one


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


def plot_history(history: List[Dict[str, float]], path: Path, units: Optional[Dict[str, str]] = None) -> None:
    """The loss curve as PNG: the training and validation loss, and each target's validation MAE.

    Left: ``train_loss`` and ``val_loss`` per epoch; right: every ``val_<target>_mae`` (its unit
    from ``units`` in the legend), so that a term that stalls while the total falls shows. Log
    scales where every value is positive. Drawn on a bare :class:`~matplotlib.figure.Figure`
    (no pyplot, no backend switch).
    """
    if not history:
        return
    units = units or {}
    terms = [k for k in history[-1] if k.startswith("val_") and k.endswith("_mae")]
    fig = Figure(figsize=(9 if terms else 5, 3.5))
    ax = fig.add_subplot(1, 2 if terms else 1, 1)
    epochs = [row["epoch"] for row in history]
    _plot_lines(ax, epochs, history, [("train_loss", "train"), ("val_loss", "validation")], "loss")
    if terms:
        labels = [(k, f"{k[4:-4]} ({metric_unit(k, units)})" if metric_unit(k, units) else k[4:-4]) for k in terms]
        _plot_lines(fig.add_subplot(1, 2, 2), epochs, history, labels, "validation MAE")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())


def _plot_lines(ax, epochs, history, keys, ylabel) -> None:
    values = []
    for key, label in keys:
        if any(key in row for row in history):
            column = [row.get(key, float("nan")) for row in history]
            ax.plot(epochs, column, label=label)
            values.extend(v for v in column if v == v)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    if values and all(v > 0 for v in values):
        ax.set_yscale("log")
    ax.legend(fontsize="small")


def epoch_summary(row: Dict[str, float], epochs: int, target_names: List[str], output: str) -> str:
    """The one-line log of an epoch: losses, the main validation errors (meV units) and the learning rate."""
    summary = f"epoch {row['epoch']}/{epochs} train_loss {row['train_loss']:.5g}"
    if "val_loss" in row:
        summary += f" val_loss {row['val_loss']:.5g}"
    units = ENERGY_UNITS if output == "energy" else {}
    for key in ("val_energy_mae", "val_forces_mae"):
        if key in row:
            summary += f" {key} {display_value(row[key], metric_unit(key, units))}"
    for name in target_names:
        if output != "energy" and f"val_{name}_mae" in row:
            summary += f" val_{name}_mae {row[f'val_{name}_mae']:.5g}"
    return summary + f" lr {row['lr']:.3g}"


def config_type_table(by_type: Dict[str, Dict[str, float]], units: Dict[str, str]) -> str:
    """Errors per ``info["config_type"]`` as a text table (MAE columns, eV-based units in meV)."""
    columns = [k for k in next(iter(by_type.values())) if k.endswith("_mae")]
    header = ["config_type", "count"]
    for key in columns:
        unit = to_display_units(0.0, metric_unit(key, units))[1]
        header.append(f"{key} [{unit}]" if unit else key)
    rows = [[kind, str(int(values["count"]))]
            + [f"{to_display_units(values[k], metric_unit(k, units))[0]:.4g}" for k in columns]
            for kind, values in by_type.items()]
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    lines = ["errors by config_type:", "  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def log(message: str, show: bool = True) -> None:
    """Print a line to stdout without breaking an active progress bar."""
    if show:
        tqdm.write(message, file=sys.stdout)


def progress_bar(total: int, desc: str, show: bool) -> Optional[tqdm]:
    """A tqdm bar on stderr, or ``None`` when not shown."""
    if not show:
        return None
    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)

