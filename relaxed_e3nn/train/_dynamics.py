"""Train ``DEGNN`` / ``EGNN`` on the box n-body task (``relaxed-e3nn train`` with ``task: box_dynamics``)."""
import copy
import math
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import numpy as np
import torch

from relaxed_e3nn._checks import dtype_from_name
from relaxed_e3nn.data.generators import BoxDynamicsData, box_nbody
from relaxed_e3nn.discrete import DEGNN, EGNN, fully_connected_batch
from relaxed_e3nn.groups import point_group
from relaxed_e3nn.models import save
from relaxed_e3nn.train._config import DynamicsConfig
from relaxed_e3nn.train._outputs import write_metrics
from relaxed_e3nn.train._result import DYNAMICS_UNITS, TrainResult, metrics_summary

__all__ = ["train_dynamics", "build_dynamics_model", "DYNAMICS_DEFAULTS"]

#: the defaults of :class:`DynamicsConfig` as a dict (kept for older callers)
DYNAMICS_DEFAULTS: Dict[str, Any] = DynamicsConfig().to_dict()


class _Tensors:
    """A split of ``BoxDynamicsData`` as tensors of one dtype."""

    def __init__(self, data: BoxDynamicsData, dtype):
        self.pos = torch.as_tensor(data.positions, dtype=dtype)
        self.vel = torch.as_tensor(data.velocities, dtype=dtype)
        self.attr = torch.as_tensor(data.charges, dtype=dtype)[..., None]
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


def _evaluate(model, split: _Tensors, batch_size: int, edge_cache) -> float:
    """Mean squared error of the predicted target positions over ``split``."""
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(split), batch_size):
            index = torch.arange(start, min(len(split), start + batch_size))
            pred = _predict(model, split, index, edge_cache)
            total += float(((pred - split.target[index]) ** 2).sum())
    model.train()
    return total / split.target.numel()


def build_dynamics_model(cfg: Union[DynamicsConfig, Dict[str, Any]], data: BoxDynamicsData):
    """The model a config asks for and its group's name; ``group: auto`` takes the box's group in the box frame."""
    cfg = DynamicsConfig.from_dict(cfg)
    center = torch.as_tensor(data.center, dtype=torch.get_default_dtype())
    if cfg.model == "egnn":
        return EGNN(1, cfg.hidden, cfg.num_layers, center), "E(3)"
    if cfg.group in (None, "auto") or str(cfg.group).lower() == data.group_name.lower():
        group = data.point_group()
    else:  # another group (a subgroup such as "C1", "C2v"): the catalogue's standard frame
        group = point_group(str(cfg.group))
    model = DEGNN(group, 1, cfg.hidden, cfg.num_layers, variant=cfg.variant, reduce=cfg.reduce, center=center)
    return model, getattr(group, "schoenflies", str(cfg.group))


def _splits(cfg: DynamicsConfig, data: Optional[BoxDynamicsData], dtype):
    total = cfg.num_train + cfg.num_val + cfg.num_test
    if data is None:
        data = box_nbody(num_samples=total, num_bodies=cfg.num_bodies, half_widths=cfg.half_widths,
                         interaction=cfg.interaction, speed=cfg.speed, input_frame=cfg.input_frame,
                         target_frame=cfg.target_frame, planar=cfg.planar, seed=cfg.data_seed)
    elif len(data) < total:
        raise ValueError(f"data: {len(data)} samples, the config needs {total}")
    bounds = np.cumsum([0, cfg.num_train, cfg.num_val, cfg.num_test])
    splits = [_Tensors(data.subset(slice(int(a), int(b))), dtype) for a, b in zip(bounds[:-1], bounds[1:])]
    return data, splits


