"""The model file format: ``relaxed_e3nn.save`` / ``relaxed_e3nn.load``.

A model file is ``torch.save`` of one plain dict (loadable with ``torch.load(weights_only=True)``)::

    {
        "format": "relaxed_e3nn.model",
        "format_version": 1,
        "package_version": "0.1.0",
        "kind": "RelaxedNetwork",   # or "DEGNN", "EGNN"; files without it are RelaxedNetworks
        "dtype": "float64",
        "config": {...},            # RelaxedNetworkConfig.to_dict(), or DEGNN/EGNN.to_config()
        "frame": [[...], [...], [...]],   # RelaxedNetwork only
        "state_dict": {name: tensor},
    }

A ``DEGNN`` config holds its group as the float64 list of its elements (any frame), so the group
survives the round trip exactly. Training checkpoints embed the same dict (:func:`model_to_dict`)
next to their own state.
"""
import os
from pathlib import Path
from typing import Union

import torch

from relaxed_e3nn._atomic import atomic_write
from relaxed_e3nn.discrete import DEGNN, EGNN
from relaxed_e3nn.models._config import RelaxedNetworkConfig
from relaxed_e3nn.models._network import RelaxedNetwork

__all__ = ["save", "load", "model_to_dict", "model_from_dict", "FORMAT_NAME", "FORMAT_VERSION", "MODEL_KINDS"]

FORMAT_NAME = "relaxed_e3nn.model"
FORMAT_VERSION = 1
MODEL_KINDS = ("RelaxedNetwork", "DEGNN", "EGNN")
_DEFAULT_KIND = "RelaxedNetwork"  # files written before the "kind" entry existed
_DYNAMICS_CLASSES = {"DEGNN": DEGNN, "EGNN": EGNN}
_REQUIRED = ("format", "format_version", "config", "state_dict", "dtype")
_STATE_BUFFERS = ("atomic_energies", "scale")  # buffers that hold fitted values, not constants
_DYNAMICS_STATE_BUFFERS = ("center",)
Model = Union[RelaxedNetwork, DEGNN, EGNN]
_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _package_version() -> str:
    from relaxed_e3nn import __version__

    return __version__


def _kind(model) -> str:
    for kind, cls in (("RelaxedNetwork", RelaxedNetwork), *_DYNAMICS_CLASSES.items()):
        if isinstance(model, cls):
            return kind
    raise TypeError(f"model_to_dict: model must be one of {list(MODEL_KINDS)}, got {type(model).__name__}")


def _model_dtype(model: Model) -> torch.dtype:
    return model.scale.dtype if isinstance(model, RelaxedNetwork) else model.embedding.weight.dtype


def model_to_dict(model: Model) -> dict:
    """The model as a plain dict: format tag and version, kind, config, dtype and ``state_dict``.

    The tensors are detached CPU copies, so the dict can be saved while training continues.

    Parameters
    ----------
    model : RelaxedNetwork, DEGNN or EGNN

    Returns
    -------
    dict
        Only dicts, lists, strings, numbers and tensors (``torch.load(weights_only=True)``-safe).
        A ``RelaxedNetwork`` payload also holds its ``frame``.

    Raises
    ------
    TypeError
        If ``model`` is not one of the kinds in ``MODEL_KINDS``.
    """
    kind = _kind(model)
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "package_version": _package_version(),
        "kind": kind,
        "dtype": str(_model_dtype(model)).replace("torch.", ""),
    }
    if kind == "RelaxedNetwork":
        config = model._sync_config()
        payload["config"] = config.to_dict()
        payload["frame"] = [list(row) for row in config.frame]
    else:
        payload["config"] = model.to_config()
    payload["state_dict"] = {name: t.detach().cpu().clone() for name, t in model.state_dict().items()}
    return payload


def model_from_dict(
    d: dict, map_location="cpu", *, dtype: torch.dtype = None, source: str = "model dict", kind: str = None
) -> Model:
    """Rebuild the model written by :func:`model_to_dict` (bitwise: same parameters, same outputs).

    The network is constructed in its floating dtype (e3nn's tensor-product constants take the
    dtype they are built in; a ``DEGNN``'s group elements are set from their float64 list), so a
    float64 model keeps float64-exact equivariance whatever ``torch.get_default_dtype()`` is. The
    same path converts a model to another dtype properly:
    ``model_from_dict(model_to_dict(model), dtype=torch.float64)``.

    Parameters
    ----------
    d : dict
        The payload; without a ``"kind"`` entry it is a ``RelaxedNetwork``.
    map_location : str or torch.device
        Device of the returned model.
    dtype : torch.dtype, optional
        Floating dtype of the returned model; the saved one by default.
    source : str
        How errors name the payload (e.g. the file it came from).
    kind : str, optional
        The model kind the caller needs (one of ``MODEL_KINDS``); a payload of another kind
        raises instead of returning a model the caller cannot use. Any kind by default.

    Returns
    -------
    RelaxedNetwork, DEGNN or EGNN
        As the payload's ``kind`` says.

    Raises
    ------
    ValueError
        If ``d`` is not a model payload, comes from a newer format version, names an unknown
        model kind or another kind than ``kind``, or its weights do not fit its config.
    """
    if kind is not None and kind not in MODEL_KINDS:
        raise ValueError(f"model_from_dict: kind must be one of {list(MODEL_KINDS)} or None, got {kind!r}")
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
    saved_kind = d.get("kind", _DEFAULT_KIND)
    if saved_kind not in MODEL_KINDS:
        raise ValueError(f"{source}: unknown model kind {saved_kind!r}; this package reads {list(MODEL_KINDS)}")
    if kind is not None and saved_kind != kind:
        raise ValueError(f"{source}: holds a model of kind {saved_kind!r}, expected {kind!r}")
    if saved_kind != "RelaxedNetwork":
        return _dynamics_from_dict(d, saved_kind, map_location, dtype, saved_dtype, source)
    try:
        config = RelaxedNetworkConfig.from_dict(d["config"])
    except ValueError as err:
        raise ValueError(f"{source}: invalid model config: {err}") from err
    if "frame" in d and d["frame"] != config.frame:
        raise ValueError(f"{source}: frame {d['frame']!r} disagrees with the config's frame {config.frame!r}")
    state = _checked_state(d, source)

    model = RelaxedNetwork(config, dtype=dtype)
    # Besides weights, the state holds e3nn's constant buffers (Wigner 3j symbols, output masks),
    # which are functions of the config alone: see _load_state.
    _load_state(model, state, dtype != saved_dtype, _STATE_BUFFERS, source)
    model.config = model._sync_config()
    return model.to(map_location)


