r"""The relaxed weights :math:`\theta`: a learnable vector in a direct sum of O(3) irreps.

A layer that takes :math:`\theta` as an extra equivariant input satisfies

.. math::
    f(D_\mathrm{in}(g) x, g \cdot \mathrm{geometry}; D_\theta(g)\,\theta) = D_\mathrm{out}(g) f(x, \mathrm{geometry}; \theta)
    \qquad \forall g \in O(3),

so with :math:`\theta` held fixed it is exactly equivariant under the stabilizer
:math:`\mathrm{Stab}(\theta) = \{g : D_\theta(g)\theta = \theta\}`. The ``0e`` entries start at 1 and every
other ("breaking") entry at 0, which makes a freshly built relaxed layer exactly O(3)-equivariant.
"""
import copy
from typing import Iterator, Tuple

import torch
from e3nn import o3

from relaxed_e3nn._checks import as_orthogonal_matrix, check_finite, parse_irreps
from relaxed_e3nn._scatter import scatter
from relaxed_e3nn.groups import D_from_matrix

__all__ = ["RelaxedWeights", "relaxed_parameters", "rotate", "irreps_relaxed_from"]

_SCALAR = o3.Irrep("0e")


def irreps_relaxed_from(irreps, name: str = "irreps_relaxed") -> o3.Irreps:
    r"""Parse the irreps of relaxed weights.

    Parameters
    ----------
    irreps : int, str or `e3nn.o3.Irreps`
        An int ``L`` means every irrep up to :math:`l = L` in both parities, natural parity first:
        ``0e + 0o + 1o + 1e + 2e + 2o + ...``.
    name : str
        Argument name used in error messages.

    Returns
    -------
    `e3nn.o3.Irreps`
    """
    if isinstance(irreps, bool):
        raise TypeError(f"{name} must be an int L >= 0, a string or an o3.Irreps, got a bool")
    if isinstance(irreps, int):
        if irreps < 0:
            raise ValueError(f"{name} as an int is the largest l and must be >= 0, got {irreps}")
        parts = []
        for l in range(irreps + 1):
            natural = (-1) ** l
            parts += [(1, (l, natural)), (1, (l, -natural))]
        return o3.Irreps(parts)
    if isinstance(irreps, (str, o3.Irreps)):
        parsed = parse_irreps(name, irreps)
        if parsed.dim == 0:
            raise ValueError(f"{name} must have a positive dimension, got {irreps!r}")
        return parsed
    raise TypeError(f"{name} must be an int L >= 0, a string or an o3.Irreps, got {type(irreps).__name__}")