def train_dynamics(config: Union[DynamicsConfig, Dict[str, Any]],
                   data: Optional[BoxDynamicsData] = None) -> TrainResult:
    """Train a dynamics model on charged/gravitating particles in a box and report test MSE.

    The data are ``box_nbody(num_train + num_val + num_test, ...)`` split in that order; the
    model is trained with Adam on the mean squared error of the target positions; the weights
    with the lowest validation MSE (evaluated every epoch) are kept and scored on the test split.

    Parameters
    ----------
    config : DynamicsConfig or dict
        See :class:`~relaxed_e3nn.train.DynamicsConfig` (deprecated key names such as
        ``out_dir`` and ``layers`` are still accepted). With ``output_dir`` the trained model is
        written there as ``model.pt`` (:func:`relaxed_e3nn.save`), then ``metrics.json``, each
        atomically, after a successful run.
    data : BoxDynamicsData, optional
        Pre-generated samples (at least ``num_train + num_val + num_test``) to skip the simulation.

    Returns
    -------
    TrainResult
        ``history`` holds ``train_loss`` (mean step MSE), ``val_loss`` = ``val_mse`` per epoch;
        ``test_metrics`` is ``{"mse": ...}``; ``metrics`` (also ``result[key]``) holds the
        ``metrics.json`` entries, among them ``test_mse``, ``val_mse``, ``train_mse``,
        ``time_per_step_s`` (median wall time of one optimisation step), ``n_parameters``,
        ``group``, ``group_order``, ``model_path`` (``None`` without ``output_dir``) and the
        resolved ``config``. The model written is the one scored: the weights of ``best_epoch``.
    """
    cfg = DynamicsConfig.from_dict(config)
    dtype = dtype_from_name(cfg.dtype)
    data, (train, val, test) = _splits(cfg, data, dtype)
    torch.manual_seed(int(cfg.seed))
    model, group_name = build_dynamics_model(cfg, data)
    model = model.to(dtype)  # the layers re-derive their group elements from the exact float64 copy
    batch_size = min(cfg.batch_size, len(train))
    edge_cache: Dict[int, Any] = {}
    history, best, step_times = _fit(model, cfg, train, val, batch_size, edge_cache)
    model.load_state_dict(best["state"])
    test_mse = _evaluate(model, test, batch_size, edge_cache)
    output_dir = None if cfg.output_dir is None else Path(cfg.output_dir)
    model_path = None if output_dir is None else output_dir / "model.pt"
    summary = metrics_summary(
        task="box_dynamics", history=history, best_epoch=best["epoch"], best_val_loss=best["val_mse"],
        stopped_early=False, test={"mse": test_mse}, units=DYNAMICS_UNITS, model_path=model_path,
        test_mse=test_mse, val_mse=best["val_mse"], train_mse=_evaluate(model, train, batch_size, edge_cache),
        model=cfg.model, group=group_name,
        group_order=int(model.elements.shape[0]) if isinstance(model, DEGNN) else None,
        time_per_step_s=float(np.median(step_times)), n_parameters=sum(p.numel() for p in model.parameters()),
        config=cfg.to_dict(),
    )
    if output_dir is not None:
        save(model, model_path)
        write_metrics(output_dir / "metrics.json", summary)
    return TrainResult(model=model, history=history, best_epoch=best["epoch"], best_val_loss=best["val_mse"],
                       test_metrics={"mse": test_mse}, stopped_early=False, output_dir=output_dir,
                       model_path=model_path, metrics=summary)


def _fit(model, cfg: DynamicsConfig, train: _Tensors, val: _Tensors, batch_size: int, edge_cache):
    """Adam epochs; returns the history, the best epoch's ``{"epoch", "val_mse", "state"}`` and step times."""
    generator = torch.Generator().manual_seed(int(cfg.seed))
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    best = {"epoch": 0, "val_mse": math.inf, "state": copy.deepcopy(model.state_dict())}
    history: List[Dict[str, float]] = []
    step_times: List[float] = []
    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        order = torch.randperm(len(train), generator=generator)
        losses = []
        for first in range(0, len(train), batch_size):
            index = order[first:first + batch_size]
            tic = time.perf_counter()
            optimizer.zero_grad()
            loss = ((_predict(model, train, index, edge_cache) - train.target[index]) ** 2).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"train_dynamics: loss became {loss.detach().item()} at epoch {epoch}")
            loss.backward()
            optimizer.step()
            step_times.append(time.perf_counter() - tic)
            losses.append(float(loss.detach()))
        val_mse = _evaluate(model, val, batch_size, edge_cache)
        if val_mse < best["val_mse"]:
            best = {"epoch": epoch + 1, "val_mse": val_mse, "state": copy.deepcopy(model.state_dict())}
        history.append({"epoch": epoch + 1, "lr": float(optimizer.param_groups[0]["lr"]),
                        "train_loss": float(np.mean(losses)), "val_loss": val_mse, "val_mse": val_mse,
                        "time_s": time.perf_counter() - start})
    return history, best, step_times
