r"""The message pass of a point convolution, gather, tensor product with per-edge weights and scatter, in one step.

For the ``"uvu"`` tensor product of e3nn's ``gate_points`` convolutions, node features :math:`x`
(irreps ``irreps_in1``), edge attributes :math:`Y` (``irreps_in2``, one copy of each irrep) and
per-edge weights :math:`w` give, at every node :math:`d`,

.. math::
    T(x, Y, w)_{d,p,u,k} = \sum_{e : \mathrm{dst}(e) = d} \alpha_p\, w_{e,p,u}
        \sum_{i, j} C^{(p)}_{ijk}\, x_{\mathrm{src}(e), l_1(p), u, i}\, Y_{e, l_2(p), j}

for each path :math:`p = (l_1, l_2) \to l_3` (:math:`C` e3nn's Wigner 3j symbols, :math:`\alpha_p` its
path weight): the scatter-sum of ``TensorProduct(x[src], Y, w)`` with ``shared_weights=False``.

:math:`T` is linear in each of :math:`x`, :math:`Y` and :math:`w`, so
:math:`F(g, x, Y, w) = \langle g, T(x, Y, w)\rangle` is linear in each of its four arguments and
every derivative of :math:`T`, of any order, is one of the four partial gradients of :math:`F`
(:math:`T = \partial F/\partial g`, and :math:`\partial F/\partial x`, :math:`\partial F/\partial Y`,
:math:`\partial F/\partial w`) evaluated with one argument replaced by a cotangent. The autograd
functions below compute those gradients edge chunk by edge chunk and save only their inputs: no
tensor with one row per edge and one column per message component is kept for the backward pass,
nor for the double backward of a force loss, where e3nn's generic tensor product keeps several
(outer products, per-path results, their gradients). Same function, to floating-point round-off.
"""
from typing import List, NamedTuple, Optional, Sequence, Tuple

import torch
from e3nn import o3

__all__ = ["EdgeTensorProductPlan", "message_pass"]

#: edges handled at once; bounds the transient per-edge tensors of one pass
EDGE_CHUNK = 4096


class _Path(NamedTuple):
    out: slice  #: block of the output
    dim3: int
    weight: slice  #: block of the per-edge weights
    columns: slice  #: its ``k`` within the group's ``[d1, K]`` matrices


class _Group(NamedTuple):
    """The paths that start from one irrep of ``irreps_in1``: one batched matrix product."""

    in1: slice  #: block of the node features
    mul: int
    dim1: int
    coupling: slice  #: columns of the coupling matrix, ordered ``(i, path, k)``
    width: int  #: ``K``, the summed output dimensions ``d3`` of the paths
    paths: Tuple[_Path, ...]