def copy_structure(irreps: o3.Irreps, device=None) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Irrep-copy layout of a flat vector in ``irreps``: the copy of every entry, each copy's dimension
    and whether each copy is breaking (not ``0e``)."""
    copy_index, copy_dim, copy_is_breaking = [], [], []
    for mul, ir in irreps:
        for _ in range(mul):
            copy_index += [len(copy_dim)] * ir.dim
            copy_dim.append(ir.dim)
            copy_is_breaking.append(ir != _SCALAR)
    return (
        torch.tensor(copy_index, dtype=torch.long, device=device),
        torch.tensor(copy_dim, dtype=torch.long, device=device),
        torch.tensor(copy_is_breaking, dtype=torch.bool, device=device),
    )


class RelaxedWeights(torch.nn.Module):
    r"""Learnable relaxed weights :math:`\theta \in \bigoplus_i V_{l_i, p_i}` in e3nn's flat layout.

    The parameter ``theta`` has ``irreps.dim`` entries laid out like any e3nn feature vector
    (``mul x ir`` blocks, copy after copy). Every ``0e`` entry starts at 1, every other entry at 0,
    so that the layers using it start exactly O(3)-equivariant. The *breaking* part is everything
    that is not ``0e``.

    The group-lasso penalty sums the Euclidean norms of the breaking irrep copies,

    .. math::
        \Omega(\theta) = \sum_{c\,:\,\mathrm{ir}_c \neq 0e} \lVert \theta_c \rVert_2 ,

    a norm that is invariant under O(3) (each copy transforms by an orthogonal :math:`D^{l}`), and its
    proximal operator is block soft-thresholding,

    .. math::
        \mathrm{prox}_{t\Omega}(\theta)_c = \theta_c \max\!\left(0, 1 - \frac{t}{\lVert\theta_c\rVert}\right),

    which sets copies the data does not need exactly to zero.

    Parameters
    ----------
    irreps : int, str or `e3nn.o3.Irreps`
        See :func:`irreps_relaxed_from`; an int ``L`` means ``0e + 0o + 1o + 1e + ... + Le + Lo``.

    Examples
    --------
    >>> w = RelaxedWeights(1)
    >>> print(w.irreps)
    1x0e+1x0o+1x1o+1x1e
    >>> w.theta.tolist()
    [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    >>> float(w.breaking_norm())
    0.0
    """

    def __init__(self, irreps) -> None:
        super().__init__()
        self.irreps = irreps_relaxed_from(irreps, "irreps")
        copy_index, _, copy_is_breaking = copy_structure(self.irreps)
        # the block structure lives in non-persistent buffers: it follows .to(device) and stays out
        # of the state dict, which holds only theta
        self.register_buffer("copy_index", copy_index, persistent=False)
        self.register_buffer("copy_is_breaking", copy_is_breaking, persistent=False)
        self.register_buffer("scalar_mask", ~copy_is_breaking[copy_index], persistent=False)
        self.theta = torch.nn.Parameter(self.scalar_mask.to(torch.get_default_dtype()).clone())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a θ of another size, or with NaN/inf, is named here (torch would report a bare size mismatch,
        # or load the NaN silently)
        key = prefix + "theta"
        value = state_dict.get(key)
        if isinstance(value, torch.Tensor):
            if value.shape != self.theta.shape:
                raise ValueError(f"RelaxedWeights: {key} has shape {list(value.shape)}, but irreps_relaxed "
                                 f"{self.irreps} needs [{self.irreps.dim}]")
            check_finite(key, value, "RelaxedWeights")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def num_copies(self) -> int:
        """Number of irrep copies (sum of the multiplicities)."""
        return int(self.copy_is_breaking.numel())

    def forward(self) -> torch.Tensor:
        """Return the flat parameter ``theta`` (shape ``[irreps.dim]``)."""
        return self.theta

    def breaking(self) -> torch.Tensor:
        """``theta`` with its ``0e`` entries set to zero (differentiable)."""
        return torch.where(self.scalar_mask, torch.zeros_like(self.theta), self.theta)

    def breaking_norm(self) -> torch.Tensor:
        r""":math:`\lVert\theta_\mathrm{breaking}\rVert_2`, the Euclidean norm of the non-``0e`` entries."""
        return _safe_norm(self.breaking().pow(2).sum())

    def copy_norms(self, theta: torch.Tensor = None) -> torch.Tensor:
        r"""Euclidean norm of every irrep copy, shape ``[num_copies]`` (differentiable, 0 gradient at 0)."""
        theta = self.theta if theta is None else theta
        return _safe_norm(scatter(theta.pow(2), self.copy_index, dim_size=self.num_copies))

    def penalty(self) -> torch.Tensor:
        r"""Group lasso :math:`\sum_{c \neq 0e} \lVert\theta_c\rVert_2` over the breaking irrep copies."""
        return torch.where(self.copy_is_breaking, self.copy_norms(), torch.zeros((), dtype=self.theta.dtype,
                                                                                 device=self.theta.device)).sum()

    @torch.no_grad()
    def prox_(self, threshold: float) -> "RelaxedWeights":
        r"""Proximal step of the group lasso, in place: :math:`\theta_c \leftarrow \theta_c \max(0, 1 - t/\lVert\theta_c\rVert)`.

        Only breaking copies are shrunk; a copy whose norm is at most ``threshold`` becomes exactly zero.
        """
        threshold = float(threshold)
        if threshold < 0 or threshold != threshold:
            raise ValueError(f"prox_: threshold must be a number >= 0, got {threshold}")
        if threshold == 0.0:
            return self
        prox_group_lasso_(self.theta, self.copy_index, self.copy_is_breaking, threshold)
        return self

    def extra_repr(self) -> str:
        return f"irreps={self.irreps}"


def _safe_norm(squares: torch.Tensor) -> torch.Tensor:
    # sqrt with gradient 0 (a subgradient) instead of NaN where the norm is exactly 0
    positive = squares > 0
    return torch.where(positive, torch.where(positive, squares, torch.ones_like(squares)).sqrt(), torch.zeros_like(squares))


@torch.no_grad()
def prox_group_lasso_(theta: torch.Tensor, copy_index: torch.Tensor, copy_is_breaking: torch.Tensor, threshold) -> None:
    """In-place block soft-thresholding of the breaking copies of a flat ``theta``."""
    norms = scatter(theta.pow(2), copy_index, dim_size=copy_is_breaking.numel()).sqrt()
    scale = (1 - threshold / norms.clamp_min(torch.finfo(theta.dtype).tiny)).clamp_min(0)
    scale = torch.where(copy_is_breaking, scale, torch.ones_like(scale))
    theta.mul_(scale[copy_index])


def relaxed_parameters(model: torch.nn.Module) -> Iterator[Tuple[str, o3.Irreps, torch.nn.Parameter]]:
    r"""Yield ``(name, irreps, theta)`` for every :class:`RelaxedWeights` inside ``model``.

    ``name`` is the module path of the :class:`RelaxedWeights` (as in ``model.named_modules()``; ``""``
    when ``model`` itself is one), ``irreps`` an `e3nn.o3.Irreps` and ``theta`` the flat parameter.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"relaxed_parameters: model must be a torch.nn.Module, got {type(model).__name__}")
    for name, module in model.named_modules():
        if isinstance(module, RelaxedWeights):
            yield name, module.irreps, module.theta


def rotate(model: torch.nn.Module, R) -> torch.nn.Module:
    r"""Deep copy of ``model`` with every relaxed weight rotated, :math:`\theta \to D_\theta(R)\,\theta`.

    By joint equivariance, ``rotate(model, R)(R . input) = D_out(R) model(input)``; ``R`` may be
    improper (parity included). The matrices come from :func:`relaxed_e3nn.groups.D_from_matrix`,
    in float64 whatever the default dtype.

    Parameters
    ----------
    model : torch.nn.Module
    R : array-like, shape ``[3, 3]``
        Orthogonal matrix.
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"rotate: model must be a torch.nn.Module, got {type(model).__name__}")
    R = as_orthogonal_matrix(R)
    rotated = copy.deepcopy(model)
    with torch.no_grad():
        for module in rotated.modules():
            if isinstance(module, RelaxedWeights):
                theta = module.theta
                # D in float64 on the CPU for accuracy, then cast to theta's dtype and device
                D = D_from_matrix(module.irreps, R.detach().to(device="cpu", dtype=torch.float64))
                rotated_theta = D @ theta.detach().to(device="cpu", dtype=torch.float64)
                theta.copy_(rotated_theta.to(device=theta.device, dtype=theta.dtype))
    return rotated
