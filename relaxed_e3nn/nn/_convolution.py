r"""``RelaxedConvolution``: the e3nn gate_points point convolution with relaxed weights, and ``relax``."""
import math
import numbers
from typing import Mapping, Optional, Sequence

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet
from e3nn.nn.models import gate_points_2101
from e3nn.nn.models.v2106 import points_convolution as points_convolution_2106
from e3nn.o3 import FullyConnectedTensorProduct, TensorProduct

from relaxed_e3nn._checks import RELAX_AT, check_number, parse_irreps
from relaxed_e3nn._dtype import default_dtype
from relaxed_e3nn.nn._maps import RelaxationSites, ThetaLinearMap
from relaxed_e3nn.nn._message import EdgeTensorProductPlan, message_pass
from relaxed_e3nn.nn._weights import RelaxedWeights, irreps_relaxed_from
from relaxed_e3nn.nn.hosts._registry import register_adapter, relax_modules

__all__ = ["RelaxedConvolution", "relax", "load_equivariant_state", "RELAXED_STATE_SUFFIXES"]

#: the state-dict entries a relaxed layer has and its plain e3nn counterpart lacks
RELAXED_STATE_SUFFIXES = ("theta.theta", "edge_relaxation.weight", "node_relaxation.weight")
_MIXING = ("angle", "alpha")
# the plain convolutions relax() and from_equivariant() know, with the output mixing each uses
_PLAIN_CONVOLUTIONS = (
    (gate_points_2101.Convolution, "angle"),
    (points_convolution_2106.Convolution, "alpha"),
)


def _check_tensor(name: str, tensor, shape_tail, floating: bool = True) -> None:
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"RelaxedConvolution: {name} must be a torch.Tensor, got {type(tensor).__name__}")
    if floating and not torch.is_floating_point(tensor):
        raise TypeError(f"RelaxedConvolution: {name} must be a floating-point tensor, got {tensor.dtype}")
    if not floating and tensor.dtype not in (torch.long, torch.int32, torch.int64):
        raise TypeError(f"RelaxedConvolution: {name} must be an integer index tensor, got {tensor.dtype}")
    if tensor.dim() != len(shape_tail) or any(
        want is not None and got != want for got, want in zip(tensor.shape, shape_tail)
    ):
        want = "[" + ", ".join("?" if w is None else str(w) for w in shape_tail) + "]"
        raise ValueError(f"RelaxedConvolution: {name} must have shape {want}, got {tuple(tensor.shape)}")


