"""The training loop: set-up, epochs, early stopping, checkpoints and the final model.

Data preparation lives in :mod:`._data`, the output scale and energy shifts in
:mod:`._statistics`, the weight average in :mod:`._ema`, metrics in :mod:`._evaluation`, files
in :mod:`._outputs`, the result and the ``metrics.json`` schema in :mod:`._result`.
"""
import contextlib
import math
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from relaxed_e3nn._checks import dtype_from_name
from relaxed_e3nn._settings import check_known, renamed_keys
from relaxed_e3nn.data import collate
from relaxed_e3nn.models import (RelaxedNetwork, RelaxedNetworkConfig, build_host_potential, canonical_model_kind,
                                 host_model_section, model_from_dict, model_to_dict, save)
from relaxed_e3nn.nn.hosts import HOST_KINDS
from relaxed_e3nn.nn import make_optimizer
from relaxed_e3nn.symmetry import ThetaProjector
from relaxed_e3nn.train import _dynamics
from relaxed_e3nn.train._checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from relaxed_e3nn.train._config import DynamicsConfig, TrainConfig
from relaxed_e3nn.train import _symmetry
from relaxed_e3nn.train._data import (MIN_VALIDATION, apply_split, epoch_batches, load_sets, make_split,
                                      train_orbit_ids, training_targets)
from relaxed_e3nn.train._distributed import DistributedContext, setup_distributed
from relaxed_e3nn.train._ema import ExponentialMovingAverage
from relaxed_e3nn.train._evaluation import evaluate_sharded, metrics_by_config_type
from relaxed_e3nn.train._outputs import (config_type_table, epoch_summary, log, output_dir_lock, plot_history,
                                         progress_bar, write_config, write_history_csv, write_metrics)
from relaxed_e3nn.train._result import ENERGY_UNITS, TrainResult, metrics_summary
from relaxed_e3nn.train._statistics import atomic_energies_from_e0s, initialise_output, refit_atomic_energies
from relaxed_e3nn.train._targets import loss_from_sums, target_sums

__all__ = ["train", "CHECKPOINT_NAME", "MODEL_NAME"]

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"
# config keys that may change when a run is resumed
_RESUMABLE_CHANGES = ("resume", "epochs", "progress", "device", "patience", "output_dir", "max_time",
                      "symmetry.margin", "symmetry.finetune_steps")
# model state set by fits, not by the optimizer: not averaged by the EMA
_FITTED_STATE = ("atomic_energies", "scale")


def train(config: Union[TrainConfig, DynamicsConfig, Dict[str, Any]]) -> TrainResult:
    """Train a :class:`~relaxed_e3nn.models.RelaxedNetwork` as ``config`` describes.

    A relaxed model's symmetry breaking is validated after training (``symmetry.validate``, on by
    default; :mod:`relaxed_e3nn.train._symmetry`): a held-out selection split decides which
    breaking is real, the model is projected onto the validated group before the test metrics are
    computed and it is saved, and ``symmetry.json`` / ``symmetry.txt`` record the evidence.
    Structures of one orbit (``info["orbit_id"]``) stay together in every split and mini-batch.

    Writes ``output_dir/checkpoint.pt`` after every epoch (atomically), ``metrics.csv`` and
    ``metrics.json`` (:func:`~relaxed_e3nn.train.metrics_summary`: per-epoch history, best
    epoch, test metrics, units), ``loss_curve.png`` and the final model ``model.pt``
    (:func:`relaxed_e3nn.save`). Per-species energy shifts are fitted by per-atom least squares
    before training and refitted to the network after every epoch, so that they follow the
    network's own mean per-atom energy. With ``resume`` the run continues from the checkpoint
    and ends bitwise equal to an uninterrupted run on CPU. Under ``torchrun``
    (``WORLD_SIZE > 1``) each rank trains on its share of every global batch and only rank 0
    writes files.

    A config with ``task: box_dynamics`` (or a :class:`DynamicsConfig`) is handed, whole, to
    :func:`relaxed_e3nn.train.train_dynamics`.

    Parameters
    ----------
    config : TrainConfig, DynamicsConfig or dict

    Returns
    -------
    TrainResult
    """
    if isinstance(config, DynamicsConfig) or (isinstance(config, dict) and config.get("task") == "box_dynamics"):
        return _dynamics.train_dynamics(config)
    if isinstance(config, TrainConfig) and config.task == "box_dynamics":
        raise ValueError("config: a box_dynamics run takes a DynamicsConfig (or a mapping), not a TrainConfig")
    cfg = TrainConfig.from_dict(config)
    ctx = setup_distributed(cfg.device)
    try:
        with output_dir_lock(cfg.output_dir, enabled=ctx.is_main):  # a second run on output_dir fails
            return _Trainer(cfg, ctx).run()
    finally:
        ctx.close()


