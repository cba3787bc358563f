"""The model file format: ``relaxed_e3nn.save`` / ``relaxed_e3nn.load``.

A model file is ``torch.save`` of one plain dict (loadable with ``torch.load(weights_only=True)``)::

    {
        "format": "relaxed_e3nn.model",
        "format_version": 2,
        "package_version": "0.1.0",
        "kind": "RelaxedNetwork",   # or "DEGNN", "EGNN", "NequIP", "MACE"; files without it are RelaxedNetworks
        "dtype": "float64",
        "config": {...},            # RelaxedNetworkConfig.to_dict(), or DEGNN/EGNN.to_config()
        "frame": [[...], [...], [...]],   # RelaxedNetwork only
        "state_dict": {name: tensor},
        "sha256": "…",              # of the state tensors (state_checksum), checked on load
        # optional, plain JSON-able data (METADATA_KEYS), present only when set:
        "symmetry": {...},          # parent group and the validated symmetry-breaking decision
        "data_keys": {...},         # names of the energy / forces / stress entries trained on
        "recipe": {...},            # how a relaxed host model was built
    }

Relaxed host models (kinds ``"NequIP"`` and ``"MACE"``, see :mod:`relaxed_e3nn.nn.hosts`) are rebuilt
from their ``recipe`` (required for them; their ``config`` repeats the recipe's host config), then
their state is loaded; their optional entries travel as ``model.relaxed_e3nn_metadata`` (NequIP's
models have a ``metadata`` of their own).

The optional entries travel on the model as ``model.metadata`` (a dict, empty for a fresh model):
:func:`save` writes ``model.metadata`` (or the ``metadata=`` given) and :func:`load` sets it.

History: version 1 had no ``sha256`` and no optional entries, and a ``RelaxedNetwork`` config
carried ``atomic_energies`` and ``scale`` (now only buffers in ``state_dict``); version-1 files are
read as before, without a checksum. A ``DEGNN`` config holds its group as the float64 list of its
elements (any frame), so the group survives the round trip exactly. Training checkpoints embed the
same dict (:func:`model_to_dict`) next to their own state.
"""
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Mapping, Optional, Union

import torch

from relaxed_e3nn import __version__
from relaxed_e3nn._atomic import atomic_write
from relaxed_e3nn._checks import DTYPES, check_finite, check_float_dtype, dtype_name, model_dtype
from relaxed_e3nn.discrete import DEGNN, EGNN, STATISTICS_BUFFERS
from relaxed_e3nn.models._config import RelaxedNetworkConfig, current_keys
from relaxed_e3nn.models._host import HostPotential, is_potential_state
from relaxed_e3nn.models._network import RelaxedNetwork
from relaxed_e3nn.nn.hosts import HOST_KINDS, build_from_recipe, host_metadata, set_host_metadata

__all__ = [
    "save", "load", "model_to_dict", "model_from_dict", "state_checksum",
    "FORMAT_NAME", "FORMAT_VERSION", "MODEL_KINDS", "METADATA_KEYS", "canonical_model_kind",
    "GRAPH_MODELS", "load_graph_model",
]

FORMAT_NAME = "relaxed_e3nn.model"
FORMAT_VERSION = 2
MODEL_KINDS = ("RelaxedNetwork", "DEGNN", "EGNN") + HOST_KINDS
#: optional top-level entries of a model file, each a JSON-able dict
METADATA_KEYS = ("symmetry", "data_keys", "recipe")
_DEFAULT_KIND = "RelaxedNetwork"  # files written before the "kind" entry existed
_DYNAMICS_CLASSES = {"DEGNN": DEGNN, "EGNN": EGNN}
_REQUIRED = ("format", "format_version", "config", "state_dict", "dtype")
_STATE_BUFFERS = ("atomic_energies", "scale")  # buffers that hold fitted values, not constants
_DYNAMICS_STATE_BUFFERS = ("center",) + STATISTICS_BUFFERS
Model = Union[RelaxedNetwork, DEGNN, EGNN]
#: the model classes that evaluate an ``AtomicGraph`` (``config.species``, ``cutoff``, ``output``,
#: ``node_features``; ``model(graph, compute_forces=..., compute_stress=...)``): what the calculator,
#: evaluation and prediction take
GRAPH_MODELS = (RelaxedNetwork, HostPotential)


def canonical_model_kind(kind, name: str = "model.kind") -> str:
    """``kind`` spelled as in ``MODEL_KINDS`` (matched case-insensitively), else a ``ValueError`` naming ``name``."""
    for known in MODEL_KINDS:
        if isinstance(kind, str) and kind.lower() == known.lower():
            return known
    raise ValueError(f"{name} must be one of {list(MODEL_KINDS)} (any case), got {kind!r}")


