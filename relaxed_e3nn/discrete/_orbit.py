r"""The per-element part of the edge network, fused and chunked over edges.

For tuples :math:`X_m` (flattened to ``k3`` numbers), the matrices :math:`W g` of all group
elements (``weight_g``, ``(|G|, k3, K)``), a g-independent shift :math:`u_m` and the
transported readout :math:`T_g` (``(|G|, K, R)``), it returns

.. math::
    s_m = \sum_g f_{m,g}, \qquad Y_m = \sum_{g} f_{m,g} T_g, \qquad
    f_{m,g} = \mathrm{relu}(X_m W g + u_m).

The ``(M, |G|, K)`` tensor of per-element features is never stored: the forward pass and the
backward pass (which recomputes it) walk over the rows in chunks small enough to stay in
cache, so the cost is a few passes over cache-resident data instead of a dozen passes
over an array far larger than the cache. The shift is added by the batched matmul itself
(``baddbmm``), one pass fewer than a separate addition.
"""
from typing import Tuple

import torch

__all__ = ["orbit_sum_and_readout", "centrosymmetric_orbit_sum_and_readout"]

# about 1 MiB of float32 per chunk of per-element features
_CHUNK_ELEMENTS = 1 << 18


def _chunk_rows(width: int) -> int:
    return max(1, _CHUNK_ELEMENTS // max(1, width))


def _gradient_buffers(ctx):
    """Gradient buffers of the saved ``(tuples, weight, shift, transported)``, None where not needed.

    Per-row gradients are written chunk by chunk (``empty``); those of the shared weights are
    accumulated over the chunks (``zeros``). Autograd materialises the incoming gradient of an
    unused output as zeros, so ``backward`` never receives None for one.
    """
    tuples, weight, shift, transported = ctx.saved_tensors
    need_tuples, need_weight, need_shift, need_transported = ctx.needs_input_grad[:4]
    return (
        torch.empty_like(tuples) if need_tuples else None,
        torch.zeros_like(weight) if need_weight else None,
        torch.empty_like(shift) if need_shift else None,
        torch.zeros_like(transported) if need_transported else None,
    )


class _OrbitSumAndReadout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, tuples, weight_g, shift, transported):
        order, k3, width = weight_g.shape
        rows = tuples.shape[0]
        pooled = tuples.new_empty(rows, width)
        readout = tuples.new_empty(rows, transported.shape[2])
        step = _chunk_rows(order * width)
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            m = stop - start
            features = torch.baddbmm(
                shift[start:stop].unsqueeze(0).expand(order, m, width),
                tuples[start:stop].unsqueeze(0).expand(order, m, k3),
                weight_g,
            ).relu_()
            torch.sum(features, dim=0, out=pooled[start:stop])
            torch.sum(torch.bmm(features, transported), dim=0, out=readout[start:stop])
        ctx.save_for_backward(tuples, weight_g, shift, transported)
        return pooled, readout

    @staticmethod
    def backward(ctx, grad_pooled, grad_readout):
        tuples, weight_g, shift, transported = ctx.saved_tensors
        order, k3, width = weight_g.shape
        rows, channels = tuples.shape[0], transported.shape[2]
        need_tuples, need_weight, need_shift, need_transported = ctx.needs_input_grad[:4]
        grad_tuples, grad_weight, grad_shift, grad_transported = _gradient_buffers(ctx)
        transported_t = transported.transpose(1, 2)
        weight_t = weight_g.transpose(1, 2)
        step = _chunk_rows(order * width)
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            m = stop - start
            x = tuples[start:stop].unsqueeze(0).expand(order, m, k3)
            features = torch.baddbmm(shift[start:stop].unsqueeze(0).expand(order, m, width), x, weight_g).relu_()
            g_read = grad_readout[start:stop].unsqueeze(0).expand(order, m, channels)
            if need_transported:
                grad_transported.baddbmm_(features.transpose(1, 2), g_read)
            grad_pre = torch.baddbmm(grad_pooled[start:stop].unsqueeze(0).expand(order, m, width), g_read, transported_t)
            grad_pre = torch.ops.aten.threshold_backward(grad_pre, features, 0)
            if need_shift:
                torch.sum(grad_pre, dim=0, out=grad_shift[start:stop])
            if need_tuples:
                torch.sum(torch.bmm(grad_pre, weight_t), dim=0, out=grad_tuples[start:stop])
            if need_weight:
                grad_weight.baddbmm_(x.transpose(1, 2), grad_pre)
        return grad_tuples, grad_weight, grad_shift, grad_transported


