r"""Validated symmetry breaking: keep only the breaking that held-out data supports.

On finite data (rattled structures, MD frames in one orientation) relaxed weights :math:`\theta` are
extra capacity and fit orientation-dependent noise as readily as a real field, so a nonzero
:math:`\theta` is a hypothesis to be tested. :func:`validate_breaking` tests the fixed sequence of
candidates of :func:`~relaxed_e3nn.symmetry.candidate_groups` (parent first, most symmetric first;
proposed by the residual groups of :math:`\theta` and of the breaking the training data demand,
:func:`breaking_demand`, along a fixed tolerance scan):

1. *Constrained models.* For each candidate :math:`H`, a deep copy of the model with every layer's
   :math:`\theta` projected onto :math:`V_H` (:func:`~relaxed_e3nn.symmetry.project_thetas`, exactly
   H-equivariant); the unconstrained ("free") model is a copy too. Every copy gets the same short
   fine-tune (``finetune_steps`` steps over ``train_batches``, a fresh optimizer each, the same seed),
   the constrained ones with projected updates (:math:`\theta \leftarrow P_H\theta` after every step),
   so all are compared after the same adaptation budget.
2. *Paired held-out losses.* Per-structure held-out losses :math:`L_H(s)`, :math:`L_\text{free}(s)`,
   averaged within blocks :math:`b` (trajectories or time blocks: autocorrelated MD frames are not
   independent evidence): :math:`\bar L_H(b)`, :math:`\bar L_\text{free}(b)`.
3. *Relative excess and its bounds.*

   .. math::
       \Delta_H = \frac{\operatorname{mean}_b \bar L_H(b) - \operatorname{mean}_b \bar L_\text{free}(b)}
                       {\operatorname{mean}_b \bar L_\text{free}(b)},

   and its one-sided lower and upper confidence bounds :math:`\ell_H`, :math:`U_H` at level
   ``confidence``: percentiles of :math:`\Delta_H` over ``num_bootstrap`` resamples of the blocks
   with replacement (seeded; the same resamples for every candidate, so the comparison stays paired).
4. *Decision: breaking must be supported.* In the fixed order (fewest free :math:`\theta` parameters
   first, i.e. most symmetric by inclusion; ties to the lower held-out loss) the first :math:`H`
   with :math:`\ell_H \le \delta` (``margin``) is accepted: a symmetry is given up only when the
   held-out data show, with the stated confidence, that it costs more than a fraction
   :math:`\delta` of the held-out loss. (Requiring instead :math:`U_H < \delta`, i.e. proof that
   the symmetry is harmless, keeps every breaking that a small or noisy selection split cannot
   rule out: on MD frames in one orientation, θ's extra capacity.) The unconstrained model's own
   group (the residual group of :math:`\theta` at the tightest scan tolerance, :math:`\Delta = 0`)
   always qualifies and is the fallback. With fewer than ``min_blocks``
   blocks the bootstrap bound is not trusted (a percentile bootstrap over a handful of blocks is
   far too narrow) and no breaking is supported: the parent is kept, whatever the point estimates.
5. *Evidence.* Applying the same rule with :math:`\Delta^*_H` of each bootstrap resample in place of
   :math:`\ell_H` says how often each candidate would have been chosen (``win_frequency``): a decision
   that wins 95% of resamples is stable; one split between two candidates is marginal.

The decision is about *this* model class and data size: "the parent" means the data do not support
any breaking the model can express (isotropic physics, or too little data to tell), not that the
physics is proven symmetric.
"""
import copy
import math
import warnings
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from e3nn import o3

from relaxed_e3nn._checks import is_int, is_number
from relaxed_e3nn.groups import PointGroup
from relaxed_e3nn.nn import make_optimizer
from relaxed_e3nn.symmetry._candidates import BreakingCandidate, candidate_groups, scan_text
from relaxed_e3nn.symmetry._projection import ThetaProjector, _as_group, model_frame, project_thetas
from relaxed_e3nn.symmetry._report import group_label
from relaxed_e3nn.symmetry._residual import SCAN_TOLERANCES

