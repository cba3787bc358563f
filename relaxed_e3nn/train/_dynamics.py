r"""Train ``DEGNN`` / ``EGNN`` on box dynamics (``relaxed-e3nn train`` with ``task: box_dynamics``).

**Model selection that one outlier cannot derail.** After every epoch each validation sample
gets its mean squared error :math:`e_s`; the run keeps the epoch with the lowest *trimmed* score

.. math::
    \mathrm{score} = \frac{1}{S - k} \sum_{s \le S - k} e_{(s)}, \qquad k = \max(1, \lfloor f S \rfloor),

the mean over the validation samples without the ``k`` largest errors (``trim_fraction`` f,
default 2%). A single sample with a close encounter can carry almost all of the plain MSE (it
did: 99.5% at one epoch); it moves the trimmed score by at most ``1 / (S - k)`` of its own share
of the rest. ``selection: mse`` keeps the plain rule. ``patience`` counts epochs without a
better score. The full validation MSE is still reported per epoch (``val_mse``) and at the kept
epoch (``best_val_loss``), and a ``UserWarning`` says when the largest 1% of the per-sample
errors (at least one) carry more than half of the validation MSE at the kept epoch (with at
least 10 validation samples).
"""
import copy
import math
import time
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np
import torch

from relaxed_e3nn._checks import dtype_from_name
from relaxed_e3nn.data.generators import BoxDynamicsData, box_nbody, box_nbody_preset
from relaxed_e3nn.discrete import DEGNN, EGNN, fully_connected_batch
from relaxed_e3nn.groups import point_group
from relaxed_e3nn.models import save
from relaxed_e3nn.train._checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from relaxed_e3nn.train._config import DynamicsConfig
from relaxed_e3nn.train._outputs import output_dir_lock, write_metrics
from relaxed_e3nn.train._result import DYNAMICS_UNITS, TrainResult, metrics_summary

__all__ = ["train_dynamics", "build_dynamics_model", "load_dynamics_splits", "DYNAMICS_DEFAULTS",
           "trimmed_mean", "dominant_share"]

#: the defaults of :class:`DynamicsConfig` as a dict (kept for older callers)
DYNAMICS_DEFAULTS: Dict[str, Any] = DynamicsConfig().to_dict()
#: config keys that may change when a run is resumed
_RESUMABLE_CHANGES = ("resume", "epochs", "patience", "output_dir")
#: share of the validation MSE held by the largest 1% of the per-sample errors that triggers a warning
DOMINANCE_WARNING = 0.5


class _Tensors:
    """A split of ``BoxDynamicsData`` as tensors of one dtype (node scalars: charges, then masses if given)."""

    def __init__(self, data: BoxDynamicsData, dtype):
        self.pos = torch.as_tensor(data.positions, dtype=dtype)
        self.vel = torch.as_tensor(data.velocities, dtype=dtype)
        scalars = [data.charges] + ([] if data.masses is None else [data.masses])
        self.attr = torch.as_tensor(np.stack(scalars, axis=-1), dtype=dtype)
        self.target = torch.as_tensor(data.targets, dtype=dtype)

    def __len__(self):
        return self.pos.shape[0]


def _predict(model, split: _Tensors, index, edge_cache):
    b, n = len(index), split.pos.shape[1]
    if b not in edge_cache:
        edge_cache[b] = fully_connected_batch(b, n)
    edge_src, edge_dst, batch = edge_cache[b]
    out = model(
        split.pos[index].reshape(-1, 3),
        split.vel[index].reshape(-1, 3),
        split.attr[index].reshape(b * n, -1),
        edge_src,
        edge_dst,
        batch=batch,
    )
    return out.view(b, n, 3)


def _sample_errors(model, split: _Tensors, batch_size: int, edge_cache) -> torch.Tensor:
    """Per-sample mean squared error ``(S,)`` (float64) of the predicted target positions."""
    model.eval()
    errors = []
    with torch.no_grad():
        for start in range(0, len(split), batch_size):
            index = torch.arange(start, min(len(split), start + batch_size))
            pred = _predict(model, split, index, edge_cache)
            errors.append(((pred - split.target[index]) ** 2).to(torch.float64).mean((1, 2)))
    model.train()
    return torch.cat(errors)


