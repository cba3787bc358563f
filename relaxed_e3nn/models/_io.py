"""The model file format: ``relaxed_e3nn.save`` / ``relaxed_e3nn.load``.

A model file is ``torch.save`` of one plain dict (loadable with ``torch.load(weights_only=True)``)::

    {
        "format": "relaxed_e3nn.model",
        "format_version": 1,
        "package_version": "0.1.0",
        "dtype": "float64",
        "config": {...},            # RelaxedNetworkConfig.to_dict()
        "frame": [[...], [...], [...]],
        "state_dict": {name: tensor},
    }

Training checkpoints embed the same dict (:func:`model_to_dict`) next to their own state.
"""
import os
from pathlib import Path
from typing import Union

import torch

from relaxed_e3nn._atomic import atomic_write
from relaxed_e3nn.models._config import RelaxedNetworkConfig
from relaxed_e3nn.models._network import RelaxedNetwork

__all__ = ["save", "load", "model_to_dict", "model_from_dict", "FORMAT_NAME", "FORMAT_VERSION"]

FORMAT_NAME = "relaxed_e3nn.model"
FORMAT_VERSION = 1
_REQUIRED = ("format", "format_version", "config", "state_dict", "dtype")
_STATE_BUFFERS = ("atomic_energies", "scale")  # buffers that hold fitted values, not constants
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _package_version() -> str:
    from relaxed_e3nn import __version__

    return __version__


def _model_dtype(model: RelaxedNetwork) -> torch.dtype:
    return model.scale.dtype


def model_to_dict(model: RelaxedNetwork) -> dict:
    """The model as a plain dict: format tag and version, config, frame, dtype and ``state_dict``.

    The tensors are detached CPU copies, so the dict can be saved while training continues.

    Parameters
    ----------
    model : RelaxedNetwork

    Returns
    -------
    dict
        Only dicts, lists, strings, numbers and tensors (``torch.load(weights_only=True)``-safe).
    """
    if not isinstance(model, RelaxedNetwork):
        raise TypeError(f"model_to_dict: model must be a RelaxedNetwork, got {type(model).__name__}")
    config = model._sync_config()
    dtype = _model_dtype(model)
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "package_version": _package_version(),
        "dtype": str(dtype).replace("torch.", ""),
        "config": config.to_dict(),
        "frame": [list(row) for row in config.frame],
        "state_dict": {name: t.detach().cpu().clone() for name, t in model.state_dict().items()},
    }


def model_from_dict(
    d: dict, map_location="cpu", *, dtype: torch.dtype = None, source: str = "model dict"
) -> RelaxedNetwork:
    """Rebuild the model written by :func:`model_to_dict` (bitwise: same parameters, same outputs).

    The network is constructed in its floating dtype (e3nn's tensor-product constants take the
    dtype they are built in), so a float64 model keeps float64-exact equivariance whatever
    ``torch.get_default_dtype()`` is. The same path converts a model to another dtype properly:
    ``model_from_dict(model_to_dict(model), dtype=torch.float64)``.

    Parameters
    ----------
    d : dict
        The payload.
    map_location : str or torch.device
        Device of the returned model.
    dtype : torch.dtype, optional
        Floating dtype of the returned model; the saved one by default.
    source : str
        How errors name the payload (e.g. the file it came from).

    Raises
    ------
    ValueError
        If ``d`` is not a model payload, comes from a newer format version, or its weights do
        not fit its config.
    """
    if not isinstance(d, dict):
        raise ValueError(f"{source}: not a relaxed_e3nn model (expected a dict, got {type(d).__name__})")
    if d.get("format") != FORMAT_NAME:
        hint = ""
        if isinstance(d.get("model"), dict) and d["model"].get("format") == FORMAT_NAME:
            hint = " (it looks like a training checkpoint: its 'model' entry holds the model)"
        raise ValueError(
            f"{source}: not a relaxed_e3nn model (format tag {d.get('format')!r}, expected {FORMAT_NAME!r}){hint}"
        )
    missing = [k for k in _REQUIRED if k not in d]
    if missing:
        raise ValueError(f"{source}: relaxed_e3nn model is missing entries {missing}")
    version = d["format_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{source}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{source}: written with model format version {version} (package {d.get('package_version', '?')}), "
            f"newer than this package reads ({FORMAT_VERSION}); upgrade relaxed_e3nn"
        )
    if d["dtype"] not in _DTYPES:
        raise ValueError(f"{source}: unknown dtype {d['dtype']!r}")
    saved_dtype = _DTYPES[d["dtype"]]
    if dtype is None:
        dtype = saved_dtype
    elif not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"model_from_dict: dtype must be a floating torch.dtype, got {dtype!r}")
    try:
        config = RelaxedNetworkConfig.from_dict(d["config"])
    except ValueError as err:
        raise ValueError(f"{source}: invalid model config: {err}") from err
    if "frame" in d and d["frame"] != config.frame:
        raise ValueError(f"{source}: frame {d['frame']!r} disagrees with the config's frame {config.frame!r}")
    state = d["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: state_dict must be a dict of tensors")

    model = RelaxedNetwork(config, dtype=dtype)
    expected = model.state_dict()
    if set(state) != set(expected):
        missing = sorted(set(expected) - set(state))[:5]
        unexpected = sorted(set(state) - set(expected))[:5]
        raise ValueError(
            f"{source}: weights do not match the model config (missing {missing}, unexpected {unexpected})"
        )
    if dtype != saved_dtype:
        # Besides weights, the state holds e3nn's constant buffers (Wigner 3j symbols, output
        # masks), which are functions of the config alone. Saved in a lower precision they would
        # cost equivariance accuracy, so a dtype change keeps the freshly built ones.
        parameters = {name for name, _ in model.named_parameters()}
        state = {k: (v if k in parameters or k in _STATE_BUFFERS else expected[k]) for k, v in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{source}: weights do not match the model config: {err}") from err
    model.config = model._sync_config()
    return model.to(map_location)


def save(model: RelaxedNetwork, path: Union[str, os.PathLike]) -> None:
    """Write ``model`` to ``path`` atomically (the file is complete or untouched, never half-written).

    Parameters
    ----------
    model : RelaxedNetwork
    path : str or os.PathLike
    """
    payload = model_to_dict(model)
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)


def load(path: Union[str, os.PathLike], map_location="cpu", *, dtype: torch.dtype = None) -> RelaxedNetwork:
    """Read a model written by :func:`save`.

    Parameters
    ----------
    path : str or os.PathLike
    map_location : str or torch.device
        Device of the returned model.
    dtype : torch.dtype, optional
        Floating dtype of the returned model; the saved one by default.

    Returns
    -------
    RelaxedNetwork
        In evaluation mode.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Naming ``path``, if the file is empty, truncated, corrupt, not a relaxed_e3nn model
        (e.g. a plain ``torch.save``-d dict or a text file), or of a newer format version.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"load: no such model file: {path}")
    if path.is_dir():
        raise ValueError(f"{path}: is a directory, not a relaxed_e3nn model file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file, not a relaxed_e3nn model")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for corrupt or foreign content
        raise ValueError(
            f"{path}: not a readable relaxed_e3nn model file (corrupt, truncated or foreign): "
            f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
        ) from err
    model = model_from_dict(payload, map_location=map_location, dtype=dtype, source=str(path))
    return model.eval()
