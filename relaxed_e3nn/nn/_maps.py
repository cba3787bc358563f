r"""The :math:`\theta`-dependent linear maps through which relaxed weights enter a layer.

:math:`\theta` is constant over nodes and edges, so a tensor product :math:`x \otimes \theta` is a linear
map of :math:`x` that is formed once per forward pass and applied as one matrix product, instead of a
tensor product per node or per edge.
"""
from typing import Dict, Iterator, List, NamedTuple, Tuple

import torch
from e3nn import o3

from relaxed_e3nn._checks import parse_irreps

__all__ = ["ThetaLinearMap"]


class RelaxationSites:
    """Mixin of the relaxed blocks: where their θ maps act, read from ``relax_at`` (``"edge"``,
    ``"node"`` or ``"both"``, see ``relaxed_e3nn._checks.RELAX_AT``)."""

    relax_at: str

    @property
    def relaxes_edges(self) -> bool:
        """Whether the edge attributes get a θ map."""
        return self.relax_at in ("edge", "both")

    @property
    def relaxes_nodes(self) -> bool:
        """Whether the node features get a θ map."""
        return self.relax_at in ("node", "both")

_SCALAR = o3.Irrep("0e")


class _Block(NamedTuple):
    """The paths of one ``(input irrep i, output irrep k)`` pair, with their weight layout."""

    i: int  #: index in ``irreps_in``
    k: int  #: index in ``irreps_out``
    js: Tuple[int, ...]  #: indices in ``irreps_relaxed`` of the paths ``i x j -> k``
    copies: int  #: theta copies of all those paths, stacked along one axis ``V``
    mul_in: int
    mul_out: int
    dim_in: int  #: dimension of one copy of the input irrep
    dim_out: int  #: dimension of one copy of the output irrep
    offset: int  #: start of the block's ``[mul_in, copies, mul_out]`` weights in the flat parameter