def state_checksum(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a ``state_dict``: every entry's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{dtype_name(tensor.dtype)}|{list(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _checked_metadata(metadata, where: str) -> dict:
    """``metadata`` as a dict of plain JSON-able dicts under ``METADATA_KEYS``, else a ``ValueError``."""
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise ValueError(f"{where}: metadata must be a dict with keys among {list(METADATA_KEYS)}, "
                         f"got {type(metadata).__name__}")
    out = {}
    for key, value in metadata.items():
        if key not in METADATA_KEYS:
            raise ValueError(f"{where}: unknown metadata key {key!r}; known keys are {list(METADATA_KEYS)}")
        if not isinstance(value, Mapping):
            raise ValueError(f"{where}: metadata[{key!r}] must be a dict, got {type(value).__name__}")
        try:
            out[key] = json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError) as err:
            raise ValueError(f"{where}: metadata[{key!r}] must be plain JSON data (dicts, lists, strings, "
                             f"finite numbers, booleans, None): {err}") from err
    return out


def _kind(model, metadata: Mapping) -> str:
    for kind, cls in (("RelaxedNetwork", RelaxedNetwork), *_DYNAMICS_CLASSES.items()):
        if isinstance(model, cls):
            return kind
    recipe = metadata.get("recipe")
    if isinstance(recipe, Mapping) and recipe.get("host") in HOST_KINDS:
        return recipe["host"]
    raise TypeError(
        f"model_to_dict: model must be one of {list(MODEL_KINDS)}, got {type(model).__name__}; a relaxed host "
        f"model is written with its build recipe: build it with relaxed_e3nn.nn.relaxed_nequip_model or "
        f"relaxed_mace_model, or pass metadata={{'recipe': ...}} (see relaxed_e3nn.nn.hosts)"
    )


