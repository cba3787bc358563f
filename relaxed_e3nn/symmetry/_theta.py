"""Normalising the many ways of handing relaxed weights to the symmetry tools."""
from dataclasses import dataclass
from typing import List

import numpy as np
import torch
from e3nn import o3

from relaxed_e3nn._checks import parse_irreps
from relaxed_e3nn.nn import relaxed_parameters

__all__ = ["ThetaEntry", "collect_thetas", "concatenate"]


@dataclass
class ThetaEntry:
    """One relaxed weight: a name (module path or ``"theta[i]"``), its irreps and float64 values."""

    name: str
    irreps: o3.Irreps
    values: np.ndarray


def _as_vector(theta, irreps: o3.Irreps, name: str) -> np.ndarray:
    if isinstance(theta, torch.Tensor):
        values = theta.detach().to(device="cpu", dtype=torch.float64).numpy()
    elif isinstance(theta, np.ndarray):
        values = np.asarray(theta, dtype=np.float64)
    else:
        raise TypeError(f"{name} must be a torch.Tensor or numpy array, got {type(theta).__name__}")
    if values.ndim != 1:
        raise ValueError(f"{name} must be a flat vector, got shape {tuple(values.shape)}")
    if values.shape[0] != irreps.dim:
        raise ValueError(f"{name} has {values.shape[0]} entries but its irreps {irreps} have dimension {irreps.dim}")
    if not np.isfinite(values).all():
        raise ValueError(f"{name} contains NaN or inf")
    return values.copy()


def collect_thetas(theta, irreps=None) -> List[ThetaEntry]:
    """Turn a model, a ``(irreps, theta)`` list or a flat vector into a list of :class:`ThetaEntry`.

    Parameters
    ----------
    theta : torch.nn.Module, list of (irreps, tensor) pairs, or a flat tensor / array
        A module contributes every relaxed weight found by
        :func:`relaxed_e3nn.nn.relaxed_parameters`; a flat vector needs ``irreps``.
    irreps : str or `e3nn.o3.Irreps`, optional
        Irreps of a flat ``theta``; must be ``None`` otherwise.
    """
    if isinstance(theta, torch.nn.Module):
        if irreps is not None:
            raise ValueError("irreps must be None when theta is a model (each relaxed weight has its own irreps)")
        entries = [
            ThetaEntry(name or "theta", ir, _as_vector(p, ir, name or "theta"))
            for name, ir, p in relaxed_parameters(theta)
        ]
        if not entries:
            raise ValueError(f"model of type {type(theta).__name__} holds no RelaxedWeights")
        return entries
    if isinstance(theta, (list, tuple)):
        if irreps is not None:
            raise ValueError("irreps must be None when theta is a list of (irreps, theta) pairs")
        if len(theta) == 0:
            raise ValueError("theta is an empty list; expected (irreps, theta) pairs")
        entries = []
        for i, pair in enumerate(theta):
            if not isinstance(pair, (list, tuple)) or len(pair) != 2:
                raise TypeError(f"theta[{i}] must be an (irreps, theta) pair, got {type(pair).__name__}")
            ir = parse_irreps(f"theta[{i}] irreps", pair[0])
            entries.append(ThetaEntry(f"theta[{i}]", ir, _as_vector(pair[1], ir, f"theta[{i}]")))
        return entries
    if isinstance(theta, (torch.Tensor, np.ndarray)):
        if irreps is None:
            raise ValueError("irreps is required when theta is a flat vector (e.g. irreps='0e+1o+2e')")
        ir = parse_irreps("irreps", irreps)
        return [ThetaEntry("theta", ir, _as_vector(theta, ir, "theta"))]
    raise TypeError(
        "theta must be a torch.nn.Module, a list of (irreps, theta) pairs or a flat tensor, "
        f"got {type(theta).__name__}"
    )


def concatenate(entries: List[ThetaEntry]) -> tuple:
    """``(irreps, values)``: every entry stacked into one vector (irreps concatenated)."""
    irreps = o3.Irreps(sum((list(e.irreps) for e in entries), []))
    values = np.concatenate([e.values for e in entries]) if entries else np.zeros(0)
    return irreps, values

