r"""Message passing that is exactly equivariant under a finite point group G (DEGNN-style).

Notation: node ``i`` receives from node ``j`` along the edge ``e = (j -> i)``
(``edge_src = j``, ``edge_dst = i``); ``c`` is the centre the group acts about; ``h`` are
invariant node features. G acts on the inputs by

.. math::
    x \mapsto c + g (x - c), \qquad v \mapsto g v, \qquad h \mapsto h .

**Orbit of the edge tuple.** The edge's geometric tuple
:math:`X_e = (x_i - c,\ x_j - c,\ v_i,\ v_j) \in \mathbb{R}^{4\times 3}` is acted on *jointly*:
:math:`g X_e = (g(x_i - c), g(x_j - c), g v_i, g v_j)`. For every :math:`h \in G` the orbit
:math:`\{g\, h X_e\}_{g}` is the orbit :math:`\{g X_e\}_g` re-indexed by :math:`g \mapsto g h`,
so any function symmetric in the orbit index is G-invariant.

**Per-element features** (the first layer of the edge network, vectorised over G):

.. math::
    f_{e,g} = \mathrm{relu}\big( W (g X_e) + u_e \big), \qquad
    W (g X_e) = \sum_k (W_k\, g)\, X_{e,k},

with :math:`W_k g` precomputed for all g in one einsum (then one batched matmul over g per
layer, never :math:`|G|` separate calls) and the g-independent part
:math:`u_e = U [h_i, h_j, |x_i - x_j|^2, a_e] + b` computed once per edge and added inside
that matmul.

**Invariant edge embedding** :math:`p_e` from the orbit of :math:`f_{e,\cdot}`:

- ``"pooling"``: :math:`p_e = \mathrm{mean}_g f_{e,g}` (or the sum);
- ``"attention"``: :math:`p_e = \sum_g \mathrm{softmax}_g(q^\top f_{e,g})\, f_{e,g}`;
- ``"ranking"``: each channel :math:`k` is sorted over the orbit *separately*,
  :math:`p_{e,k} = \sum_r w_{r,k}\, \mathrm{sort}_g(f_{e,g,k})_r`. Sorting one real channel is a
  continuous, permutation-invariant function, so ties (inputs on mirror planes, stabilised
  orbits) cannot change it; a lexicographic sort of vectors would jump at ties.

The message is :math:`m_e = \sigma(M p_e + b_m)`.

**Equivariant vectors** by group averaging, exact for every finite G (not only sign flips):

.. math::
    \Delta_e = \sum_{c=1}^{C} \gamma_c(m_e)\, \frac{1}{|G|} \sum_g g^\top \psi_{e,g,c}, \qquad
    \psi_{e,g,c} = B_c^\top f_{e,g} \in \mathbb{R}^3,

since :math:`\psi_{e,g,c}(hX) = \psi_{e,gh,c}(X)` gives :math:`\Delta_e(hX) = h\,\Delta_e(X)`
(the gates :math:`\gamma(m_e)` are invariant). A per-axis (diagonal) weight instead of the
average would be equivariant only for groups of sign flips.
An E(3)-equivariant part :math:`(x_i - x_j)\,\phi_x(m_e)` is added, and a node term of the same
group-averaged form on the node tuple :math:`(x_i - c, v_i)`. The layer update is

.. math::
    x_i' = x_i + \mathrm{mean}_{j} \big(\Delta_{e} + (x_i - x_j)\phi_x(m_e)\big)
           + \Delta^{\mathrm{node}}_i + \phi_v(h_i)\, v_i, \qquad
    h_i' = h_i + \phi_h\big(h_i, \textstyle\sum_j m_e\big).

The layer is exactly G-equivariant and deliberately not O(3)-equivariant.
"""
import math
from typing import NamedTuple, Optional

import torch

from relaxed_e3nn._scatter import scatter
from relaxed_e3nn.discrete._group_elements import group_elements
from relaxed_e3nn.discrete._orbit import orbit_sum_and_readout
from relaxed_e3nn.discrete._wellposed import bounded, zero_last_layer

__all__ = ["PointGroupMessagePassing", "EdgeOutputs"]

VARIANTS = ("pooling", "attention", "ranking")


class EdgeOutputs(NamedTuple):
    """Intermediates of one :class:`PointGroupMessagePassing` layer (for inspection and tests).

    ``orbit_embedding`` (E, K) and ``messages`` (E, H) are G-invariant; ``edge_vectors`` (E, 3)
    and ``node_vectors`` (N, 3) are G-equivariant.
    """

    orbit_embedding: torch.Tensor
    messages: torch.Tensor
    edge_vectors: torch.Tensor
    node_vectors: torch.Tensor


