r"""One optimizer for relaxed models: Adam/AdamW/SGD for ordinary weights, an equivariant rule for :math:`\theta`.

Curie's principle says that at :math:`\theta_\mathrm{breaking} = 0` the gradient with respect to
:math:`\theta` lies in the subspace fixed by :math:`H = \mathrm{Sym}(\mathrm{input}) \cap \mathrm{Sym}(\mathrm{target})`.
An update rule keeps :math:`\theta` in that subspace only if it commutes with :math:`D_\theta(h)`. Plain
SGD does; Adam's per-*element* second moment does not (it rescales the components of one irrep copy
differently and rotates the update out of the subspace). ``irrep_adam`` therefore shares the second
moment within each irrep copy :math:`c`:

.. math::
    m \leftarrow \beta_1 m + (1-\beta_1) g, \qquad
    v_c \leftarrow \beta_2 v_c + (1-\beta_2)\,\tfrac{1}{2l_c+1}\lVert g_c\rVert^2, \qquad
    \theta_c \leftarrow \theta_c - \eta\,\frac{\hat m_c}{\max(\sqrt{\hat v_c}, \rho \max_{c'} \sqrt{\hat v_{c'}}) + \epsilon},

a per-copy scalar (a function of O(3) invariants) times a linear function of the gradients, which
commutes with the block-diagonal :math:`D_\theta`. The relative floor :math:`\rho` (group key
``"floor"``, ``theta_floor`` in :func:`make_optimizer`, default 0.1) matters for copies whose gradient
vanishes by symmetry: their gradient is pure round-off, and Adam's normalisation would turn it into
steps of size :math:`\eta`, i.e. into spurious symmetry breaking (measured on a cube -> tetragonal
prism fit: with :math:`\rho = 10^{-3}` the D4h-breaking part of :math:`\theta` grew from round-off to
0.18 within 40 steps; with :math:`\rho = 0.1` it stayed below :math:`2 \cdot 10^{-15}`, and the loss
fell as fast). After the step the proximal operator of the group lasso
:math:`\eta\lambda\sum_{c \neq 0e}\lVert\theta_c\rVert` (block soft-thresholding, also per copy and so
also commuting) sets breaking copies the data does not need exactly to zero.
"""
import math
from typing import Dict, List, Tuple

import torch
from e3nn import o3

from relaxed_e3nn._scatter import scatter
from relaxed_e3nn.nn._weights import copy_structure, prox_group_lasso_, relaxed_parameters

__all__ = ["RelaxedOptimizer", "make_optimizer", "relaxed_param_groups"]

_ORDINARY = ("adam", "adamw", "sgd")
_THETA = ("irrep_adam", "sgd")


