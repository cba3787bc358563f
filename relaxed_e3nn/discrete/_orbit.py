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

__all__ = ["orbit_sum_and_readout"]

# about 1 MiB of float32 per chunk of per-element features
_CHUNK_ELEMENTS = 1 << 18


def _row_chunks(rows: int, width: int):
    """``(start, stop, count)`` of consecutive row blocks of about ``_CHUNK_ELEMENTS / width`` rows."""
    step = max(1, _CHUNK_ELEMENTS // max(1, width))
    for start in range(0, rows, step):
        stop = min(rows, start + step)
        yield start, stop, stop - start


class _Backward:
    """What both backward passes share: the saved inputs, which gradients are needed, their buffers.

    Per-row gradients are written chunk by chunk (``empty``); those of the shared weights are
    accumulated over the chunks (``zeros``). Autograd materialises the incoming gradient of an
    unused output as zeros, so ``backward`` never receives None for one.
    """

    def __init__(self, ctx):
        self.tuples, self.weight, self.shift, self.transported = ctx.saved_tensors
        self.need_tuples, self.need_weight, self.need_shift, self.need_transported = ctx.needs_input_grad[:4]
        self.grad_tuples = torch.empty_like(self.tuples) if self.need_tuples else None
        self.grad_weight = torch.zeros_like(self.weight) if self.need_weight else None
        self.grad_shift = torch.empty_like(self.shift) if self.need_shift else None
        self.grad_transported = torch.zeros_like(self.transported) if self.need_transported else None
        self.transported_t = self.transported.transpose(1, 2)

    def chunks(self, factor: int):
        """``(start, stop, X)`` per chunk of rows, ``X`` the tuples expanded over the weight's elements."""
        count, k3, width = self.weight.shape
        for start, stop, m in _row_chunks(self.tuples.shape[0], factor * count * width):
            yield start, stop, self.tuples[start:stop].unsqueeze(0).expand(count, m, k3)

    def readout(self, features: torch.Tensor, grad_readout: torch.Tensor) -> None:
        """Accumulate the gradient of ``transported`` from ``sum_g f_g T_g``."""
        if self.need_transported:
            self.grad_transported.baddbmm_(features.transpose(1, 2), grad_readout)

    def first_layer(self, start: int, stop: int, x: torch.Tensor, grad_pre: torch.Tensor) -> None:
        """Gradients of the tuples and the weight through the pre-activation ``X W g``."""
        if self.need_tuples:
            torch.sum(torch.bmm(grad_pre, self.weight.transpose(1, 2)), dim=0, out=self.grad_tuples[start:stop])
        if self.need_weight:
            self.grad_weight.baddbmm_(x.transpose(1, 2), grad_pre)

    def result(self):
        return self.grad_tuples, self.grad_weight, self.grad_shift, self.grad_transported


def _full_forward(x, shift, weight, transported, pooled, readout):
    """One chunk of the whole orbit: ``f_g = relu(X W g + u)``, then its sum and readout."""
    features = torch.baddbmm(shift.unsqueeze(0).expand(x.shape[0], -1, -1), x, weight).relu_()
    torch.sum(features, dim=0, out=pooled)
    torch.sum(torch.bmm(features, transported), dim=0, out=readout)


def _half_forward(x, shift, weight, transported, pooled, readout):
    """One chunk of a centrosymmetric orbit from one element of each pair: ``relu(u ± X W h)``."""
    a = torch.bmm(x, weight)
    u = shift.unsqueeze(0)
    plus = torch.add(u, a).relu_()
    minus = torch.sub(u, a).relu_()
    torch.add(plus.sum(0), minus.sum(0), out=pooled)
    torch.sum(torch.bmm(plus.sub_(minus), transported), dim=0, out=readout)


def _full_backward(state, start, stop, x, grad_pooled, grad_readout):
    shift = state.shift[start:stop].unsqueeze(0).expand(x.shape[0], -1, -1)
    features = torch.baddbmm(shift, x, state.weight).relu_()
    state.readout(features, grad_readout)
    grad_pre = torch.baddbmm(grad_pooled.unsqueeze(0).expand_as(features), grad_readout, state.transported_t)
    grad_pre = torch.ops.aten.threshold_backward(grad_pre, features, 0)
    if state.need_shift:
        torch.sum(grad_pre, dim=0, out=state.grad_shift[start:stop])
    state.first_layer(start, stop, x, grad_pre)


def _half_backward(state, start, stop, x, grad_pooled, grad_readout):
    a = torch.bmm(x, state.weight)
    u = state.shift[start:stop].unsqueeze(0)
    plus = torch.add(u, a).relu_()
    minus = torch.sub(u, a).relu_()
    state.readout(plus - minus, grad_readout)
    q = torch.bmm(grad_readout, state.transported_t)
    g_pool = grad_pooled.unsqueeze(0)
    grad_plus = torch.ops.aten.threshold_backward(torch.add(g_pool, q), plus, 0)
    grad_minus = torch.ops.aten.threshold_backward(torch.sub(g_pool, q), minus, 0)
    if state.need_shift:
        torch.add(grad_plus.sum(0), grad_minus.sum(0), out=state.grad_shift[start:stop])
    state.first_layer(start, stop, x, grad_plus.sub_(grad_minus))


class _OrbitSumAndReadout(torch.autograd.Function):
    """The fused kernel; with ``centrosymmetric`` the group is ``G = H u (-H)`` given by ``H`` alone.

    With :math:`a_h = X W h`, a pair ``{h, -h}`` has the pre-activations :math:`u \\pm a_h` and
    the transported readouts :math:`\\pm T_h`, so half the matrix products cover the whole orbit.
    """

    @staticmethod
    def forward(ctx, tuples, weight, shift, transported, centrosymmetric):
        count, k3, width = weight.shape
        rows = tuples.shape[0]
        pooled = tuples.new_empty(rows, width)
        readout = tuples.new_empty(rows, transported.shape[2])
        chunk = _half_forward if centrosymmetric else _full_forward
        for start, stop, m in _row_chunks(rows, (1 + centrosymmetric) * count * width):
            x = tuples[start:stop].unsqueeze(0).expand(count, m, k3)
            chunk(x, shift[start:stop], weight, transported, pooled[start:stop], readout[start:stop])
        ctx.centrosymmetric = centrosymmetric
        ctx.save_for_backward(tuples, weight, shift, transported)
        return pooled, readout

    @staticmethod
    def backward(ctx, grad_pooled, grad_readout):
        state = _Backward(ctx)
        chunk = _half_backward if ctx.centrosymmetric else _full_backward
        for start, stop, x in state.chunks(1 + ctx.centrosymmetric):
            g_read = grad_readout[start:stop].unsqueeze(0).expand(x.shape[0], -1, -1)
            chunk(state, start, stop, x, grad_pooled[start:stop], g_read)
        return (*state.result(), None)


def orbit_sum_and_readout(
    tuples: torch.Tensor,
    weight: torch.Tensor,
    shift: torch.Tensor,
    transported: torch.Tensor,
    centrosymmetric: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Fused ``(sum_g f_g, sum_g f_g T_g)`` over the orbit (see the module docstring).

    Parameters
    ----------
    tuples : torch.Tensor
        ``(M, k3)`` flattened geometric tuples.
    weight : torch.Tensor
        ``(|G|, k3, K)`` first-layer weights composed with every group element, or with
        ``centrosymmetric`` only ``(|G|/2, k3, K)``, those of one element of each pair ``{h, -h}``.
    shift : torch.Tensor
        ``(M, K)`` g-independent pre-activation.
    transported : torch.Tensor
        ``(|G|, K, R)`` readout acting on the per-element features (with ``centrosymmetric``
        ``(|G|/2, K, R)``, the same elements as ``weight``: that of ``-h`` is its negative).
    centrosymmetric : bool
        The group is ``G = H u (-H)`` and ``weight``, ``transported`` hold ``H`` only: half the
        matrix products cover the whole orbit.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        ``(M, K)`` sum over the whole orbit and ``(M, R)`` readout.
    """
    return _OrbitSumAndReadout.apply(
        tuples.contiguous(), weight.contiguous(), shift.contiguous(), transported.contiguous(), bool(centrosymmetric)
    )