def _evaluate(model, split: _Tensors, batch_size: int, edge_cache) -> float:
    """Mean squared error of the predicted target positions over ``split``."""
    return float(_sample_errors(model, split, batch_size, edge_cache).mean())


def trimmed_mean(errors: torch.Tensor, fraction: float) -> float:
    """Mean of ``errors`` without the ``max(1, floor(fraction * S))`` largest (plain mean if ``fraction`` is 0)."""
    if fraction <= 0 or errors.numel() < 2:
        return float(errors.mean())
    drop = max(1, int(math.floor(fraction * errors.numel())))
    return float(torch.sort(errors).values[: errors.numel() - drop].mean())


def dominant_share(errors: torch.Tensor) -> float:
    """Share of ``sum(errors)`` held by its largest 1% (at least one) of entries."""
    total = float(errors.sum())
    if not total > 0:
        return 0.0
    top = max(1, int(math.ceil(0.01 * errors.numel())))
    return float(torch.sort(errors, descending=True).values[:top].sum()) / total


def build_dynamics_model(cfg: Union[DynamicsConfig, Dict[str, Any]], data: BoxDynamicsData):
    """The model a config asks for and its group's name.

    ``group: auto`` takes the box's group in the box frame; ``baseline: auto`` is ``"reflected"``
    for DEGNN and ``"free_flight"`` for EGNN, with the data's ``target_time`` as time step.

    Raises
    ------
    ValueError
        A baseline is asked for and the data have no ``dt``; a reflected baseline with a group
        that does not map the box onto itself.
    """
    cfg = DynamicsConfig.from_dict(cfg)
    center = torch.as_tensor(data.center, dtype=torch.get_default_dtype())
    baseline = cfg.baseline if cfg.baseline != "auto" else ("free_flight" if cfg.model == "egnn" else "reflected")
    if baseline != "none" and data.target_time is None:
        raise ValueError(f"data: the {baseline!r} baseline needs the time from input to target (the npz key 'dt'); "
                         f"give it, or set baseline: none")
    node_attr_dim = 1 if data.masses is None else 2
    options = dict(baseline=baseline, time_step=data.target_time if baseline != "none" else None,
                   half_widths=[float(w) for w in data.half_widths], coefficient_bound=cfg.coefficient_bound,
                   normalize=cfg.normalize)
    if cfg.model == "egnn":
        return EGNN(node_attr_dim, cfg.hidden, cfg.num_layers, center, **options), "E(3)"
    if cfg.group in (None, "auto") or str(cfg.group).lower() == data.group_name.lower():
        group = data.point_group()
    else:  # another group (a subgroup such as "C1", "C2v"): the catalogue's standard frame
        group = point_group(str(cfg.group))
    model = DEGNN(group, node_attr_dim, cfg.hidden, cfg.num_layers, variant=cfg.variant, reduce=cfg.reduce,
                  center=center, **options)
    return model, getattr(group, "schoenflies", str(cfg.group))