def model_to_dict(model: Model, *, metadata: Optional[Mapping] = None) -> dict:
    """The model as a plain dict: format tag and version, kind, config, dtype, ``state_dict``, checksum.

    The tensors are detached CPU copies, so the dict can be saved while training continues.

    Parameters
    ----------
    model : RelaxedNetwork, DEGNN or EGNN
    metadata : dict, optional
        Optional entries (keys among ``METADATA_KEYS``, values JSON-able dicts); by default the
        model's own ``model.metadata`` (if it has one).

    Returns
    -------
    dict
        Only dicts, lists, strings, numbers and tensors (``torch.load(weights_only=True)``-safe).
        A ``RelaxedNetwork`` payload also holds its ``frame``.

    Raises
    ------
    TypeError
        If ``model`` is not one of the kinds in ``MODEL_KINDS``.
    ValueError
        If ``metadata`` has an unknown key or a value that is not a JSON-able dict.
    """
    if metadata is None:
        native = isinstance(model, (RelaxedNetwork, DEGNN, EGNN, HostPotential))
        metadata = getattr(model, "metadata", None) if native else host_metadata(model)
    metadata = _checked_metadata(metadata, "model_to_dict")
    kind = _kind(model, metadata)
    payload = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "package_version": __version__,
        "kind": kind,
        "dtype": dtype_name(model_dtype(model)),
    }
    if kind == "RelaxedNetwork":
        payload["config"] = model.config.to_dict()
        payload["frame"] = [list(row) for row in model.config.frame]
    elif kind in HOST_KINDS:
        payload["config"] = metadata["recipe"]["config"]
    else:
        payload["config"] = model.to_config()
    payload["state_dict"] = {name: t.detach().cpu().clone() for name, t in model.state_dict().items()}
    payload["sha256"] = state_checksum(payload["state_dict"])
    payload.update(metadata)
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
        model kind or another kind than ``kind`` or a dtype other than float32/float64, its
        weights do not match its ``sha256`` (format 2 on), hold NaN or inf (the tensor is named)
        or do not fit its config (a tensor of the wrong shape, e.g. θ, is named), or its optional
        entries are not plain data.
    TypeError
        If ``dtype`` is not ``torch.float32`` or ``torch.float64``.

    Notes
    -----
    The returned model's ``metadata`` attribute holds the payload's optional entries
    (``METADATA_KEYS``), ``{}`` when it has none.
    """
    if kind is not None and kind not in MODEL_KINDS:
        raise ValueError(f"model_from_dict: kind must be one of {list(MODEL_KINDS)} or None, got {kind!r}")
    saved_kind, saved_dtype = _checked_header(d, source)
    dtype = saved_dtype if dtype is None else check_float_dtype("dtype", dtype, "model_from_dict")
    if kind is not None and saved_kind != kind:
        raise ValueError(f"{source}: holds a model of kind {saved_kind!r}, expected {kind!r}")
    state = _checked_state(d, source)
    for name, tensor in state.items():  # a NaN weight (θ included) would give NaN outputs silently
        check_finite(f"state_dict[{name!r}]", tensor, source)
    metadata = _checked_metadata({k: d[k] for k in METADATA_KEYS if k in d}, source)
    if saved_kind in HOST_KINDS:
        model = _host_from_dict(d, saved_kind, dtype, saved_dtype, source, metadata)
        set_host_metadata(model, metadata)
        return model.to(map_location)
    if saved_kind != "RelaxedNetwork":
        model = _dynamics_from_dict(d, saved_kind, dtype, saved_dtype, source)
    else:
        model = _network_from_dict(d, dtype, saved_dtype, source)
    model.metadata = metadata
    return model.to(map_location)


def _checked_header(d, source: str):
    """The kind and dtype of a payload, after checking its format tag, version and checksum."""
    if not isinstance(d, dict):
        raise ValueError(f"{source}: not a relaxed_e3nn model (expected a dict, got {type(d).__name__})")
    if d.get("format") != FORMAT_NAME:
        hint = ""
        if isinstance(d.get("model"), dict) and d["model"].get("format") == FORMAT_NAME:
            hint = " (it looks like a training checkpoint: its 'model' entry holds the model)"
        raise ValueError(
            f"{source}: not a relaxed_e3nn model (format tag {d.get('format')!r}, expected {FORMAT_NAME!r}){hint}"
        )
    version = d.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{source}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{source}: written with model format version {version} (package {d.get('package_version', '?')}), "
            f"newer than this package reads ({FORMAT_VERSION}); upgrade relaxed_e3nn"
        )
    missing = [k for k in _REQUIRED + (("sha256",) if version >= 2 else ()) if k not in d]
    if missing:
        raise ValueError(f"{source}: relaxed_e3nn model is missing entries {missing}")
    if version >= 2:  # version 1 files carry no checksum
        actual = state_checksum(_checked_state(d, source))
        if d["sha256"] != actual:
            raise ValueError(
                f"{source}: checksum mismatch: the weights hash to sha256 {actual}, the file records "
                f"{d['sha256']!r}; the file is corrupt or was modified"
            )
    if d["dtype"] not in DTYPES:
        raise ValueError(f"{source}: dtype {d['dtype']!r} is not supported; model files hold one of {list(DTYPES)}")
    saved_kind = d.get("kind", _DEFAULT_KIND)
    if saved_kind not in MODEL_KINDS:
        raise ValueError(f"{source}: unknown model kind {saved_kind!r}; this package reads {list(MODEL_KINDS)}")
    return saved_kind, DTYPES[d["dtype"]]


def _network_from_dict(d: dict, dtype, saved_dtype, source: str) -> RelaxedNetwork:
    """A ``RelaxedNetwork`` from a payload whose header is already checked."""
    # files keep the key names they were written with (version-1 configs also carried the fitted
    # values, which the state's buffers hold as well)
    config = current_keys(d["config"]) if isinstance(d["config"], dict) else d["config"]
    try:
        config = RelaxedNetworkConfig.from_dict(config)
    except ValueError as err:
        raise ValueError(f"{source}: invalid model config: {err}") from err
    if "frame" in d and d["frame"] != config.frame:
        raise ValueError(f"{source}: frame {d['frame']!r} disagrees with the config's frame {config.frame!r}")
    model = RelaxedNetwork(config, dtype=dtype)
    # Besides weights, the state holds e3nn's constant buffers (Wigner 3j symbols, output masks),
    # which are functions of the config alone: see _load_state.
    _load_state(model, d["state_dict"], dtype != saved_dtype, _STATE_BUFFERS, source)
    return model


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
    for name, tensor in state.items():  # e.g. a θ of another size than the config's irreps_relaxed
        if tensor.shape != expected[name].shape:
            raise ValueError(f"{source}: weights do not match the model config: state_dict[{name!r}] has shape "
                             f"{list(tensor.shape)}, the config needs {list(expected[name].shape)}")
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


def _host_from_dict(d, kind, dtype, saved_dtype, source, metadata) -> torch.nn.Module:
    """A relaxed host model (NequIP, MACE) rebuilt from the payload's recipe, with its state loaded."""
    recipe = metadata.get("recipe")
    if not isinstance(recipe, Mapping) or recipe.get("host") != kind:
        raise ValueError(f"{source}: a {kind} payload needs a 'recipe' entry for a {kind} model, got {recipe!r}")
    try:
        model = build_from_recipe(recipe, dtype=dtype, where=source)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: invalid {kind} recipe: {err}") from err
    if is_potential_state(d["state_dict"]):  # written from a HostPotential (e.g. by the trainer)
        model = HostPotential(model)
    _load_state(model, d["state_dict"], dtype != saved_dtype, ("atomic_energies", "scale"), source)
    return model


