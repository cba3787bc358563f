r"""The NequIP adapter: relaxed ``nequip.nn.InteractionBlock`` and the relaxed NequIP model builder.

NequIP computes the edge spherical harmonics once (``SphericalHarmonicEdgeAttrs`` writes
``data["edge_attrs"]``) and every ``InteractionBlock`` reads that one entry. The relaxed block puts its
own :math:`Y\,M(\theta)` in the dict for the call of the block it wraps and puts the shared
:math:`Y` back afterwards, so each layer sees its own relaxation and later layers the plain harmonics.
NequIP's edge vectors are sender − receiver (``edge_index[1]`` sends, ``edge_index[0]`` receives), the
package's convention: :math:`\theta` needs no sign change.

This module imports NequIP; the registry imports it only when a model holding a NequIP block is
relaxed.
"""
from collections.abc import Mapping

import torch
from nequip.data import AtomicDataDict
from nequip.nn.interaction_block import InteractionBlock
from nequip.utils.global_state import global_state_initialized, set_global_state

from relaxed_e3nn._checks import DTYPES
from relaxed_e3nn.nn._weights import irreps_relaxed_from
from relaxed_e3nn.nn.hosts._block import RelaxedHostBlock
from relaxed_e3nn.nn.hosts._recipe import make_recipe, set_host_metadata, preserved_global_state, resolve_name
from relaxed_e3nn.nn.hosts._registry import register_adapter, relax_modules

__all__ = ["RelaxedNequIPInteraction", "relaxed_nequip_model", "build_from_recipe"]

#: where a NequIP model config's ``_target_`` may point
ALLOWED_TARGETS = ("nequip.model", "allegro.model")
_EDGE_ATTRS = AtomicDataDict.EDGE_ATTRS_KEY
_NODE_FEATURES = AtomicDataDict.NODE_FEATURES_KEY


class RelaxedNequIPInteraction(RelaxedHostBlock):
    r"""NequIP's ``InteractionBlock`` with relaxed weights (see :class:`RelaxedHostBlock`).

    ``forward(data) -> data`` as NequIP's block: the block reads :math:`Y\,M(\theta)` as
    ``data["edge_attrs"]`` (the shared entry is restored after the call), and with node relaxation
    :math:`x\,N(\theta)` of the block's input features is added to its output features.
    """

    def __init__(self, block: InteractionBlock, *, irreps_relaxed=2, relax_at: str = "both") -> None:
        super().__init__(block, block.irreps_in[_EDGE_ATTRS], block.irreps_in[_NODE_FEATURES],
                         block.irreps_out[_NODE_FEATURES], irreps_relaxed=irreps_relaxed, relax_at=relax_at)
        # NequIP's graph modules describe their fields with these dicts
        self.irreps_in = block.irreps_in
        self.irreps_out = block.irreps_out

    def forward(self, data: AtomicDataDict.Type) -> AtomicDataDict.Type:
        edge_attr = data[_EDGE_ATTRS]
        node_input = data[_NODE_FEATURES]
        if self.relaxes_edges:
            data[_EDGE_ATTRS] = self.relax_edge_attr(edge_attr)
        data = self.block(data)
        data[_EDGE_ATTRS] = edge_attr
        if self.relaxes_nodes:
            out = data[_NODE_FEATURES]
            data[_NODE_FEATURES] = out + self.node_term(node_input[: out.shape[0]])
        return data


def _adapt(block: InteractionBlock, *, irreps_relaxed=2, relax_at: str = "both") -> RelaxedNequIPInteraction:
    return RelaxedNequIPInteraction(block, irreps_relaxed=irreps_relaxed, relax_at=relax_at)


register_adapter(InteractionBlock, _adapt)


def relaxed_nequip_model(model, *, irreps_relaxed=2, relax_at: str = "both") -> torch.nn.Module:
    """Build a NequIP model from its config and relax it (see :func:`relaxed_e3nn.nn.hosts.relaxed_nequip_model`)."""
    if not isinstance(model, Mapping) or "_target_" not in model:
        raise ValueError(f"relaxed_nequip_model: model must be a NequIP model config dict with a '_target_', "
                         f"got {type(model).__name__}")
    config = dict(model)
    builder = resolve_name(config["_target_"], ALLOWED_TARGETS, "relaxed_nequip_model: model['_target_']")
    model_dtype = config.get("model_dtype")
    if model_dtype not in DTYPES:
        raise ValueError(f"relaxed_nequip_model: model['model_dtype'] must be one of {list(DTYPES)}, "
                         f"got {model_dtype!r}")
    irreps_relaxed = irreps_relaxed_from(irreps_relaxed, "irreps_relaxed")
    recipe = make_recipe("NequIP", config, irreps_relaxed, relax_at, DTYPES[model_dtype])
    kwargs = {k: v for k, v in config.items() if k != "_target_"}
    with preserved_global_state():
        if not global_state_initialized():
            set_global_state()  # NequIP's builders require it
        built = builder(**kwargs)
    relaxed = relax_modules(built, irreps_relaxed=irreps_relaxed, relax_at=relax_at)
    set_host_metadata(relaxed, {"recipe": recipe})
    return relaxed


def build_from_recipe(recipe: dict) -> torch.nn.Module:
    """The relaxed NequIP model of a checked recipe, in the recipe's dtype."""
    config = dict(recipe["config"], model_dtype=recipe["dtype"])
    return relaxed_nequip_model(config, irreps_relaxed=recipe["irreps_relaxed"], relax_at=recipe["relax_at"])
