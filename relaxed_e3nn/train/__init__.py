"""Training: configs, the training loop, checkpoints, evaluation and data parallelism.

``train(config)`` fits a :class:`~relaxed_e3nn.models.RelaxedNetwork` to energies, forces,
stresses or per-atom / per-graph targets read from files or generators, writes atomic
checkpoints that a killed run resumes from bit for bit, per-epoch metrics, a loss curve and
the final model. ``relaxed-e3nn train CONFIG.yaml`` is the command-line front end; under
``torchrun --nproc_per_node N -m relaxed_e3nn train ...`` it trains data-parallel.
"""
from relaxed_e3nn.train._checkpoint import load_checkpoint, save_checkpoint
from relaxed_e3nn.train._dynamics import DYNAMICS_DEFAULTS, train_dynamics
from relaxed_e3nn.train._config import DataConfig, OptimConfig, TrainConfig, load_config
from relaxed_e3nn.train._inference import graphs_for_model, predict
from relaxed_e3nn.train._loop import TrainResult, epoch_permutation, evaluate, fit_atomic_energies, train
from relaxed_e3nn.train._sources import read_atoms

__all__ = [
    "TrainConfig",
    "DataConfig",
    "OptimConfig",
    "load_config",
    "train",
    "TrainResult",
    "evaluate",
    "predict",
    "graphs_for_model",
    "load_checkpoint",
    "save_checkpoint",
    "read_atoms",
    "fit_atomic_energies",
    "epoch_permutation",
    "train_dynamics",
    "DYNAMICS_DEFAULTS",
]
