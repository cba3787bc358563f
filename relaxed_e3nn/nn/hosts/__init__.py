r"""Relaxing host models: a registry of adapters keyed by module class, NequIP and MACE adapters, recipes.

:func:`relaxed_e3nn.nn.relax` relaxes every module of a model whose class has an adapter. e3nn's
``gate_points`` convolutions, NequIP's ``InteractionBlock`` and MACE's interaction blocks come
registered (the host ones import their package only when such a model is relaxed); a user adds a block
class with :func:`register_adapter`. :class:`RelaxedHostBlock` is the backend-independent relaxation a
host block gets: :math:`Y \to Y\,M(\theta)` on the spherical harmonics that block receives (per layer,
also where the host shares one :math:`Y` between layers, and in the package's sender − receiver edge
convention whatever the host's), plus an optional node term :math:`x\,N(\theta)`.

:func:`relaxed_nequip_model` and :func:`relaxed_mace_model` build a host model from its config and
relax it, recording the build *recipe* that :func:`relaxed_e3nn.save` needs (see :mod:`._recipe`).
"""
from relaxed_e3nn.nn.hosts._block import RelaxedHostBlock, edge_reversal_signs
from relaxed_e3nn.nn.hosts._recipe import (
    HOST_KINDS,
    build_from_recipe,
    host_metadata,
    recipe_of,
    set_host_metadata,
    relaxed_mace_model,
    relaxed_nequip_model,
)
from relaxed_e3nn.nn.hosts._registry import adapter_for, register_adapter, registered_adapters, relax_modules

__all__ = [
    "RelaxedHostBlock",
    "edge_reversal_signs",
    "register_adapter",
    "adapter_for",
    "registered_adapters",
    "relax_modules",
    "relaxed_nequip_model",
    "relaxed_mace_model",
    "build_from_recipe",
    "recipe_of",
    "host_metadata",
    "set_host_metadata",
    "HOST_KINDS",
]
