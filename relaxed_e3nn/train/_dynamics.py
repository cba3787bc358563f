"""Train ``DEGNN`` / ``EGNN`` on the box n-body task (``relaxed-e3nn train`` with ``task: box_dynamics``)."""
import copy
import json
import math
import time
from pathlib import Path
from typing import Dict, Optional

import numpy as np
import torch

from relaxed_e3nn._atomic import atomic_write
from relaxed_e3nn.data.generators._box_nbody import BoxDynamicsData, box_nbody
from relaxed_e3nn.discrete import DEGNN, EGNN, fully_connected_batch
from relaxed_e3nn.groups import point_group
from relaxed_e3nn.models import save

__all__ = ["train_dynamics", "DYNAMICS_DEFAULTS"]

DYNAMICS_DEFAULTS: Dict = {
    "task": "box_dynamics",
    "model": "degnn",  # "degnn" | "egnn"
    "group": "auto",  # "auto" (the box's group, in the box frame) or a catalogue name ("C1", "D2h", ...)
    "variant": "pooling",
    "reduce": "mean",
    "hidden": 64,
    "layers": 4,
    "half_widths": [5.0, 4.0, 3.0],
    "planar": False,
    "interaction": "coulomb",
    "n_bodies": 5,
    "speed": 0.5,
    "input_frame": 20,
    "target_frame": 40,
    "n_train": 200,
    "n_val": 200,
    "n_test": 200,
    "data_seed": 0,
    "epochs": 300,
    "lr": 1e-3,
    "weight_decay": 0.0,
    "batch_size": 100,
    "seed": 0,
    "dtype": "float32",
    "out_dir": None,
}

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _check_config(config: Dict) -> Dict:
    if not isinstance(config, dict):
        raise TypeError(f"config: expected a dict, got {type(config).__name__}")
    unknown = sorted(set(config) - set(DYNAMICS_DEFAULTS))
    if unknown:
        raise ValueError(f"config: unknown keys {unknown}; known keys are {sorted(DYNAMICS_DEFAULTS)}")
    cfg = {**DYNAMICS_DEFAULTS, **config}
    if cfg["task"] != "box_dynamics":
        raise ValueError(f"config['task']: expected 'box_dynamics', got {cfg['task']!r}")
    if cfg["model"] not in ("degnn", "egnn"):
        raise ValueError(f"config['model']: expected 'degnn' or 'egnn', got {cfg['model']!r}")
    if cfg["dtype"] not in _DTYPES:
        raise ValueError(f"config['dtype']: expected one of {sorted(_DTYPES)}, got {cfg['dtype']!r}")
    for key in ("hidden", "layers", "n_train", "n_val", "n_test", "epochs", "batch_size", "n_bodies"):
        if not isinstance(cfg[key], (int, np.integer)) or isinstance(cfg[key], bool) or cfg[key] < 1:
            raise ValueError(f"config[{key!r}]: expected a positive integer, got {cfg[key]!r}")
    for key in ("lr",):
        if not isinstance(cfg[key], (int, float)) or not cfg[key] > 0:
            raise ValueError(f"config[{key!r}]: expected a positive number, got {cfg[key]!r}")
    if not isinstance(cfg["weight_decay"], (int, float)) or cfg["weight_decay"] < 0:
        raise ValueError(f"config['weight_decay']: expected a number >= 0, got {cfg['weight_decay']!r}")
    return cfg


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
    model.eval()
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(split), batch_size):
            index = torch.arange(start, min(len(split), start + batch_size))
            pred = _predict(model, split, index, edge_cache)
            total += float(((pred - split.target[index]) ** 2).sum())
    model.train()
    return total / split.target.numel()


def build_dynamics_model(cfg: Dict, data: BoxDynamicsData):
    """The model a config asks for; ``group: auto`` takes the box's group in the box frame."""
    center = torch.as_tensor(data.center, dtype=torch.get_default_dtype())
    if cfg["model"] == "egnn":
        return EGNN(1, hidden=cfg["hidden"], layers=cfg["layers"], center=center), "E(3)"
    if cfg["group"] in (None, "auto") or str(cfg["group"]).lower() == data.group_name.lower():
        group = data.point_group()
    else:  # another group (a subgroup such as "C1", "C2v"): the catalogue's standard frame
        group = point_group(str(cfg["group"]))
    model = DEGNN(
        group,
        1,
        hidden=cfg["hidden"],
        layers=cfg["layers"],
        variant=cfg["variant"],
        reduce=cfg["reduce"],
        center=center,
    )
    return model, getattr(group, "schoenflies", str(cfg["group"]))


