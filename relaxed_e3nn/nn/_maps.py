r"""The :math:`\theta`-dependent linear maps through which relaxed weights enter a layer.

:math:`\theta` is constant over nodes and edges, so a tensor product :math:`x \otimes \theta` is a linear
map of :math:`x` that is formed once per forward pass (e3nn's ``TensorProduct.right``) and applied as one
matrix product, instead of a tensor product per node or per edge.
"""
import torch
from e3nn import o3

__all__ = ["ThetaLinearMap"]

_SCALAR = o3.Irrep("0e")


class ThetaLinearMap(torch.nn.Module):
    r"""Linear map :math:`A(\theta)` from ``irreps_in`` to ``irreps_out``, bilinear in :math:`(x, \theta)`.

    .. math::
        A(\theta)\,x = [\mathbb{1}] + \sum_{\text{paths}} w_{\text{path}}\; (x \otimes \theta)_{\text{path}}

    with every path :math:`\mathrm{ir}_x \otimes \mathrm{ir}_\theta \to \mathrm{ir}_\mathrm{out}` allowed by the
    selection rules (``uvw`` weights). The weights of paths through a ``0e`` copy of :math:`\theta` start at
    zero and the others at e3nn's random initialisation, so with :math:`\theta_\mathrm{breaking} = 0` the
    map is exactly :math:`0` (or exactly :math:`\mathbb{1}` with ``identity=True``), entry by entry.
    The map is jointly equivariant: :math:`A(D_\theta\theta) = D_\mathrm{in} A(\theta) D_\mathrm{out}^{-1}`
    in the row-vector convention ``y = x @ A``.

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
        for i, (_, ir_in) in enumerate(self.irreps_in):
            for j, (_, ir_theta) in enumerate(self.irreps_relaxed):
                for k, (_, ir_out) in enumerate(self.irreps_out):
                    if ir_out in ir_in * ir_theta:
                        instructions.append((i, j, k, "uvw", True))
        self.num_paths = len(instructions)
        if instructions:
            self.tp = o3.TensorProduct(
                self.irreps_in,
                self.irreps_relaxed,
                self.irreps_out,
                instructions,
                internal_weights=True,
                shared_weights=True,
                compile_left_right=True,  # False would make the module unpicklable (deepcopy, torch.save)
                compile_right=True,
            )
            with torch.no_grad():
                for _, instruction, view in self.tp.weight_views(yield_instruction=True):
                    if self.irreps_relaxed[instruction.i_in2].ir == _SCALAR:
                        view.zero_()
        else:
            self.tp = None

    def forward(self, theta: torch.Tensor) -> torch.Tensor:
        r"""Return :math:`A(\theta)` as a ``[irreps_in.dim, irreps_out.dim]`` matrix (apply as ``x @ A``)."""
        if self.tp is None:
            matrix = theta.new_zeros(self.irreps_in.dim, self.irreps_out.dim)
        else:
            matrix = self.tp.right(theta)
        if self.identity:
            matrix = matrix + torch.eye(self.irreps_in.dim, dtype=matrix.dtype, device=matrix.device)
        return matrix

    def extra_repr(self) -> str:
        return (f"{self.irreps_in} x ({self.irreps_relaxed}) -> {self.irreps_out}, instructions={self.num_paths}, "
                f"identity={self.identity}")
