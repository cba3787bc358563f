r"""Imposing a point group on a relaxed model: every :math:`\theta` projected onto its H-invariant subspace.

With :math:`\theta` held fixed a relaxed layer is exactly equivariant under
:math:`\mathrm{Stab}(\theta) = \{g : D_\theta(g)\theta = \theta\}`, and :math:`\theta` is the only place
the package's layers break O(3). Projecting *every* layer's :math:`\theta` with the Reynolds operator

.. math::
    P_H = \frac{1}{|H|}\sum_{h\in H} D_\theta(h)

(an orthogonal projector onto the H-invariant vectors :math:`V_H`; exact for the continuous groups too,
see :meth:`relaxed_e3nn.groups.PointGroup.invariant_projector`) therefore makes the whole model exactly
H-equivariant, provided every other module is O(3)-equivariant (true for the package's layers).

Frames. A model with a ``frame`` :math:`F` (rows: the model's axes in input coordinates) sees edge
vectors :math:`F\mathbf{r}`. A group :math:`H` given in input coordinates then acts on :math:`\theta` as
:math:`F H F^\top`, so the projector used is the one of ``group.rotated(F)``: for
:math:`h \in H`, :math:`f(h\mathbf{x}) = g(F h F^\top F\mathbf{x})` and :math:`F h F^\top` must fix
:math:`\theta`.
"""
import contextlib
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from e3nn import o3

from relaxed_e3nn._checks import as_orthogonal_matrix
from relaxed_e3nn.groups import PointGroup, as_point_group
from relaxed_e3nn.nn import relaxed_parameters

__all__ = ["model_frame", "project_thetas", "breaking_beyond", "ThetaProjector"]


def model_frame(model: torch.nn.Module) -> np.ndarray:
    """The frame :math:`F` (float64 ``[3, 3]``) of a model: its ``frame`` buffer, else ``config.frame``, else I."""
    frame = getattr(model, "frame", None)
    if frame is None:
        frame = getattr(getattr(model, "config", None), "frame", None)
    if frame is None:
        return np.eye(3)
    return as_orthogonal_matrix(frame, "model.frame", tol=1e-5).detach().cpu().to(torch.float64).numpy()


def _as_group(group, name: str = "group") -> PointGroup:
    """A required group argument (a PointGroup, a name, or a structure standing for its point group)."""
    result = as_point_group(group, name)
    if result is None:
        raise TypeError(f"{name} is required: a PointGroup, a group name such as 'C3v', or a structure")
    return result


def _frame_of(model: torch.nn.Module, frame) -> np.ndarray:
    if frame is None:
        return model_frame(model)
    return as_orthogonal_matrix(frame, "frame", tol=1e-5).detach().cpu().to(torch.float64).numpy()


class ThetaProjector:
    r"""The projectors :math:`P_{F H F^\top}` of every relaxed weight of one model, ready to apply.

    One projector per distinct irreps (the group caches it), shared by every layer with those
    irreps; a :class:`~relaxed_e3nn.nn.RelaxedWeights` shared by several layers is projected once.
    ``entries`` lists ``(name, irreps, theta, P)`` per relaxed weight (``P`` float64).

    Parameters
    ----------
    model : torch.nn.Module
        Holds :class:`~relaxed_e3nn.nn.RelaxedWeights` (at least one).
    group : PointGroup, str or structure
        :math:`H`, in the coordinates of the model's *input* structures.
    frame : array-like ``[3, 3]``, optional
        The model's frame :math:`F`; default :func:`model_frame` of ``model``.
    """

    def __init__(self, model: torch.nn.Module, group, *, frame=None):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.group = _as_group(group)
        self.frame = _frame_of(model, frame)
        self.group_in_model_frame = self.group.rotated(self.frame) if not np.allclose(self.frame, np.eye(3)) \
            else self.group
        self.entries: List[Tuple[str, o3.Irreps, torch.nn.Parameter, torch.Tensor]] = []
        seen = set()
        for name, irreps, theta in relaxed_parameters(model):
            if id(theta) in seen:
                continue
            seen.add(id(theta))
            P = self.group_in_model_frame.invariant_projector(irreps, dtype=torch.float64)
            self.entries.append((name or "theta", irreps, theta, P.to(theta.device)))
        if not self.entries:
            raise ValueError(f"model of type {type(model).__name__} holds no relaxed weights (RelaxedWeights)")

    @property
    def num_invariants(self) -> int:
        r""":math:`\sum_\text{layers}\dim V_H`: the number of free parameters left in :math:`\theta`."""
        return int(sum(round(float(P.trace())) for _, _, _, P in self.entries))

    @torch.no_grad()
    def apply_(self) -> None:
        r""":math:`\theta \leftarrow P\theta` for every relaxed weight (computed in float64, cast back)."""
        for _, _, theta, P in self.entries:
            theta.copy_((P @ theta.detach().to(torch.float64)).to(theta.dtype))

    @contextlib.contextmanager
    def restricted(self) -> Iterator[None]:
        r"""Run a training step of the H-equivariant restriction of the model.

        Inside the block every :math:`\theta` is :math:`P\theta` (the model is exactly
        H-equivariant); on exit the part outside :math:`V_H`, :math:`(1 - P)\theta`, is restored and
        every gradient is projected, :math:`\nabla_\theta \leftarrow P\nabla_\theta`, so that the
        step trains the restriction only (the ordinary weights and :math:`P\theta`).
        """
        saved = [theta.detach().clone() for _, _, theta, _ in self.entries]
        self.apply_()
        try:
            yield
        finally:
            with torch.no_grad():
                for (_, _, theta, P), value in zip(self.entries, saved):
                    theta.copy_(value)
                    if theta.grad is not None:
                        theta.grad.copy_((P @ theta.grad.to(torch.float64)).to(theta.grad.dtype))

    @torch.no_grad()
    def projected(self) -> np.ndarray:
        r"""Every :math:`P\theta`, concatenated (float64), without modifying the model."""
        return np.concatenate([(P @ theta.detach().to(torch.float64)).cpu().numpy() for _, _, theta, P in self.entries])

    @torch.no_grad()
    def outside_norms(self) -> Dict[str, float]:
        r""":math:`\lVert(1 - P)\theta\rVert` per relaxed weight, keyed by its module path."""
        out = {}
        for name, _, theta, P in self.entries:
            t = theta.detach().to(torch.float64)
            out[name] = float((t - P @ t).norm())
        return out


