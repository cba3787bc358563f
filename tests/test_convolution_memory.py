"""The fused message pass of RelaxedConvolution: same function as e3nn's gather / TensorProduct / scatter,
derivatives of every order, and no per-edge message tensors kept for the backward passes."""
import pytest
import torch
from torch.autograd.gradcheck import GradcheckError

import relaxed_e3nn.nn._message as message_module
from relaxed_e3nn.nn import RelaxedConvolution
from relaxed_e3nn.nn._message import EdgeTensorProductPlan, message_pass
from _tolerance import tolerance
from test_nn_helpers import complete_graph, edge_inputs, set_theta


def _conv(dtype, irreps_in="2x0e+2x1o+1x1e+1x2e+1x2o", irreps_out="2x0e+1x1o+1x1e+1x2e+1x2o"):
    conv = RelaxedConvolution(irreps_in, "2x0e", "1x0e+1x1o+1x2e", irreps_out, 5, 1, 8, 3.0).to(dtype)
    set_theta(conv, conv.theta.theta.detach() + 0.3 * torch.randn_like(conv.theta.theta))
    return conv


def _edge_problem(conv, num_nodes, num_edges, dtype):
    tp = conv.tp
    x = torch.randn(num_nodes, tp.irreps_in1.dim, dtype=dtype, requires_grad=True)
    y = torch.randn(num_edges, tp.irreps_in2.dim, dtype=dtype, requires_grad=True)
    w = torch.randn(num_edges, tp.weight_numel, dtype=dtype, requires_grad=True)
    src = torch.randint(0, num_nodes, (num_edges,))
    dst = torch.randint(0, num_nodes, (num_edges,))
    return x, y, w, src, dst


@pytest.mark.parametrize("chunk", [5, 4096])
def test_message_pass_is_e3nn_gather_product_scatter(dtype, chunk, monkeypatch):
    monkeypatch.setattr(message_module, "EDGE_CHUNK", chunk)
    conv = _conv(dtype)
    x, y, w, src, dst = _edge_problem(conv, 6, 23, dtype)
    expected = torch.zeros(6, conv.tp.irreps_out.dim, dtype=dtype).index_add(0, dst, conv.tp(x[src], y, w))
    got = message_pass(conv.message_plan, conv.tp, x, y, w, src, dst)
    # the value runs e3nn's own arithmetic, edge chunk by edge chunk; the derivatives agree to round-off
    assert torch.equal(got, expected)
    cotangent = torch.randn_like(expected)
    grads_expected = torch.autograd.grad(expected, (x, y, w), cotangent)
    grads_got = torch.autograd.grad(got, (x, y, w), cotangent)
    for a, b in zip(grads_got, grads_expected):
        torch.testing.assert_close(a, b, rtol=0, atol=tolerance(dtype, "identity") * b.abs().max())


def _small_problem(monkeypatch):
    monkeypatch.setattr(message_module, "EDGE_CHUNK", 3)
    conv = _conv(torch.float64, "1x0e+1x1o+1x2e", "1x0e+1x1o+1x1e+1x2e")
    x, y, w, src, dst = _edge_problem(conv, 4, 7, torch.float64)

    def messages(x, y, w):
        return message_pass(conv.message_plan, conv.tp, x, y, w, src, dst)

    return conv, messages, (x, y, w)


def test_message_pass_first_and_second_derivatives(monkeypatch):
    _, messages, inputs = _small_problem(monkeypatch)
    assert torch.autograd.gradcheck(messages, inputs)
    assert torch.autograd.gradgradcheck(messages, inputs)


def test_message_pass_third_derivatives(monkeypatch):
    conv, messages, inputs = _small_problem(monkeypatch)
    cotangent = torch.randn(4, conv.tp.irreps_out.dim, dtype=torch.float64)

    def first_derivative_loss(x, y, w):  # a force-like loss: its gradient is a third derivative
        grad_x, grad_y = torch.autograd.grad((messages(x, y, w) * cotangent).sum(), (x, y), create_graph=True)
        return grad_x.pow(2).sum() + grad_y.pow(3).sum()

    assert torch.autograd.gradgradcheck(first_derivative_loss, inputs)


def test_message_pass_gradient_check_fails_for_a_wrong_adjoint(monkeypatch):
    """Negative control: the checks above see a wrong first derivative."""
    conv = _conv(torch.float64)
    x, y, w, src, dst = _edge_problem(conv, 5, 11, torch.float64)
    adjoint = message_module._adjoint_pass

    def scaled(graph, g, *rest):
        return adjoint(graph, 1.01 * g, *rest)

    monkeypatch.setattr(message_module, "_adjoint_pass", scaled)
    with pytest.raises(GradcheckError):
        torch.autograd.gradcheck(lambda x: message_pass(conv.message_plan, conv.tp, x, y, w, src, dst), (x,))


def test_plan_rejects_other_tensor_products():
    from e3nn import o3

    tp = o3.FullyConnectedTensorProduct("2x0e+1x1o", "0e+1o", "2x0e+1x1o", shared_weights=False)
    with pytest.raises(ValueError, match="uvu"):
        EdgeTensorProductPlan(tp)


def _saved_edge_tensors(conv, num_nodes):
    """Shapes of the tensors autograd saves for a force-like loss on the convolution (energy, its
    gradient with create_graph, then the backward of both), for the tensors with one row per edge."""
    pos = torch.randn(num_nodes, 3, requires_grad=True)
    edge_src, edge_dst = complete_graph(num_nodes)
    x = torch.randn(num_nodes, conv.irreps_node_input.dim)
    attr = torch.randn(num_nodes, conv.irreps_node_attr.dim)
    shapes = []

    def pack(tensor):
        if tensor.dim() >= 1 and tensor.shape[0] == edge_src.shape[0]:
            shapes.append(tuple(tensor.shape))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        edge_attr, embedded = edge_inputs(conv.irreps_edge_attr, pos, edge_src, edge_dst)
        energy = conv(x, attr, edge_src, edge_dst, edge_attr, embedded).pow(2).sum()
        forces = torch.autograd.grad(energy, pos, create_graph=True)[0]
        (energy + forces.pow(2).sum()).backward()
    return shapes, edge_src.shape[0]


def test_force_loss_keeps_no_per_edge_messages():
    conv = _conv(torch.get_default_dtype())
    shapes, num_edges = _saved_edge_tensors(conv, 9)
    assert shapes, "the census must see the per-edge tensors that are saved (edge attributes, radial weights)"
    widest = conv.tp.weight_numel
    assert conv.irreps_mid.dim > widest
    # nothing wider than the radial weights: no [E, irreps_mid] messages, outer products or their gradients
    assert max(torch.Size(s).numel() // num_edges for s in shapes) <= widest
    assert not any(s[1:] == (conv.irreps_mid.dim,) for s in shapes)


def test_census_sees_messages_of_the_unfused_product(monkeypatch):
    """Negative control: e3nn's gather / TensorProduct / scatter keeps per-edge tensors wider than the weights."""
    import relaxed_e3nn.nn._convolution as convolution_module

    def unfused(plan, tp, x, y, w, src, dst):
        return torch.zeros(x.shape[0], plan.dim_out, dtype=x.dtype).index_add(0, dst, tp(x[src], y, w))

    monkeypatch.setattr(convolution_module, "message_pass", unfused)
    conv = _conv(torch.get_default_dtype())
    shapes, num_edges = _saved_edge_tensors(conv, 9)
    assert max(torch.Size(s).numel() // num_edges for s in shapes) > conv.tp.weight_numel
