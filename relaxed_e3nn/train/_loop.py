"""The training loop: data, split, energy shifts, optimisation, checkpoints, metrics, final model."""
import contextlib
import csv
import dataclasses
import io
import json
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import torch

from relaxed_e3nn._atomic import atomic_write
from relaxed_e3nn.train._checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from relaxed_e3nn.train._config import DEFAULT_LOSS_WEIGHTS, TrainConfig, _check_known, _field_names
from relaxed_e3nn.train._distributed import DistributedContext, setup_distributed
from relaxed_e3nn.train._inference import _model_device
from relaxed_e3nn.train._sources import read_atoms
from relaxed_e3nn.train._targets import (TargetSpec, loss_from_sums, metrics_from_sums, sum_counts,
                                         target_sums)

__all__ = ["train", "evaluate", "TrainResult", "epoch_permutation", "fit_atomic_energies"]

CHECKPOINT_NAME = "checkpoint.pt"
MODEL_NAME = "model.pt"
# config keys that may change when a run is resumed
_RESUMABLE_CHANGES = ("resume", "epochs", "progress", "device", "patience", "output_dir")


@dataclass
class TrainResult:
    """What :func:`train` returns.

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
    output_dir : pathlib.Path
    model_path, checkpoint_path : pathlib.Path
    """

    model: torch.nn.Module
    history: List[Dict[str, float]]
    best_epoch: int
    best_val_loss: float
    test_metrics: Optional[Dict[str, float]]
    stopped_early: bool
    output_dir: Path
    model_path: Path
    checkpoint_path: Path


