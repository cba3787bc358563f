"""torch.compile of a RelaxedConvolution agrees with eager execution."""
import pytest
import torch

from test_nn_helpers import cached_conv, conv_inputs, run_conv, set_theta


@pytest.mark.slow
def test_compiled_relaxed_convolution_matches_eager():
    dtype = torch.float32
    conv = cached_conv("small", dtype)
    set_theta(conv, conv.theta.theta.detach() + 0.5 * torch.randn_like(conv.theta.theta) * ~conv.theta.scalar_mask)
    x, attr, pos = conv_inputs(conv, dtype=dtype)
    eager = run_conv(conv, x, attr, pos)
    compiled = torch.compile(conv, dynamic=False)
    out = run_conv(compiled, x, attr, pos)
    torch.testing.assert_close(out, eager, atol=1e-5, rtol=1e-5)
    # gradients agree too, theta included
    eager_grad = torch.autograd.grad(eager.pow(2).sum(), conv.theta.theta)[0]
    compiled_grad = torch.autograd.grad(out.pow(2).sum(), conv.theta.theta)[0]
    torch.testing.assert_close(compiled_grad, eager_grad, atol=1e-4, rtol=1e-4)
    set_theta(conv, None)
