r"""The per-element part of the edge network, fused and chunked over edges.

For tuples :math:`X_m` (flattened to ``k3`` numbers), the matrices :math:`W g` of all group
elements laid side by side (``weight_g``, ``(k3, |G| K)``), a g-independent shift :math:`u_m`
and the transported readout :math:`T` (``(|G| K, 3C)``), it returns

.. math::
    s_m = \sum_g f_{m,g}, \qquad Y_m = \sum_{g} f_{m,g}^\top T_g, \qquad
    f_{m,g} = \mathrm{relu}(X_m W g + u_m).

The ``(M, |G|, K)`` tensor of per-element features is never stored: the forward pass and the
backward pass (which recomputes it) walk over the rows in chunks small enough to stay in
cache, so the cost is a few passes over cache-resident data instead of a dozen passes
over an array far larger than the cache.
"""
from typing import Tuple

import torch

__all__ = ["orbit_sum_and_readout"]

# about 1 MiB of float32 per chunk of per-element features
_CHUNK_ELEMENTS = 1 << 18


def _chunk_rows(width: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(1, width))


class _OrbitSumAndReadout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tuples, weight_g, shift, transported, order: int):
        rows, width = tuples.shape[0], shift.shape[1]
        pooled = tuples.new_empty(rows, width)
        readout = tuples.new_empty(rows, transported.shape[1])
        step = _chunk_rows(weight_g.shape[1])
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            pre = (tuples[start:stop] @ weight_g).view(stop - start, order, width)
            features = torch.relu_(pre.add_(shift[start:stop, None, :]))
            torch.sum(features, dim=1, out=pooled[start:stop])
            torch.mm(features.view(stop - start, -1), transported, out=readout[start:stop])
        ctx.save_for_backward(tuples, weight_g, shift, transported)
        ctx.order = order
        return pooled, readout

    @staticmethod
    def backward(ctx, grad_pooled, grad_readout):
        tuples, weight_g, shift, transported = ctx.saved_tensors
        order = ctx.order
        rows, width = tuples.shape[0], shift.shape[1]
        need_tuples, need_weight, need_shift, need_transported = ctx.needs_input_grad[:4]
        grad_tuples = torch.empty_like(tuples) if need_tuples else None
        grad_weight = torch.zeros_like(weight_g) if need_weight else None
        grad_shift = torch.empty_like(shift) if need_shift else None
        grad_transported = torch.zeros_like(transported) if need_transported else None
        if grad_pooled is None:
            grad_pooled = shift.new_zeros(rows, width)
        if grad_readout is None:
            grad_readout = shift.new_zeros(rows, transported.shape[1])
        step = _chunk_rows(weight_g.shape[1])
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            m = stop - start
            pre = (tuples[start:stop] @ weight_g).view(m, order, width)
            features = torch.relu_(pre.add_(shift[start:stop, None, :]))
            flat = features.view(m, -1)
            if need_transported:
                grad_transported.addmm_(flat.t(), grad_readout[start:stop])
            grad_pre = (grad_readout[start:stop] @ transported.t()).view(m, order, width)
            grad_pre.add_(grad_pooled[start:stop, None, :])
            grad_pre.mul_(features > 0)
            if need_shift:
                torch.sum(grad_pre, dim=1, out=grad_shift[start:stop])
            grad_flat = grad_pre.view(m, -1)
            if need_tuples:
                torch.mm(grad_flat, weight_g.t(), out=grad_tuples[start:stop])
            if need_weight:
                grad_weight.addmm_(tuples[start:stop].t(), grad_flat)
        return grad_tuples, grad_weight, grad_shift, grad_transported, None


def orbit_sum_and_readout(
    tuples: torch.Tensor, weight_g: torch.Tensor, shift: torch.Tensor, transported: torch.Tensor, order: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fused ``(sum_g f_g, f @ T)`` over the orbit (see the module docstring).

    Parameters
    ----------
    tuples : torch.Tensor
        ``(M, k3)`` flattened geometric tuples.
    weight_g : torch.Tensor
        ``(k3, |G| K)`` first-layer weights composed with every group element.
    shift : torch.Tensor
        ``(M, K)`` g-independent pre-activation.
    transported : torch.Tensor
        ``(|G| K, R)`` readout matrix acting on the flattened per-element features.
    order : int
        ``|G|``.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``(M, K)`` sum over the orbit and ``(M, R)`` readout.
    """
    return _OrbitSumAndReadout.apply(tuples.contiguous(), weight_g.contiguous(), shift.contiguous(),
                                     transported.contiguous(), int(order))