# ---------------------------------------------------------------------- public helpers
def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Order of the training structures in ``epoch``: a function of ``(seed, epoch)`` only."""
    generator = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2**63))
    return torch.randperm(n, generator=generator)


def fit_atomic_energies(graphs: Sequence, species: Sequence[int]) -> List[float]:
    r"""Per-species energy shifts :math:`E^0_Z` by least squares, :math:`E_b \approx \sum_Z n_{bZ} E^0_Z`.

    Parameters
    ----------
    graphs : sequence of AtomicGraph
        Structures with ``graph_targets["energy"]``.
    species : sequence of int
        Atomic numbers, the order of the result.

    Returns
    -------
    list of float
        One shift per species (minimum-norm solution when the composition matrix is rank
        deficient, e.g. every structure has the same stoichiometry).
    """
    index = {int(z): k for k, z in enumerate(species)}
    counts = np.zeros((len(graphs), len(species)))
    energies = np.zeros(len(graphs))
    for row, graph in enumerate(graphs):
        for z in graph.atomic_numbers.tolist():
            counts[row, index[int(z)]] += 1
        energies[row] = float(graph.graph_targets["energy"].reshape(-1)[0])
    solution, *_ = np.linalg.lstsq(counts, energies, rcond=None)
    return [float(e) for e in solution]


# ---------------------------------------------------------------------- train
def train(config: Union[TrainConfig, Dict[str, Any]]) -> Union[TrainResult, Dict[str, Any]]:
    """Train a :class:`~relaxed_e3nn.models.RelaxedNetwork` as ``config`` describes.

    Writes ``output_dir/checkpoint.pt`` after every epoch (atomically), ``metrics.csv`` and
    ``metrics.json`` (per-epoch history, best epoch, test metrics), ``loss_curve.png`` and the
    final model ``model.pt`` (:func:`relaxed_e3nn.save`). Fitted per-species energy shifts
    (``fit_atomic_energies``) are refitted by least squares to the network after every epoch, so
    that they follow the network's own mean per-atom energy. With ``resume`` the run continues
    from the checkpoint and ends bitwise equal to an uninterrupted run on CPU. Under
    ``torchrun`` (``WORLD_SIZE > 1``) each rank trains on its share of every global batch and
    only rank 0 writes files.

    A config with ``task: box_dynamics`` is handed, whole, to
    :func:`relaxed_e3nn.train.train_dynamics` and its result returned.

    Parameters
    ----------
    config : TrainConfig or dict

    Returns
    -------
    TrainResult
    """
    if isinstance(config, TrainConfig):
        task = config.task
    else:
        task = config.get("task") if isinstance(config, dict) else None
    if task == "box_dynamics":
        from relaxed_e3nn.train._dynamics import train_dynamics

        return train_dynamics(config.to_dict() if isinstance(config, TrainConfig) else config)
    cfg = TrainConfig.from_dict(config)
    ctx = setup_distributed(cfg.device)
    try:
        return _Trainer(cfg, ctx).run()
    finally:
        ctx.close()


class _Trainer:
    def __init__(self, cfg: TrainConfig, ctx: DistributedContext):
        self.cfg = cfg
        self.ctx = ctx
        self.dtype = getattr(torch, cfg.dtype)
        self.out = Path(cfg.output_dir)
        self.checkpoint_path = self.out / CHECKPOINT_NAME
        self.model_path = self.out / MODEL_NAME

    # ------------------------------------------------------------------ set-up
    def run(self) -> TrainResult:
        cfg = self.cfg
        checkpoint = self._existing_checkpoint()
        _seed_everything(cfg.seed)
        from relaxed_e3nn.models import RelaxedNetwork, RelaxedNetworkConfig, model_from_dict

        model_dict = dict(cfg.model)
        known = _field_names(RelaxedNetworkConfig)
        for key in model_dict:
            _check_known(key, known, "config section 'model'")
        if cfg.strict:
            model_dict["relaxed"] = False
        if model_dict.get("species") is not None or model_dict.get("atomic_energies") is None:
            # check types and values of the model section before reading any data
            RelaxedNetworkConfig.from_dict({**model_dict, "species": model_dict.get("species") or [1]})

        sets = self._load_data(model_dict)
        spec = self._target_spec(model_dict, sets)
        self.spec = spec
        split = checkpoint["split"] if checkpoint is not None else self._split(sets)
        self.train_set, self.val_set, self.test_set = self._apply_split(sets, split)
        if not self.train_set:
            raise ValueError("data: the training set is empty after the split; add structures or lower "
                             "data.val_fraction / data.test_fraction")

        # fitted shifts follow the network: fitted at the start, refitted after every epoch
        self.refit_shifts = (spec.output == "energy" and cfg.fit_atomic_energies
                             and model_dict.get("atomic_energies") is None and "energy" in spec.names)
        if checkpoint is not None:
            model = model_from_dict(checkpoint["model"])
        else:
            fit_scale = cfg.fit_scale and "scale" not in cfg.model
            if fit_scale:
                model_dict["scale"] = 1.0
            torch.manual_seed(cfg.seed)
            # built directly in the training dtype: e3nn's coupling constants are buffers computed at
            # build time, and a float32-built model cast to float64 is equivariant only to ~1e-10
            model = RelaxedNetwork(RelaxedNetworkConfig.from_dict(model_dict), dtype=self.dtype)
            model = model.to(device=self.ctx.device)
            _initialise_output(model, self.train_set, spec, fit_scale=fit_scale, fit_shifts=self.refit_shifts)
        model = model.to(device=self.ctx.device, dtype=self.dtype)
        self.ctx.broadcast_parameters_(model)
        self.model = model

        from relaxed_e3nn.nn import make_optimizer

        o = cfg.optim
        self.optimizer = make_optimizer(model, o.lr, name=o.name, weight_decay=o.weight_decay,
                                        theta_lr=o.theta_lr, theta_optimizer=o.theta_optimizer,
                                        theta_penalty=o.theta_penalty)
        self.scheduler = self._make_scheduler()
        self.ema = _EMA(model, cfg.ema_decay) if cfg.ema_decay is not None else None

        self.history: List[Dict[str, float]] = []
        self.best_val = math.inf
        self.best_epoch = 0
        self.best_state = None
        self.bad_epochs = 0
        self.stopped_early = False
        self.finished = False
        start_epoch = 0
        if checkpoint is not None:
            start_epoch = self._restore(checkpoint)
        self.split = split
        self.train_counts = [spec.count(g) for g in self.train_set]
        self._log(f"training on {len(self.train_set)} structures, validating on {len(self.val_set)}, "
                  f"testing on {len(self.test_set)}; {sum(p.numel() for p in model.parameters())} parameters"
                  + (f"; {self.ctx.world_size} ranks" if self.ctx.enabled else ""))

        epoch = start_epoch
        while epoch < cfg.epochs and not self.finished:
            self._train_epoch(epoch)
            epoch += 1
            if cfg.patience is not None and self.bad_epochs >= cfg.patience:
                self.stopped_early = True
                self.finished = True
            self._write_progress(epoch)
        return self._finish(epoch)

    def _existing_checkpoint(self):
        if not self.checkpoint_path.exists():
            return None
        if not self.cfg.resume:
            raise ValueError(
                f"output_dir {str(self.out)!r} already holds a checkpoint; pass --resume to continue "
                f"that run or choose another output_dir"
            )
        checkpoint = load_checkpoint(self.checkpoint_path)
        stored = _flatten(checkpoint["config"])
        current = _flatten(self.cfg.to_dict())
        changed = sorted(k for k in set(stored) | set(current)
                         if k.split(".")[0] not in _RESUMABLE_CHANGES and stored.get(k) != current.get(k))
        if changed:
            raise ValueError(
                f"--resume: the config differs from the checkpoint's in {changed}; only "
                f"{list(_RESUMABLE_CHANGES)} may change when resuming"
            )
        return checkpoint

    def _load_data(self, model_dict) -> Dict[str, list]:
        from relaxed_e3nn.data import from_ase

        cfg, d = self.cfg, self.cfg.data
        raw = {}
        for name in ("train", "val", "test"):
            source = getattr(d, name)
            raw[name] = [] if source is None else read_atoms(source, format=d.format, index=d.index,
                                                              where=f"data.{name}")
            if source is not None and not raw[name]:
                raise ValueError(f"data.{name}: the source holds no structures")
        present = sorted({int(z) for items in raw.values() for atoms, _ in items for z in atoms.numbers})
        if "species" not in model_dict or model_dict["species"] is None:
            model_dict["species"] = present
        unknown = sorted(set(present) - set(model_dict["species"]))
        if unknown:
            raise ValueError(f"data: species {unknown} occur in the data but not in model.species "
                             f"{model_dict['species']}")
        cutoff = float(model_dict.get("cutoff", 5.0))
        model_dict.setdefault("cutoff", cutoff)
        output = model_dict.get("output", "energy")
        if output == "energy" and (d.node_targets or d.graph_targets):
            raise ValueError("data.node_targets / data.graph_targets need model.output 'node' / 'graph'; "
                             "an energy model fits energy, forces and stress")
        if output == "node" and (not d.node_targets or d.graph_targets):
            raise ValueError("model.output 'node' needs data.node_targets (and no data.graph_targets)")
        if output == "graph" and (not d.graph_targets or d.node_targets):
            raise ValueError("model.output 'graph' needs data.graph_targets (and no data.node_targets)")
        features = list((model_dict.get("node_features") or {}).keys())
        sets = {}
        for name, items in raw.items():
            graphs = []
            for atoms, origin in items:
                try:
                    graph = from_ase(atoms, cutoff, node_features=features, node_targets=d.node_targets,
                                     graph_targets=d.graph_targets, energy_key=d.energy_key,
                                     forces_key=d.forces_key, stress_key=d.stress_key, dtype=self.dtype)
                except (ValueError, TypeError) as err:
                    raise ValueError(f"data.{name}: {origin}: {err}") from None
                graph.origin = origin
                graphs.append(graph)
            sets[name] = graphs
        return sets

    def _target_spec(self, model_dict, sets) -> TargetSpec:
        cfg, d = self.cfg, self.cfg.data
        output = model_dict.get("output", "energy")
        every = [g for graphs in sets.values() for g in graphs]
        if output == "energy":
            names = []
            for name in ("energy", "forces", "stress"):
                holder = "node_targets" if name == "forces" else "graph_targets"
                relevant = [g for g in every if name != "stress" or bool(g.pbc.any())]
                have = all(name in getattr(g, holder) for g in relevant) and relevant
                if cfg.loss_weight(name) > 0:
                    if not relevant:
                        raise ValueError(f"loss.{name} > 0 but no structure is periodic; set loss.stress: 0")
                    missing = [g.origin for g in relevant if name not in getattr(g, holder)]
                    if missing:
                        key = getattr(d, f"{name}_key")
                        raise ValueError(
                            f"data: {len(missing)} structures have no {name} (e.g. {missing[:3]}); "
                            + (f"data.{name}_key is {key!r}" if key else
                               f"set data.{name}_key to the name it is stored under, or loss.{name}: 0")
                        )
                    names.append(name)
                elif have and name != "stress":
                    names.append(name)  # reported, not fitted
            if not any(cfg.loss_weight(n) > 0 for n in names):
                raise ValueError("loss: every loss weight of the energy model is zero")
            keep_graph = {"energy", "stress"} & set(names)
            keep_node = {"forces"} & set(names)
            widths = {}
        else:
            names = list(d.node_targets if output == "node" else d.graph_targets)
            keep_node = set(d.node_targets)
            keep_graph = set(d.graph_targets)
            widths = {}
            for name in names:
                for g in every:
                    source = g.node_targets if output == "node" else g.graph_targets
                    rows = g.num_nodes if output == "node" else 1
                    width = source[name].numel() // max(rows, 1)
                    if widths.setdefault(name, width) != width:
                        raise ValueError(f"data: target {name!r} has {width} components in {g.origin} but "
                                         f"{widths[name]} elsewhere")
            from e3nn import o3

            total = o3.Irreps(model_dict.get("irreps_out")).dim if model_dict.get("irreps_out") else None
            if total is not None and total != sum(widths.values()):
                raise ValueError(f"model.irreps_out has dimension {total} but the targets {names} have "
                                 f"{sum(widths.values())} components together ({widths})")
        for graphs in sets.values():
            for g in graphs:
                g.node_targets = {k: v for k, v in g.node_targets.items() if k in keep_node}
                g.graph_targets = {k: v for k, v in g.graph_targets.items() if k in keep_graph}
        weights = {name: cfg.loss_weight(name) for name in names}
        return TargetSpec(output=output, names=names, weights=weights, widths=widths)

    def _split(self, sets) -> Dict[str, List[int]]:
        d = self.cfg.data
        n = len(sets["train"])
        if n == 0:
            raise ValueError("data.train holds no structures")
        order = np.random.default_rng(self.cfg.seed).permutation(n).tolist()
        n_val = 0 if d.val is not None else int(round(d.val_fraction * n))
        n_test = 0 if d.test is not None else int(round(d.test_fraction * n))
        if d.val is None and d.val_fraction > 0:
            n_val = max(1, n_val)
        if d.test is None and d.test_fraction > 0:
            n_test = max(1, n_test)
        if n_val + n_test >= n:
            raise ValueError(f"data: {n} structures are too few to hold out {n_val} for validation and "
                             f"{n_test} for testing")
        return {"n": n, "val": sorted(order[:n_val]), "test": sorted(order[n_val:n_val + n_test]),
                "train": sorted(order[n_val + n_test:])}

    def _apply_split(self, sets, split):
        if split["n"] != len(sets["train"]):
            raise ValueError(f"--resume: data.train now holds {len(sets['train'])} structures, the checkpoint's "
                             f"split was made for {split['n']}")
        pick = lambda idx: [sets["train"][i] for i in idx]  # noqa: E731
        val = sets["val"] if self.cfg.data.val is not None else pick(split["val"])
        test = sets["test"] if self.cfg.data.test is not None else pick(split["test"])
        return pick(split["train"]), val, test

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
        cfg, ctx, spec = self.cfg, self.ctx, self.spec
        self.model.train()
        order = epoch_permutation(len(self.train_set), cfg.seed, epoch).tolist()
        batches = [order[i:i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
        bar = _progress(len(batches), f"epoch {epoch + 1}/{cfg.epochs}", self._show_progress())
        start = time.perf_counter()
        loss_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
        for batch in batches:
            counts = _add_counts(self.train_counts[i] for i in batch)
            mine = batch[ctx.rank::ctx.world_size]
            self.optimizer.zero_grad(set_to_none=True)
            if mine:
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

        if self.refit_shifts:
            self._refit_shifts()
        with self._eval_weights():
            if self.refit_shifts and self.ema is not None:
                self._refit_shifts()  # the averaged weights have their own mean per-atom energy
                self.ema.shadow["atomic_energies"].copy_(self.model.atomic_energies.detach())
            val_metrics = _evaluate_sharded(self.model, self.val_set, spec, self._eval_batch_size(), ctx) \
                if self.val_set else {}
            monitored = val_metrics.get("loss", train_loss)
            if monitored < self.best_val:
                self.best_val = monitored
                self.best_epoch = epoch + 1
                self.best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
                self.bad_epochs = 0
            else:
                self.bad_epochs += 1
        _sync_shift_config(self.model)  # the swap back to the raw weights restored their shifts
        lr = float(self.optimizer.param_groups[0]["lr"])
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step(monitored)
        elif self.scheduler is not None:
            self.scheduler.step()
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss}
        row.update({f"val_{k}": v for k, v in val_metrics.items()})
        row["time_s"] = time.perf_counter() - start
        self.history.append(row)
        summary = f"epoch {epoch + 1}/{cfg.epochs} train_loss {train_loss:.5g}"
        for key in ("val_loss", "val_energy_mae", "val_forces_mae"):
            if key in row:
                summary += f" {key} {row[key]:.5g}"
        for name in spec.names:
            if spec.output != "energy" and f"val_{name}_mae" in row:
                summary += f" val_{name}_mae {row[f'val_{name}_mae']:.5g}"
        self._log(summary + f" lr {lr:.3g}")

    @torch.no_grad()
    def _refit_shifts(self) -> None:
        r"""Set the per-species shifts to the least-squares fit for the current network weights.

        The shifts enter only the energy term of the loss, where they are linear, so this is the
        exact minimiser of the training loss over them (the other weights fixed): the loss
        cannot increase. Without it the shifts stay at their initial fit while the network's own
        mean per-atom output moves as the forces are fitted (by about 1 eV/atom in the first few
        steps of the EMT copper example), and the network has no per-atom constant of its own to
        move it back: a nearly constant per-atom energy error that training does not remove.
        Each rank evaluates its share of the training set; the normal equations are summed.
        """
        from relaxed_e3nn.data import collate

        ctx, model = self.ctx, self.model
        species = list(model.config.species)
        shifts = model.atomic_energies.detach().double().cpu()
        normal = torch.zeros(len(species), len(species) + 1, dtype=torch.float64)
        mine = list(range(len(self.train_set)))[ctx.rank::ctx.world_size]
        size = self._eval_batch_size()
        was_training = model.training
        model.eval()
        try:
            for start in range(0, len(mine), size):
                batch = collate([self.train_set[i] for i in mine[start:start + size]]).to(device=ctx.device)
                counts = _composition(batch, species)
                n_atoms = counts.sum(dim=1)
                network = model(batch)["energy"].detach().double().cpu() - counts @ shifts
                energies = batch.graph_targets["energy"].reshape(-1).detach().double().cpu()
                normal += _shift_normal_equations(counts, energies - network, n_atoms)
        finally:
            model.train(was_training)
        normal = ctx.all_reduce_(normal.to(ctx.device)).cpu()
        model.set_atomic_energies(_solve_shifts(normal))

    def _batch_loss(self, graphs, counts) -> torch.Tensor:
        from relaxed_e3nn.data import collate

        batch = collate(graphs).to(device=self.ctx.device)
        output = self.model(batch, compute_forces=self.spec.compute_forces, compute_stress=self.spec.compute_stress)
        return loss_from_sums(self.spec, target_sums(self.spec, output, batch), counts)

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
        if self.ctx.is_main:
            from tqdm import tqdm

            tqdm.write(message, file=sys.stdout)

    # ------------------------------------------------------------------ files
    def _write_progress(self, epoch: int) -> None:
        """Metrics, then the checkpoint (the checkpoint is the commit point of the epoch)."""
        if self.ctx.is_main:
            self._write_metrics()
            from relaxed_e3nn.models import model_to_dict

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

    def _write_metrics(self, extra: Optional[Dict[str, Any]] = None) -> None:
        keys: List[str] = []
        for row in self.history:
            keys.extend(k for k in row if k not in keys)
        with atomic_write(self.out / "metrics.csv", "w") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            for row in self.history:
                writer.writerow(row)
        summary = {"history": self.history, "best_epoch": self.best_epoch,
                   "best_val_loss": self.best_val if math.isfinite(self.best_val) else None,
                   "stopped_early": self.stopped_early}
        if extra:
            summary.update(extra)
        with atomic_write(self.out / "metrics.json", "w") as handle:
            json.dump(summary, handle, indent=2)

    def _finish(self, epoch: int) -> TrainResult:
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        elif self.ema is not None:
            self.ema.copy_to(self.model)
        _sync_shift_config(self.model)
        self.model.eval()
        test_metrics = None
        if self.test_set:
            test_metrics = _evaluate_sharded(self.model, self.test_set, self.spec, self._eval_batch_size(), self.ctx)
            self._log("test " + " ".join(f"{k} {v:.5g}" for k, v in test_metrics.items()))
        if self.ctx.is_main:
            import relaxed_e3nn

            relaxed_e3nn.save(self.model, self.model_path)
            self._write_metrics({"test": test_metrics, "model": str(self.model_path)})
            _plot_history(self.history, self.out / "loss_curve.png")
            with atomic_write(self.out / "config.yaml", "w") as handle:
                import yaml

                yaml.safe_dump(self.cfg.to_dict(), handle, sort_keys=False)
        self.ctx.barrier()
        return TrainResult(model=self.model, history=self.history, best_epoch=self.best_epoch,
                           best_val_loss=self.best_val, test_metrics=test_metrics,
                           stopped_early=self.stopped_early, output_dir=self.out,
                           model_path=self.model_path, checkpoint_path=self.checkpoint_path)


# ---------------------------------------------------------------------- evaluation
def evaluate(model: torch.nn.Module, graphs: Sequence, *, batch_size: int = 16,
             loss_weights: Optional[Dict[str, float]] = None,
             node_targets: Sequence[str] = (), graph_targets: Sequence[str] = ()) -> Dict[str, float]:
    """Errors of ``model`` on labelled structures: MAE and RMSE per target and the weighted loss.

    Parameters
    ----------
    model : RelaxedNetwork
        Its ``config.output`` decides the targets: ``energy`` compares energies (per atom,
        ``energy_mae``; per structure, ``energy_total_mae``), forces and (periodic) stress,
        whichever every structure carries; ``node``/``graph`` compares ``node_targets`` /
        ``graph_targets``, concatenated in order.
    graphs : sequence of AtomicGraph
    batch_size : int
    loss_weights : dict, optional
        Weights of the ``loss`` entry (defaults as in :class:`TrainConfig`).
    """
    if len(graphs) == 0:
        raise ValueError("evaluate: graphs is empty")
    if batch_size < 1:
        raise ValueError(f"evaluate: batch_size must be >= 1, got {batch_size}")
    output = getattr(getattr(model, "config", None), "output", "energy")
    weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
    if output == "energy":
        names = []
        for name, holder in (("energy", "graph_targets"), ("forces", "node_targets"), ("stress", "graph_targets")):
            relevant = [g for g in graphs if name != "stress" or bool(g.pbc.any())]
            if relevant and all(name in getattr(g, holder) for g in relevant):
                names.append(name)
        if not names:
            raise ValueError("evaluate: the structures carry no energies, forces or stresses to compare with")
        widths = {}
    else:
        names = list(node_targets if output == "node" else graph_targets)
        if not names:
            raise ValueError(f"evaluate: a model with output {output!r} needs "
                             f"{'node_targets' if output == 'node' else 'graph_targets'}")
        g = graphs[0]
        source = g.node_targets if output == "node" else g.graph_targets
        rows = g.num_nodes if output == "node" else 1
        widths = {}
        for name in names:
            if name not in source:
                raise ValueError(f"evaluate: target {name!r} is missing from the structures")
            widths[name] = source[name].numel() // rows
    spec = TargetSpec(output=output, names=names, weights={n: weights.get(n, 1.0) for n in names}, widths=widths)
    keep_node = {"forces"} | set(node_targets)
    keep_graph = {"energy", "stress"} | set(graph_targets)
    pruned = []
    for g in graphs:
        g = dataclasses.replace(g, node_targets={k: v for k, v in g.node_targets.items() if k in keep_node and k in names},
                                graph_targets={k: v for k, v in g.graph_targets.items() if k in keep_graph and k in names})
        pruned.append(g)
    return _evaluate_sharded(model, pruned, spec, batch_size, DistributedContext(device=_model_device(model)))


def _evaluate_sharded(model, graphs, spec: TargetSpec, batch_size: int, ctx: DistributedContext) -> Dict[str, float]:
    from relaxed_e3nn.data import collate

    was_training = model.training
    model.eval()
    names = list(spec.names) + (["energy_total"] if "energy" in spec.names else [])
    totals = torch.zeros(len(names), 2, dtype=torch.float64, device=ctx.device)
    mine = list(range(len(graphs)))[ctx.rank::ctx.world_size]
    try:
        for start in range(0, len(mine), batch_size):
            batch = collate([graphs[i] for i in mine[start:start + batch_size]]).to(device=ctx.device)
            with torch.enable_grad() if spec.compute_forces or spec.compute_stress else torch.no_grad():
                output = model(batch, compute_forces=spec.compute_forces, compute_stress=spec.compute_stress)
            sums = target_sums(spec, {k: v.detach() for k, v in output.items()}, batch)
            for row, name in enumerate(names):
                totals[row, 0] += sums[name]["sq"].detach().to(torch.float64)
                totals[row, 1] += sums[name]["abs"].detach().to(torch.float64)
    finally:
        model.train(was_training)
    ctx.all_reduce_(totals)
    counts = sum_counts(spec, graphs)
    as_dict = {name: {"sq": float(totals[row, 0]), "abs": float(totals[row, 1])} for row, name in enumerate(names)}
    return metrics_from_sums(spec, as_dict, counts)


# ---------------------------------------------------------------------- small pieces
class _EMA:
    """Exponential moving average of the floating-point parameters and buffers."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = float(decay)
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.detach(), 1.0 - self.decay)

    def state_dict(self):
        return {"decay": self.decay, "shadow": self.shadow}

    def load_state_dict(self, state, device=None):
        self.decay = float(state["decay"])
        self.shadow = {k: v.to(device).clone() for k, v in state["shadow"].items()}

    @torch.no_grad()
    def copy_to(self, model):
        state = model.state_dict()
        for k, v in self.shadow.items():
            state[k].copy_(v)

    @contextlib.contextmanager
    def swapped(self, model):
        """Run the body with the averaged weights in ``model``; its own weights are restored after."""
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                state = model.state_dict()
                for k, v in saved.items():
                    state[k].copy_(v)