class RelaxedConvolution(RelaxationSites, torch.nn.Module):
    r"""Point convolution of e3nn's ``gate_points`` models with learnable symmetry breaking.

    The plain convolution (``e3nn.nn.models.gate_points_2101.Convolution`` /
    ``e3nn.nn.models.v2106.points_convolution.Convolution``) computes, for edges :math:`s \to d` with
    edge attributes :math:`Y_{sd}` (spherical harmonics of :math:`\hat r_{sd}`, times a cutoff) and
    radial weights :math:`R(|r_{sd}|)` from a fully connected net,

    .. math::
        x'_d = \mathrm{mix}\Big(\mathrm{sc}(x_d, a_d),\;
        \mathrm{lin}_2\Big(\tfrac{1}{\sqrt{n}} \sum_{s} \mathrm{TP}_{R(|r_{sd}|)}\big(\mathrm{lin}_1(x_s, a_s), Y_{sd}\big), a_d\Big)\Big).

    The relaxed weights :math:`\theta` (one :class:`RelaxedWeights` per layer, ``self.theta``) enter

    * at the edges (``relax_at="edge"``): :math:`Y \to Y' = Y\,M(\theta)`, with
      :math:`M(\theta) = \mathbb{1} + \sum w\,(\cdot\otimes\theta)` restricted to ``irreps_edge_attr``. Since
      :math:`\theta` is the same on every edge, :math:`M` is a small ``[d_Y, d_Y]`` matrix formed once per
      forward pass; the per-edge cost is one ``[E, d_Y] @ [d_Y, d_Y]`` product.
    * at the nodes (``relax_at="node"``): a relaxed self-interaction
      :math:`x'_d \mathrel{+}= x_d\,N(\theta)` with :math:`N(\theta) = \sum w\,(\cdot\otimes\theta)`, input to
      output irreps, again one matrix per forward pass.
    * both (``"both"``, the default). Natural-parity edge attributes cannot carry every coupling
      (:math:`1o \otimes 1e \to 1o`, the :math:`v \times B` term, or anything a pseudoscalar
      :math:`\theta` does); the node term carries them.

    With :math:`\theta_\mathrm{breaking} = 0`, :math:`M = \mathbb{1}` and :math:`N = 0` entry by entry, so
    the layer is numerically identical to the plain convolution with the same weights. For any
    :math:`\theta` it is jointly equivariant,
    :math:`f(D_\mathrm{in}x, R\,\mathrm{pos}; D_\theta(R)\theta) = D_\mathrm{out}(R) f(x, \mathrm{pos}; \theta)`
    for all :math:`R \in O(3)`, hence exactly equivariant under :math:`\mathrm{Stab}(\theta)` with
    :math:`\theta` fixed.

    Edge convention: ``edge_src`` sends, ``edge_dst`` receives, and the edge attributes are functions of
    ``pos[edge_src] - pos[edge_dst]``; the sign of odd-:math:`l` relaxed weights depends on it.

    Parameters
    ----------
    irreps_in, irreps_node_attr, irreps_edge_attr, irreps_out : `e3nn.o3.Irreps`
        Node features in, node attributes, edge attributes, node features out.
    number_of_basis : int
        Size of the radial embedding ``edge_length_embedded``.
    radial_layers, radial_neurons : int
        Hidden layers of the radial network and their width (its output size is the number of
        tensor-product weights).
    num_neighbors : float
        Typical number of neighbors; the sum over edges is divided by its square root.
    fc_neurons : list of int, keyword-only
        The radial network's sizes before its output layer, as e3nn's ``v2106`` convolution takes
        them (``[number_of_basis] + radial_layers * [radial_neurons]`` in ``gate_points_2101``
        terms); give either this or the three arguments above.
    irreps_relaxed : int, str or `e3nn.o3.Irreps`, keyword-only
        Irreps of :math:`\theta`; an int ``L`` means ``0e + 0o + 1o + 1e + ... + Le + Lo``. Default 2.
    relax_at : {"both", "edge", "node"}, keyword-only
    mixing : {"angle", "alpha"}, keyword-only
        How the self-connection and the convolution are combined: ``"angle"`` as in
        ``gate_points_2101`` (:math:`\sin\frac{\pi}{8}\,s + \cos\frac{\pi}{8}\,x`, the default),
        ``"alpha"`` as in ``v2106`` (:math:`s + \alpha(x) x` with a learned, zero-initialised scalar
        :math:`\alpha`; the intermediate irreps then always contain ``0e``).
    """

    def __init__(
        self,
        irreps_in,
        irreps_node_attr,
        irreps_edge_attr,
        irreps_out,
        number_of_basis: Optional[int] = None,
        radial_layers: Optional[int] = None,
        radial_neurons: Optional[int] = None,
        num_neighbors: Optional[float] = None,
        *,
        fc_neurons: Optional[Sequence[int]] = None,
        irreps_relaxed=2,
        relax_at: str = "both",
        mixing: str = "angle",
    ) -> None:
        super().__init__()
        fc_neurons = _radial_sizes(number_of_basis, radial_layers, radial_neurons, fc_neurons)
        if num_neighbors is None:
            raise ValueError("RelaxedConvolution: num_neighbors is required")
        self._build(irreps_in, irreps_node_attr, irreps_edge_attr, irreps_out, fc_neurons, num_neighbors,
                    irreps_relaxed, relax_at, mixing)

    def _build(self, irreps_node_input, irreps_node_attr, irreps_edge_attr, irreps_node_output,
               fc_neurons: Sequence[int], num_neighbors: float, irreps_relaxed, relax_at: str, mixing: str) -> None:
        if relax_at not in RELAX_AT:
            raise ValueError(f"RelaxedConvolution: relax_at must be one of {RELAX_AT}, got {relax_at!r}")
        if mixing not in _MIXING:
            raise ValueError(f"RelaxedConvolution: mixing must be one of {_MIXING}, got {mixing!r}")
        # fc_neurons was checked by _radial_sizes
        num_neighbors = check_number("num_neighbors", num_neighbors, "RelaxedConvolution", positive=True)

        self.irreps_node_input = parse_irreps("irreps_in", irreps_node_input, "RelaxedConvolution")
        self.irreps_node_attr = parse_irreps("irreps_node_attr", irreps_node_attr, "RelaxedConvolution")
        self.irreps_edge_attr = parse_irreps("irreps_edge_attr", irreps_edge_attr, "RelaxedConvolution")
        self.irreps_node_output = parse_irreps("irreps_out", irreps_node_output, "RelaxedConvolution")
        # gate_points_2101 names
        self.irreps_in = self.irreps_node_input
        self.irreps_out = self.irreps_node_output
        self.fc_neurons = list(fc_neurons)
        self.num_neighbors = num_neighbors
        self.relax_at = relax_at
        self.mixing = mixing

        self.sc = FullyConnectedTensorProduct(self.irreps_node_input, self.irreps_node_attr, self.irreps_node_output)
        self.lin1 = FullyConnectedTensorProduct(self.irreps_node_input, self.irreps_node_attr, self.irreps_node_input)

        # intermediate irreps and tensor product built exactly as e3nn does, so weights transfer
        irreps_mid = []
        instructions = []
        for i, (mul, ir_in) in enumerate(self.irreps_node_input):
            for j, (_, ir_edge) in enumerate(self.irreps_edge_attr):
                for ir_out in ir_in * ir_edge:
                    if ir_out in self.irreps_node_output or (mixing == "alpha" and ir_out == o3.Irrep(0, 1)):
                        k = len(irreps_mid)
                        irreps_mid.append((mul, ir_out))
                        instructions.append((i, j, k, "uvu", True))
        irreps_mid = o3.Irreps(irreps_mid)
        irreps_mid, permutation, _ = irreps_mid.sort()
        if irreps_mid.dim == 0:
            raise ValueError(
                f"RelaxedConvolution: irreps_node_input={self.irreps_node_input} times "
                f"irreps_edge_attr={self.irreps_edge_attr} produces nothing in irreps_node_output={self.irreps_node_output}"
            )
        instructions = [(i_1, i_2, permutation[i_out], mode, train) for i_1, i_2, i_out, mode, train in instructions]
        self.irreps_mid = irreps_mid
        self.tp = TensorProduct(
            self.irreps_node_input,
            self.irreps_edge_attr,
            irreps_mid,
            instructions,
            internal_weights=False,
            shared_weights=False,
        )
        # the gather, tensor product and scatter of forward() in one pass that keeps no per-edge
        # intermediates for the backward passes (``self.tp`` stays the definition of the product)
        self.message_plan = EdgeTensorProductPlan(self.tp)
        self.fc = FullyConnectedNet(self.fc_neurons + [self.tp.weight_numel], torch.nn.functional.silu)
        self.lin2 = FullyConnectedTensorProduct(irreps_mid, self.irreps_node_attr, self.irreps_node_output)
        if mixing == "alpha":
            self.alpha = FullyConnectedTensorProduct(irreps_mid, self.irreps_node_attr, "0e")
            with torch.no_grad():
                self.alpha.weight.zero_()
            if self.alpha.output_mask[0] != 1.0:
                raise ValueError(
                    f"RelaxedConvolution: mixing='alpha' needs irreps_node_attr={self.irreps_node_attr} able to "
                    f"produce scalars from irreps_mid={irreps_mid}"
                )

        self.theta = RelaxedWeights(irreps_relaxed_from(irreps_relaxed, "irreps_relaxed"))
        self.irreps_relaxed = self.theta.irreps
        if self.relaxes_edges:
            self.edge_relaxation = ThetaLinearMap(
                self.irreps_edge_attr, self.irreps_relaxed, self.irreps_edge_attr, identity=True
            )
        if self.relaxes_nodes:
            self.node_relaxation = ThetaLinearMap(self.irreps_node_input, self.irreps_relaxed, self.irreps_node_output)

    def forward(self, node_input, node_attr, edge_src, edge_dst, edge_attr, edge_length_embedded) -> torch.Tensor:
        """Convolve; arguments as e3nn's ``Convolution.forward``.

        Parameters
        ----------
        node_input : torch.Tensor, shape ``[N, irreps_node_input.dim]``
        node_attr : torch.Tensor, shape ``[N, irreps_node_attr.dim]``
        edge_src, edge_dst : torch.Tensor, shape ``[E]``, integer
            Sending and receiving node of each edge.
        edge_attr : torch.Tensor, shape ``[E, irreps_edge_attr.dim]``
        edge_length_embedded : torch.Tensor, shape ``[E, fc_neurons[0]]``

        Returns
        -------
        torch.Tensor, shape ``[N, irreps_node_output.dim]``
        """
        if not torch.jit.is_scripting() and not torch.compiler.is_compiling():
            self._check_inputs(node_input, node_attr, edge_src, edge_dst, edge_attr, edge_length_embedded)
        theta = self.theta()
        weight = self.fc(edge_length_embedded)

        node_self_connection = self.sc(node_input, node_attr)
        node_features = self.lin1(node_input, node_attr)

        if self.relaxes_edges:
            edge_attr = edge_attr @ self.edge_relaxation(theta)
        node_features = message_pass(self.message_plan, self.tp, node_features, edge_attr, weight, edge_src, edge_dst)
        node_features = node_features.div(self.num_neighbors**0.5)

        node_conv_out = self.lin2(node_features, node_attr)
        m = self.sc.output_mask
        if self.mixing == "angle":
            c_s, c_x = math.sin(math.pi / 8), math.cos(math.pi / 8)
            c_x = (1 - m) + c_x * m
            out = c_s * node_self_connection + c_x * node_conv_out
        else:
            alpha = self.alpha(node_features, node_attr)
            alpha = (1 - m) + alpha * m
            out = node_self_connection + alpha * node_conv_out

        if self.relaxes_nodes:
            out = out + node_input @ self.node_relaxation(theta)
        return out

    def _check_inputs(self, node_input, node_attr, edge_src, edge_dst, edge_attr, edge_length_embedded) -> None:
        _check_tensor("node_input", node_input, (None, self.irreps_node_input.dim))
        num_nodes = node_input.shape[0]
        _check_tensor("node_attr", node_attr, (num_nodes, self.irreps_node_attr.dim))
        _check_tensor("edge_src", edge_src, (None,), floating=False)
        num_edges = edge_src.shape[0]
        _check_tensor("edge_dst", edge_dst, (num_edges,), floating=False)
        _check_tensor("edge_attr", edge_attr, (num_edges, self.irreps_edge_attr.dim))
        _check_tensor("edge_length_embedded", edge_length_embedded, (num_edges, self.fc_neurons[0]))

    @classmethod
    def from_equivariant(cls, conv: torch.nn.Module, *, irreps_relaxed=2, relax_at: str = "both") -> "RelaxedConvolution":
        r"""Relaxed copy of a plain e3nn convolution, with its weights, dtype and device.

        Built from ``conv``'s hyper-parameters in its dtype, then loaded with ``conv.state_dict()``
        (:func:`load_equivariant_state`: only the relaxed weights are new). With
        :math:`\theta_\mathrm{breaking} = 0` the result gives the same outputs as ``conv``.

        Parameters
        ----------
        conv : ``e3nn.nn.models.gate_points_2101.Convolution`` or ``e3nn.nn.models.v2106.points_convolution.Convolution``
        irreps_relaxed, relax_at :
            As in the constructor.
        """
        if isinstance(conv, RelaxedConvolution):
            raise TypeError("from_equivariant: conv is already a RelaxedConvolution")
        for plain_class, mixing in _PLAIN_CONVOLUTIONS:
            if isinstance(conv, plain_class):
                break
        else:
            names = ", ".join(f"{c.__module__}.{c.__name__}" for c, _ in _PLAIN_CONVOLUTIONS)
            raise TypeError(f"from_equivariant: conv must be one of {names}, got {type(conv).__name__}")
        if mixing == "angle":
            irreps_input, irreps_output = conv.irreps_in, conv.irreps_out
        else:
            irreps_input, irreps_output = conv.irreps_node_input, conv.irreps_node_output
        reference = next(conv.parameters())
        with default_dtype(reference.dtype):
            relaxed = cls(irreps_input, conv.irreps_node_attr, conv.irreps_edge_attr, irreps_output,
                          fc_neurons=list(conv.fc.hs[:-1]), num_neighbors=conv.num_neighbors,
                          irreps_relaxed=irreps_relaxed, relax_at=relax_at, mixing=mixing)
        relaxed = relaxed.to(device=reference.device)
        if relaxed.tp.instructions != conv.tp.instructions or relaxed.irreps_mid != conv.tp.irreps_out:
            raise ValueError("from_equivariant: conv's tensor product does not match e3nn's construction")
        load_equivariant_state(relaxed, conv.state_dict(), "RelaxedConvolution.from_equivariant")
        relaxed.train(conv.training)
        return relaxed

    def extra_repr(self) -> str:
        return (
            f"{self.irreps_node_input} -> {self.irreps_node_output}, edge_attr={self.irreps_edge_attr}, "
            f"irreps_relaxed={self.irreps_relaxed}, relax_at={self.relax_at!r}, mixing={self.mixing!r}"
        )


