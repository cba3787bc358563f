r"""The MACE adapter: relaxed MACE interaction blocks and the relaxed MACE model builder.

MACE computes the edge spherical harmonics once in ``MACE.forward`` and passes the same
``edge_attrs`` to every interaction block; each relaxed block relaxes the copy it receives with its
own :math:`\theta`. MACE's edge vectors are receiver − sender (``edge_index[0]`` sends,
``edge_index[1]`` receives, ``vectors = pos[receiver] - pos[sender]``), the opposite of the
package's convention, so the block applies :math:`P\,M(\theta)\,P` with :math:`P = \mathrm{diag}((-1)^l)`
and :math:`\theta` keeps the package's meaning. The relaxation acts on the harmonics only, so it is the
same whatever tensor-product backend (e3nn, cuEquivariance, OpenEquivariance) the block uses.

Importing MACE sets ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` in the environment; when this module is
the one that imports MACE, the variable is put back as it was, so the package's loading of files
stays weights-only (it passes ``weights_only=True`` explicitly in any case).
"""
import os
import sys
from collections.abc import Mapping
from typing import Optional

import numpy as np
import torch
from e3nn import o3

from relaxed_e3nn._checks import DTYPES
from relaxed_e3nn._dtype import default_dtype
from relaxed_e3nn.nn._weights import irreps_relaxed_from
from relaxed_e3nn.nn.hosts._block import RelaxedHostBlock
from relaxed_e3nn.nn.hosts._recipe import make_recipe, set_host_metadata, resolve_name
from relaxed_e3nn.nn.hosts._registry import register_adapter, relax_modules

_WEIGHTS_ONLY_SWITCH = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
_importing_mace = "mace" not in sys.modules
_saved_switch = os.environ.get(_WEIGHTS_ONLY_SWITCH)
from mace.modules.blocks import InteractionBlock  # noqa: E402  (sets the switch on first import)

if _importing_mace:
    if _saved_switch is None:
        os.environ.pop(_WEIGHTS_ONLY_SWITCH, None)
    else:
        os.environ[_WEIGHTS_ONLY_SWITCH] = _saved_switch

__all__ = ["RelaxedMACEInteraction", "relaxed_mace_model", "build_from_recipe", "encode_kwargs", "decode_kwargs"]

#: where the classes and functions named in a MACE recipe may come from
ALLOWED_NAMES = ("mace.modules", "torch.nn.functional", "torch.nn.modules.activation")


class RelaxedMACEInteraction(RelaxedHostBlock):
    r"""A MACE interaction block with relaxed weights (see :class:`RelaxedHostBlock`).

    Called as MACE calls its blocks, ``(node_attrs, node_feats, edge_attrs, ...) -> (message, sc)``:
    the block receives :math:`Y_\mathrm{host} P M(\theta) P`, and with node relaxation the reshaped
    :math:`x\,N(\theta)` of the block's input features is added to its message.
    """

    def __init__(self, block: InteractionBlock, *, irreps_relaxed=2, relax_at: str = "both") -> None:
        irreps_out = getattr(block, "irreps_out", block.target_irreps)
        if relax_at != "edge" and not isinstance(getattr(block, "reshape", None), torch.nn.Module):
            raise ValueError(f"RelaxedMACEInteraction: {type(block).__name__} has no reshape module; node "
                             f"relaxation is not available for it, use relax_at='edge' (got {relax_at!r})")
        super().__init__(block, block.edge_attrs_irreps, block.node_feats_irreps, irreps_out,
                         irreps_relaxed=irreps_relaxed, relax_at=relax_at, reversed_edges=True)

    def forward(self, node_attrs: torch.Tensor, node_feats: torch.Tensor, edge_attrs: torch.Tensor, *args, **kwargs):
        if self.relaxes_edges:
            edge_attrs = self.relax_edge_attr(edge_attrs)
        message, sc = self.block(node_attrs, node_feats, edge_attrs, *args, **kwargs)
        if self.relaxes_nodes:
            message = message + self.block.reshape(self.node_term(node_feats[: message.shape[0]]))
        return message, sc