def load_dynamics_splits(cfg: Union[DynamicsConfig, Dict[str, Any]],
                         data: Optional[BoxDynamicsData] = None) -> Tuple[BoxDynamicsData, ...]:
    """The train, validation and test ``BoxDynamicsData`` of a config.

    From ``data`` (split ``num_train / num_val / num_test`` in order), from the ``.npz`` files of
    ``cfg.data``, or simulated (``preset`` or the simulator keys, seeded by ``data_seed``).
    """
    cfg = DynamicsConfig.from_dict(cfg)
    if cfg.data is not None:
        if data is not None:
            raise ValueError("train_dynamics: give either the data argument or the config's data files, not both")
        splits = tuple(BoxDynamicsData.from_npz(cfg.data[key]) for key in ("train", "val", "test"))
        for key, split in zip(("val", "test"), splits[1:]):
            same = np.array_equal(split.half_widths, splits[0].half_widths) and np.allclose(split.center, splits[0].center)
            if not same or split.target_time != splits[0].target_time or (split.masses is None) != (splits[0].masses is None):
                raise ValueError(f"data.{key}: the box (half_widths, center), dt and masses must match data.train's")
        return splits
    total = cfg.num_train + cfg.num_val + cfg.num_test
    if data is None and cfg.preset is not None:
        data = box_nbody_preset(cfg.preset, num_samples=total, seed=cfg.data_seed)
    elif data is None:
        data = box_nbody(num_samples=total, num_bodies=cfg.num_bodies, half_widths=cfg.half_widths,
                         interaction=cfg.interaction, speed=cfg.speed, input_frame=cfg.input_frame,
                         target_frame=cfg.target_frame, planar=cfg.planar, seed=cfg.data_seed)
    elif len(data) < total:
        raise ValueError(f"data: {len(data)} samples, the config needs {total}")
    bounds = np.cumsum([0, cfg.num_train, cfg.num_val, cfg.num_test])
    return tuple(data.subset(slice(int(a), int(b))) for a, b in zip(bounds[:-1], bounds[1:]))


def train_dynamics(config: Union[DynamicsConfig, Dict[str, Any]],
                   data: Optional[BoxDynamicsData] = None) -> TrainResult:
    """Train a dynamics model on particles in a box and report the test MSE of the kept epoch.

    Adam on the mean squared error of the target positions in units of the model's residual
    scale, gradients clipped to ``grad_clip``; after every epoch the validation samples are
    scored and the epoch is kept by the rule of the module docstring (``selection``), training
    stops after ``patience`` epochs without a better score, and the kept weights are scored on
    the test split. With ``output_dir``, ``checkpoint.pt`` is written after every epoch (a killed
    run continues with ``resume``, bit for bit) and ``model.pt`` whenever the kept epoch changes,
    so ``relaxed_e3nn.load(output_dir / "model.pt")`` rebuilds the model of an interrupted run
    too; ``metrics.json`` follows at the end and the checkpoint is then removed.

    Parameters
    ----------
    config : DynamicsConfig or dict
        See :class:`~relaxed_e3nn.train.DynamicsConfig`.
    data : BoxDynamicsData, optional
        Samples (at least ``num_train + num_val + num_test``) to use instead of simulating them.

    Returns
    -------
    TrainResult
        ``history`` rows hold ``train_loss`` (mean step MSE), ``val_loss`` = ``val_mse``,
        ``val_trimmed_mse``, ``val_top_share`` (share of the largest 1% of per-sample errors)
        and ``grad_norm`` (largest norm before clipping); ``metrics`` (also ``result[key]``,
        the ``metrics.json`` entries) holds ``test_mse``, ``val_mse``, ``train_mse``,
        ``no_motion_mse`` and ``baseline_mse`` (test MSE of the inputs and of the baseline alone),
        ``selection``, ``statistics``, ``time_per_step_s``, ``num_parameters`` (also under its former name ``n_parameters``), ``group``,
        ``group_order``, ``model_path`` and the resolved ``config``.
    """
    cfg = DynamicsConfig.from_dict(config)
    with output_dir_lock(cfg.output_dir):  # a second run on output_dir fails at once
        return _train_dynamics(cfg, data)


