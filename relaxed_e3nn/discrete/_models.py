r"""Ready networks for particle dynamics: the point-group model ``DEGNN`` and the ``EGNN`` baseline.

Both map an input frame to predicted positions,
``forward(pos, vel, node_attr, edge_src, edge_dst, batch=None, center=None) -> (N, 3)``,
with the same embedding, depth, width and update rule, so that they differ only in the
symmetry they build in: E(3) for ``EGNN``, a finite point group G about a centre for ``DEGNN``
(``DEGNN`` with the trivial group ``C1`` is the non-equivariant twin).

Node inputs are the per-particle scalars ``node_attr`` (charges, masses, species) and
:math:`|v_i|^2`; each edge also gets the products ``node_attr[i] * node_attr[j]``
(e.g. :math:`q_i q_j`) as invariant edge scalars.

Both are written and read with ``relaxed_e3nn.save`` / ``relaxed_e3nn.load`` (the package's one
model file format) through ``to_config`` / ``from_config`` and their ``state_dict``.
"""
from typing import Optional

import torch

from relaxed_e3nn._scatter import scatter
from relaxed_e3nn._settings import renamed_arguments
from relaxed_e3nn.discrete._group_elements import group_elements
from relaxed_e3nn.discrete._message_passing import PointGroupMessagePassing, _mlp
from relaxed_e3nn.groups import point_group

__all__ = ["DEGNN", "EGNN", "EGNNLayer", "fully_connected_batch"]


def _check_inputs(pos, vel, node_attr, edge_src, edge_dst, batch, node_attr_dim):
    if not isinstance(pos, torch.Tensor) or pos.dim() != 2 or pos.shape[1] != 3:
        raise ValueError(f"pos: expected a tensor of shape (N, 3), got {getattr(pos, 'shape', type(pos))}")
    n = pos.shape[0]
    if n == 0:
        raise ValueError("pos: the graph has no nodes")
    if not isinstance(vel, torch.Tensor) or vel.shape != pos.shape:
        raise ValueError(f"vel: expected shape {tuple(pos.shape)}, got {getattr(vel, 'shape', type(vel))}")
    if not isinstance(node_attr, torch.Tensor) or node_attr.shape != (n, node_attr_dim):
        raise ValueError(
            f"node_attr: expected shape ({n}, {node_attr_dim}), got {getattr(node_attr, 'shape', type(node_attr))}"
        )
    for name, value in (("pos", pos), ("vel", vel), ("node_attr", node_attr)):
        if not value.is_floating_point():
            raise TypeError(f"{name}: expected a floating-point tensor, got {value.dtype}")
        if not torch.isfinite(value).all():
            raise ValueError(f"{name}: contains NaN or inf")
    for name, index in (("edge_src", edge_src), ("edge_dst", edge_dst)):
        if not isinstance(index, torch.Tensor) or index.dim() != 1 or index.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"{name}: expected a 1-D integer tensor, got {getattr(index, 'dtype', type(index))}")
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= n):
            raise ValueError(f"{name}: indices must lie in [0, {n}), got range [{int(index.min())}, {int(index.max())}]")
    if edge_src.shape != edge_dst.shape:
        raise ValueError(f"edge_src and edge_dst must have the same length, got {edge_src.shape[0]} and {edge_dst.shape[0]}")
    if batch is not None:
        if not isinstance(batch, torch.Tensor) or batch.shape != (n,) or batch.is_floating_point():
            raise ValueError(f"batch: expected an integer tensor of shape ({n},), got {getattr(batch, 'shape', type(batch))}")
        if int(batch.min()) < 0:
            raise ValueError("batch: indices must be non-negative")


def _check_dtype(cls, dtype):
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise TypeError(f"{cls.__name__}.from_config: dtype must be a floating torch.dtype, got {dtype!r}")


def _node_centers(center, default, pos, batch):
    """Per-node centre (N, 3) from a global (3,) or per-system (B, 3) centre."""
    c = torch.as_tensor(default if center is None else center, dtype=pos.dtype, device=pos.device)
    if c.shape == (3,):
        return c.expand_as(pos)
    if c.dim() == 2 and c.shape[1] == 3:
        if batch is None:
            if c.shape[0] != 1:
                raise ValueError(f"center: a per-system centre of shape {tuple(c.shape)} needs `batch`")
            return c.expand_as(pos)
        if int(batch.max()) >= c.shape[0]:
            raise ValueError(f"center: {c.shape[0]} centres for a batch of {int(batch.max()) + 1} systems")
        return c[batch]
    raise ValueError(f"center: expected shape (3,) or (B, 3), got {tuple(c.shape)}")


