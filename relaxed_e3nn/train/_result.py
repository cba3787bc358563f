"""What a training run returns and writes: :class:`TrainResult` and the ``metrics.json`` schema."""
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch

__all__ = ["TrainResult", "metrics_summary", "METRICS_SCHEMA_VERSION", "ENERGY_UNITS", "DYNAMICS_UNITS",
           "display_value", "metric_unit", "to_display_units"]

#: version of the ``metrics.json`` layout written by :func:`metrics_summary`
METRICS_SCHEMA_VERSION = 2
#: units of the metrics of an energy model (ase's units)
ENERGY_UNITS = {"energy": "eV/atom", "energy_total": "eV", "forces": "eV/Å", "stress": "eV/Å³"}
#: units of the metrics of a box-dynamics model (the simulator's length unit)
DYNAMICS_UNITS = {"positions": "length", "mse": "length²"}



def metric_unit(key: str, units: Dict[str, str]) -> Optional[str]:
    """The unit of a metric (``val_forces_mae`` -> the unit of ``forces``), ``None`` when unknown."""
    for prefix in ("val_", "test_"):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    for suffix in ("_mae", "_rmse"):
        if key.endswith(suffix):
            key = key[: -len(suffix)]
            break
    return units.get(key)


def to_display_units(value: float, unit: Optional[str]) -> Tuple[float, Optional[str]]:
    """``(value, unit)`` as printed: eV-based units in meV (``0.0123, "eV/Å"`` -> ``12.3, "meV/Å"``)."""
    if unit is not None and unit.startswith("eV"):
        return 1e3 * value, "m" + unit
    return value, unit


def display_value(value: float, unit: Optional[str]) -> str:
    """A metric as printed (:func:`to_display_units`; files keep eV): ``"12.3 meV/Å"``."""
    number, shown = to_display_units(value, unit)
    return f"{number:.4g} {shown}" if shown else f"{number:.6g}"


def metrics_summary(*, task: str, history: List[Dict[str, float]], best_epoch: int, best_val_loss: float,
                    stopped_early: bool, test: Optional[Dict[str, float]], units: Dict[str, str],
                    model_path: Optional[Path] = None, **extra: Any) -> Dict[str, Any]:
    """The content of ``metrics.json`` (schema version 2), the one place that lays it out.

    Parameters
    ----------
    task : str
        ``"energy"``, ``"node"`` or ``"graph"`` (a RelaxedNetwork's output) or ``"box_dynamics"``.
    history : list of dict
        One row per epoch: ``epoch`` (1-based), ``lr``, ``train_loss``, ``val_loss``, ``val_*``
        metrics and ``time_s``.
    best_epoch : int
        1-based epoch of the best validation loss (0 before the first epoch).
    best_val_loss : float
        Written as ``null`` when not finite.
    stopped_early : bool
    test : dict or None
        Metrics of the final model on the test set (``None`` without one, or before the end).
    units : dict of str to str
        Unit of each target's metrics (MAE and RMSE share the target's unit).
    model_path : path, optional
        The written final model.
    **extra
        Task-specific top-level entries (for box dynamics ``test_mse``, ``val_mse``, ``group``...).

    Returns
    -------
    dict
        ``schema_version``, ``task``, ``units``, ``history``, ``best_epoch``, ``best_val_loss``,
        ``stopped_early``, ``test``, ``model_path``, then ``extra``.
    """
    summary = {
        "schema_version": METRICS_SCHEMA_VERSION,
        "task": task,
        "units": dict(units),
        "history": history,
        "best_epoch": int(best_epoch),
        "best_val_loss": float(best_val_loss) if math.isfinite(best_val_loss) else None,
        "stopped_early": bool(stopped_early),
        "test": test,
        "model_path": None if model_path is None else str(model_path),
    }
    summary.update(extra)
    return summary


@dataclass
class TrainResult:
    """What :func:`~relaxed_e3nn.train.train` and :func:`~relaxed_e3nn.train.train_dynamics` return.

    ``result[key]`` reads ``result.metrics[key]`` (the ``metrics.json`` entries, e.g.
    ``result["test_mse"]`` of a box-dynamics run).

    Attributes
    ----------
    model : torch.nn.Module
        The final model (best validation weights, EMA-averaged when ``ema_decay`` is set).
    history : list of dict
        One row of metrics per epoch (``epoch``, ``lr``, ``train_loss``, ``val_loss``, ``val_*``).
    best_epoch : int
        Epoch (1-based) of the best validation loss.
    best_val_loss : float
    test_metrics : dict or None
        Metrics of the final model on the test set (``None`` without a test set).
    stopped_early : bool
    output_dir : pathlib.Path or None
    model_path : pathlib.Path or None
        The written final model (``None`` when nothing was written).
    checkpoint_path : pathlib.Path or None
    metrics : dict
        The run's :func:`metrics_summary` (what ``metrics.json`` holds).
    """

    model: torch.nn.Module
    history: List[Dict[str, float]]
    best_epoch: int
    best_val_loss: float
    test_metrics: Optional[Dict[str, float]]
    stopped_early: bool
    output_dir: Optional[Path]
    model_path: Optional[Path]
    checkpoint_path: Optional[Path] = None
    metrics: Dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        return self.metrics[key]

    def summary_lines(self) -> List[str]:
        """Human-readable lines: each test metric (eV-based units printed in meV), the best epoch and
        where the model went."""
        units = self.metrics.get("units", {})
        lines = []
        for key, value in (self.test_metrics or {}).items():
            lines.append(f"test_{key}: {display_value(value, metric_unit(key, units))}")
        lines.append(f"best epoch {self.best_epoch} (validation loss {self.best_val_loss:.6g})")
        if self.model_path is not None:
            lines.append(f"model written to {self.model_path}")
        return lines