def _train_dynamics(cfg: DynamicsConfig, data: Optional[BoxDynamicsData]) -> TrainResult:
    """The run of :func:`train_dynamics`, while it holds the output directory."""
    dtype = dtype_from_name(cfg.dtype)
    raw = load_dynamics_splits(cfg, data)
    train, val, test = (_Tensors(split, dtype) for split in raw)
    torch.manual_seed(int(cfg.seed))
    model, group_name = build_dynamics_model(cfg, raw[0])
    model = model.to(dtype)  # the layers re-derive their group elements from the exact float64 copy
    statistics = model.fit_statistics(train.pos, train.vel, train.attr, train.target) if cfg.normalize else {}
    output_dir = None if cfg.output_dir is None else Path(cfg.output_dir)
    run = _Run(model, cfg, train, val, output_dir)
    run.fit()
    model.load_state_dict(run.best["state"])
    test_mse = _evaluate(model, test, run.batch_size, run.edge_cache)
    model_path = None if output_dir is None else output_dir / "model.pt"
    selection = {"rule": cfg.selection, "trim_fraction": cfg.trim_fraction, "score": run.best["score"],
                 "val_top_share": run.best["top_share"]}
    num_parameters = sum(p.numel() for p in model.parameters())
    summary = metrics_summary(
        task="box_dynamics", history=run.history, best_epoch=run.best["epoch"], best_val_loss=run.best["val_mse"],
        stopped_early=run.stopped_early, test={"mse": test_mse}, units=DYNAMICS_UNITS, model_path=model_path,
        test_mse=test_mse, val_mse=run.best["val_mse"], train_mse=_evaluate(model, train, run.batch_size, run.edge_cache),
        no_motion_mse=float(((test.target - test.pos) ** 2).mean()),
        baseline_mse=float(((model._baseline(test.pos, test.vel, model.center.to(dtype)) - test.target) ** 2).mean()),
        selection=selection, statistics=statistics, model=cfg.model, group=group_name,
        group_order=int(model.elements.shape[0]) if isinstance(model, DEGNN) else None,
        time_per_step_s=float(np.median(run.step_times)) if run.step_times else None,
        num_parameters=num_parameters, n_parameters=num_parameters, config=cfg.to_dict(),  # n_parameters: former name
    )
    _warn_if_dominated(run.best, len(val))
    if output_dir is not None:
        save(model, model_path)
        write_metrics(output_dir / "metrics.json", summary)
        run.checkpoint_path.unlink(missing_ok=True)
    return TrainResult(model=model, history=run.history, best_epoch=run.best["epoch"],
                       best_val_loss=run.best["val_mse"], test_metrics={"mse": test_mse},
                       stopped_early=run.stopped_early, output_dir=output_dir, model_path=model_path,
                       checkpoint_path=None, metrics=summary)


def _warn_if_dominated(best: Dict[str, Any], num_val: int) -> None:
    if num_val >= 10 and best["top_share"] > DOMINANCE_WARNING:
        warnings.warn(
            f"train_dynamics: at the kept epoch {best['epoch']} the largest 1% of the validation samples' errors "
            f"carry {100 * best['top_share']:.1f}% of the validation MSE {best['val_mse']:.4g}; the trimmed score "
            f"is {best['score']:.4g}. A few outliers dominate the validation loss.", UserWarning, stacklevel=4)


