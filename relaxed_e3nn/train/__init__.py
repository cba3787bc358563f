"""Training: configs, the training loop, checkpoints, evaluation and data parallelism.

``train(config)`` fits a :class:`~relaxed_e3nn.models.RelaxedNetwork` to energies, forces,
stresses or per-atom / per-graph targets read from files or generators, writes atomic
checkpoints that a killed run resumes from bit for bit, per-epoch metrics, a loss curve and
the final model. ``train_dynamics(config)`` (also ``train`` with ``task: box_dynamics``) fits
DEGNN / EGNN models to box dynamics. Both return a :class:`TrainResult` and write
``metrics.json`` laid out by :func:`metrics_summary`. ``relaxed-e3nn train CONFIG.yaml`` is the
command-line front end; under ``torchrun --nproc_per_node N -m relaxed_e3nn train ...`` it
trains data-parallel.

Modules: ``_loop`` (the loop), ``_data`` (reading, targets, split), ``_statistics`` (output
scale, energy shifts), ``_ema``, ``_evaluation``, ``_outputs`` (files, logs), ``_result``,
``_config``, ``_checkpoint``, ``_distributed``, ``_dynamics``, ``_inference``, ``_sources``.
"""
from relaxed_e3nn.train._checkpoint import load_checkpoint, save_checkpoint
from relaxed_e3nn.train._config import DataConfig, DynamicsConfig, OptimConfig, TrainConfig, load_config
from relaxed_e3nn.train._data import epoch_permutation
from relaxed_e3nn.train._dynamics import DYNAMICS_DEFAULTS, build_dynamics_model, train_dynamics
from relaxed_e3nn.train._ema import ExponentialMovingAverage
from relaxed_e3nn.train._evaluation import evaluate
from relaxed_e3nn.train._inference import graphs_for_model, predict, stored_data_keys
from relaxed_e3nn.train._loop import train
from relaxed_e3nn.train._result import METRICS_SCHEMA_VERSION, TrainResult, metrics_summary
from relaxed_e3nn.train._sources import SIDECAR_FRAMES, frame_rotation, read_atoms
from relaxed_e3nn.train._statistics import fit_atomic_energies
from relaxed_e3nn.train._targets import TargetSpec, select_targets

__all__ = [
    "TrainConfig",
    "DataConfig",
    "OptimConfig",
    "DynamicsConfig",
    "load_config",
    "train",
    "train_dynamics",
    "build_dynamics_model",
    "TrainResult",
    "metrics_summary",
    "METRICS_SCHEMA_VERSION",
    "evaluate",
    "select_targets",
    "TargetSpec",
    "predict",
    "graphs_for_model",
    "stored_data_keys",
    "load_checkpoint",
    "save_checkpoint",
    "read_atoms",
    "frame_rotation",
    "SIDECAR_FRAMES",
    "fit_atomic_energies",
    "epoch_permutation",
    "ExponentialMovingAverage",
    "DYNAMICS_DEFAULTS",
]