def train_dynamics(config: Dict, data: Optional[BoxDynamicsData] = None) -> Dict:
    """Train a dynamics model on charged/gravitating particles in a box and report test MSE.

    The data are ``box_nbody(n_train + n_val + n_test, ...)`` split in that order; the model is
    trained with Adam on the mean squared error of the target positions; the weights with the
    lowest validation MSE (evaluated every epoch) are kept and scored on the test split.

    Parameters
    ----------
    config : dict
        Keys (defaults in ``DYNAMICS_DEFAULTS``): ``model`` ("degnn" | "egnn"), ``group``
        ("auto" or the box's own group name = the box's group in the box frame; any other
        catalogue name, such as "C1", in the catalogue's standard frame),
        ``variant``, ``reduce``, ``hidden``, ``layers``, ``half_widths``, ``planar``,
        ``interaction``, ``n_bodies``, ``speed``, ``input_frame``, ``target_frame``,
        ``n_train``/``n_val``/``n_test``, ``data_seed``, ``epochs``, ``lr``, ``weight_decay``,
        ``batch_size``, ``seed`` (initialisation and shuffling), ``dtype``, ``out_dir``
        (after a successful run the trained model is written there as ``model.pt`` with
        :func:`relaxed_e3nn.save`, then ``metrics.json``, each atomically).
    data : BoxDynamicsData, optional
        Pre-generated samples (at least ``n_train + n_val + n_test``) to skip the simulation.

    Returns
    -------
    dict
        ``test_mse``, ``val_mse``, ``train_mse``, ``best_epoch``, ``time_per_step_s`` (median
        wall time of one optimisation step), ``n_parameters``, ``group``, ``group_order``,
        ``model_path`` (the written ``model.pt``, or None without ``out_dir``) and the resolved
        ``config``. The model written is the one scored: the weights of ``best_epoch``.
    """
    cfg = _check_config(config)
    dtype = _DTYPES[cfg["dtype"]]
    n_total = cfg["n_train"] + cfg["n_val"] + cfg["n_test"]
    if data is None:
        data = box_nbody(
            n_samples=n_total,
            n_bodies=cfg["n_bodies"],
            half_widths=cfg["half_widths"],
            interaction=cfg["interaction"],
            speed=cfg["speed"],
            input_frame=cfg["input_frame"],
            target_frame=cfg["target_frame"],
            planar=cfg["planar"],
            seed=cfg["data_seed"],
        )
    elif len(data) < n_total:
        raise ValueError(f"data: {len(data)} samples, the config needs {n_total}")
    train = _Tensors(data.subset(slice(0, cfg["n_train"])), dtype)
    val = _Tensors(data.subset(slice(cfg["n_train"], cfg["n_train"] + cfg["n_val"])), dtype)
    test = _Tensors(data.subset(slice(cfg["n_train"] + cfg["n_val"], n_total)), dtype)

    generator = torch.Generator().manual_seed(int(cfg["seed"]))
    torch.manual_seed(int(cfg["seed"]))
    model, group_name = build_dynamics_model(cfg, data)
    model = model.to(dtype)  # the layers re-derive their group elements from the exact float64 copy
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
    edge_cache = {}
    best = (math.inf, -1, copy.deepcopy(model.state_dict()))
    step_times = []
    batch_size = min(cfg["batch_size"], len(train))
    for epoch in range(cfg["epochs"]):
        order = torch.randperm(len(train), generator=generator)
        for start in range(0, len(train), batch_size):
            index = order[start : start + batch_size]
            tic = time.perf_counter()
            optimizer.zero_grad()
            loss = ((_predict(model, train, index, edge_cache) - train.target[index]) ** 2).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"train_dynamics: loss became {loss.detach().item()} at epoch {epoch}")
            loss.backward()
            optimizer.step()
            step_times.append(time.perf_counter() - tic)
        val_mse = _evaluate(model, val, batch_size, edge_cache)
        if val_mse < best[0]:
            best = (val_mse, epoch, copy.deepcopy(model.state_dict()))
    model.load_state_dict(best[2])
    result = {
        "model": cfg["model"],
        "group": group_name,
        "group_order": int(model.elements.shape[0]) if isinstance(model, DEGNN) else None,
        "test_mse": _evaluate(model, test, batch_size, edge_cache),
        "val_mse": best[0],
        "train_mse": _evaluate(model, train, batch_size, edge_cache),
        "best_epoch": best[1],
        "time_per_step_s": float(np.median(step_times)),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "model_path": None,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()},
    }
    if cfg["out_dir"] is not None:
        out_dir = Path(cfg["out_dir"])
        model_path = out_dir / "model.pt"
        save(model, model_path)
        result["model_path"] = str(model_path)
        with atomic_write(out_dir / "metrics.json", mode="w") as handle:
            json.dump(result, handle, indent=2, default=float)
    return result
