r"""Relaxed versions of e3nn's ``TensorProduct`` and ``Linear``."""
from typing import Optional

import torch
from e3nn import o3

from relaxed_e3nn._checks import parse_irreps
from relaxed_e3nn.nn._maps import ThetaLinearMap
from relaxed_e3nn.nn._weights import RelaxedWeights, irreps_relaxed_from

__all__ = ["RelaxedTensorProduct", "RelaxedLinear"]


def _check_features(name: str, tensor, irreps: o3.Irreps) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() < 1 or tensor.shape[-1] != irreps.dim:
        raise ValueError(f"{name} must have last dimension {irreps.dim} ({irreps}), got shape {tuple(tensor.shape)}")


class RelaxedTensorProduct(o3.TensorProduct):
    r"""``e3nn.o3.TensorProduct`` whose second input is relaxed by learnable weights :math:`\theta`.

    .. math::
        z = \mathrm{TP}_w\big(x,\; y\,M(\theta)\big), \qquad
        M(\theta) = \mathbb{1} + \sum_{\text{paths}} w'_{\text{path}}\,(\,\cdot \otimes \theta)_{\text{path}}
        : \texttt{irreps\_in2} \to \texttt{irreps\_in2}.

    :math:`\theta` is a :class:`RelaxedWeights` submodule (``self.theta``). With
    :math:`\theta_\mathrm{breaking} = 0`, :math:`M(\theta) = \mathbb{1}` exactly and the layer equals
    ``o3.TensorProduct`` with the same weights; for any :math:`\theta` it is jointly equivariant,
    :math:`z(D_1 x, D_2 y; D_\theta\theta) = D_\mathrm{out} z(x, y; \theta)`, so with :math:`\theta` fixed it is
    equivariant under :math:`\mathrm{Stab}(\theta)`. Only couplings allowed by the selection rules
    between ``irreps_in2`` and ``irreps_relaxed`` enter: e.g. a ``0o`` :math:`\theta` cannot act on a
    natural-parity ``irreps_in2``.

    Parameters
    ----------
    irreps_in1, irreps_in2, irreps_out, instructions, ... :
        As ``e3nn.o3.TensorProduct``.
    irreps_relaxed : int, str or `e3nn.o3.Irreps`, keyword-only
        Irreps of :math:`\theta` (an int ``L``: ``0e + 0o + ... + Le + Lo``).
    """

    def __init__(self, irreps_in1, irreps_in2, irreps_out, instructions, *args, irreps_relaxed=2, **kwargs) -> None:
        # checked here so that malformed irreps name the argument instead of failing inside e3nn
        irreps_in1, irreps_in2, irreps_out = (parse_irreps(name, value, "RelaxedTensorProduct") for name, value in
                                              (("irreps_in1", irreps_in1), ("irreps_in2", irreps_in2),
                                               ("irreps_out", irreps_out)))
        super().__init__(irreps_in1, irreps_in2, irreps_out, instructions, *args, **kwargs)
        self.theta = RelaxedWeights(irreps_relaxed_from(irreps_relaxed, "irreps_relaxed"))
        self.irreps_relaxed = self.theta.irreps
        self.relaxation = ThetaLinearMap(self.irreps_in2, self.irreps_relaxed, self.irreps_in2, identity=True)

    def relaxed_input2(self, y: torch.Tensor) -> torch.Tensor:
        r""":math:`y\,M(\theta)`, the relaxed second input."""
        return y @ self.relaxation(self.theta())

    def forward(self, x, y, weight: Optional[torch.Tensor] = None):
        _check_features("x", x, self.irreps_in1)
        _check_features("y", y, self.irreps_in2)
        return super().forward(x, self.relaxed_input2(y), weight)

    def right(self, y, weight: Optional[torch.Tensor] = None):
        return super().right(self.relaxed_input2(y), weight)


class RelaxedLinear(o3.Linear):
    r"""``e3nn.o3.Linear`` plus a relaxed self-interaction :math:`x \otimes \theta \to \texttt{irreps\_out}`.

    .. math::
        y = \mathrm{Linear}(x) + x\,N(\theta), \qquad
        N(\theta) = \sum_{\text{paths}} w'_{\text{path}}\,(\,\cdot \otimes \theta)_{\text{path}}
        : \texttt{irreps\_in} \to \texttt{irreps\_out}.

    :math:`N(\theta)` is formed once per call (not per sample). With :math:`\theta_\mathrm{breaking} = 0` it
    is exactly zero and the layer equals ``o3.Linear`` with the same weights. Unlike ``o3.Linear`` it can
    change parity or angular momentum, e.g. a ``0o`` :math:`\theta` maps ``1o`` to ``1e`` if present in
    ``irreps_out``.

    Parameters
    ----------
    irreps_in, irreps_out, ... :
        As ``e3nn.o3.Linear`` (``irreps_out`` may contain irreps not reachable by ``o3.Linear``; only the
        relaxed term feeds those).
    irreps_relaxed : int, str or `e3nn.o3.Irreps`, keyword-only
        Irreps of :math:`\theta`.
    """

    def __init__(self, irreps_in, irreps_out, *args, irreps_relaxed=2, **kwargs) -> None:
        irreps_in = parse_irreps("irreps_in", irreps_in, "RelaxedLinear")  # named, before e3nn sees it
        irreps_out = parse_irreps("irreps_out", irreps_out, "RelaxedLinear")
        super().__init__(irreps_in, irreps_out, *args, **kwargs)
        self.theta = RelaxedWeights(irreps_relaxed_from(irreps_relaxed, "irreps_relaxed"))
        self.irreps_relaxed = self.theta.irreps
        self.relaxation = ThetaLinearMap(self.irreps_in, self.irreps_relaxed, self.irreps_out)

    def forward(self, features, weight: Optional[torch.Tensor] = None, bias: Optional[torch.Tensor] = None):
        _check_features("features", features, self.irreps_in)
        return super().forward(features, weight, bias) + features @ self.relaxation(self.theta())