__all__ = ["BreakingDecision", "validate_breaking", "breaking_demand", "DEFAULT_FINETUNE_STEPS", "MIN_BLOCKS"]

#: fine-tune steps given to every copy when the caller does not say
DEFAULT_FINETUNE_STEPS = 20
#: fewer held-out blocks than this are too little evidence for any breaking: the parent is kept
MIN_BLOCKS = 10


@dataclass
class BreakingDecision:
    r"""The outcome of :func:`validate_breaking`: the validated group and the evidence behind it.

    Attributes
    ----------
    chosen : PointGroup
        The validated group :math:`H` (input coordinates); :meth:`apply` imposes it on a model.
    parent : PointGroup
        The parent group the candidates were drawn within.
    candidates : list of BreakingCandidate
        Every candidate, most symmetric first, with ``mean_loss``, ``relative_excess``, ``ucb``,
        ``win_frequency`` and ``accepted`` filled in.
    chosen_index, fallback_index : int
        Positions in ``candidates`` of the chosen group and of the fallback (the residual group at
        the tightest tolerance).
    free_loss : float
        Mean held-out loss of the unconstrained (fine-tuned) model.
    margin, confidence : float
        :math:`\delta` and the level of the one-sided bound.
    num_structures, num_blocks, num_bootstrap, finetune_steps, seed : int
        Size of the evidence and of the fine-tune, and the bootstrap seed.
    min_blocks : int
        The fewest blocks that can support breaking.
    thin_evidence : bool
        ``num_blocks < min_blocks``: the parent was kept without a test.
    """

    chosen: PointGroup
    parent: PointGroup
    candidates: List[BreakingCandidate]
    chosen_index: int
    fallback_index: int
    free_loss: float
    margin: float
    confidence: float
    num_structures: int
    num_blocks: int
    num_bootstrap: int
    finetune_steps: int
    seed: int
    min_blocks: int = MIN_BLOCKS
    thin_evidence: bool = False

    @property
    def validated(self) -> bool:
        """Whether the chosen group passed the test (``False``: no candidate did and the fallback was
        kept, or the evidence was too thin to test and the parent was kept)."""
        return not self.thin_evidence and bool(self.candidates[self.chosen_index].accepted)

    def apply(self, model: torch.nn.Module, *, frame=None) -> torch.nn.Module:
        r"""Project ``model``'s :math:`\theta` onto :math:`V_\text{chosen}` in place (see :func:`project_thetas`).

        The model is then exactly equivariant under :attr:`chosen`; recompute its test metrics.
        ``frame`` defaults to the model's own frame.
        """
        return project_thetas(model, self.chosen, frame=frame)

    def summary(self) -> str:
        """One line: the tolerance scan, then the decision, e.g.
        ``"C1 at 0.001; Cs with mirror normal [..] from 0.03; validated: Cs with mirror normal [..]
        (ΔL/L +0.012, ≥ -0.02 at 95%)"``."""
        chosen = self.candidates[self.chosen_index]
        bound = f"ΔL/L {chosen.relative_excess:+.3g}, ≥ {chosen.lcb:.3g} at {self.confidence:.0%}"
        scan = scan_text(self.candidates)
        head = f"{scan}; " if scan else ""
        if self.thin_evidence:
            return (f"{head}validated: none; {self.num_blocks} held-out blocks (fewer than {self.min_blocks}) are "
                    f"too little evidence for any breaking: kept the parent {chosen.label}")
        if self.validated:
            return f"{head}validated: {chosen.label} ({bound})"
        return (f"{head}validated: none within margin {self.margin:g}; kept the unconstrained group "
                f"{chosen.label} ({bound})")

    def table(self) -> str:
        """One line per candidate: group, tolerances, held-out loss, ΔL/L, bound, wins, verdict."""
        lines = [f"within {group_label(self.parent)}: {self.num_structures} held-out structures in "
                 f"{self.num_blocks} blocks, {self.num_bootstrap} resamples, margin {self.margin:g}",
                 f"  free: mean loss {self.free_loss:.6g}"]
        for k, c in enumerate(self.candidates):
            tols = ", ".join([f"θ@{t:.2g}" for t in c.tolerances] + [f"demand@{t:.2g}" for t in c.demand_tolerances])
            tols = ("parent" + (", " if tols else "") if c.is_parent else "") + tols
            mark = " <- chosen" if k == self.chosen_index else ""
            lines.append(
                f"  {c.label}: from {tols}; loss {c.mean_loss:.6g}; ΔL/L {c.relative_excess:+.4g} "
                f"({self.confidence:.0%} bounds {c.lcb:+.4g}, {c.ucb:+.4g}); wins {c.win_frequency:.0%}; {'accepted' if c.accepted else 'rejected'}{mark}"
            )
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """A JSON-able record of the decision, the candidates and the settings."""
        return {
            "chosen": self.candidates[self.chosen_index].to_dict(),
            "validated": self.validated,
            "parent": group_label(self.parent),
            "parent_frame": self.parent.frame.numpy().tolist(),
            "candidates": [c.to_dict() for c in self.candidates],
            "chosen_index": self.chosen_index,
            "fallback_index": self.fallback_index,
            "free_loss": self.free_loss,
            "margin": self.margin,
            "confidence": self.confidence,
            "num_structures": self.num_structures,
            "num_blocks": self.num_blocks,
            "num_bootstrap": self.num_bootstrap,
            "finetune_steps": self.finetune_steps,
            "seed": self.seed,
            "min_blocks": self.min_blocks,
            "thin_evidence": self.thin_evidence,
            "summary": self.summary(),
        }


