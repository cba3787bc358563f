r"""Build recipes of relaxed host models: plain JSON data from which the model is rebuilt.

A relaxed host model (NequIP, MACE) cannot be pickled into a weights-only file, and its class alone
does not say how it was built. Its *recipe* says it, as plain JSON data::

    {
        "host": "NequIP",                 # or "MACE" (HOST_KINDS)
        "config": {...},                  # NequIP: the model config dict (with its _target_);
                                          # MACE: {"class": "mace.modules.MACE", "kwargs": {...}}
        "irreps_relaxed": "1x0e+1x0o+...",
        "relax_at": "both",
        "dtype": "float64",
    }

The builders (:func:`relaxed_nequip_model`, :func:`relaxed_mace_model`) put it on the model as
``model.relaxed_e3nn_metadata["recipe"]``, and :func:`relaxed_e3nn.save` writes it next to the weights. Rebuilding
imports only names under the host's own packages (an allow-list), never arbitrary code from a file.
"""
import importlib
import json
import random
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Optional

import numpy as np
import torch
from e3nn import get_optimization_defaults, set_optimization_defaults

from relaxed_e3nn._checks import DTYPES, RELAX_AT, dtype_name
from relaxed_e3nn.nn._weights import irreps_relaxed_from

__all__ = [
    "HOST_KINDS", "build_from_recipe", "recipe_of", "make_recipe", "plain_json", "resolve_name",
    "relaxed_nequip_model", "relaxed_mace_model", "preserved_global_state", "host_metadata", "set_host_metadata",
    "HOST_METADATA_ATTRIBUTE",
]

#: the host model kinds a recipe can name, as file kinds spell them
HOST_KINDS = ("NequIP", "MACE")
_HOST_MODULES = {"NequIP": "relaxed_e3nn.nn.hosts._nequip", "MACE": "relaxed_e3nn.nn.hosts._mace"}
_RECIPE_KEYS = {"host", "config", "irreps_relaxed", "relax_at", "dtype"}
#: the attribute of a host model that holds its file metadata (the recipe among them)
HOST_METADATA_ATTRIBUTE = "relaxed_e3nn_metadata"


def canonical_host(host, where: str = "recipe") -> str:
    """``host`` spelled as in ``HOST_KINDS`` (matched case-insensitively), else a ``ValueError``."""
    for kind in HOST_KINDS:
        if isinstance(host, str) and host.lower() == kind.lower():
            return kind
    raise ValueError(f"{where}: host must be one of {list(HOST_KINDS)} (any case), got {host!r}")


def plain_json(value, name: str):
    """``value`` as plain JSON data (mappings -> dicts, sequences -> lists), else a ``ValueError`` naming ``name``."""
    def convert(item):
        if isinstance(item, Mapping):
            return {str(k): convert(v) for k, v in item.items()}
        if isinstance(item, Sequence) and not isinstance(item, (str, bytes)):
            return [convert(v) for v in item]
        return item
    try:
        return json.loads(json.dumps(convert(value), allow_nan=False))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be plain JSON data (dicts, lists, strings, finite numbers, booleans, "
                         f"None): {err}") from err


def make_recipe(host: str, config, irreps_relaxed, relax_at: str, dtype: torch.dtype) -> dict:
    """A checked recipe dict (see the module notes)."""
    if relax_at not in RELAX_AT:
        raise ValueError(f"recipe: relax_at must be one of {RELAX_AT}, got {relax_at!r}")
    return {
        "host": canonical_host(host),
        "config": plain_json(config, "recipe config"),
        "irreps_relaxed": str(irreps_relaxed_from(irreps_relaxed, "irreps_relaxed")),
        "relax_at": relax_at,
        "dtype": dtype_name(dtype),
    }


def recipe_of(model: torch.nn.Module) -> Optional[dict]:
    """The build recipe of a relaxed host model (``model.relaxed_e3nn_metadata["recipe"]``), or ``None``."""
    recipe = host_metadata(model).get("recipe")
    return dict(recipe) if isinstance(recipe, Mapping) else None


def host_metadata(model: torch.nn.Module) -> dict:
    """The package's file metadata of a host model (``model.relaxed_e3nn_metadata``), ``{}`` if none.

    Host models keep it in their own attribute: NequIP's ``GraphModel.metadata`` is NequIP's.
    """
    metadata = getattr(model, HOST_METADATA_ATTRIBUTE, None)
    return dict(metadata) if isinstance(metadata, Mapping) else {}


def set_host_metadata(model: torch.nn.Module, metadata: Mapping) -> None:
    """Set ``model.relaxed_e3nn_metadata`` (the entries :func:`relaxed_e3nn.save` writes)."""
    setattr(model, HOST_METADATA_ATTRIBUTE, dict(metadata))


def resolve_name(name, allowed_prefixes, what: str):
    """The object a dotted ``name`` (``"package.module.Name"``) refers to, if it lies under ``allowed_prefixes``."""
    if not isinstance(name, str) or "." not in name:
        raise ValueError(f"{what} must be a dotted name like 'package.module.Name', got {name!r}")
    if not any(name == prefix or name.startswith(prefix + ".") for prefix in allowed_prefixes):
        raise ValueError(f"{what} {name!r} is not allowed: names must lie under {list(allowed_prefixes)}")
    module_name, _, attribute = name.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"{what} {name!r} cannot be imported: {err}") from err


