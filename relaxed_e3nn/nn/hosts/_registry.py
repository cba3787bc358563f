r"""Adapters that relax the convolutions of host models, keyed by module class.

An *adapter* turns one plain (strictly equivariant) convolution module into its relaxed twin:
``adapter(module, irreps_relaxed=..., relax_at=...) -> torch.nn.Module``. :func:`relax_modules` walks
a model and replaces every module whose class (or a base class) has an adapter. e3nn's two
``gate_points`` convolutions, NequIP's ``InteractionBlock`` and MACE's interaction blocks come
registered; :func:`register_adapter` adds a user's own block class.

The host adapters are registered lazily: their modules import NequIP or MACE, so they are imported
only when a model holding such a block is relaxed (and the host package is therefore installed).
"""
import importlib
import warnings
from typing import Callable, Dict, List, Optional

import torch

from relaxed_e3nn._checks import RELAX_AT
from relaxed_e3nn.nn._weights import RelaxedWeights

__all__ = ["register_adapter", "adapter_for", "registered_adapters", "relax_modules", "Adapter"]

#: ``adapter(module, *, irreps_relaxed, relax_at) -> relaxed module``
Adapter = Callable[..., torch.nn.Module]

_ADAPTERS: Dict[type, Adapter] = {}
# "module.QualName" of a host block class -> the module of ours whose import registers its adapter
_LAZY_ADAPTERS: Dict[str, str] = {
    "nequip.nn.interaction_block.InteractionBlock": "relaxed_e3nn.nn.hosts._nequip",
    "mace.modules.blocks.InteractionBlock": "relaxed_e3nn.nn.hosts._mace",
}


def register_adapter(module_class: type, adapter: Adapter, *, replace: bool = False) -> None:
    r"""Register ``adapter`` as the way :func:`relaxed_e3nn.nn.relax` relaxes ``module_class``.

    The adapter applies to ``module_class`` and its subclasses (the most derived registered class
    wins). It receives the plain module and returns its relaxed replacement, which must hold its own
    :class:`~relaxed_e3nn.nn.RelaxedWeights` as a direct child (that is how the walk recognises relaxed
    modules and how :func:`~relaxed_e3nn.nn.relaxed_parameters` finds :math:`\theta`) and must give the
    same outputs as the plain module while :math:`\theta_\mathrm{breaking} = 0`.

    Parameters
    ----------
    module_class : type
        A subclass of ``torch.nn.Module``.
    adapter : callable
        ``adapter(module, *, irreps_relaxed, relax_at) -> torch.nn.Module``.
    replace : bool
        Allow replacing an adapter already registered for exactly ``module_class``.

    Examples
    --------
    >>> from relaxed_e3nn.nn.hosts import RelaxedHostBlock
    >>> class MyBlock(torch.nn.Module): ...                                           # doctest: +SKIP
    >>> register_adapter(MyBlock, lambda block, **options: MyRelaxedBlock(block, **options))  # doctest: +SKIP
    """
    if not isinstance(module_class, type) or not issubclass(module_class, torch.nn.Module):
        raise TypeError(f"register_adapter: module_class must be a torch.nn.Module subclass, got {module_class!r}")
    if not callable(adapter):
        raise TypeError(f"register_adapter: adapter must be callable, got {type(adapter).__name__}")
    if module_class in _ADAPTERS and not replace and _ADAPTERS[module_class] is not adapter:
        raise ValueError(f"register_adapter: {module_class.__qualname__} already has an adapter; pass replace=True")
    _ADAPTERS[module_class] = adapter


def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def adapter_for(module_class: type) -> Optional[Adapter]:
    """The adapter registered for ``module_class`` or its nearest base class, or ``None``."""
    for base in module_class.__mro__:
        if base in _ADAPTERS:
            return _ADAPTERS[base]
        lazy = _LAZY_ADAPTERS.pop(_qualified_name(base), None)
        if lazy is not None:
            # the host package is imported already (the model holds one of its modules): importing
            # our adapter module registers the adapter
            importlib.import_module(lazy)
            return adapter_for(module_class)
    return None


def registered_adapters() -> List[str]:
    """Qualified names of the classes with an adapter (lazily registered host classes included)."""
    return sorted({_qualified_name(c) for c in _ADAPTERS} | set(_LAZY_ADAPTERS))


def _is_relaxed(module: torch.nn.Module) -> bool:
    return any(isinstance(child, RelaxedWeights) for child in module.children())


def relax_modules(module: torch.nn.Module, *, irreps_relaxed=2, relax_at: str = "both") -> torch.nn.Module:
    r"""Replace, in place, every module of ``module`` that has an adapter by its relaxed twin.

    Each replaced module gets its own :math:`\theta`. Modules that are relaxed already (those with a
    :class:`~relaxed_e3nn.nn.RelaxedWeights` child) are left alone, so relaxing twice changes
    nothing. Warns when nothing was relaxed.

    Returns
    -------
    torch.nn.Module
        ``module`` itself, or its relaxed twin when ``module`` itself has an adapter.
    """
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"relax: module must be a torch.nn.Module, got {type(module).__name__}")
    if relax_at not in RELAX_AT:
        raise ValueError(f"relax: relax_at must be one of {RELAX_AT}, got {relax_at!r}")
    if _is_relaxed(module):
        return module
    adapter = adapter_for(type(module))
    if adapter is not None:
        return adapter(module, irreps_relaxed=irreps_relaxed, relax_at=relax_at)
    if _replace_children(module, irreps_relaxed, relax_at) == 0 and not any(
        _is_relaxed(m) for m in module.modules()
    ):
        warnings.warn(
            f"relax: {type(module).__name__} holds no module that an adapter knows; it is unchanged "
            f"(adapters exist for {', '.join(registered_adapters())}; add one with register_adapter)",
            stacklevel=3,
        )
    return module


def _replace_children(module: torch.nn.Module, irreps_relaxed, relax_at: str) -> int:
    """Replace the adapted descendants of ``module``; return how many were replaced."""
    count = 0
    for name, child in list(module.named_children()):
        if _is_relaxed(child):
            continue
        adapter = adapter_for(type(child))
        if adapter is not None:
            module._modules[name] = adapter(child, irreps_relaxed=irreps_relaxed, relax_at=relax_at)
            count += 1
        else:
            count += _replace_children(child, irreps_relaxed, relax_at)
    return count
