r"""The :math:`\theta`-dependent linear maps through which relaxed weights enter a layer.

:math:`\theta` is constant over nodes and edges, so a tensor product :math:`x \otimes \theta` is a linear
map of :math:`x` that is formed once per forward pass and applied as one matrix product, instead of a
tensor product per node or per edge.
"""
from typing import Dict, List, Tuple

import torch
from e3nn import o3

__all__ = ["ThetaLinearMap"]

_SCALAR = o3.Irrep("0e")


class ThetaLinearMap(torch.nn.Module):
    r"""Linear map :math:`A(\theta)` from ``irreps_in`` to ``irreps_out``, bilinear in :math:`(x, \theta)`.

    .. math::
        (x A(\theta))_{k, w, m_3} = [x_{k,w,m_3}] + \sum_{(i, j) \to k} \alpha_k \sum_{u, v, m_1, m_2}
        w^{(ijk)}_{uvw}\, C^{l_i l_j l_k}_{m_1 m_2 m_3}\, x_{i,u,m_1}\, \theta_{j,v,m_2}

    over every path :math:`\mathrm{ir}_i \otimes \mathrm{ir}_j \to \mathrm{ir}_k` allowed by the selection
    rules, with :math:`C` e3nn's Wigner 3j symbols and e3nn's default normalisation
    (:math:`\alpha_k = \sqrt{(2l_k+1)/\mathrm{fan\_in}_k}`, ``component`` irreps and ``element`` paths), so it
    equals ``o3.TensorProduct(irreps_in, irreps_relaxed, irreps_out, uvw instructions).right(theta)``. It is
    built directly with ``einsum`` (no code generation), which keeps construction cheap and the module
    picklable.

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
        self.irreps_in = o3.Irreps(irreps_in)
        self.irreps_relaxed = o3.Irreps(irreps_relaxed)
        self.irreps_out = o3.Irreps(irreps_out)
        if identity and self.irreps_in != self.irreps_out:
            raise ValueError(f"identity=True needs irreps_in == irreps_out, got {self.irreps_in} and {self.irreps_out}")
        self.identity = bool(identity)
        instructions = []
        fan_in = [0] * len(self.irreps_out)
        for i, (mul_in, ir_in) in enumerate(self.irreps_in):
            for j, (mul_theta, ir_theta) in enumerate(self.irreps_relaxed):
                for k, (_, ir_out) in enumerate(self.irreps_out):
                    if ir_out in ir_in * ir_theta:
                        instructions.append((i, j, k))
                        fan_in[k] += mul_in * mul_theta
        # (i, j, k, weight offset, alpha)
        self.instructions: List[Tuple[int, int, int, int, float]] = []
        offset = 0
        scalar_theta = []
        for i, j, k in instructions:
            mul_out, ir_out = self.irreps_out[k]
            alpha = ((2 * ir_out.l + 1) / fan_in[k]) ** 0.5
            self.instructions.append((i, j, k, offset, alpha))
            size = self.irreps_in[i].mul * self.irreps_relaxed[j].mul * mul_out
            scalar_theta += [self.irreps_relaxed[j].ir == _SCALAR] * size
            offset += size
        weight = torch.randn(offset)
        weight[torch.tensor(scalar_theta, dtype=torch.bool)] = 0.0
        self.weight = torch.nn.Parameter(weight)
        self._w3j: Dict[Tuple[torch.dtype, torch.device], List[torch.Tensor]] = {}

    @property
    def num_paths(self) -> int:
        return len(self.instructions)

    def _wigner_3j(self, dtype, device) -> List[torch.Tensor]:
        # per instruction, the 3j symbol C[a, b, c] laid out as [b, a * c] for one matrix product with theta
        key = (dtype, device)
        if key not in self._w3j:
            self._w3j[key] = [
                o3.wigner_3j(self.irreps_in[i].ir.l, self.irreps_relaxed[j].ir.l, self.irreps_out[k].ir.l,
                             dtype=dtype, device=device).transpose(0, 1).reshape(2 * self.irreps_relaxed[j].ir.l + 1, -1)
                for i, j, k, _, _ in self.instructions
            ]
        return self._w3j[key]

    def __getstate__(self):
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        state = dict(state)
        state["_w3j"] = {}  # a cache: rebuilt on demand
        return state

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        r"""Return :math:`A(\theta)` as a ``[irreps_in.dim, irreps_out.dim]`` matrix (apply as ``x @ A``)."""
        if theta.shape != (self.irreps_relaxed.dim,):
            raise ValueError(f"ThetaLinearMap: theta must have shape [{self.irreps_relaxed.dim}], got {tuple(theta.shape)}")
        dtype, device = theta.dtype, theta.device
        blocks: Dict[Tuple[int, int], torch.Tensor] = {}
        for (i, j, k, offset, alpha), w3j in zip(self.instructions, self._wigner_3j(dtype, device)):
            (mul_in, ir_in), (mul_theta, ir_theta), (mul_out, ir_out) = (
                self.irreps_in[i], self.irreps_relaxed[j], self.irreps_out[k])
            # [mul_in * mul_out, mul_theta] @ [mul_theta, dim_in * dim_out], theta contracted with C first
            weight = self.weight[offset:offset + mul_in * mul_theta * mul_out].view(mul_in, mul_theta, mul_out)
            theta_j = theta[self.irreps_relaxed.slices()[j]].view(mul_theta, ir_theta.dim)
            coupling = (theta_j @ w3j).mul(alpha)
            block = weight.transpose(1, 2).reshape(mul_in * mul_out, mul_theta) @ coupling
            block = block.view(mul_in, mul_out, ir_in.dim, ir_out.dim).transpose(1, 2)
            block = block.reshape(mul_in * ir_in.dim, mul_out * ir_out.dim)
            blocks[(i, k)] = blocks[(i, k)] + block if (i, k) in blocks else block
        rows = []
        for i, (mul_in, ir_in) in enumerate(self.irreps_in):
            row = []
            for k, (mul_out, ir_out) in enumerate(self.irreps_out):
                if (i, k) in blocks:
                    row.append(blocks[(i, k)])
                else:
                    row.append(theta.new_zeros(mul_in * ir_in.dim, mul_out * ir_out.dim))
            rows.append(torch.cat(row, dim=1) if row else theta.new_zeros(mul_in * ir_in.dim, 0))
        matrix = torch.cat(rows, dim=0) if rows else theta.new_zeros(0, self.irreps_out.dim)
        if self.identity:
            matrix = matrix + torch.eye(self.irreps_in.dim, dtype=dtype, device=device)
        return matrix

    def extra_repr(self) -> str:
        return (f"{self.irreps_in} x ({self.irreps_relaxed}) -> {self.irreps_out}, paths={self.num_paths}, "
                f"weights={self.weight.numel()}, identity={self.identity}")