class _Trainer:
    def __init__(self, cfg: TrainConfig, ctx: DistributedContext):
        self.cfg = cfg
        self.ctx = ctx
        self.dtype = dtype_from_name(cfg.dtype)
        self.out = Path(cfg.output_dir)
        self.checkpoint_path = self.out / CHECKPOINT_NAME
        self.model_path = self.out / MODEL_NAME
        self.history: List[Dict[str, float]] = []
        self.best_val = math.inf
        self.best_epoch = 0
        self.best_state = None
        self.bad_epochs = 0
        self.stopped_early = False
        self.finished = False
        self.out_of_time = False  # max_time reached: stopped after an epoch, resumable
        self.start_time = time.perf_counter()

    # ------------------------------------------------------------------ set-up
    def run(self) -> TrainResult:
        cfg = self.cfg
        checkpoint = self._existing_checkpoint()
        _seed_everything(cfg.seed)
        model_dict = self._model_section()
        sets = load_sets(cfg, model_dict, self.dtype)
        self.spec = training_targets(cfg, model_dict, sets)
        self.fit_spec = self.spec.fitted()
        self.relaxed = bool(model_dict.get("relaxed", True))
        self.validating = self.relaxed and cfg.symmetry.validate
        n = len(sets.graphs["train"])
        self.split = checkpoint["split"] if checkpoint is not None else make_split(
            n, cfg.data, cfg.seed, orbit_ids=train_orbit_ids(sets, range(n)),
            selection_fraction=cfg.symmetry.fraction if self.validating else 0.0)
        self.train_set, self.val_set, self.test_set = apply_split(sets, self.split, cfg.data)
        self.sets = sets
        if 0 < len(self.val_set) < MIN_VALIDATION:
            warnings.warn(f"data: the validation set holds {len(self.val_set)} structures (fewer than "
                          f"{MIN_VALIDATION}); the best epoch and early stopping follow its noise. Raise "
                          f"data.val_fraction or give data.val", UserWarning, stacklevel=3)
        if not self.train_set:
            raise ValueError("data: the training set is empty after the split; add structures or lower "
                             "data.val_fraction / data.test_fraction")
        self.train_orbits = train_orbit_ids(sets, self.split["train"])
        self._prepare_symmetry(sets)
        # fitted shifts follow the network: fitted at the start, refitted after every epoch
        self.refit_shifts = (self.spec.output == "energy" and cfg.fit_atomic_energies and cfg.E0s is None
                             and model_dict.get("atomic_energies") is None and "energy" in self.spec.names)
        self.model = self._build_model(model_dict, checkpoint)
        self.restriction = self._restriction()
        # built once: a projector per optimizer step would rebuild the group's projectors every step
        self.imposer = ThetaProjector(self.model, self.imposed) if self.imposed is not None else None
        o = cfg.optim
        self.optimizer = make_optimizer(self.model, o.lr, name=o.name, weight_decay=o.weight_decay,
                                        theta_lr=o.theta_lr, theta_optimizer=o.theta_optimizer,
                                        theta_penalty=o.theta_penalty)
        self.scheduler = self._make_scheduler()
        self.ema = (ExponentialMovingAverage(self.model, cfg.ema_decay, exclude=_FITTED_STATE)
                    if cfg.ema_decay is not None else None)
        start_epoch = self._restore(checkpoint) if checkpoint is not None else 0
        self.train_counts = [self.fit_spec.count(g) for g in self.train_set]
        self._log(f"training on {len(self.train_set)} structures, validating on {len(self.val_set)}, "
                  f"testing on {len(self.test_set)}; {sum(p.numel() for p in self.model.parameters())} parameters"
                  + (f"; {self.ctx.world_size} ranks" if self.ctx.enabled else ""))
        epoch = start_epoch
        while epoch < cfg.epochs and not self.finished:
            self._train_epoch(epoch)
            epoch += 1
            if cfg.patience is not None and self.bad_epochs >= cfg.patience:
                self.stopped_early = True
                self.finished = True
            elapsed = time.perf_counter() - self.start_time
            if cfg.max_time is not None and not self.finished and epoch < cfg.epochs and elapsed >= cfg.max_time:
                self.out_of_time = True
                self._log(f"max_time {cfg.max_time:g} s reached after epoch {epoch}/{cfg.epochs} ({elapsed:.1f} s): "
                          f"stopping; the checkpoint is written, resume continues the run")
            self._write_progress(epoch)
            if self.out_of_time:
                break
        return self._finish()

    def _model_section(self) -> Dict[str, Any]:
        """The config's model section, checked before any data is read."""
        kind = canonical_model_kind(self.cfg.model.get("kind", "RelaxedNetwork"), "model.kind")
        if kind in HOST_KINDS:
            if self.cfg.strict:
                raise ValueError(f"strict: model.kind {kind!r} trains a relaxed host model; strict training "
                                 f"is available for model.kind 'RelaxedNetwork'")
            return host_model_section(kind, self.cfg.model)
        if kind != "RelaxedNetwork":
            raise ValueError(f"model.kind {kind!r} is a dynamics model: train it with task: dynamics (model: "
                             f"{kind.lower()}); model.kind takes 'RelaxedNetwork', {', '.join(map(repr, HOST_KINDS))}")
        section = {k: v for k, v in self.cfg.model.items() if k != "kind"}
        # the fitted values may still be given (then they are not fitted); deprecated names warn once here
        for key in section:
            check_known(key, RelaxedNetworkConfig.known_keys(), "config section 'model'")
        model_dict = renamed_keys(section, RelaxedNetworkConfig.RENAMES, "config section 'model'")
        if self.cfg.strict:
            model_dict["relaxed"] = False
        if model_dict.get("species") is not None or model_dict.get("atomic_energies") is None:
            # check types and values of the model section before reading any data
            RelaxedNetworkConfig.from_dict({**model_dict, "species": model_dict.get("species") or [1]})
        return model_dict

    def _build_model(self, model_dict: Dict[str, Any], checkpoint) -> torch.nn.Module:
        cfg = self.cfg
        if checkpoint is not None:
            model = model_from_dict(checkpoint["model"])
        else:
            fit_scale = cfg.fit_scale and "scale" not in cfg.model
            torch.manual_seed(cfg.seed)
            # built directly in the training dtype: e3nn's coupling constants are buffers computed at
            # build time, and a float32-built model cast to float64 is equivariant only to ~1e-10
            if model_dict.get("kind") in HOST_KINDS:
                model = build_host_potential(model_dict, self.dtype)
            else:
                model = RelaxedNetwork(RelaxedNetworkConfig.from_dict(model_dict), dtype=self.dtype)
            model = model.to(device=self.ctx.device)
            initialise_output(model, self.train_set, self.spec, fit_scale=fit_scale, fit_shifts=self.refit_shifts,
                              batch_size=self._eval_batch_size())
            if cfg.E0s is not None and self.spec.output == "energy":
                model.set_atomic_energies(atomic_energies_from_e0s(cfg.E0s, model.config.species))
            _symmetry.impose(model, self.imposed)
        model = model.to(device=self.ctx.device, dtype=self.dtype)
        self.ctx.broadcast_parameters_(model)
        return model

    def _existing_checkpoint(self):
        if not self.checkpoint_path.exists():
            return None
        if not self.cfg.resume:
            raise ValueError(
                f"output_dir {str(self.out)!r} already holds a checkpoint; pass --resume to continue "
                f"that run or choose another output_dir"
            )
        checkpoint = load_checkpoint(self.checkpoint_path)
        stored = _flatten(TrainConfig.from_dict(checkpoint["config"]).to_dict())  # keys added since: defaults
        current = _flatten(self.cfg.to_dict())
        changed = sorted(k for k in set(stored) | set(current)
                         if k.split(".")[0] not in _RESUMABLE_CHANGES and k not in _RESUMABLE_CHANGES
                         and stored.get(k) != current.get(k))
        if changed:
            raise ValueError(
                f"--resume: the config differs from the checkpoint's in {changed}; only "
                f"{list(_RESUMABLE_CHANGES)} may change when resuming"
            )
        return checkpoint

    def _prepare_symmetry(self, sets) -> None:
        """Resolve and check the parent group and the imposed group (relaxed models only)."""
        cfg = self.cfg.symmetry
        self.parent = self.imposed = None
        if not self.relaxed:
            return
        self.imposed = _symmetry.group_from_config(cfg.impose, "symmetry.impose")
        train_atoms = [sets.atoms["train"][i] for i in self.split["train"]]
        self.parent = _symmetry.resolve_parent(cfg.within, train_atoms, cfg.parent_tol)
        self._log(self.parent.summary())
        if self.imposed is not None:
            self._log(f"imposed symmetry {self.imposed.schoenflies}: θ projected onto its invariant subspace "
                      f"at initialisation and after every optimizer step")
        self.selection_set = [sets.graphs["train"][i] for i in self.split.get("selection", [])]
        self.selection_blocks = _symmetry.block_ids([a.info for a in sets.atoms["train"]],
                                                    self.split.get("selection", []), len(sets.atoms["train"]))

    def _restriction(self) -> Optional[ThetaProjector]:
        """The parent's projector for the restricted steps (``symmetry.restricted_fraction``), or None."""
        fraction = self.cfg.symmetry.restricted_fraction
        if not self.validating or self.imposed is not None or fraction == 0.0:
            return None
        self._log(f"{fraction:.0%} of the training steps train the {self.parent.group.schoenflies}-symmetric "
                  f"restriction of the model (θ projected for the step)")
        return ThetaProjector(self.model, self.parent.group)

    def _make_scheduler(self):
        o = self.cfg.optim
        if o.scheduler == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                self.optimizer, mode="min", factor=o.lr_factor, patience=o.lr_patience, min_lr=o.min_lr)
        if o.scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=self.cfg.epochs, eta_min=o.min_lr)
        return None

    def _restore(self, checkpoint) -> int:
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if self.scheduler is not None and checkpoint.get("scheduler") is not None:
            self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.ema is not None and checkpoint.get("ema") is not None:
            self.ema.load_state_dict(checkpoint["ema"], device=self.ctx.device)
        best = checkpoint.get("best") or {}
        self.best_val = float(best.get("val_loss", math.inf))
        self.best_epoch = int(best.get("epoch", 0))
        self.best_state = best.get("state")
        if self.best_state is not None:
            self.best_state = {k: v.to(self.ctx.device) for k, v in self.best_state.items()}
        self.bad_epochs = int(checkpoint.get("bad_epochs", 0))
        self.history = list(checkpoint["history"])
        self.stopped_early = bool(checkpoint.get("stopped_early", False))
        self.finished = bool(checkpoint.get("finished", False)) and self.stopped_early
        set_rng_state(checkpoint["rng"])
        self._log(f"resumed from {str(self.checkpoint_path)!r} after epoch {checkpoint['epoch']}")
        return int(checkpoint["epoch"])

    # ------------------------------------------------------------------ one epoch
    def _train_epoch(self, epoch: int) -> None:
        cfg = self.cfg
        start = time.perf_counter()
        train_loss = self._optimise_epoch(epoch)
        if self.refit_shifts:
            self._refit()
        with self._eval_weights():
            if self.refit_shifts and self.ema is not None:
                self._refit()  # the averaged weights have their own mean per-atom energy
            val_metrics = self._evaluate(self.val_set) if self.val_set else {}
            monitored = val_metrics.get("loss", train_loss)
            if monitored < self.best_val:
                self.best_val = monitored
                self.best_epoch = epoch + 1
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self.bad_epochs = 0
            else:
                self.bad_epochs += 1
        lr = float(self.optimizer.param_groups[0]["lr"])
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(monitored)
        elif self.scheduler is not None:
            self.scheduler.step()
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss}
        row.update({f"val_{k}": v for k, v in val_metrics.items()})
        row["time_s"] = time.perf_counter() - start
        self.history.append(row)
        self._log(epoch_summary(row, cfg.epochs, self.spec.names, self.spec.output))

    def _optimise_epoch(self, epoch: int) -> float:
        """One pass over the training set in the order of :func:`epoch_permutation`; the mean step loss."""
        cfg, ctx = self.cfg, self.ctx
        self.model.train()
        batches = epoch_batches(self.train_orbits, cfg.batch_size, cfg.seed, epoch)
        bar = progress_bar(len(batches), f"epoch {epoch + 1}/{cfg.epochs}", self._show_progress())
        loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
        fraction = cfg.symmetry.restricted_fraction if self.restriction is not None else 0.0
        restricted = _symmetry.restricted_steps(len(batches), fraction, cfg.seed, epoch)
        for batch, restrict in zip(batches, restricted):
            counts = _add_counts(self.train_counts[i] for i in batch)
            mine = batch[ctx.rank::ctx.world_size]
            self.optimizer.zero_grad(set_to_none=True)
            if mine:
                with self.restriction.restricted() if restrict else contextlib.nullcontext():
                    loss = self._batch_loss([self.train_set[i] for i in mine], counts)
                    loss.backward()
                step_loss = loss.detach().to(torch.float64).reshape(())
            else:
                step_loss = torch.zeros((), dtype=torch.float64, device=ctx.device)
            ctx.sum_gradients_(self.model.parameters())
            step_loss = ctx.all_reduce_(step_loss.clone())
            if cfg.optim.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.grad_clip)
            self.optimizer.step()
            if self.imposer is not None:
                self.imposer.apply_()  # projected update: θ stays in V_H
            if self.ema is not None:
                self.ema.update(self.model)
            loss_sum += step_loss
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(step_loss):.4g}")
        if bar is not None:
            bar.close()
        train_loss = float(loss_sum) / len(batches)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"epoch {epoch + 1}: the training loss is {train_loss}; lower optim.lr "
                                     f"or set optim.grad_clip")
        return train_loss

    def _batch_loss(self, graphs, counts) -> torch.Tensor:
        spec = self.fit_spec
        batch = collate(graphs).to(device=self.ctx.device)
        output = self.model(batch, compute_forces=spec.compute_forces, compute_stress=spec.compute_stress)
        return loss_from_sums(spec, target_sums(spec, output, batch), counts)

    def _refit(self) -> None:
        refit_atomic_energies(self.model, self.train_set, self.ctx, self._eval_batch_size())

    def _evaluate(self, graphs) -> Dict[str, float]:
        return evaluate_sharded(self.model, graphs, self.spec, self._eval_batch_size(), self.ctx)

    def _eval_batch_size(self) -> int:
        return self.cfg.eval_batch_size or self.cfg.batch_size

    def _eval_weights(self):
        if self.ema is None:
            return contextlib.nullcontext()
        return self.ema.swapped(self.model)

    def _show_progress(self) -> bool:
        if not self.ctx.is_main:
            return False
        if self.cfg.progress == "auto":
            return sys.stderr.isatty()
        return bool(self.cfg.progress)

    def _log(self, message: str) -> None:
        log(message, show=self.ctx.is_main)

    # ------------------------------------------------------------------ files
    def _write_progress(self, epoch: int) -> None:
        """Metrics, then the checkpoint (the checkpoint is the commit point of the epoch)."""
        if self.ctx.is_main:
            self._write_metrics(test=None)
            state = {
                "config": self.cfg.to_dict(),
                "model": model_to_dict(self.model),
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
                "epoch": epoch,
                "rng": rng_state(),
                "ema": self.ema.state_dict() if self.ema is not None else None,
                "best": {"val_loss": self.best_val, "epoch": self.best_epoch, "state": self.best_state},
                "bad_epochs": self.bad_epochs,
                "stopped_early": self.stopped_early,
                "finished": self.finished,
                "split": self.split,
                "history": self.history,
            }
            save_checkpoint(self.checkpoint_path, state)
        self.ctx.barrier()

    def _summary(self, test, model_path=None, symmetry=None, by_type=None) -> Dict[str, Any]:
        units = ENERGY_UNITS if self.spec.output == "energy" else {}
        extra = {} if model_path is None else {"model": str(model_path)}  # "model": schema-1 name of model_path
        if symmetry is not None:
            extra["symmetry"] = symmetry
        if by_type:
            extra["by_config_type"] = by_type
        if self.out_of_time:
            extra["stopped_by_max_time"] = True
        return metrics_summary(task=self.spec.output, history=self.history, best_epoch=self.best_epoch,
                               best_val_loss=self.best_val, stopped_early=self.stopped_early, test=test,
                               units=units, model_path=model_path, **extra)

    def _write_metrics(self, test, model_path=None, symmetry=None, by_type=None) -> Dict[str, Any]:
        summary = self._summary(test, model_path, symmetry, by_type)
        write_history_csv(self.out / "metrics.csv", self.history)
        write_metrics(self.out / "metrics.json", summary)
        return summary

    def _finish(self) -> TrainResult:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        elif self.ema is not None:
            self.ema.copy_to(self.model)
        self.model.eval()
        record = self._decide_symmetry() if self.relaxed else None
        test_metrics = self._evaluate(self.test_set) if self.test_set else None
        by_type = self._errors_by_config_type()
        summary = self._summary(test_metrics, self.model_path, record, by_type)
        metadata = {**(getattr(self.model, "metadata", None) or {}), "data_keys": self._data_keys()}
        if record is not None:
            metadata["symmetry"] = record
        self.model.metadata = metadata
        if self.ctx.is_main:
            save(self.model, self.model_path)
            self._write_metrics(test_metrics, self.model_path, record, by_type)
            plot_history(self.history, self.out / "loss_curve.png", summary["units"])
            write_config(self.out / "config.yaml", self.cfg.to_dict())
        self.ctx.barrier()
        result = TrainResult(model=self.model, history=self.history, best_epoch=self.best_epoch,
                             best_val_loss=self.best_val, test_metrics=test_metrics,
                             stopped_early=self.stopped_early, output_dir=self.out,
                             model_path=self.model_path, checkpoint_path=self.checkpoint_path, metrics=summary)
        if by_type:
            self._log(config_type_table(by_type, summary["units"]))
        return result  # its summary_lines() (test metrics in meV) are printed by the command line

    def _data_keys(self) -> Dict[str, Any]:
        """The data keys the model was trained on, stored with it for ``evaluate`` / ``predict``."""
        d = self.cfg.data
        return {"energy": d.energy_key, "forces": d.forces_key, "stress": d.stress_key,
                "node_targets": list(d.node_targets), "graph_targets": list(d.graph_targets)}

    def _errors_by_config_type(self) -> Dict[str, Dict[str, float]]:
        """Test (else validation) metrics per ``info["config_type"]``; empty when no structure has one."""
        part = "test" if self.test_set else "val"
        graphs = self.test_set if self.test_set else self.val_set
        if not graphs:
            return {}
        d = self.cfg.data
        atoms = (self.sets.atoms[part] if getattr(d, part) is not None
                 else [self.sets.atoms["train"][i] for i in self.split[part]])
        types = [a.info.get("config_type") for a in atoms]
        if all(t is None for t in types):
            return {}
        return metrics_by_config_type(self.model, graphs, types, self.spec, self._eval_batch_size(), self.ctx)


    def _decide_symmetry(self) -> Dict[str, Any]:
        """Validated breaking on the selection split, then the projection (see ``_symmetry``); the record."""
        cfg = self.cfg.symmetry
        decision, test_before, note, elapsed = None, None, None, None
        if self.validating and not self.selection_set:
            note = "validation skipped: the selection split is empty"
        elif self.validating:
            start = time.perf_counter()
            if self.test_set:
                test_before = self._evaluate(self.test_set)
            o = self.cfg.optim
            ratio = _symmetry.FINETUNE_LR_FACTOR * float(self.optimizer.param_groups[0]["lr"]) / o.lr

            def factory(model):
                return make_optimizer(model, o.lr * ratio, name=o.name, weight_decay=o.weight_decay,
                                      theta_lr=None if o.theta_lr is None else o.theta_lr * ratio,
                                      theta_optimizer=o.theta_optimizer, theta_penalty=o.theta_penalty)

            batches = [[self.train_set[i] for i in b]
                       for b in epoch_batches(self.train_orbits, self.cfg.batch_size, self.cfg.seed, self.cfg.epochs)]
            decision, messages = _symmetry.validate_trained(
                self.model, spec=self.fit_spec, train_batches=batches, heldout=self.selection_set,
                blocks=self.selection_blocks, parent=self.imposed or self.parent.group, margin=cfg.margin,
                finetune_steps=_symmetry.finetune_budget(cfg.finetune_steps, len(self.history) * len(batches)),
                optimizer_factory=factory,
                eval_batch_size=self._eval_batch_size(), device=self.ctx.device, seed=self.cfg.seed,
                min_blocks=cfg.min_blocks)
            decision.apply(self.model)
            elapsed = time.perf_counter() - start
            for message in messages:
                self._log(f"warning: {message}")
            self._log(decision.summary())
            self._log(decision.table())
        record = _symmetry.symmetry_record(self.parent, model=self.model, decision=decision, imposed=self.imposed,
                                           test_before=test_before, note=note, time_s=elapsed)
        if self.ctx.is_main and (decision is not None or self.imposed is not None):
            _symmetry.write_symmetry_files(self.out, record,
                                           _symmetry.symmetry_text(self.parent, decision, self.imposed, note))
        return record


def _add_counts(rows) -> Dict[str, int]:
    total: Dict[str, int] = {}
    for row in rows:
        for k, v in row.items():
            total[k] = total.get(k, 0) + v
    return total


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k in ("data", "optim", "model", "loss", "symmetry"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out
