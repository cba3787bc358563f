r"""Relaxed layers: learnable symmetry breaking on top of e3nn.

Every relaxed layer owns a :class:`RelaxedWeights` :math:`\theta` in a direct sum of O(3) irreps, is
jointly equivariant in (input, geometry, :math:`\theta`), starts with :math:`\theta_\mathrm{breaking} = 0`
(exactly equivariant, numerically identical to its plain e3nn counterpart) and, with :math:`\theta` fixed,
is exactly equivariant under the stabilizer of :math:`\theta`.
"""
from relaxed_e3nn.nn._convolution import RELAXED_STATE_SUFFIXES, RelaxedConvolution, load_equivariant_state, relax
from relaxed_e3nn.nn._layers import RelaxedLinear, RelaxedTensorProduct
from relaxed_e3nn.nn._maps import ThetaLinearMap
from relaxed_e3nn.nn._optim import RelaxedOptimizer, make_optimizer, relaxed_param_groups
from relaxed_e3nn.nn._weights import RelaxedWeights, irreps_relaxed_from, relaxed_parameters, rotate
from relaxed_e3nn.nn.hosts import RelaxedHostBlock, register_adapter, relaxed_mace_model, relaxed_nequip_model

__all__ = [
    "RelaxedWeights",
    "RelaxedTensorProduct",
    "RelaxedLinear",
    "RelaxedConvolution",
    "ThetaLinearMap",
    "relax",
    "load_equivariant_state",
    "RELAXED_STATE_SUFFIXES",
    "relaxed_parameters",
    "rotate",
    "irreps_relaxed_from",
    "make_optimizer",
    "relaxed_param_groups",
    "RelaxedOptimizer",
    "register_adapter",
    "RelaxedHostBlock",
    "relaxed_nequip_model",
    "relaxed_mace_model",
]