def orbit_sum_and_readout(
    tuples: torch.Tensor, weight_g: torch.Tensor, shift: torch.Tensor, transported: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fused ``(sum_g f_g, sum_g f_g T_g)`` over the orbit (see the module docstring).

    Parameters
    ----------
    tuples : torch.Tensor
        ``(M, k3)`` flattened geometric tuples.
    weight_g : torch.Tensor
        ``(|G|, k3, K)`` first-layer weights composed with every group element.
    shift : torch.Tensor
        ``(M, K)`` g-independent pre-activation.
    transported : torch.Tensor
        ``(|G|, K, R)`` readout acting on the per-element features.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``(M, K)`` sum over the orbit and ``(M, R)`` readout.
    """
    return _OrbitSumAndReadout.apply(
        tuples.contiguous(), weight_g.contiguous(), shift.contiguous(), transported.contiguous()
    )


class _CentrosymmetricOrbit(torch.autograd.Function):
    """Same sums for a group containing the inversion, given only one of each pair ``{h, -h}``.

    With :math:`a_h = X W h`, the pair's pre-activations are :math:`u \\pm a_h` and its transported
    readouts :math:`\\pm T_h`, so half the matrix products cover the whole orbit.
    """

    @staticmethod
    def forward(ctx, tuples, weight_h, shift, transported_h):
        half, k3, width = weight_h.shape
        rows = tuples.shape[0]
        pooled = tuples.new_empty(rows, width)
        readout = tuples.new_empty(rows, transported_h.shape[2])
        step = _chunk_rows(2 * half * width)
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            m = stop - start
            a = torch.bmm(tuples[start:stop].unsqueeze(0).expand(half, m, k3), weight_h)
            u = shift[start:stop].unsqueeze(0)
            plus = torch.add(u, a).relu_()
            minus = torch.sub(u, a).relu_()
            torch.add(plus.sum(0), minus.sum(0), out=pooled[start:stop])
            torch.sum(torch.bmm(plus.sub_(minus), transported_h), dim=0, out=readout[start:stop])
        ctx.save_for_backward(tuples, weight_h, shift, transported_h)
        return pooled, readout

    @staticmethod
    def backward(ctx, grad_pooled, grad_readout):
        tuples, weight_h, shift, transported_h = ctx.saved_tensors
        half, k3, width = weight_h.shape
        rows, channels = tuples.shape[0], transported_h.shape[2]
        need_tuples, need_weight, need_shift, need_transported = ctx.needs_input_grad[:4]
        grad_tuples, grad_weight, grad_shift, grad_transported = _gradient_buffers(ctx)
        transported_t = transported_h.transpose(1, 2)
        weight_t = weight_h.transpose(1, 2)
        step = _chunk_rows(2 * half * width)
        for start in range(0, rows, step):
            stop = min(rows, start + step)
            m = stop - start
            x = tuples[start:stop].unsqueeze(0).expand(half, m, k3)
            a = torch.bmm(x, weight_h)
            u = shift[start:stop].unsqueeze(0)
            plus = torch.add(u, a).relu_()
            minus = torch.sub(u, a).relu_()
            g_read = grad_readout[start:stop].unsqueeze(0).expand(half, m, channels)
            if need_transported:
                grad_transported.baddbmm_((plus - minus).transpose(1, 2), g_read)
            q = torch.bmm(g_read, transported_t)
            g_pool = grad_pooled[start:stop].unsqueeze(0)
            grad_plus = torch.ops.aten.threshold_backward(torch.add(g_pool, q), plus, 0)
            grad_minus = torch.ops.aten.threshold_backward(torch.sub(g_pool, q), minus, 0)
            if need_shift:
                torch.add(grad_plus.sum(0), grad_minus.sum(0), out=grad_shift[start:stop])
            grad_a = grad_plus.sub_(grad_minus)
            if need_tuples:
                torch.sum(torch.bmm(grad_a, weight_t), dim=0, out=grad_tuples[start:stop])
            if need_weight:
                grad_weight.baddbmm_(x.transpose(1, 2), grad_a)
        return grad_tuples, grad_weight, grad_shift, grad_transported


def centrosymmetric_orbit_sum_and_readout(
    tuples: torch.Tensor, weight_h: torch.Tensor, shift: torch.Tensor, transported_h: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`orbit_sum_and_readout` for a group ``G = H u (-H)``, given the weights of ``H`` only.

    Parameters
    ----------
    tuples : torch.Tensor
        ``(M, k3)`` flattened geometric tuples.
    weight_h : torch.Tensor
        ``(|G|/2, k3, K)`` first-layer weights composed with one element of each pair ``{h, -h}``.
    shift : torch.Tensor
        ``(M, K)`` g-independent pre-activation.
    transported_h : torch.Tensor
        ``(|G|/2, K, R)`` transported readout of the same elements (that of ``-h`` is its negative).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``(M, K)`` sum over the whole orbit and ``(M, R)`` readout.
    """
    return _CentrosymmetricOrbit.apply(
        tuples.contiguous(), weight_h.contiguous(), shift.contiguous(), transported_h.contiguous()
    )