def _checked_state(d: dict, source: str) -> dict:
    state = d["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{source}: state_dict must be a dict of tensors")
    return state


def _load_state(model, state: dict, dtype_changed: bool, fitted_buffers, source: str) -> None:
    """Load ``state`` strictly; on a dtype change keep the freshly built constant buffers.

    Constant buffers are functions of the config alone; saved in a lower precision they would
    cost equivariance accuracy, so a dtype change keeps the ones just built in the new dtype
    (parameters and the ``fitted_buffers`` are always taken from ``state``).
    """
    expected = model.state_dict()
    if set(state) != set(expected):
        missing = sorted(set(expected) - set(state))[:5]
        unexpected = sorted(set(state) - set(expected))[:5]
        raise ValueError(
            f"{source}: weights do not match the model config (missing {missing}, unexpected {unexpected})"
        )
    if dtype_changed:
        parameters = {name for name, _ in model.named_parameters()}
        state = {
            k: (v if k in parameters or k in fitted_buffers else expected[k])
            for k, v in state.items()
        }
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{source}: weights do not match the model config: {err}") from err


def _dynamics_from_dict(d, kind, map_location, dtype, saved_dtype, source):
    """``DEGNN`` / ``EGNN`` from a payload whose format, version and dtype are already checked."""
    cls = _DYNAMICS_CLASSES[kind]
    if "frame" in d:
        raise ValueError(f"{source}: a {kind} payload has no 'frame' entry (its group carries its own axes)")
    try:
        model = cls.from_config(d["config"], dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: invalid {kind} config: {err}") from err
    state = _checked_state(d, source)
    _load_state(model, state, dtype != saved_dtype, _DYNAMICS_STATE_BUFFERS, source)
    if kind == "DEGNN":
        # the layers' element buffers may carry the rounding of the dtype they were built in,
        # never a different group
        group = model._group_elements
        for name, layer in model.layers.named_children():
            error = float((layer.elements.to(torch.float64).cpu() - group).abs().max())
            if error > 1e-6:
                raise ValueError(
                    f"{source}: state_dict entry 'layers.{name}.elements' differs from the config's group "
                    f"by {error:.2e}"
                )
    return model.to(map_location)


def save(model: Model, path: Union[str, os.PathLike]) -> None:
    """Write ``model`` to ``path`` atomically (the file is complete or untouched, never half-written).

    Parameters
    ----------
    model : RelaxedNetwork, DEGNN or EGNN
    path : str or os.PathLike
    """
    payload = model_to_dict(model)
    with atomic_write(path, "wb") as handle:
        torch.save(payload, handle)


def load(path: Union[str, os.PathLike], map_location="cpu", *, dtype: torch.dtype = None, kind: str = None) -> Model:
    """Read a model written by :func:`save`.

    Parameters
    ----------
    path : str or os.PathLike
    map_location : str or torch.device
        Device of the returned model.
    dtype : torch.dtype, optional
        Floating dtype of the returned model; the saved one by default.
    kind : str, optional
        The model kind the caller needs (``"RelaxedNetwork"``, ``"DEGNN"`` or ``"EGNN"``); a file
        holding another kind raises ``ValueError``. Any kind by default.

    Returns
    -------
    RelaxedNetwork, DEGNN or EGNN
        As the file's ``kind`` says, in evaluation mode.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        Naming ``path``, if the file is empty, truncated, corrupt, not a relaxed_e3nn model
        (e.g. a plain ``torch.save``-d dict or a text file), of a newer format version, or
        holds another model kind than ``kind``.
    """
    if kind is not None and kind not in MODEL_KINDS:
        raise ValueError(f"load: kind must be one of {list(MODEL_KINDS)} or None, got {kind!r}")
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
    model = model_from_dict(payload, map_location=map_location, dtype=dtype, source=str(path), kind=kind)
    return model.eval()