def _dynamics_from_dict(d, kind, dtype, saved_dtype, source):
    """``DEGNN`` / ``EGNN`` from a payload whose format, version and dtype are already checked."""
    cls = _DYNAMICS_CLASSES[kind]
    if "frame" in d:
        raise ValueError(f"{source}: a {kind} payload has no 'frame' entry (its group carries its own axes)")
    try:
        model = cls.from_config(d["config"], dtype=dtype)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{source}: invalid {kind} config: {err}") from err
    # format-1 files predate the statistics buffers: the identity values of a fresh model stand in
    defaults = {k: v for k, v in model.state_dict().items() if k in STATISTICS_BUFFERS}
    _load_state(model, {**defaults, **d["state_dict"]}, dtype != saved_dtype, _DYNAMICS_STATE_BUFFERS, source)
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
    return model


def save(model: Model, path: Union[str, os.PathLike], *, metadata: Optional[Mapping] = None) -> None:
    """Write ``model`` to ``path`` atomically (the file is complete or untouched, never half-written).

    Parameters
    ----------
    model : RelaxedNetwork, DEGNN or EGNN
    path : str or os.PathLike
    metadata : dict, optional
        Optional entries written next to the model (keys among ``METADATA_KEYS``:
        ``"symmetry"``, ``"data_keys"``, ``"recipe"``; values JSON-able dicts); by default
        ``model.metadata``. :func:`load` puts them back on ``model.metadata``.

    Examples
    --------
    >>> save(model, "model.pt", metadata={"data_keys": {"energy": "REF_energy"}})  # doctest: +SKIP
    >>> load("model.pt").metadata["data_keys"]                                     # doctest: +SKIP
    {'energy': 'REF_energy'}
    """
    buffer = io.BytesIO()  # serialised first: torch.save turns a failing write into a RuntimeError
    torch.save(model_to_dict(model, metadata=metadata), buffer)
    with atomic_write(path, "wb") as handle:
        handle.write(buffer.getvalue())


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
        (e.g. a plain ``torch.save``-d dict or a text file), of a newer format version, with
        weights that do not match the recorded checksum, hold NaN or inf (naming the tensor) or
        do not fit the config, saved in a dtype other than float32/float64, or holds another
        model kind than ``kind``.
    TypeError
        If ``dtype`` is not ``torch.float32`` or ``torch.float64``.
    """
    if kind is not None and kind not in MODEL_KINDS:
        raise ValueError(f"load: kind must be one of {list(MODEL_KINDS)} or None, got {kind!r}")
    if dtype is not None:
        check_float_dtype("dtype", dtype, "load")
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"load: path must be a str or os.PathLike, got {type(path).__name__}")
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


def load_graph_model(path: Union[str, os.PathLike], map_location="cpu", *, dtype: torch.dtype = None,
                     where: str = "load_graph_model") -> Union[RelaxedNetwork, HostPotential]:
    """:func:`load` a model that evaluates an ``AtomicGraph`` (one of ``GRAPH_MODELS``).

    Parameters
    ----------
    path, map_location, dtype
        As for :func:`load`.
    where : str
        The caller, named in the error.

    Returns
    -------
    RelaxedNetwork or HostPotential
        In evaluation mode.

    Raises
    ------
    ValueError
        What :func:`load` raises, and, naming ``path``, for a ``DEGNN`` / ``EGNN`` file (a dynamics
        model) or a relaxed host model saved without the :class:`HostPotential` wrapper.
    """
    model = load(path, map_location, dtype=dtype)
    if isinstance(model, GRAPH_MODELS):
        return model
    if isinstance(model, tuple(_DYNAMICS_CLASSES.values())):
        raise ValueError(
            f"{where}: {path} holds a {type(model).__name__}, a dynamics model (positions and velocities in a "
            f"box, no energy); use it through relaxed_e3nn.discrete (train it with task: box_dynamics). This "
            f"takes a RelaxedNetwork or a relaxed NequIP / MACE model trained with model.kind"
        )
    raise ValueError(
        f"{where}: {path} holds a bare relaxed host model ({type(model).__name__}) without the package's energy "
        f"interface; wrap it in relaxed_e3nn.models.HostPotential and save that (training with model.kind "
        f"NequIP / MACE does)"
    )