class EdgeTensorProductPlan:
    r"""The paths of an e3nn ``TensorProduct`` in ``"uvu"`` mode with one copy of each ``irreps_in2`` irrep.

    Holds the block layout and builds the coupling matrix
    :math:`K_{(l_2 j), (i\, p\, k)} = \alpha_p\, C^{(p)}_{ijk}`, so that the per-edge matrices
    :math:`B_{e,i,(p k)} = \sum_j Y_{e,j} K_{j,(i p k)}` of all paths come from one product ``Y @ K``;
    the paths that start from the same input irrep form one ``[d1, K]`` matrix per edge.

    Parameters
    ----------
    tp : e3nn.o3.TensorProduct
        With ``shared_weights=False``, every instruction ``"uvu"`` with weights.
    """

    def __init__(self, tp: o3.TensorProduct) -> None:
        irreps_in1, irreps_in2, irreps_out = tp.irreps_in1, tp.irreps_in2, tp.irreps_out
        if tp.shared_weights or any(ins.connection_mode != "uvu" or not ins.has_weight for ins in tp.instructions):
            raise ValueError("EdgeTensorProductPlan: tp must have per-edge weights and 'uvu' weighted instructions")
        if any(mul != 1 for mul, _ in irreps_in2):
            raise ValueError(f"EdgeTensorProductPlan: irreps_in2 must hold one copy of each irrep, got {irreps_in2}")
        in1, in2, out = irreps_in1.slices(), irreps_in2.slices(), irreps_out.slices()
        weight_start, by_input = 0, {}
        for ins in tp.instructions:
            mul = irreps_in1[ins.i_in1].mul
            by_input.setdefault(ins.i_in1, []).append((ins, slice(weight_start, weight_start + mul)))
            weight_start += mul
        groups, blocks, column = [], [], 0
        for i_in1, members in by_input.items():
            mul, ir1 = irreps_in1[i_in1]
            width = sum(irreps_out[ins.i_out].ir.dim for ins, _ in members)
            paths, k = [], 0
            for ins, weight in members:
                ir2, ir3 = irreps_in2[ins.i_in2].ir, irreps_out[ins.i_out].ir
                paths.append(_Path(out[ins.i_out], ir3.dim, weight, slice(k, k + ir3.dim)))
                c = ins.path_weight * o3.wigner_3j(ir1.l, ir2.l, ir3.l).to(torch.float64)  # [i, j, k]
                for i in range(ir1.dim):
                    blocks.append((in2[ins.i_in2], column + i * width + k, c[i]))  # [j, k]
                k += ir3.dim
            groups.append(_Group(in1[i_in1], mul, ir1.dim, slice(column, column + ir1.dim * width), width,
                                 tuple(paths)))
            column += ir1.dim * width
        coupling = torch.zeros(irreps_in2.dim, column, dtype=torch.float64)
        for rows, start, block in blocks:
            coupling[rows, start:start + block.shape[1]] = block
        self.groups: List[_Group] = groups
        self.dim_in1, self.dim_in2, self.dim_out = irreps_in1.dim, irreps_in2.dim, irreps_out.dim
        self.weight_numel = weight_start
        self.coupling = coupling
        self._converted = {}

    def coupling_like(self, like: torch.Tensor) -> torch.Tensor:
        """The coupling matrix ``[dim_in2, columns]`` in ``like``'s dtype and device (converted once)."""
        key = (like.dtype, like.device)
        if key not in self._converted:
            self._converted[key] = self.coupling.to(dtype=like.dtype, device=like.device)
        return self._converted[key]


class _Graph(NamedTuple):
    src: torch.Tensor
    dst: torch.Tensor
    num_nodes: int
    plan: EdgeTensorProductPlan
    coupling: torch.Tensor
    #: e3nn's tensor product, run on each edge chunk by the forward pass when ``exact``
    tp: torch.nn.Module
    #: the value with the same arithmetic as ``scatter(tp(x[src], Y, w), dst)``, to the last bit;
    #: otherwise (and for every derivative) the batched matrix products (round-off differs)
    exact: bool


def _chunks(num_edges: int):
    for start in range(0, num_edges, EDGE_CHUNK):
        yield slice(start, min(start + EDGE_CHUNK, num_edges))


def _group_blocks(x_edges, b_all, group: _Group, rows: int):
    """The group's node features on the edges ``[e, u, d1]`` and its matrices ``B`` ``[e, d1, K]``."""
    x = x_edges[:, group.in1].reshape(rows, group.mul, group.dim1)
    b = b_all[:, group.coupling].reshape(rows, group.dim1, group.width)
    return x, b