def _adapt(block: InteractionBlock, *, irreps_relaxed=2, relax_at: str = "both") -> RelaxedMACEInteraction:
    return RelaxedMACEInteraction(block, irreps_relaxed=irreps_relaxed, relax_at=relax_at)


register_adapter(InteractionBlock, _adapt)


def encode_kwargs(kwargs: Mapping) -> dict:
    """MACE keyword arguments as JSON data: irreps as ``{"__irreps__": str}``, classes and functions as
    ``{"__name__": "module.Name"}``, arrays as ``{"__array__": list}``."""
    def encode(value):
        if isinstance(value, o3.Irreps):
            return {"__irreps__": str(value)}
        if isinstance(value, type) or callable(value):
            return {"__name__": f"{value.__module__}.{value.__qualname__}"}
        if isinstance(value, (np.ndarray, torch.Tensor)):
            return {"__array__": np.asarray(value.tolist() if isinstance(value, torch.Tensor) else value).tolist()}
        if isinstance(value, Mapping):
            return {str(k): encode(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [encode(v) for v in value]
        return value
    return encode(dict(kwargs))


def decode_kwargs(config: Mapping) -> dict:
    """Inverse of :func:`encode_kwargs`; names are imported only from ``ALLOWED_NAMES``."""
    def decode(value):
        if isinstance(value, Mapping):
            if set(value) == {"__irreps__"}:
                return o3.Irreps(value["__irreps__"])
            if set(value) == {"__name__"}:
                return resolve_name(value["__name__"], ALLOWED_NAMES, "MACE recipe name")
            if set(value) == {"__array__"}:
                return np.asarray(value["__array__"], dtype=np.float64)
            return {k: decode(v) for k, v in value.items()}
        if isinstance(value, list):
            return [decode(v) for v in value]
        return value
    return decode(dict(config))


def relaxed_mace_model(kwargs, *, model_class="mace.modules.MACE", irreps_relaxed=2, relax_at: str = "both",
                       dtype: Optional[torch.dtype] = None) -> torch.nn.Module:
    """Build a MACE model and relax it (see :func:`relaxed_e3nn.nn.hosts.relaxed_mace_model`)."""
    if not isinstance(kwargs, Mapping):
        raise ValueError(f"relaxed_mace_model: kwargs must be a dict of MACE arguments, got {type(kwargs).__name__}")
    if isinstance(model_class, type):
        model_class = f"{model_class.__module__}.{model_class.__qualname__}"
    cls = resolve_name(model_class, ("mace.modules",), "relaxed_mace_model: model_class")
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module)):
        raise ValueError(f"relaxed_mace_model: model_class must name a MACE model class, got {model_class!r}")
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if dtype not in DTYPES.values():
        raise ValueError(f"relaxed_mace_model: dtype must be one of {list(DTYPES)}, got {dtype!r}")
    encoded = encode_kwargs(kwargs)
    irreps_relaxed = irreps_relaxed_from(irreps_relaxed, "irreps_relaxed")
    recipe = make_recipe("MACE", {"class": model_class, "kwargs": encoded}, irreps_relaxed, relax_at, dtype)
    with default_dtype(dtype):
        built = cls(**decode_kwargs(encoded))
    relaxed = relax_modules(built, irreps_relaxed=irreps_relaxed, relax_at=relax_at)
    set_host_metadata(relaxed, {"recipe": recipe})
    return relaxed


def build_from_recipe(recipe: dict) -> torch.nn.Module:
    """The relaxed MACE model of a checked recipe, in the recipe's dtype."""
    config = recipe["config"]
    if not isinstance(config.get("class"), str) or not isinstance(config.get("kwargs"), Mapping):
        raise ValueError("MACE recipe: config must be {'class': 'mace.modules.MACE', 'kwargs': {...}}")
    return relaxed_mace_model(decode_kwargs(config["kwargs"]), model_class=config["class"],
                              irreps_relaxed=recipe["irreps_relaxed"], relax_at=recipe["relax_at"],
                              dtype=DTYPES[recipe["dtype"]])