def relax(module: torch.nn.Module, *, irreps_relaxed=2, relax_at: str = "both") -> torch.nn.Module:
    r"""Replace every convolution inside ``module`` that an adapter knows by its relaxed twin, in place.

    Walks the module tree and swaps each module whose class has an adapter in the registry
    (:func:`relaxed_e3nn.nn.hosts.register_adapter`): e3nn's ``gate_points_2101.Convolution`` /
    ``v2106`` ``Convolution`` become ``RelaxedConvolution.from_equivariant(conv, ...)``, NequIP's
    ``InteractionBlock`` and MACE's interaction blocks their :class:`~relaxed_e3nn.nn.hosts.RelaxedHostBlock`
    wrappers. With :math:`\theta_\mathrm{breaking} = 0` the outputs are unchanged. Each relaxed layer gets
    its own :math:`\theta`; layers relaxed already are left alone. Warns when nothing was relaxed.

    Returns
    -------
    torch.nn.Module
        ``module`` itself, or the relaxed convolution when ``module`` is a plain convolution.
    """
    return relax_modules(module, irreps_relaxed=irreps_relaxed, relax_at=relax_at)


def _adapt_gate_points(conv: torch.nn.Module, *, irreps_relaxed=2, relax_at: str = "both") -> RelaxedConvolution:
    return RelaxedConvolution.from_equivariant(conv, irreps_relaxed=irreps_relaxed, relax_at=relax_at)