def _add_counts(rows) -> Dict[str, int]:
    total: Dict[str, int] = {}
    for row in rows:
        for k, v in row.items():
            total[k] = total.get(k, 0) + v
    return total


def _progress(total: int, desc: str, show: bool):
    if not show:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def _initialise_output(model, graphs, spec: TargetSpec, *, fit_scale: bool, fit_shifts: bool,
                       max_structures: int = 64) -> None:
    r"""Data-dependent start: output ``scale`` and per-species energy shifts from the training set.

    With the untrained network's outputs :math:`\varepsilon` (scale 1, no shifts) on up to
    ``max_structures`` training structures, the scale :math:`s` makes the initial predictions
    as large as the targets (RMS force component over RMS predicted force component for an
    energy model with forces; RMS target over RMS output for node / graph models; the spread of
    per-atom energies for an energy-only fit; the network's own size clamped to [0.1, 10] so
    that outputs vanishing by symmetry are not amplified). Without ``fit_scale`` the model's
    own scale is kept. The shifts :math:`E^0_Z` are then the fit of the per-atom residual
    (:func:`_shift_normal_equations`), :math:`(E_b - s\,\varepsilon_b)/N_b \approx \sum_Z n_{bZ} E^0_Z / N_b`,
    so training starts near the data instead of several eV per atom away from it.
    """
    from relaxed_e3nn.data import collate

    if not (fit_scale or fit_shifts):
        return
    species = list(model.config.species)
    if fit_shifts:
        model.set_atomic_energies([0.0] * len(species))
    kept_scale = float(model.scale)
    if fit_scale:
        model.set_scale(1.0)
    sample = list(graphs[:max_structures])
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        batch = collate(sample).to(device=device)
        with torch.enable_grad() if spec.compute_forces else torch.no_grad():
            out = model(batch, compute_forces=spec.compute_forces)
    finally:
        model.train(was_training)
    out = {k: v.detach().double() for k, v in out.items()}
    n_atoms = torch.bincount(batch.batch, minlength=batch.num_graphs).double()
    evaluated_at = float(model.scale)  # the scale already inside ``out``
    scale = kept_scale
    if fit_scale:
        if spec.output == "energy" and "forces" in spec.names:
            target, raw = _rms(batch.node_targets["forces"]), _rms(out["forces"])
        elif spec.output == "energy":
            per_atom = batch.graph_targets["energy"].reshape(-1).double() / n_atoms
            target = float(per_atom.std()) if len(sample) > 1 else 0.0
            raw = float((out["energy"] / n_atoms).std()) if len(sample) > 1 else 0.0
        else:
            source = batch.node_targets if spec.output == "node" else batch.graph_targets
            target = _rms(torch.cat([source[n].reshape(len(source[n]), -1).double() for n in spec.names], dim=1))
            raw = _rms(out["node_output" if spec.output == "node" else "graph_output"])
        # the raw size is clamped to [0.1, 10]: an output that vanishes by symmetry (a strict
        # model on centrosymmetric inputs, zero forces of a perfect crystal) must not be blown up
        if math.isfinite(target) and target > 0 and math.isfinite(raw):
            scale = target / min(max(raw, 0.1), 10.0)
        model.set_scale(scale)
    if fit_shifts:
        # ``out`` holds the network energy at ``evaluated_at``; the model now runs at ``scale``
        network = out["energy"] if scale == evaluated_at else out["energy"] * (scale / evaluated_at)
        energies = batch.graph_targets["energy"].reshape(-1).double()
        normal = _shift_normal_equations(_composition(batch, species), energies - network, n_atoms)
        model.set_atomic_energies(_solve_shifts(normal))