# ----------------------------------------------------------------------------- checks
def _check_settings(margin, confidence, num_bootstrap, finetune_steps, finetune_lr, seed) -> None:
    if not (is_number(margin) and math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be a positive number (a relative loss excess, e.g. 0.05), got {margin!r}")
    if not (is_number(confidence) and 0 < confidence < 1):
        raise ValueError(f"confidence must be a number in (0, 1), got {confidence!r}")
    if not (is_int(num_bootstrap) and num_bootstrap >= 1):
        raise ValueError(f"num_bootstrap must be a positive int, got {num_bootstrap!r}")
    if not (is_int(finetune_steps) and finetune_steps >= 0):
        raise ValueError(f"finetune_steps must be an int >= 0, got {finetune_steps!r}")
    if not (is_number(finetune_lr) and math.isfinite(finetune_lr) and finetune_lr > 0):
        raise ValueError(f"finetune_lr must be a positive number, got {finetune_lr!r}")
    if not is_int(seed):
        raise ValueError(f"seed must be an int, got {seed!r}")


def _as_batches(batches, name: str, allow_empty: bool) -> list:
    if isinstance(batches, (str, bytes)) or not hasattr(batches, "__iter__"):
        raise TypeError(f"{name} must be a sequence of batches (e.g. a list), got {type(batches).__name__}")
    batches = list(batches)
    if not batches and not allow_empty:
        raise ValueError(f"{name} is empty; validated breaking needs at least one batch")
    return batches


def _checked_losses(losses, where: str, need_grad: bool) -> torch.Tensor:
    if not isinstance(losses, torch.Tensor):
        raise TypeError(f"loss_fn must return a torch.Tensor of per-structure losses, got {type(losses).__name__} "
                        f"({where})")
    if losses.dim() != 1:
        raise ValueError(f"loss_fn must return a 1-D tensor of per-structure losses, got shape "
                         f"{tuple(losses.shape)} ({where}); do not reduce over the batch")
    if losses.numel() == 0:
        raise ValueError(f"loss_fn returned no losses ({where})")
    if need_grad and not losses.requires_grad:
        raise ValueError(f"loss_fn's losses do not depend on the model's parameters ({where})")
    values = losses.detach()
    if not bool(torch.isfinite(values).all()):
        raise ValueError(f"loss_fn returned NaN or inf ({where})")
    if bool((values < 0).any()):
        raise ValueError(f"loss_fn must return non-negative losses ({where})")
    return losses


def _block_codes(block_ids, num_structures: int) -> np.ndarray:
    if block_ids is None:
        return np.arange(num_structures)
    ids = np.asarray(block_ids.detach().cpu() if isinstance(block_ids, torch.Tensor) else list(block_ids))
    if ids.ndim != 1 or len(ids) != num_structures:
        raise ValueError(f"block_ids must have one entry per held-out structure ({num_structures}), "
                         f"got shape {tuple(ids.shape)}")
    return np.unique(ids, return_inverse=True)[1].reshape(-1)


# ----------------------------------------------------------------------------- demanded breaking
def breaking_demand(model: torch.nn.Module, batches: Sequence, loss_fn: Callable, parent, *,
                    frame=None) -> List[Tuple[o3.Irreps, torch.Tensor]]:
    r"""The breaking the training data ask for first: :math:`-\nabla_\theta \bar L` at :math:`P_\text{parent}\theta`.

    By Curie's principle this gradient is invariant under the symmetry that the data (and the
    parent-symmetric model) share, so its residual group names the data's symmetry (see
    :func:`~relaxed_e3nn.symmetry.candidate_groups`). Computed on a deep copy in training mode (so
    that force losses stay differentiable); ``model`` is not modified.

    Parameters
    ----------
    model : torch.nn.Module
        A relaxed model.
    batches : sequence
        Training batches; the gradient of the mean over batches of ``loss_fn(model, batch).mean()``.
    loss_fn : callable ``(model, batch) -> torch.Tensor``
        Per-structure losses, as in :func:`validate_breaking`.
    parent : PointGroup, str or structure
        The inputs' symmetry (input coordinates).
    frame : array-like ``[3, 3]``, optional
        The model frame; default the model's own.

    Returns
    -------
    list of (e3nn.o3.Irreps, torch.Tensor)
        One float64 direction per relaxed weight, in the model frame (the layout of :math:`\theta`).
    """
    batches = _as_batches(batches, "batches", allow_empty=False)
    work = copy.deepcopy(model)
    projector = ThetaProjector(work, parent, frame=frame)
    projector.apply_()
    work.train()
    params = [theta for _, _, theta, _ in projector.entries]
    total = [torch.zeros(p.shape, dtype=torch.float64) for p in params]
    for i, batch in enumerate(batches):
        losses = _checked_losses(loss_fn(work, batch), f"batch {i}", need_grad=True)
        grads = torch.autograd.grad(losses.mean(), params, allow_unused=True)
        for t, g in zip(total, grads):
            if g is not None:
                t -= g.detach().to(torch.float64).cpu() / len(batches)
    return [(irreps, t) for (_, irreps, _, _), t in zip(projector.entries, total)]


# ----------------------------------------------------------------------------- fine-tune and evaluate
def _finetune_and_evaluate(model, group, frame, train_batches, heldout_batches, loss_fn, steps, factory,
                           seed) -> np.ndarray:
    """Per-structure held-out losses of a fine-tuned copy of ``model`` (θ kept in V_group if given)."""
    work = copy.deepcopy(model)
    projector = None if group is None else ThetaProjector(work, group, frame=frame)
    if projector is not None:
        projector.apply_()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if steps > 0:
            work.train()
            optimizer = factory(work)
            for step in range(steps):
                optimizer.zero_grad()
                losses = _checked_losses(loss_fn(work, train_batches[step % len(train_batches)]),
                                         f"training batch {step % len(train_batches)}", need_grad=True)
                losses.mean().backward()
                optimizer.step()
                if projector is not None:
                    projector.apply_()  # projected update: θ stays in V_H whatever the optimizer does
        work.eval()
        out = [
            _checked_losses(loss_fn(work, batch), f"held-out batch {i}", need_grad=False).detach()
            .to(torch.float64).cpu().numpy()
            for i, batch in enumerate(heldout_batches)
        ]
    return np.concatenate(out)


# ----------------------------------------------------------------------------- statistics
def _relative(values: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``(values - reference) / reference``, with 0/0 = 0 and x/0 = inf for x > 0."""
    diff = values - reference
    with np.errstate(divide="ignore", invalid="ignore"):
        out = diff / reference
    return np.where(reference > 0, out, np.where(diff > 0, np.inf, 0.0))


def _decide(excess: np.ndarray, order: Sequence[int], margin: float, fallback: int) -> np.ndarray:
    """The index chosen by the rule for each column of ``excess`` ``[K, R]`` (first in ``order`` within margin)."""
    ordered = excess[list(order)] <= margin
    first = np.argmax(ordered, axis=0)
    return np.where(ordered.any(axis=0), np.asarray(order)[first], fallback)


def _evidence(candidate_losses, free_losses, codes, order, margin, fallback, num_bootstrap, confidence, seed):
    """Point excess, bootstrap bounds and win frequencies of every candidate (paired over blocks)."""
    num_blocks = int(codes.max()) + 1
    counts = np.bincount(codes, minlength=num_blocks).astype(np.float64)
    block_free = np.bincount(codes, weights=free_losses, minlength=num_blocks) / counts
    block_cand = np.stack([np.bincount(codes, weights=row, minlength=num_blocks) / counts
                           for row in candidate_losses])
    excess = _relative(block_cand.mean(axis=1), block_free.mean())
    rng = np.random.default_rng(seed)
    draws = rng.integers(num_blocks, size=(num_bootstrap, num_blocks))
    boot = _relative(block_cand[:, draws].mean(axis=-1), block_free[draws].mean(axis=-1)[None, :])
    lcb, ucb = np.quantile(boot, 1.0 - confidence, axis=1), np.quantile(boot, confidence, axis=1)
    wins = np.bincount(_decide(boot, order, margin, fallback), minlength=len(candidate_losses)) / num_bootstrap
    return excess, lcb, ucb, wins


def validate_breaking(
    model: torch.nn.Module,
    train_batches: Sequence,
    heldout_batches: Sequence,
    loss_fn: Callable,
    *,
    parent,
    margin: float = 0.05,
    finetune_steps: int = DEFAULT_FINETUNE_STEPS,
    optimizer_factory: Optional[Callable] = None,
    finetune_lr: float = 1e-3,
    block_ids=None,
    num_bootstrap: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    tols: Sequence[float] = SCAN_TOLERANCES,
    min_blocks: int = MIN_BLOCKS,
) -> BreakingDecision:
    r"""Decide from held-out data which symmetry breaking of a trained relaxed model is real.

    See the module notes for the method. ``model`` is never modified (every fine-tune works on a
    deep copy); impose the result with :meth:`BreakingDecision.apply`.

    Parameters
    ----------
    model : torch.nn.Module
        A trained relaxed model (e.g. :class:`~relaxed_e3nn.models.RelaxedNetwork`).
    train_batches : sequence
        Batches for the fine-tune, used cyclically (opaque objects handed to ``loss_fn``); may be
        empty when ``finetune_steps == 0``.
    heldout_batches : sequence
        Batches never used for training or early stopping; report test metrics on yet another split.
    loss_fn : callable ``(model, batch) -> torch.Tensor``
        Per-structure losses, a non-negative 1-D tensor (one entry per structure of the batch; not
        reduced). The fine-tune minimises their mean.
    parent : PointGroup, str or structure
        The inputs' own symmetry in input coordinates (``"O3"`` when they have none to speak of).
    margin : float
        :math:`\delta`: a symmetry is given up only when its relative held-out loss excess is shown
        to exceed it.
    finetune_steps : int
        Optimizer steps given to every copy (0: compare the projections without fine-tuning).
    optimizer_factory : callable ``(model) -> torch.optim.Optimizer``, optional
        Builds a fresh optimizer for each copy; default
        ``make_optimizer(copy, finetune_lr)`` (the package's relaxed optimizer).
    finetune_lr : float
        Learning rate of the default optimizer.
    block_ids : sequence, optional
        One label per held-out structure (in the order ``loss_fn`` returns them, batch after batch):
        its trajectory or time block. Default: every structure its own block.
    num_bootstrap : int
        Bootstrap resamples of the blocks.
    seed : int
        Seeds the fine-tunes (in a forked RNG: the caller's RNG state is untouched) and the bootstrap.
    confidence : float
        Level of each one-sided bound (the decision uses the lower one).
    tols : sequence of float
        The tolerance scan of :func:`~relaxed_e3nn.symmetry.candidate_groups`.
    min_blocks : int
        With fewer held-out blocks no breaking is supported: the parent is kept (and a warning
        says so); the evidence is still computed and reported.

    Returns
    -------
    BreakingDecision

    Raises
    ------
    ValueError or TypeError
        Bad settings, an empty held-out set, ``block_ids`` of the wrong length, or a ``loss_fn``
        that returns a scalar, a non-1-D tensor, negative or non-finite losses.
    """
    _check_settings(margin, confidence, num_bootstrap, finetune_steps, finetune_lr, seed)
    if not (is_int(min_blocks) and min_blocks >= 1):
        raise ValueError(f"min_blocks must be a positive int, got {min_blocks!r}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(model, batch), got {type(loss_fn).__name__}")
    if optimizer_factory is not None and not callable(optimizer_factory):
        raise TypeError(f"optimizer_factory must be callable as f(model), got {type(optimizer_factory).__name__}")
    factory = optimizer_factory or (lambda m: make_optimizer(m, finetune_lr))
    train_batches = _as_batches(train_batches, "train_batches", allow_empty=finetune_steps == 0)
    heldout_batches = _as_batches(heldout_batches, "heldout_batches", allow_empty=False)
    parent = _as_group(parent, "parent")
    frame = model_frame(model)
    demand = breaking_demand(model, train_batches, loss_fn, parent, frame=frame) if train_batches else None
    candidates = candidate_groups(model, parent, tols, frame=frame, demand=demand)
    run = dict(frame=frame, train_batches=train_batches, heldout_batches=heldout_batches, loss_fn=loss_fn,
               steps=finetune_steps, factory=factory, seed=seed)
    free = _finetune_and_evaluate(model, None, **run)
    losses = np.stack([_finetune_and_evaluate(model, c.group, **run) for c in candidates])
    codes = _block_codes(block_ids, len(free))
    num_blocks = int(codes.max()) + 1
    thin = num_blocks < min_blocks
    if thin:
        warnings.warn(f"validate_breaking: only {num_blocks} held-out blocks (fewer than {min_blocks}): too little "
                      f"evidence for any breaking, the parent is kept; hold out more structures or trajectories",
                      stacklevel=2)
    means = losses.mean(axis=1)
    order = sorted(range(len(candidates)), key=lambda k: (candidates[k].num_invariants, means[k]))
    tightest = min(float(t) for t in tols)
    fallback = next(k for k, c in enumerate(candidates) if tightest in c.tolerances)
    excess, lcb, ucb, wins = _evidence(losses, free, codes, order, margin, fallback, num_bootstrap, confidence, seed)
    for k, c in enumerate(candidates):
        c.mean_loss, c.relative_excess = float(means[k]), float(excess[k])
        c.lcb, c.ucb = float(lcb[k]), float(ucb[k])
        c.win_frequency, c.accepted = float(wins[k]), bool(lcb[k] <= margin)
    parent_index = next(k for k, c in enumerate(candidates) if c.is_parent)
    chosen = parent_index if thin else int(_decide(lcb[:, None], order, margin, fallback)[0])
    return BreakingDecision(
        chosen=candidates[chosen].group, parent=parent, candidates=candidates, chosen_index=chosen,
        fallback_index=fallback, free_loss=float(free.mean()), margin=float(margin), confidence=float(confidence),
        num_structures=len(free), num_blocks=num_blocks, num_bootstrap=num_bootstrap,
        finetune_steps=finetune_steps, seed=seed, min_blocks=int(min_blocks), thin_evidence=thin,
    )