for _plain_class, _ in _PLAIN_CONVOLUTIONS:
    register_adapter(_plain_class, _adapt_gate_points)


def _radial_sizes(number_of_basis, radial_layers, radial_neurons, fc_neurons) -> list:
    """The radial network's sizes before its output layer, from either way of giving them."""
    separate = (number_of_basis, radial_layers, radial_neurons)
    if fc_neurons is not None:
        if any(value is not None for value in separate):
            raise ValueError("RelaxedConvolution: give fc_neurons or number_of_basis, radial_layers and "
                             "radial_neurons, not both")
        if isinstance(fc_neurons, (int, str)) or len(fc_neurons) == 0 or not all(
            isinstance(n, numbers.Integral) and not isinstance(n, bool) and n > 0 for n in fc_neurons
        ):
            raise ValueError(
                f"RelaxedConvolution: fc_neurons must be a non-empty list of positive ints "
                f"(radial basis size, then hidden sizes), got {fc_neurons!r}"
            )
        return [int(n) for n in fc_neurons]
    for name, value, minimum in zip(("number_of_basis", "radial_layers", "radial_neurons"), separate, (1, 0, 1)):
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"RelaxedConvolution: {name} must be an int >= {minimum}, got {value!r}")
    return [int(number_of_basis)] + int(radial_layers) * [int(radial_neurons)]