def _inversion_pairs(elements: torch.Tensor) -> Optional[torch.Tensor]:
    """Indices of one element of each pair ``{h, -h}``, or None if the inversion is not in G."""
    flat = elements.reshape(-1, 9)
    partner = ((flat[:, None] + flat[None]).abs().amax(-1) < 1e-6).float().argmax(1)
    if not bool(((flat + flat[partner]).abs().amax(-1) < 1e-6).all()):
        return None
    keep = [i for i in range(len(flat)) if i < int(partner[i])]
    return torch.tensor(keep, dtype=torch.long)


def _mlp(n_in: int, hidden: int, n_out: int, last_activation: bool = False) -> torch.nn.Sequential:
    layers = [torch.nn.Linear(n_in, hidden), torch.nn.SiLU(), torch.nn.Linear(hidden, n_out)]
    if last_activation:
        layers.append(torch.nn.SiLU())
    return torch.nn.Sequential(*layers)


class PointGroupMessagePassing(torch.nn.Module):
    r"""One G-equivariant message-passing layer over the orbit of each edge tuple.

    Parameters
    ----------
    group : str, PointGroup or array_like
        A finite point group: catalogue name, ``PointGroup`` (any frame), or ``(G, 3, 3)``
        elements (see :func:`group_elements`).
    hidden : int
        Width of the node features and messages.
    edge_attr_dim : int
        Number of invariant per-edge scalars ``a_e`` passed to ``forward``.
    orbit_width : int, optional
        Width ``K`` of the per-element features :math:`f_{e,g}` (default ``hidden``).
    variant : {"pooling", "attention", "ranking"}
        How the orbit is reduced to an invariant embedding.
    reduce : {"mean", "sum"}
        Reduction of the ``"pooling"`` variant.
    node_orbit : bool
        Add the group-averaged node term :math:`\Delta^{\mathrm{node}}_i`.
    vector_channels : int
        Number ``C`` of group-averaged vector channels mixed by the invariant gates
        :math:`\gamma(m_e)`.
    coefficient_bound : float, optional
        Bound ``b`` on the invariant coefficients :math:`\phi_x`, :math:`\phi_v`, :math:`\gamma`
        (each ``b tanh(./b)``); the last layers of :math:`\phi_x` and :math:`\phi_v` then start at
        zero. None (default): unbounded, as in format-1 files.

    Notes
    -----
    The "pooling" variant runs a fused kernel that never stores the ``(E, |G|, K)`` per-element
    features, and halves its matrix products when the inversion is in G; the other variants
    materialise them.
    """

    def __init__(
        self,
        group,
        hidden: int,
        edge_attr_dim: int = 0,
        orbit_width: Optional[int] = None,
        variant: str = "pooling",
        reduce: str = "mean",
        node_orbit: bool = False,
        vector_channels: int = 2,
        coefficient_bound: Optional[float] = None,
    ):
        super().__init__()
        if coefficient_bound is not None and not float(coefficient_bound) > 0:
            raise ValueError(f"coefficient_bound must be a positive number or None, got {coefficient_bound!r}")
        self.coefficient_bound = None if coefficient_bound is None else float(coefficient_bound)
        if int(vector_channels) < 1:
            raise ValueError(f"vector_channels must be a positive integer, got {vector_channels!r}")
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if reduce not in ("mean", "sum"):
            raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
        if int(hidden) < 1:
            raise ValueError(f"hidden must be a positive integer, got {hidden!r}")
        if int(edge_attr_dim) < 0:
            raise ValueError(f"edge_attr_dim must be >= 0, got {edge_attr_dim!r}")
        elements = group_elements(group)
        # exact float64 copy: a module moved to another dtype re-derives its elements from it
        # (casting float32-rounded elements to float64 would break equivariance at ~1e-8)
        self._elements_float64 = elements
        self.register_buffer("elements", elements.to(torch.get_default_dtype()))
        # one element of each pair {h, -h} when the inversion is in G (halves the orbit's matmuls)
        half = _inversion_pairs(elements)
        self.register_buffer(
            "_pair_representatives",
            half if half is not None else torch.zeros(0, dtype=torch.long),
            persistent=False,
        )
        self.hidden = int(hidden)
        self.edge_attr_dim = int(edge_attr_dim)
        self.orbit_width = int(orbit_width or hidden)
        self.variant = variant
        self.reduce = reduce
        self.node_orbit = bool(node_orbit)
        order, width = elements.shape[0], self.orbit_width

        # edge network, first layer: W acts on (x_i - c, x_j - c, v_i, v_j), U on the invariants
        self.orbit_weight = torch.nn.Parameter(torch.randn(width, 4, 3) / math.sqrt(12.0))
        self.invariant_linear = torch.nn.Linear(2 * self.hidden + 1 + self.edge_attr_dim, width)
        if variant == "attention":
            self.attention_query = torch.nn.Linear(width, 1, bias=False)
        if variant == "ranking":
            self.rank_weight = torch.nn.Parameter(torch.full((order, width), 1.0 / order))
        self.message_linear = torch.nn.Linear(width, self.hidden)
        # equivariant outputs
        self.vector_gate = torch.nn.Linear(self.hidden, vector_channels)
        self.vector_readout = torch.nn.Parameter(torch.randn(vector_channels, width, 3) * (1e-2 / math.sqrt(width)))
        self.radial_coefficient = _mlp(self.hidden, self.hidden, 1)
        self.velocity_coefficient = _mlp(self.hidden, self.hidden, 1)
        if self.node_orbit:
            self.node_orbit_weight = torch.nn.Parameter(torch.randn(width, 2, 3) / math.sqrt(6.0))
            self.node_invariant_linear = torch.nn.Linear(self.hidden, width)
            self.node_vector_gate = torch.nn.Linear(self.hidden, vector_channels)
            self.node_vector_readout = torch.nn.Parameter(
                torch.randn(vector_channels, width, 3) * (1e-2 / math.sqrt(width))
            )
        self.node_mlp = _mlp(2 * self.hidden, self.hidden, self.hidden)
        if self.coefficient_bound is not None:
            zero_last_layer(self.radial_coefficient)
            zero_last_layer(self.velocity_coefficient)

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.elements = self._elements_float64.to(device=self.elements.device, dtype=self.elements.dtype)
        return self

    @property
    def group_order(self) -> int:
        return int(self.elements.shape[0])

    def extra_repr(self) -> str:
        return (
            f"|G|={self.group_order}, hidden={self.hidden}, orbit_width={self.orbit_width}, "
            f"variant={self.variant!r}, reduce={self.reduce!r}, node_orbit={self.node_orbit}, "
            f"coefficient_bound={self.coefficient_bound}"
        )

    # -- orbit machinery --------------------------------------------------------------------
    def _composed_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """``(W g)[g, (k, a), c] = sum_b W[c, k, b] g[b, a]`` for all g: weight (K, k, 3) -> (|G|, 3k, K)."""
        return torch.einsum("ckb,gba->gkac", weight, self.elements).reshape(self.group_order, -1, weight.shape[0])

    def _transported_readout(self, readout: torch.Tensor) -> torch.Tensor:
        """``T[g, k, (c, a)] = (1/|G|) sum_b B[c, k, b] g[b, a]``, i.e. ``(1/|G|) g^T B_c``: -> (|G|, K, 3C)."""
        transported = torch.einsum("ckb,gba->gkca", readout, self.elements) / self.group_order
        return transported.reshape(self.group_order, readout.shape[1], -1)

    def orbit_features(self, tuples: torch.Tensor, weight: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """Per-element features ``relu(W (g X) + shift)``: tuples (M, k, 3), weight (K, k, 3) -> ``(M, |G|, K)``."""
        m = tuples.shape[0]
        pre = torch.einsum("mi,gic->mgc", tuples.reshape(m, 3 * tuples.shape[1]), self._composed_weight(weight))
        return torch.relu_(pre + shift[:, None, :])  # in place: relu's backward needs only its result

    def _orbit_block(self, tuples, weight, shift, readout, pool: bool = True):
        """Invariant orbit embedding ``(M, K)`` and group-averaged vectors ``(M, C, 3)``.

        The vectors are ``mean_g g^T B_c^T f_g`` for each readout channel c, contracted against
        the transported readout ``(1/|G|) g^T B_c`` precomputed for all g. The "pooling"
        variant (and ``pool=False``, vectors only) runs the fused, chunked kernel that never
        stores the ``(M, |G|, K)`` per-element features.
        """
        m = tuples.shape[0]
        transported = self._transported_readout(readout)
        if not pool or self.variant == "pooling":
            flat = tuples.reshape(m, 3 * tuples.shape[1])
            weight_g = self._composed_weight(weight)
            if self._pair_representatives.numel():
                index = self._pair_representatives
                summed, per_channel = orbit_sum_and_readout(
                    flat, weight_g[index], shift, transported[index], centrosymmetric=True
                )
            else:
                summed, per_channel = orbit_sum_and_readout(flat, weight_g, shift, transported)
            embedding = summed / self.group_order if self.reduce == "mean" else summed
        else:
            features = self.orbit_features(tuples, weight, shift)
            embedding = self._pool(features)
            per_channel = torch.einsum("mgk,gkr->mr", features, transported)
        return embedding, per_channel.view(m, readout.shape[0], 3)

    def _pool(self, features: torch.Tensor) -> torch.Tensor:
        """Reduce ``(M, |G|, K)`` per-element features to a G-invariant ``(M, K)`` embedding.

        Only the "attention" and "ranking" variants get here ("pooling" runs the fused kernel).
        """
        if self.variant == "attention":
            weights = torch.softmax(self.attention_query(features), dim=1)  # (M, |G|, 1)
            return (weights * features).sum(1)
        ranked = torch.sort(features, dim=1).values  # each channel sorted over the orbit separately
        return (ranked * self.rank_weight[None]).sum(1)

    # -- layer --------------------------------------------------------------------------------
    def edge_outputs(self, node_features, pos, vel, node_center, edge_src, edge_dst, edge_attr=None) -> EdgeOutputs:
        """Invariant embeddings and messages, equivariant edge and node vectors (see module docs).

        The arguments are those of :meth:`forward`.
        """
        if self.edge_attr_dim and (edge_attr is None or edge_attr.shape != (edge_src.shape[0], self.edge_attr_dim)):
            raise ValueError(
                f"edge_attr: expected shape ({edge_src.shape[0]}, {self.edge_attr_dim}), "
                f"got {None if edge_attr is None else tuple(edge_attr.shape)}"
            )
        rel = pos - node_center
        dst, src = edge_dst, edge_src
        diff = pos[dst] - pos[src]
        scalars = [node_features[dst], node_features[src], (diff * diff).sum(-1, keepdim=True)]
        if self.edge_attr_dim:
            scalars.append(edge_attr)
        shift = self.invariant_linear(torch.cat(scalars, dim=-1))  # g-independent, once per edge
        tuples = torch.stack([rel[dst], rel[src], vel[dst], vel[src]], dim=1)  # (E, 4, 3)
        # the gate depends on the message, hence on the embedding: it multiplies the C
        # group-averaged channels afterwards instead of the per-element features
        embedding, per_channel = self._orbit_block(tuples, self.orbit_weight, shift, self.vector_readout)
        messages = torch.nn.functional.silu(self.message_linear(embedding))
        bound = self.coefficient_bound
        gate = bounded(self.vector_gate(messages), bound)
        edge_vectors = torch.einsum("mc,mca->ma", gate, per_channel)
        edge_vectors = edge_vectors + diff * bounded(self.radial_coefficient(messages), bound)
        if self.node_orbit:
            node_tuples = torch.stack([rel, vel], dim=1)  # (N, 2, 3)
            _, node_channels = self._orbit_block(
                node_tuples,
                self.node_orbit_weight,
                self.node_invariant_linear(node_features),
                self.node_vector_readout,
                pool=False,
            )
            node_gate = bounded(self.node_vector_gate(node_features), bound)
            node_vectors = torch.einsum("mc,mca->ma", node_gate, node_channels)
        else:
            node_vectors = torch.zeros_like(pos)
        return EdgeOutputs(embedding, messages, edge_vectors, node_vectors)

    def forward(
        self,
        node_features: torch.Tensor,
        pos: torch.Tensor,
        vel: torch.Tensor,
        node_center: torch.Tensor,
        edge_src: torch.Tensor,
        edge_dst: torch.Tensor,
        edge_attr: Optional[torch.Tensor] = None,
    ):
        """One update.

        Parameters
        ----------
        node_features : torch.Tensor
            ``(N, hidden)`` invariant node features.
        pos, vel : torch.Tensor
            ``(N, 3)`` positions and velocities.
        node_center : torch.Tensor
            ``(N, 3)`` the centre of each node's system (G acts about it).
        edge_src, edge_dst : torch.Tensor
            ``(E,)`` sender and receiver indices.
        edge_attr : torch.Tensor, optional
            ``(E, edge_attr_dim)`` invariant edge scalars.

        Returns
        -------
        (torch.Tensor, torch.Tensor)
            Updated node features ``(N, hidden)`` and positions ``(N, 3)``.
        """
        out = self.edge_outputs(node_features, pos, vel, node_center, edge_src, edge_dst, edge_attr)
        n = pos.shape[0]
        aggregated = scatter(out.messages, edge_dst, dim=0, dim_size=n, reduce="sum")
        displacement = scatter(out.edge_vectors, edge_dst, dim=0, dim_size=n, reduce="mean")
        velocity_term = bounded(self.velocity_coefficient(node_features), self.coefficient_bound) * vel
        new_pos = pos + displacement + out.node_vectors + velocity_term
        new_features = node_features + self.node_mlp(torch.cat([node_features, aggregated], dim=-1))
        return new_features, new_pos