class _DynamicsModel(torch.nn.Module):
    """Shared embedding, input checks, the stack of layers and the config round trip."""

    _CONFIG_KEYS = ("node_attr_dim", "hidden", "layers", "center")

    def __init__(self, node_attr_dim: int, hidden: int, layers: int, center):
        super().__init__()
        if int(node_attr_dim) < 0:
            raise ValueError(f"node_attr_dim must be >= 0, got {node_attr_dim!r}")
        if int(hidden) < 1 or int(layers) < 1:
            raise ValueError(f"hidden and layers must be positive integers, got {hidden!r}, {layers!r}")
        self.node_attr_dim = int(node_attr_dim)
        self.hidden = int(hidden)
        self.num_layers = int(layers)
        self.embedding = torch.nn.Linear(self.node_attr_dim + 1, self.hidden)
        c = torch.zeros(3) if center is None else torch.as_tensor(center, dtype=torch.get_default_dtype())
        if c.shape != (3,) or not torch.isfinite(c).all():
            raise ValueError(f"center: expected 3 finite numbers, got {center!r}")
        self.register_buffer("center", c.clone())
        self.layers = torch.nn.ModuleList()

    def to_config(self) -> dict:
        """The constructor arguments as plain data (JSON-able): ``type(self).from_config`` inverts it.

        ``center`` is the current value of the ``center`` buffer.
        """
        return {
            "node_attr_dim": self.node_attr_dim,
            "hidden": self.hidden,
            "layers": self.num_layers,
            "center": [float(x) for x in self.center.detach().cpu().tolist()],
        }

    @classmethod
    def _kwargs_from_config(cls, config: dict) -> dict:
        if not isinstance(config, dict):
            raise TypeError(f"{cls.__name__}.from_config: config must be a dict, got {type(config).__name__}")
        missing = [k for k in cls._CONFIG_KEYS if k not in config]
        unknown = sorted(set(config) - set(cls._CONFIG_KEYS))
        if missing or unknown:
            raise ValueError(
                f"{cls.__name__}.from_config: config has missing keys {missing} and unknown keys {unknown}; "
                f"expected exactly {list(cls._CONFIG_KEYS)}"
            )
        return dict(config)

    @classmethod
    def from_config(cls, config: dict, dtype: Optional[torch.dtype] = None) -> "_DynamicsModel":
        """A freshly initialised model from :meth:`to_config`'s dict, in ``dtype`` (default dtype if omitted).

        Raises
        ------
        ValueError
            If ``config`` lacks a key, has an unknown one, or holds an invalid value.
        """
        _check_dtype(cls, dtype)
        model = cls(**cls._kwargs_from_config(config))
        return model if dtype is None else model.to(dtype)

    def forward(
        self,
        pos: torch.Tensor,
        vel: torch.Tensor,
        node_attr: torch.Tensor,
        edge_src: torch.Tensor,
        edge_dst: torch.Tensor,
        batch: Optional[torch.Tensor] = None,
        center: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Predicted positions ``(N, 3)``.

        Parameters
        ----------
        pos, vel : torch.Tensor
            ``(N, 3)`` positions and velocities of the input frame.
        node_attr : torch.Tensor
            ``(N, node_attr_dim)`` invariant per-particle scalars.
        edge_src, edge_dst : torch.Tensor
            ``(E,)`` sender / receiver indices (messages flow ``src -> dst``), over the whole batch.
        batch : torch.Tensor, optional
            ``(N,)`` system index of each node (needed for per-system centres).
        center : torch.Tensor, optional
            ``(3,)`` or ``(B, 3)`` centre(s) the group acts about; defaults to the model's ``center``.
        """
        _check_inputs(pos, vel, node_attr, edge_src, edge_dst, batch, self.node_attr_dim)
        edge_src = edge_src.long()
        edge_dst = edge_dst.long()
        node_center = _node_centers(center, self.center, pos, batch)
        features = self.embedding(torch.cat([node_attr, (vel * vel).sum(-1, keepdim=True)], dim=-1))
        edge_attr = node_attr[edge_src] * node_attr[edge_dst]
        for layer in self.layers:
            features, pos = self._layer(layer, features, pos, vel, node_center, edge_src, edge_dst, edge_attr)
        return pos


class DEGNN(_DynamicsModel):
    r"""Point-group equivariant dynamics network: stacked :class:`PointGroupMessagePassing` layers.

    For every g in G and centre c,
    ``model(c + (pos - c) g^T, vel g^T, ...) == c + (model(pos, vel, ...) - c) g^T``.

    Parameters
    ----------
    group : str, PointGroup or array_like
        Any finite point group, by catalogue name, object (any frame) or elements.
    node_attr_dim : int
        Number of per-particle invariant scalars.
    hidden : int
        Width of node features, messages and (by default) the per-element orbit features.
    layers : int
        Number of message-passing layers.
    variant : {"pooling", "attention", "ranking"}
        Orbit reduction (see :class:`PointGroupMessagePassing`).
    center : array_like, optional
        Default global centre (3,) the group acts about (the box centre); origin if omitted.
    reduce : {"mean", "sum"}
        Reduction of the ``"pooling"`` variant.
    orbit_width : int, optional
        Width of the per-element features (default ``hidden``).
    node_orbit : bool
        Include the group-averaged node term.

    Examples
    --------
    >>> import torch
    >>> from relaxed_e3nn.discrete import DEGNN
    >>> flips = torch.stack([torch.diag(torch.tensor(s, dtype=torch.float64))
    ...                      for s in [(1., 1, 1), (-1., 1, 1), (1., -1, 1), (-1., -1, 1)]])
    >>> model = DEGNN(flips, node_attr_dim=1, hidden=8, layers=2)
    >>> src, dst = torch.tensor([0, 1]), torch.tensor([1, 0])
    >>> model(torch.randn(2, 3), torch.randn(2, 3), torch.ones(2, 1), src, dst).shape
    torch.Size([2, 3])
    """

    _CONFIG_KEYS = _DynamicsModel._CONFIG_KEYS + (
        "group", "group_name", "variant", "reduce", "orbit_width", "node_orbit",
    )

    def __init__(
        self,
        group,
        node_attr_dim: int,
        hidden: int = 64,
        layers: int = 4,
        variant: str = "pooling",
        center=None,
        reduce: str = "mean",
        orbit_width: Optional[int] = None,
        node_orbit: bool = False,
    ):
        super().__init__(node_attr_dim, hidden, layers, center)
        self.variant = variant  # validated by the layers
        # float64 master copy of the group (the layers' buffers follow the model's dtype), kept
        # for the config so the group survives save/load exactly whatever the model's dtype
        self._group_elements = group_elements(group)
        if isinstance(group, str):
            group = point_group(group)  # its canonical name
        self.group_name: Optional[str] = getattr(group, "schoenflies", None)
        for _ in range(self.num_layers):
            self.layers.append(
                PointGroupMessagePassing(
                    self._group_elements,
                    self.hidden,
                    edge_attr_dim=self.node_attr_dim,
                    orbit_width=orbit_width,
                    variant=variant,
                    reduce=reduce,
                    node_orbit=node_orbit,
                )
            )

    @property
    def elements(self) -> torch.Tensor:
        """The group elements ``(G, 3, 3)`` the model is equivariant under."""
        return self.layers[0].elements

    def to_config(self) -> dict:
        """The constructor arguments as plain data; ``group`` is the float64 element list (exact).

        ``group_name`` (the catalogue name the model was built from, or None) is informational.
        """
        first = self.layers[0]
        return {
            **super().to_config(),
            "group": self._group_elements.tolist(),
            "group_name": self.group_name,
            "variant": self.variant,
            "reduce": first.reduce,
            "orbit_width": first.orbit_width,
            "node_orbit": first.node_orbit,
        }

    @classmethod
    def from_config(cls, config: dict, dtype: Optional[torch.dtype] = None) -> "DEGNN":
        """A freshly initialised model from :meth:`to_config`'s dict, in ``dtype`` (default dtype if omitted).

        The layers' ``elements`` buffers are set from the float64 element list in ``dtype``, not
        rounded through the default dtype on the way.

        Raises
        ------
        ValueError
            If ``config`` lacks a key, has an unknown one, or holds an invalid value (including
            matrices that are not a finite group).
        """
        _check_dtype(cls, dtype)
        kwargs = cls._kwargs_from_config(config)
        name = kwargs.pop("group_name")
        if name is not None and not isinstance(name, str):
            raise ValueError(f"DEGNN.from_config: group_name must be a string or None, got {name!r}")
        try:
            kwargs["group"] = torch.tensor(kwargs["group"], dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"DEGNN.from_config: group must be a (G, 3, 3) nested list of numbers: {err}") from err
        model = cls(**kwargs)
        if dtype is not None:
            model = model.to(dtype)
        model.group_name = name
        return model

    @staticmethod
    def _layer(layer, features, pos, vel, node_center, edge_src, edge_dst, edge_attr):
        return layer(features, pos, vel, node_center, edge_src, edge_dst, edge_attr)


class EGNNLayer(torch.nn.Module):
    r"""E(n)-equivariant layer with velocities (Satorras et al.), same widths as the point-group layer.

    .. math::
        m_e = \sigma(M \sigma(U[h_i, h_j, |x_i - x_j|^2, a_e] + b) + b_m), \quad
        x_i' = x_i + \mathrm{mean}_j (x_i - x_j)\phi_x(m_e) + \phi_v(h_i) v_i, \quad
        h_i' = h_i + \phi_h(h_i, \textstyle\sum_j m_e).
    """

    def __init__(self, hidden: int, edge_attr_dim: int = 0):
        super().__init__()
        self.hidden = int(hidden)
        self.edge_attr_dim = int(edge_attr_dim)
        self.invariant_linear = torch.nn.Linear(2 * self.hidden + 1 + self.edge_attr_dim, self.hidden)
        self.message_linear = torch.nn.Linear(self.hidden, self.hidden)
        self.radial_coefficient = _mlp(self.hidden, self.hidden, 1)
        self.velocity_coefficient = _mlp(self.hidden, self.hidden, 1)
        self.node_mlp = _mlp(2 * self.hidden, self.hidden, self.hidden)

    def forward(self, node_features, pos, vel, edge_src, edge_dst, edge_attr=None):
        dst, src = edge_dst, edge_src
        diff = pos[dst] - pos[src]
        scalars = [node_features[dst], node_features[src], (diff * diff).sum(-1, keepdim=True)]
        if self.edge_attr_dim:
            scalars.append(edge_attr)
        hidden = torch.nn.functional.silu(self.invariant_linear(torch.cat(scalars, dim=-1)))
        messages = torch.nn.functional.silu(self.message_linear(hidden))
        n = pos.shape[0]
        displacement = scatter(diff * self.radial_coefficient(messages), dst, dim=0, dim_size=n, reduce="mean")
        new_pos = pos + displacement + self.velocity_coefficient(node_features) * vel
        aggregated = scatter(messages, dst, dim=0, dim_size=n, reduce="sum")
        return node_features + self.node_mlp(torch.cat([node_features, aggregated], dim=-1)), new_pos


class EGNN(_DynamicsModel):
    """E(3)-equivariant baseline with the same call signature as :class:`DEGNN` (``center`` is unused).

    Parameters
    ----------
    node_attr_dim : int
        Number of per-particle invariant scalars.
    hidden, layers : int
        Width and depth.
    center : array_like, optional
        Accepted for a uniform interface; E(3)-equivariance makes the output independent of it.
    """

    def __init__(self, node_attr_dim: int, hidden: int = 64, layers: int = 4, center=None):
        super().__init__(node_attr_dim, hidden, layers, center)
        for _ in range(self.num_layers):
            self.layers.append(EGNNLayer(self.hidden, edge_attr_dim=self.node_attr_dim))

    @staticmethod
    def _layer(layer, features, pos, vel, node_center, edge_src, edge_dst, edge_attr):
        return layer(features, pos, vel, edge_src, edge_dst, edge_attr)


@renamed_arguments(n_systems="num_systems", n_bodies="num_bodies")
def fully_connected_batch(num_systems: int, num_bodies: int, device=None):
    """Edges of ``num_systems`` fully connected graphs of ``num_bodies`` nodes (no self-loops), and the batch vector."""
    i, j = torch.meshgrid(torch.arange(num_bodies), torch.arange(num_bodies), indexing="ij")
    keep = i != j
    src, dst = j[keep], i[keep]
    offsets = (torch.arange(num_systems) * num_bodies)[:, None]
    edge_src = (src[None] + offsets).reshape(-1).to(device)
    edge_dst = (dst[None] + offsets).reshape(-1).to(device)
    batch = torch.arange(num_systems).repeat_interleave(num_bodies).to(device)
    return edge_src, edge_dst, batch