def _composition(batch, species: Sequence[int]) -> torch.Tensor:
    """``[B, S]`` float64 counts :math:`n_{bZ}` of each species in each structure of ``batch``."""
    index = torch.full((max(int(z) for z in species) + 1,), -1, dtype=torch.long)
    index[torch.tensor([int(z) for z in species])] = torch.arange(len(species))
    z = batch.atomic_numbers.detach().cpu().long()
    column = index[z]
    counts = torch.zeros(batch.num_graphs, len(species), dtype=torch.float64)
    counts.index_put_((batch.batch.detach().cpu().long(), column), torch.ones(len(z), dtype=torch.float64),
                      accumulate=True)
    return counts


def _shift_normal_equations(counts: torch.Tensor, residual: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
    r"""Normal equations of the per-atom shift fit, ``[S, S + 1]`` = :math:`[A^\top A \mid A^\top y]`.

    Rows :math:`A_b = n_{b\cdot}/N_b` and :math:`y_b = r_b / N_b` (residual energy per atom), so
    the fit minimises :math:`\sum_b \big((r_b - \sum_Z n_{bZ} E^0_Z)/N_b\big)^2`, the energy
    term of the training loss. Normal equations add up over batches and ranks.
    """
    counts = counts.detach().cpu().double()
    n_atoms = n_atoms.detach().cpu().double()
    rows = counts / n_atoms[:, None]
    y = residual.detach().cpu().double() / n_atoms
    return torch.cat([rows.T @ rows, (rows.T @ y)[:, None]], dim=1)


def _solve_shifts(normal: torch.Tensor) -> List[float]:
    """Minimum-norm solution of the normal equations of :func:`_shift_normal_equations`."""
    normal = normal.detach().cpu().double().numpy()
    gram, rhs = normal[:, :-1], normal[:, -1]
    # lstsq on the Gram matrix gives pinv(A^T A) A^T y = pinv(A) y, also when A is rank deficient
    # (every structure with the same stoichiometry)
    solution, *_ = np.linalg.lstsq(gram, rhs, rcond=1e-12)
    return [float(e) for e in solution]


def _sync_shift_config(model) -> None:
    """Make ``model.config.atomic_energies`` match the buffer after a state was loaded into it."""
    if getattr(getattr(model, "config", None), "output", None) == "energy" and hasattr(model, "atomic_energies"):
        model.set_atomic_energies(model.atomic_energies.detach().cpu().double().tolist())


def _rms(tensor: torch.Tensor) -> float:
    return float(tensor.double().pow(2).mean().sqrt())


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _flatten(d: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v and k in ("data", "optim", "model", "loss"):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def _plot_history(history: List[Dict[str, float]], path: Path) -> None:
    """Training and validation loss per epoch (log scale), written atomically as PNG."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

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