def project_thetas(model: torch.nn.Module, group, *, frame=None) -> torch.nn.Module:
    r"""Project every relaxed weight of ``model`` onto the H-invariant subspace, in place.

    .. math::
        \theta_\ell \leftarrow P_{F H F^\top}\,\theta_\ell \quad\text{for every layer } \ell,
        \qquad P_G = \operatorname{mean}_{g\in G} D_\theta(g).

    Afterwards ``model`` is exactly H-equivariant (whenever every non-:math:`\theta` module is
    O(3)-equivariant, as the package's layers are): ``model(h x) = D_out(h) model(x)`` for all
    :math:`h \in H`, up to floating-point round-off.

    Parameters
    ----------
    model : torch.nn.Module
        E.g. a :class:`~relaxed_e3nn.models.RelaxedNetwork`; must hold relaxed weights.
    group : PointGroup, str or structure
        :math:`H` in the coordinates of the model's input structures (a name means the
        standard frame, see :func:`relaxed_e3nn.groups.point_group`; an ase / pymatgen structure
        stands for its point group, e.g. the ideal molecule in the data frame).
    frame : array-like ``[3, 3]``, optional
        The model's frame :math:`F` (rows: model axes in input coordinates). Default: the model's
        ``frame`` buffer, else ``model.config.frame``, else the identity.

    Returns
    -------
    torch.nn.Module
        ``model`` itself (modified in place).

    Examples
    --------
    >>> from relaxed_e3nn.nn import RelaxedLinear
    >>> layer = RelaxedLinear("1o", "1o", irreps_relaxed="0e+1o")
    >>> with torch.no_grad():
    ...     _ = layer.theta.theta.normal_()
    >>> _ = project_thetas(layer, "O3")  # keeps only the 0e scalar
    >>> float(layer.theta.theta[1:].abs().max())
    0.0
    """
    ThetaProjector(model, group, frame=frame).apply_()
    return model


def breaking_beyond(model: torch.nn.Module, group, *, frame=None, relative: bool = False) -> Dict[str, float]:
    r"""Per relaxed weight, the norm of its part outside :math:`V_H`: :math:`\lVert(1 - P_{F H F^\top})\theta\rVert`.

    Zero (to round-off) exactly when that layer is H-equivariant. With ``relative=True`` each norm is
    divided by :math:`\lVert\theta\rVert` (0 for a zero :math:`\theta`).

    Parameters
    ----------
    model, group, frame :
        As in :func:`project_thetas`.
    relative : bool

    Returns
    -------
    dict of str to float
        Keyed by the module path of each :class:`~relaxed_e3nn.nn.RelaxedWeights`.
    """
    projector = ThetaProjector(model, group, frame=frame)
    norms = projector.outside_norms()
    if relative:
        for name, _, theta, _ in projector.entries:
            total = float(theta.detach().to(torch.float64).norm())
            norms[name] = norms[name] / total if total > 0 else 0.0
    return norms