class ThetaLinearMap(torch.nn.Module):
    r"""Linear map :math:`A(\theta)` from ``irreps_in`` to ``irreps_out``, bilinear in :math:`(x, \theta)`.

    .. math::
        (x A(\theta))_{k, w, m_3} = [x_{k,w,m_3}] + \sum_{(i, j) \to k} \alpha_k \sum_{u, v, m_1, m_2}
        w^{(ijk)}_{uvw}\, C^{l_i l_j l_k}_{m_1 m_2 m_3}\, x_{i,u,m_1}\, \theta_{j,v,m_2}

    over every path :math:`\mathrm{ir}_i \otimes \mathrm{ir}_j \to \mathrm{ir}_k` allowed by the selection
    rules, with :math:`C` e3nn's Wigner 3j symbols and e3nn's default normalisation
    (:math:`\alpha_k = \sqrt{(2l_k+1)/\mathrm{fan\_in}_k}`, ``component`` irreps and ``element`` paths): it
    equals ``o3.TensorProduct(irreps_in, irreps_relaxed, irreps_out, uvw instructions).right(theta)`` with
    the same path weights (see :meth:`weight_views`). It is computed as one product
    :math:`\theta\,G` with a fixed coupling matrix :math:`G` (3j symbols times :math:`\alpha`), then one
    matrix product with the weights per block :math:`(i, k)`: no code generation, cheap to build,
    picklable and ``torch.compile``-friendly.

    The weights of paths through a ``0e`` copy of :math:`\theta` start at zero, the others at
    :math:`\mathcal N(0, 1)`, so with :math:`\theta_\mathrm{breaking} = 0` the map is exactly :math:`0` (exactly
    :math:`\mathbb{1}` with ``identity=True``), entry by entry. It is jointly equivariant:
    :math:`A(D_\theta\theta) = D_\mathrm{in} A(\theta) D_\mathrm{out}^{-1}` in the row-vector convention
    ``y = x @ A``.

    Parameters
    ----------
    irreps_in, irreps_relaxed, irreps_out : `e3nn.o3.Irreps`
    identity : bool
        Add the identity (requires ``irreps_in == irreps_out``).
    """

    def __init__(self, irreps_in, irreps_relaxed, irreps_out, identity: bool = False) -> None:
        super().__init__()
        self.irreps_in = parse_irreps("irreps_in", irreps_in, "ThetaLinearMap")
        self.irreps_relaxed = parse_irreps("irreps_relaxed", irreps_relaxed, "ThetaLinearMap")
        self.irreps_out = parse_irreps("irreps_out", irreps_out, "ThetaLinearMap")
        if identity and self.irreps_in != self.irreps_out:
            raise ValueError(f"identity=True needs irreps_in == irreps_out, got {self.irreps_in} and {self.irreps_out}")
        self.identity = bool(identity)
        self.dim_in, self.dim_relaxed, self.dim_out = self.irreps_in.dim, self.irreps_relaxed.dim, self.irreps_out.dim
        fan_in = [0] * len(self.irreps_out)
        paths = {}
        for i, (mul_in, ir_in) in enumerate(self.irreps_in):
            for k, (_, ir_out) in enumerate(self.irreps_out):
                for j, (mul_theta, ir_theta) in enumerate(self.irreps_relaxed):
                    if ir_out in ir_in * ir_theta:
                        paths.setdefault((i, k), []).append(j)
                        fan_in[k] += mul_in * mul_theta
        # one block per (i, k): the theta copies of all its paths stacked along one axis V
        self._blocks: List[_Block] = []
        weight_offset = 0
        for (i, k), js in paths.items():
            mul_in, ir_in = self.irreps_in[i]
            mul_out, ir_out = self.irreps_out[k]
            copies = sum(self.irreps_relaxed[j].mul for j in js)
            self._blocks.append(_Block(i, k, tuple(js), copies, mul_in, mul_out, ir_in.dim, ir_out.dim, weight_offset))
            weight_offset += mul_in * copies * mul_out
        self._fan_in = fan_in
        self._coupling_sizes = [b.copies * b.dim_in * b.dim_out for b in self._blocks]
        self._row_sizes = [mul * ir.dim for mul, ir in self.irreps_in]
        self._col_sizes = [mul * ir.dim for mul, ir in self.irreps_out]
        weight = torch.randn(weight_offset)
        for block in self._blocks:
            view = self._block_weight(weight, block)
            v = 0
            for j in block.js:
                mul_theta, ir_theta = self.irreps_relaxed[j]
                if ir_theta == _SCALAR:
                    view[:, v:v + mul_theta, :] = 0.0
                v += mul_theta
        self.weight = torch.nn.Parameter(weight)
        # G is kept in float64 on the CPU (a plain attribute, untouched by .to()) and mirrored into a
        # non-persistent buffer in the module's dtype and device; _apply refreshes the mirror from the
        # float64 master, so a module built in float32 and moved to float64 keeps full precision
        self._coupling_float64 = self._build_coupling()
        self.register_buffer("coupling", self._coupling_float64.to(weight.dtype), persistent=False)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.coupling = self._coupling_float64.to(dtype=self.weight.dtype, device=self.weight.device)
        return self

    @staticmethod
    def _block_weight(weight: torch.Tensor, block: _Block) -> torch.Tensor:
        size = block.mul_in * block.copies * block.mul_out
        return weight[block.offset:block.offset + size].view(block.mul_in, block.copies, block.mul_out)

    @property
    def num_paths(self) -> int:
        """Number of ``(irrep in, irrep of theta, irrep out)`` paths."""
        return sum(len(block.js) for block in self._blocks)

    @property
    def instructions(self) -> List[Tuple[int, int, int]]:
        """The paths ``(i_in, i_relaxed, i_out)``, in the order of :meth:`weight_views`."""
        return [(block.i, j, block.k) for block in self._blocks for j in block.js]

    def weight_views(self) -> Iterator[Tuple[Tuple[int, int, int], torch.Tensor]]:
        """Yield ``((i, j, k), view)`` with the ``[mul_in, mul_theta, mul_out]`` weights of every path."""
        for block in self._blocks:
            view = self._block_weight(self.weight, block)
            v = 0
            for j in block.js:
                mul_theta = self.irreps_relaxed[j].mul
                yield (block.i, j, block.k), view[:, v:v + mul_theta, :]
                v += mul_theta

    def _build_coupling(self) -> torch.Tensor:
        r"""The fixed matrix :math:`G`, ``[dim_relaxed, sum_blocks V * dim_in * dim_out]``, in float64."""
        columns = []
        theta_offsets = [sl.start for sl in self.irreps_relaxed.slices()]
        for b in self._blocks:
            l_in, l_out = self.irreps_in[b.i].ir.l, self.irreps_out[b.k].ir.l
            alpha = ((2 * l_out + 1) / self._fan_in[b.k]) ** 0.5
            block = torch.zeros(self.dim_relaxed, b.copies, b.dim_in, b.dim_out, dtype=torch.float64)
            v = 0
            for j in b.js:
                mul_theta, ir_theta = self.irreps_relaxed[j]
                w3j = o3.wigner_3j(l_in, ir_theta.l, l_out, dtype=torch.float64)  # [a, b, c]
                for copy in range(mul_theta):
                    start = theta_offsets[j] + copy * ir_theta.dim
                    block[start:start + ir_theta.dim, v + copy] = alpha * w3j.permute(1, 0, 2)
                v += mul_theta
            columns.append(block.reshape(self.dim_relaxed, -1))
        if not columns:
            return torch.zeros(self.dim_relaxed, 0, dtype=torch.float64)
        return torch.cat(columns, dim=1)

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        r"""Return :math:`A(\theta)` as a ``[irreps_in.dim, irreps_out.dim]`` matrix (apply as ``x @ A``)."""
        if theta.shape != (self.dim_relaxed,):
            raise ValueError(f"ThetaLinearMap: theta must have shape [{self.dim_relaxed}], got {tuple(theta.shape)}")
        products: Dict[Tuple[int, int], torch.Tensor] = {}
        if self._blocks:
            couplings = torch.split(theta @ self.coupling.to(theta.dtype), self._coupling_sizes)
            for block, coupling in zip(self._blocks, couplings):
                mul_in, mul_out, dim_in, dim_out = block.mul_in, block.mul_out, block.dim_in, block.dim_out
                weight = self._block_weight(self.weight, block)  # [u, V, w]
                product = weight.transpose(1, 2).reshape(mul_in * mul_out, block.copies) @ coupling.view(block.copies, -1)
                product = product.view(mul_in, mul_out, dim_in, dim_out).transpose(1, 2)
                products[(block.i, block.k)] = product.reshape(mul_in * dim_in, mul_out * dim_out)
        rows = []
        for i, rows_i in enumerate(self._row_sizes):
            row = [products[(i, k)] if (i, k) in products else theta.new_zeros(rows_i, cols_k)
                   for k, cols_k in enumerate(self._col_sizes)]
            rows.append(torch.cat(row, dim=1) if row else theta.new_zeros(rows_i, 0))
        matrix = torch.cat(rows, dim=0) if rows else theta.new_zeros(0, self.dim_out)
        if self.identity:
            matrix = matrix + torch.eye(self.dim_in, dtype=theta.dtype, device=theta.device)
        return matrix

    def extra_repr(self) -> str:
        return (f"{self.irreps_in} x ({self.irreps_relaxed}) -> {self.irreps_out}, paths={self.num_paths}, "
                f"weights={self.weight.numel()}, identity={self.identity}")