def load_equivariant_state(relaxed: torch.nn.Module, state: Mapping[str, torch.Tensor], where: str) -> None:
    r"""Load the ``state_dict`` of a plain (strictly equivariant) model into its relaxed twin.

    The relaxed module must have been built with the same hyper-parameters; its state then holds
    every entry of ``state`` plus the relaxed weights only (names ending in
    ``RELAXED_STATE_SUFFIXES``: ``theta.theta``, ``edge_relaxation.weight``,
    ``node_relaxation.weight``), which keep their initial values (:math:`\theta_\mathrm{breaking} = 0`).

    Parameters
    ----------
    relaxed : torch.nn.Module
    state : mapping of str to torch.Tensor
        The plain model's ``state_dict()``.
    where : str
        How errors name the caller.

    Raises
    ------
    ValueError
        Naming the keys, if ``state`` has entries ``relaxed`` lacks, or ``relaxed`` lacks
        entries of ``state`` that are not relaxed weights, or shapes differ.
    """
    try:
        result = relaxed.load_state_dict(state, strict=False)
    except RuntimeError as err:
        raise ValueError(f"{where}: the plain weights do not fit the relaxed model: {err}") from err
    missing = [key for key in result.missing_keys
               if not any(key == s or key.endswith("." + s) for s in RELAXED_STATE_SUFFIXES)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"{where}: the plain model's state does not match the relaxed model built from its "
            f"hyper-parameters (missing {missing[:5]}, unexpected {list(result.unexpected_keys)[:5]}); only "
            f"relaxed weights ({', '.join('*.' + s for s in RELAXED_STATE_SUFFIXES)}) may be missing"
        )