class RelaxedOptimizer(torch.optim.Optimizer):
    r"""A single optimizer whose parameter groups each follow their own rule.

    Every group has a ``"kind"``: ``"adam"``, ``"adamw"`` or ``"sgd"`` for ordinary weights (the same
    arithmetic as ``torch.optim.Adam``/``AdamW``/``SGD``), ``"theta_irrep_adam"`` or ``"theta_sgd"`` for
    relaxed weights; a θ group also has ``"irreps"`` (one irreps string per parameter) and ``"penalty"``
    (group-lasso strength :math:`\lambda`, the proximal threshold being ``lr * penalty``). Build it with
    :func:`make_optimizer`. It has ``state_dict``/``load_state_dict`` and works with
    ``torch.optim.lr_scheduler`` (which scales every group's ``lr``, the proximal threshold included).
    """

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8) -> None:
        if not (isinstance(lr, (int, float)) and lr > 0 and math.isfinite(lr)):
            raise ValueError(f"RelaxedOptimizer: lr must be a positive number, got {lr!r}")
        if not (len(betas) == 2 and all(0.0 <= b < 1.0 for b in betas)):
            raise ValueError(f"RelaxedOptimizer: betas must be two numbers in [0, 1), got {betas!r}")
        if not eps > 0:
            raise ValueError(f"RelaxedOptimizer: eps must be positive, got {eps!r}")
        defaults = dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=0.0, momentum=0.0, kind="adam",
                        penalty=0.0, irreps=None, floor=0.1)
        self._structures: Dict[Tuple[str, str], Tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        kind = param_group.get("kind", self.defaults["kind"])
        allowed = _ORDINARY + tuple("theta_" + k for k in _THETA)
        if kind not in allowed:
            raise ValueError(f"RelaxedOptimizer: a parameter group's kind must be one of {allowed}, got {kind!r}")
        for key in ("weight_decay", "penalty", "momentum", "floor"):
            value = param_group.get(key, 0.0)
            if not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"RelaxedOptimizer: {key} must be a finite number >= 0, got {value!r}")
        if kind.startswith("theta_"):
            params = param_group["params"]
            params = [params] if isinstance(params, torch.Tensor) else list(params)
            irreps = param_group.get("irreps")
            if irreps is None or len(irreps) != len(params):
                raise ValueError("RelaxedOptimizer: a theta group needs 'irreps', one irreps string per parameter")
            for p, ir in zip(params, irreps):
                if o3.Irreps(ir).dim != p.numel():
                    raise ValueError(f"RelaxedOptimizer: theta of {p.numel()} entries does not match irreps {ir}")
            param_group["irreps"] = [str(o3.Irreps(ir)) for ir in irreps]
            param_group["params"] = params
        super().add_param_group(param_group)

    def _structure(self, irreps: str, device) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        key = (irreps, str(device))
        if key not in self._structures:
            self._structures[key] = copy_structure(o3.Irreps(irreps), device)
        return self._structures[key]

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._structures = {}

    @torch.no_grad()
    def step(self, closure=None):
        """Perform one optimisation step (and the proximal step on θ groups)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            kind = group["kind"]
            if kind.startswith("theta_"):
                for p, irreps in zip(group["params"], group["irreps"]):
                    if p.grad is not None:
                        self._theta_step(p, irreps, group)
            else:
                for p in group["params"]:
                    if p.grad is not None:
                        self._ordinary_step(p, group)
        return loss

    def _ordinary_step(self, p: torch.Tensor, group: dict) -> None:
        if p.grad.is_sparse:
            raise RuntimeError("RelaxedOptimizer does not support sparse gradients")
        grad = p.grad
        lr, weight_decay, kind = group["lr"], group["weight_decay"], group["kind"]
        state = self.state[p]
        if kind == "sgd":
            if weight_decay != 0:
                grad = grad.add(p, alpha=weight_decay)
            grad = self._momentum(state, grad, group["momentum"])
            p.add_(grad, alpha=-lr)
            return
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        step = float(state["step"])
        if weight_decay != 0:
            if kind == "adamw":
                p.mul_(1 - lr * weight_decay)
            else:
                grad = grad.add(p, alpha=weight_decay)
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.lerp_(grad, 1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad.conj(), value=1 - beta2)
        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        denom = (exp_avg_sq.sqrt() / math.sqrt(bias_correction2)).add_(group["eps"])
        p.addcdiv_(exp_avg, denom, value=-lr / bias_correction1)

    @staticmethod
    def _momentum(state: dict, grad: torch.Tensor, momentum: float) -> torch.Tensor:
        if momentum == 0:
            return grad
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = grad.clone()
        else:
            state["momentum_buffer"].mul_(momentum).add_(grad)
        return state["momentum_buffer"]

    def _theta_step(self, p: torch.Tensor, irreps: str, group: dict) -> None:
        copy_index, copy_dim, copy_is_breaking = self._structure(irreps, p.device)
        grad = p.grad
        lr = group["lr"]
        state = self.state[p]
        if group["kind"] == "theta_sgd":
            grad = self._momentum(state, grad, group["momentum"])
            p.add_(grad, alpha=-lr)
        else:
            beta1, beta2 = group["betas"]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p)
                state["exp_avg_sq_per_copy"] = p.new_zeros(copy_dim.numel())
            state["step"] += 1
            step = float(state["step"])
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq_per_copy"]
            exp_avg.lerp_(grad, 1 - beta1)
            mean_square = scatter(grad * grad, copy_index, dim_size=copy_dim.numel()) / copy_dim.to(p.dtype)
            exp_avg_sq.mul_(beta2).add_(mean_square, alpha=1 - beta2)
            bias_correction1 = 1 - beta1**step
            bias_correction2 = 1 - beta2**step
            rms = exp_avg_sq.sqrt() / math.sqrt(bias_correction2)
            # floor relative to the largest copy: a copy whose gradient is only round-off (zero by
            # symmetry) is not blown up to steps of size lr, which would break the symmetry spuriously
            rms = torch.maximum(rms, group["floor"] * rms.max())
            p.addcdiv_(exp_avg, rms.add_(group["eps"])[copy_index], value=-lr / bias_correction1)
        threshold = lr * group["penalty"]
        if threshold > 0:
            prox_group_lasso_(p, copy_index, copy_is_breaking, threshold)


def relaxed_param_groups(
    model: torch.nn.Module,
    lr: float,
    *,
    name: str = "adam",
    weight_decay: float = 0.0,
    theta_lr: float = None,
    theta_optimizer: str = "irrep_adam",
    theta_penalty: float = 0.0,
    theta_floor: float = 0.1,
    momentum: float = 0.0,
) -> List[dict]:
    """Parameter groups for :class:`RelaxedOptimizer`: ordinary weights, then every trainable θ.

    Arguments as :func:`make_optimizer`. Weight decay never applies to θ (the group lasso does).
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"make_optimizer: model must be a torch.nn.Module, got {type(model).__name__}")
    if name not in _ORDINARY:
        raise ValueError(f"make_optimizer: name must be one of {_ORDINARY}, got {name!r}")
    if theta_optimizer not in _THETA:
        raise ValueError(f"make_optimizer: theta_optimizer must be one of {_THETA}, got {theta_optimizer!r}")
    if theta_lr is None:
        theta_lr = lr
    for key, value in (("lr", lr), ("theta_lr", theta_lr)):
        if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
            raise ValueError(f"make_optimizer: {key} must be a positive number, got {value!r}")
    for key, value in (("weight_decay", weight_decay), ("theta_penalty", theta_penalty), ("momentum", momentum),
                       ("theta_floor", theta_floor)):
        if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
            raise ValueError(f"make_optimizer: {key} must be a number >= 0, got {value!r}")
    # every theta once (a shared RelaxedWeights counts once), frozen ones too: they never join the ordinary group
    irreps_of_theta = {}
    for _, irreps, theta in relaxed_parameters(model):
        irreps_of_theta.setdefault(id(theta), (theta, irreps))
    thetas = [(theta, irreps) for theta, irreps in irreps_of_theta.values() if theta.requires_grad]
    ordinary = [p for p in model.parameters() if p.requires_grad and id(p) not in irreps_of_theta]
    groups = []
    if ordinary:
        groups.append(dict(params=ordinary, kind=name, lr=lr, weight_decay=weight_decay, momentum=momentum))
    if thetas:
        groups.append(dict(
            params=[theta for theta, _ in thetas],
            irreps=[str(irreps) for _, irreps in thetas],
            kind="theta_" + theta_optimizer,
            lr=theta_lr,
            penalty=theta_penalty,
            floor=theta_floor,
            momentum=momentum,
        ))
    if not groups:
        raise ValueError("make_optimizer: model has no trainable parameters")
    return groups