class _Run:
    """The optimisation state of one run: epochs, selection, early stopping, checkpoints."""

    def __init__(self, model, cfg: DynamicsConfig, train: _Tensors, val: _Tensors, output_dir: Optional[Path]):
        self.model, self.cfg, self.train, self.val = model, cfg, train, val
        self.batch_size = min(cfg.batch_size, len(train))
        self.edge_cache: Dict[int, Any] = {}
        self.generator = torch.Generator().manual_seed(int(cfg.seed))
        self.optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.best: Dict[str, Any] = {"epoch": 0, "val_mse": math.inf, "score": math.inf, "top_share": 0.0,
                                     "state": copy.deepcopy(model.state_dict())}
        self.history: List[Dict[str, float]] = []
        self.step_times: List[float] = []
        self.stale_epochs = 0
        self.stopped_early = False
        self.output_dir = output_dir
        self.checkpoint_path = None if output_dir is None else output_dir / "checkpoint.pt"
        if self.checkpoint_path is not None and self.checkpoint_path.exists():
            self._restore()
        elif cfg.resume:
            raise FileNotFoundError(f"resume: no checkpoint.pt in output_dir {str(output_dir)!r} to continue from")

    def fit(self) -> None:
        for epoch in range(len(self.history) + 1, self.cfg.epochs + 1):
            if self.cfg.patience is not None and self.stale_epochs >= self.cfg.patience:
                self.stopped_early = True
                break
            row = self._epoch(epoch)
            errors = _sample_errors(self.model, self.val, self.batch_size, self.edge_cache)
            val_mse = float(errors.mean())
            trimmed = trimmed_mean(errors, self.cfg.trim_fraction)
            score = trimmed if self.cfg.selection == "trimmed" else val_mse
            row.update(val_loss=val_mse, val_mse=val_mse, val_trimmed_mse=trimmed, val_top_share=dominant_share(errors))
            self.history.append(row)
            if score < self.best["score"]:
                self.best = {"epoch": epoch, "val_mse": val_mse, "score": score, "top_share": row["val_top_share"],
                             "state": copy.deepcopy(self.model.state_dict())}
                self.stale_epochs = 0
                if self.output_dir is not None:
                    save(self.model, self.output_dir / "model.pt")
            else:
                self.stale_epochs += 1
            self._checkpoint(epoch)

    def _epoch(self, epoch: int) -> Dict[str, float]:
        start = time.perf_counter()
        model, train = self.model, self.train
        scale = model.target_scale.detach()
        order = torch.randperm(len(train), generator=self.generator)
        losses, norms = [], []
        for first in range(0, len(train), self.batch_size):
            index = order[first:first + self.batch_size]
            tic = time.perf_counter()
            self.optimizer.zero_grad()
            error = _predict(model, train, index, self.edge_cache) - train.target[index]
            loss = ((error / scale) ** 2).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"train_dynamics: loss became {loss.detach().item()} at epoch {epoch}")
            loss.backward()
            clip = math.inf if self.cfg.grad_clip is None else self.cfg.grad_clip
            norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), clip)))
            self.optimizer.step()
            self.step_times.append(time.perf_counter() - tic)
            losses.append(float((error.detach() ** 2).mean()))
        return {"epoch": epoch, "lr": float(self.optimizer.param_groups[0]["lr"]), "train_loss": float(np.mean(losses)),
                "grad_norm": max(norms), "time_s": time.perf_counter() - start}

    def _checkpoint(self, epoch: int) -> None:
        if self.checkpoint_path is None:
            return
        save_checkpoint(self.checkpoint_path, {
            "config": self.cfg.to_dict(), "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "epoch": epoch, "rng": {"global": rng_state(), "shuffle": self.generator.get_state()},
            "split": {"train": len(self.train), "val": len(self.val)}, "history": self.history,
            "best": self.best, "stale_epochs": self.stale_epochs, "step_times": self.step_times,
        })

    def _restore(self) -> None:
        if not self.cfg.resume:
            raise ValueError(f"output_dir {str(self.output_dir)!r} already holds a checkpoint; pass --resume to "
                             f"continue that run or choose another output_dir")
        checkpoint = load_checkpoint(self.checkpoint_path)
        stored, current = DynamicsConfig.from_dict(checkpoint["config"]).to_dict(), self.cfg.to_dict()
        changed = sorted(k for k in current if k not in _RESUMABLE_CHANGES and stored.get(k) != current[k])
        if changed:
            raise ValueError(f"resume: the config differs from the checkpoint's in {changed}; only "
                             f"{list(_RESUMABLE_CHANGES)} may change")
        if checkpoint["split"] != {"train": len(self.train), "val": len(self.val)}:
            raise ValueError(f"resume: the data splits differ from the checkpoint's ({checkpoint['split']})")
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        set_rng_state(checkpoint["rng"]["global"])
        self.generator.set_state(checkpoint["rng"]["shuffle"])
        self.history, self.best = checkpoint["history"], checkpoint["best"]
        self.stale_epochs, self.step_times = checkpoint["stale_epochs"], checkpoint["step_times"]