def _forward_pass(graph: _Graph, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """:math:`T(x, Y, w)`, ``[num_nodes, dim_out]``."""
    if not graph.exact:
        return _tangent_pass(graph, x, y, w, x, None, None)
    out = x.new_zeros(graph.num_nodes, graph.plan.dim_out)
    for chunk in _chunks(graph.src.shape[0]):
        out.index_add_(0, graph.dst[chunk], graph.tp(x.index_select(0, graph.src[chunk]), y[chunk], w[chunk]))
    return out


def _adjoint_pass(graph: _Graph, g, x, y, w, want: Sequence[bool]) -> Tuple[Optional[torch.Tensor], ...]:
    r""":math:`(\partial F/\partial x, \partial F/\partial Y, \partial F/\partial w)`, those ``want`` asks for."""
    plan = graph.plan
    grad_x = x.new_zeros(graph.num_nodes, plan.dim_in1) if want[0] else None
    grad_y = y.new_empty(y.shape) if want[1] else None
    grad_w = w.new_empty(w.shape) if want[2] else None
    for chunk in _chunks(graph.src.shape[0]):
        rows = chunk.stop - chunk.start
        g_edges = g.index_select(0, graph.dst[chunk])
        x_edges = x.index_select(0, graph.src[chunk])
        b_all = y[chunk] @ graph.coupling
        w_chunk = w[chunk]
        grad_x_edges = x.new_zeros(rows, plan.dim_in1) if want[0] else None
        grad_b = b_all.new_empty(b_all.shape) if want[1] else None
        for group in plan.groups:
            xg, bg = _group_blocks(x_edges, b_all, group, rows)
            g_paths = [g_edges[:, path.out].reshape(rows, group.mul, path.dim3) for path in group.paths]
            if want[0] or want[1]:
                weighted = x.new_empty(rows, group.mul, group.width)
                for path, gp in zip(group.paths, g_paths):
                    torch.mul(gp, w_chunk[:, path.weight].unsqueeze(-1), out=weighted[:, :, path.columns])
                if want[0]:
                    grad_x_edges[:, group.in1] = torch.bmm(weighted, bg.transpose(1, 2)).reshape(rows, -1)
                if want[1]:
                    grad_b[:, group.coupling] = torch.bmm(xg.transpose(1, 2), weighted).reshape(rows, -1)
            if want[2]:
                products = torch.bmm(xg, bg)
                for path, gp in zip(group.paths, g_paths):
                    grad_w[chunk, path.weight] = (products[:, :, path.columns] * gp).sum(-1)
        if want[0]:
            grad_x.index_add_(0, graph.src[chunk], grad_x_edges)
        if want[1]:
            grad_y[chunk] = grad_b @ graph.coupling.T
    return grad_x, grad_y, grad_w


def _tangent_pass(graph: _Graph, x, y, w, c_x, c_y, c_w) -> torch.Tensor:
    r""":math:`T(c_x, Y, w) + T(x, c_Y, w) + T(x, Y, c_w)` in one pass (a ``None`` cotangent adds nothing).

    With ``c_x = x`` and no other cotangent this is :math:`T(x, Y, w)` itself.
    """
    plan = graph.plan
    out = x.new_zeros(graph.num_nodes, plan.dim_out)
    for chunk in _chunks(graph.src.shape[0]):
        rows = chunk.stop - chunk.start
        x_edges = x.index_select(0, graph.src[chunk])
        c_x_edges = None
        if c_x is not None:
            c_x_edges = x_edges if c_x is x else c_x.index_select(0, graph.src[chunk])
        b_all = y[chunk] @ graph.coupling
        c_b_all = c_y[chunk] @ graph.coupling if c_y is not None else None
        messages = x.new_empty(rows, plan.dim_out)
        for group in plan.groups:
            xg, bg = _group_blocks(x_edges, b_all, group, rows)
            plain = torch.bmm(xg, bg) if c_w is not None else None
            c_xg = xg if c_x_edges is x_edges else None  # c_x = x: the forward value itself
            if c_x_edges is not None and c_xg is None:
                c_xg = _group_blocks(c_x_edges, b_all, group, rows)[0]
            along = _sum([torch.bmm(c_xg, bg) if c_xg is not None else None,
                          torch.bmm(xg, _group_blocks(x_edges, c_b_all, group, rows)[1]) if c_y is not None else None])
            for path in group.paths:
                message = _sum([
                    along[:, :, path.columns] * w[chunk, path.weight].unsqueeze(-1) if along is not None else None,
                    plain[:, :, path.columns] * c_w[chunk, path.weight].unsqueeze(-1) if c_w is not None else None])
                messages[:, path.out] = message.reshape(rows, -1)
        out.index_add_(0, graph.dst[chunk], messages)
    return out


def _sum(terms: List[Optional[torch.Tensor]]) -> Optional[torch.Tensor]:
    terms = [t for t in terms if t is not None]
    if not terms:
        return None
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


class _MessagePass(torch.autograd.Function):
    """:math:`T(x, Y, w)`; saves its inputs only."""

    @staticmethod
    def forward(ctx, x, y, w, graph: _Graph):
        ctx.save_for_backward(x, y, w)
        ctx.graph = graph
        return _forward_pass(graph, x, y, w)

    @staticmethod
    def backward(ctx, g):
        x, y, w = ctx.saved_tensors
        want = tuple(ctx.needs_input_grad[:3])
        grad_x, grad_y, grad_w = _Adjoint.apply(g, x, y, w, ctx.graph, want)
        return grad_x, grad_y, grad_w, None


class _Adjoint(torch.autograd.Function):
    r"""The partial gradients of :math:`F(g, x, Y, w)` with respect to :math:`x`, :math:`Y`, :math:`w`."""

    @staticmethod
    def forward(ctx, g, x, y, w, graph: _Graph, want):
        ctx.save_for_backward(g, x, y, w)
        ctx.graph = graph
        ctx.set_materialize_grads(False)
        return _adjoint_pass(graph, g, x, y, w, want)

    @staticmethod
    def backward(ctx, c_x, c_y, c_w):
        # d/d(other) of dF/d(a), contracted with a cotangent c_a, is dF/d(other) with a := c_a
        g, x, y, w = ctx.saved_tensors
        graph = ctx.graph._replace(exact=False)
        need_g, need_x, need_y, need_w = ctx.needs_input_grad[:4]
        grad_g = None
        if need_g and not torch.is_grad_enabled():  # no graph to build: one pass for the three terms
            if any(c is not None for c in (c_x, c_y, c_w)):
                grad_g = _tangent_pass(graph, x, y, w, c_x, c_y, c_w)
        elif need_g:
            grad_g = _sum([_MessagePass.apply(c_x, y, w, graph) if c_x is not None else None,
                           _MessagePass.apply(x, c_y, w, graph) if c_y is not None else None,
                           _MessagePass.apply(x, y, c_w, graph) if c_w is not None else None])
        from_x = from_y = from_w = (None, None, None)
        if c_x is not None and (need_y or need_w):
            from_x = _Adjoint.apply(g, c_x, y, w, graph, (False, need_y, need_w))
        if c_y is not None and (need_x or need_w):
            from_y = _Adjoint.apply(g, x, c_y, w, graph, (need_x, False, need_w))
        if c_w is not None and (need_x or need_y):
            from_w = _Adjoint.apply(g, x, y, c_w, graph, (need_x, need_y, False))
        grad_x = _sum([from_y[0], from_w[0]]) if need_x else None
        grad_y = _sum([from_x[1], from_w[1]]) if need_y else None
        grad_w = _sum([from_x[2], from_y[2]]) if need_w else None
        return grad_g, grad_x, grad_y, grad_w, None, None


def message_pass(plan: EdgeTensorProductPlan, tp: torch.nn.Module, x: torch.Tensor, edge_attr: torch.Tensor,
                 weight: torch.Tensor, edge_src: torch.Tensor, edge_dst: torch.Tensor) -> torch.Tensor:
    r"""Scatter-sum over incoming edges of the tensor product the plan describes.

    Equals ``scatter(tp(x[edge_src], edge_attr, weight), edge_dst, dim_size=len(x))``,
    differentiable to any order, without keeping per-edge intermediates for the backward passes.
    The value runs ``tp`` itself on chunks of :data:`EDGE_CHUNK` edges (the same arithmetic as the
    unchunked product); the derivatives use the batched matrix products of ``plan`` (the same
    numbers to round-off).

    Parameters
    ----------
    plan : EdgeTensorProductPlan
        Built from ``tp``.
    tp : e3nn.o3.TensorProduct
    x : torch.Tensor, shape ``[N, plan.dim_in1]``
    edge_attr : torch.Tensor, shape ``[E, plan.dim_in2]``
    weight : torch.Tensor, shape ``[E, plan.weight_numel]``
    edge_src, edge_dst : torch.Tensor, shape ``[E]``, integer

    Returns
    -------
    torch.Tensor, shape ``[N, plan.dim_out]``
    """
    graph = _Graph(edge_src, edge_dst, x.shape[0], plan, plan.coupling_like(x), tp, True)
    return _MessagePass.apply(x, edge_attr, weight, graph)