def _checked_recipe(recipe, where: str) -> dict:
    if not isinstance(recipe, Mapping):
        raise ValueError(f"{where}: a recipe must be a dict, got {type(recipe).__name__}")
    missing, unknown = _RECIPE_KEYS - set(recipe), set(recipe) - _RECIPE_KEYS
    if missing or unknown:
        raise ValueError(f"{where}: recipe has missing entries {sorted(missing)} and unknown entries {sorted(unknown)}")
    if recipe["relax_at"] not in RELAX_AT:
        raise ValueError(f"{where}: recipe relax_at must be one of {RELAX_AT}, got {recipe['relax_at']!r}")
    if recipe["dtype"] not in DTYPES:
        raise ValueError(f"{where}: recipe dtype must be one of {list(DTYPES)}, got {recipe['dtype']!r}")
    if not isinstance(recipe["config"], Mapping):
        raise ValueError(f"{where}: recipe config must be a dict, got {type(recipe['config']).__name__}")
    return dict(recipe, host=canonical_host(recipe["host"], where))


def _host_module(host: str):
    try:
        # imported on demand: the module imports the host package, an optional dependency
        return importlib.import_module(_HOST_MODULES[host])
    except ImportError as err:
        extra = host.lower()
        raise ImportError(f"a relaxed {host} model needs the {host} package: pip install relaxed_e3nn[{extra}]"
                          + (" and scripts/install_mace.sh" if host == "MACE" else "") + f" ({err})") from err


def build_from_recipe(recipe, *, dtype: Optional[torch.dtype] = None, where: str = "recipe") -> torch.nn.Module:
    """Build the relaxed host model a recipe describes (fresh weights; load its state after).

    Parameters
    ----------
    recipe : dict
    dtype : torch.dtype, optional
        Build in this floating dtype instead of the recipe's.
    where : str
        How errors name the recipe's source.
    """
    recipe = _checked_recipe(recipe, where)
    if dtype is not None:
        recipe["dtype"] = dtype_name(dtype)
    return _host_module(recipe["host"]).build_from_recipe(recipe)


def relaxed_nequip_model(model, *, irreps_relaxed=2, relax_at: str = "both") -> torch.nn.Module:
    r"""Build a NequIP model from its config and relax it; usable as a NequIP config ``_target_``.

    Parameters
    ----------
    model : dict
        A NequIP model config with its ``_target_`` (e.g. ``"nequip.model.NequIPGNNModel"``) and the
        builder's arguments (``seed``, ``model_dtype``, ``type_names``, ...).
    irreps_relaxed : int, str or `e3nn.o3.Irreps`
    relax_at : {"both", "edge", "node"}

    Returns
    -------
    torch.nn.Module
        NequIP's ``GraphModel`` with relaxed interaction blocks and ``relaxed_e3nn_metadata["recipe"]`` set.
    """
    return _host_module("NequIP").relaxed_nequip_model(model, irreps_relaxed=irreps_relaxed, relax_at=relax_at)


def relaxed_mace_model(kwargs, *, model_class: str = "mace.modules.MACE", irreps_relaxed=2,
                       relax_at: str = "both", dtype: Optional[torch.dtype] = None) -> torch.nn.Module:
    r"""Build a MACE model from its keyword arguments and relax it.

    Parameters
    ----------
    kwargs : dict
        The arguments of ``model_class`` (classes and functions as objects or dotted names, irreps as
        ``o3.Irreps`` or strings, arrays as arrays or lists).
    model_class : str or type
        ``mace.modules.MACE`` or ``mace.modules.ScaleShiftMACE`` (or their dotted names).
    irreps_relaxed : int, str or `e3nn.o3.Irreps`
    relax_at : {"both", "edge", "node"}
    dtype : torch.dtype, optional
        Build in this dtype (default: torch's default dtype).

    Returns
    -------
    torch.nn.Module
        The MACE model with relaxed interaction blocks and ``relaxed_e3nn_metadata["recipe"]`` set.
    """
    return _host_module("MACE").relaxed_mace_model(kwargs, model_class=model_class, irreps_relaxed=irreps_relaxed,
                                                   relax_at=relax_at, dtype=dtype)


@contextmanager
def preserved_global_state():
    """Restore torch's default dtype, e3nn's optimization defaults and the torch, numpy and Python
    random states on exit.

    Host packages set global state when they build models (NequIP seeds every generator, sets the
    default dtype, and leaves e3nn's ``jit_mode`` at ``"script"``, after which e3nn modules built
    later hold TorchScript functions that cannot be deep-copied); building a model inside the package
    must not change the caller's.
    """
    dtype = torch.get_default_dtype()
    e3nn_defaults = {k: v for k, v in get_optimization_defaults().items() if k != "jit_script_fx"}
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        try:
            yield
        finally:
            torch.set_default_dtype(dtype)
            set_optimization_defaults(**e3nn_defaults)
            random.setstate(python_state)
            np.random.set_state(numpy_state)