def make_optimizer(model: torch.nn.Module, lr: float, *, betas=(0.9, 0.999), eps: float = 1e-8,
                   **group_options) -> RelaxedOptimizer:
    r"""The optimizer every relaxed model in the package trains with.

    Ordinary parameters use ``name`` (``"adam"``, ``"adamw"`` or ``"sgd"``, same arithmetic as torch's);
    the relaxed weights :math:`\theta` of every :class:`RelaxedWeights` use ``theta_optimizer``:
    ``"irrep_adam"`` (second moment shared within each irrep copy, so the update commutes with
    :math:`D_\theta(g)`) or ``"sgd"``; after each θ update the group-lasso proximal step with threshold
    ``theta_lr * theta_penalty`` zeroes breaking copies that the data does not need.

    Parameters
    ----------
    model : torch.nn.Module
    lr : float
        Learning rate of the ordinary parameters.
    betas, eps :
        Adam constants (shared by ``irrep_adam``).
    **group_options :
        Keyword arguments of :func:`relaxed_param_groups`, which builds the parameter groups:
    name : {"adam", "adamw", "sgd"}
    weight_decay : float
        L2 (``adam``, ``sgd``) or decoupled (``adamw``) weight decay of the ordinary parameters only.
    theta_lr : float, optional
        Learning rate of θ (default ``lr``).
    theta_optimizer : {"irrep_adam", "sgd"}
    theta_penalty : float
        Group-lasso strength :math:`\lambda`.
    theta_floor : float
        ``irrep_adam`` only: floor of each copy's RMS gradient, relative to the largest copy of the same
        :math:`\theta` (see the module notes); 1 gives one step scale per :math:`\theta` tensor.
    momentum : float
        Momentum of the SGD rules.

    Returns
    -------
    RelaxedOptimizer
        One ``torch.optim.Optimizer``.
    """
    groups = relaxed_param_groups(model, lr, **group_options)
    return RelaxedOptimizer(groups, lr=lr, betas=betas, eps=eps)
