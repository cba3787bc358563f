r"""Ready networks for particle dynamics: the point-group model ``DEGNN`` and the ``EGNN`` baseline.

Both map an input frame to predicted positions,
``forward(pos, vel, node_attr, edge_src, edge_dst, batch=None, center=None) -> (N, 3)``,
with the same embedding, depth, width and update rule, so that they differ only in the
symmetry they build in: E(3) for ``EGNN``, a finite point group G about a centre for ``DEGNN``
(``DEGNN`` with the trivial group ``C1`` is the non-equivariant twin).

Node inputs are the per-particle scalars ``node_attr`` (charges, masses, species) and
:math:`|v_i|^2`; each edge also gets the products ``node_attr[i] * node_attr[j]``
(e.g. :math:`q_i q_j`) as invariant edge scalars.

Well-posed outputs (see :mod:`relaxed_e3nn.discrete._wellposed`): with ``normalize=True`` the
network sees scalar-normalised inputs (statistics from :meth:`fit_statistics`, held as buffers so
``relaxed_e3nn.load`` reproduces predictions bit for bit) and ``log(1 + |v|^2)``, and predicts a
bounded residual on top of the ``baseline`` (free flight ``x + v dt``, or free flight reflected
by the walls); ``coefficient_bound`` bounds the invariant coefficient networks. The defaults
(no baseline, no normalisation, unbounded) are those of format-1 files.

Both are written and read with ``relaxed_e3nn.save`` / ``relaxed_e3nn.load`` (the package's one
model file format) through ``to_config`` / ``from_config`` and their ``state_dict``.
"""
from typing import Dict, Optional

import torch

from relaxed_e3nn._checks import check_float_dtype
from relaxed_e3nn._scatter import scatter
from relaxed_e3nn._settings import renamed_arguments
from relaxed_e3nn.discrete._group_elements import group_elements
from relaxed_e3nn.discrete._message_passing import PointGroupMessagePassing, _mlp
from relaxed_e3nn.discrete._wellposed import (bounded, check_box_subgroup, checked_option, fitted_statistics,
                                              reflect_into_box, squash, zero_last_layer)
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
    if dtype is not None:
        check_float_dtype("dtype", dtype, f"{cls.__name__}.from_config")


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


#: constructor options added after format 1, with the values that reproduce format-1 files
_WELL_POSED_DEFAULTS = {"baseline": "none", "time_step": None, "half_widths": None, "coefficient_bound": None,
                        "normalize": False}
#: buffers that hold training statistics (``relaxed_e3nn.load`` keeps them in any dtype)
STATISTICS_BUFFERS = ("length_scale", "velocity_scale", "attr_scale", "target_scale", "output_bound")


class _DynamicsModel(torch.nn.Module):
    """Shared embedding, input checks, normalisation, baseline, the stack of layers and the config round trip."""

    _CONFIG_KEYS = ("node_attr_dim", "hidden", "num_layers", "center")
    _FORMER_KEYS = {"layers": "num_layers"}  # read from older files without a warning

    def __init__(self, node_attr_dim: int, hidden: int, num_layers: int, center, baseline: str = "none",
                 time_step: Optional[float] = None, half_widths=None, coefficient_bound: Optional[float] = None,
                 normalize: bool = False):
        super().__init__()
        if int(node_attr_dim) < 0:
            raise ValueError(f"node_attr_dim must be >= 0, got {node_attr_dim!r}")
        if int(hidden) < 1 or int(num_layers) < 1:
            raise ValueError(f"hidden and num_layers must be positive integers, got {hidden!r}, {num_layers!r}")
        if coefficient_bound is not None and not float(coefficient_bound) > 0:
            raise ValueError(f"coefficient_bound must be a positive number or None, got {coefficient_bound!r}")
        self.node_attr_dim = int(node_attr_dim)
        self.hidden = int(hidden)
        self.num_layers = int(num_layers)
        self.half_widths = checked_option(baseline, time_step, half_widths, type(self).__name__)
        self.baseline = baseline
        self.time_step = None if time_step is None else float(time_step)
        self.coefficient_bound = None if coefficient_bound is None else float(coefficient_bound)
        self.normalize = bool(normalize)
        self.embedding = torch.nn.Linear(self.node_attr_dim + 1, self.hidden)
        c = torch.zeros(3) if center is None else torch.as_tensor(center, dtype=torch.get_default_dtype())
        if c.shape != (3,) or not torch.isfinite(c).all():
            raise ValueError(f"center: expected 3 finite numbers, got {center!r}")
        self.register_buffer("center", c.clone())
        for name in STATISTICS_BUFFERS:  # identity until fit_statistics; output_bound 0: no bound
            value = torch.ones(self.node_attr_dim) if name == "attr_scale" else torch.tensor(1.0)
            self.register_buffer(name, value * 0.0 if name == "output_bound" else value)
        self.layers = torch.nn.ModuleList()

    def to_config(self) -> dict:
        """The constructor arguments as plain data (JSON-able): ``type(self).from_config`` inverts it.

        ``center`` is the current value of the ``center`` buffer. The options added after
        format 1 appear only where they differ from their format-1 values.
        """
        options = {"baseline": self.baseline, "time_step": self.time_step, "half_widths": self.half_widths,
                   "coefficient_bound": self.coefficient_bound, "normalize": self.normalize}
        return {
            "node_attr_dim": self.node_attr_dim,
            "hidden": self.hidden,
            "num_layers": self.num_layers,
            "center": [float(x) for x in self.center.detach().cpu().tolist()],
            **{k: v for k, v in options.items() if v != _WELL_POSED_DEFAULTS[k]},
        }

    @classmethod
    def _kwargs_from_config(cls, config: dict) -> dict:
        if not isinstance(config, dict):
            raise TypeError(f"{cls.__name__}.from_config: config must be a dict, got {type(config).__name__}")
        config = {cls._FORMER_KEYS.get(k, k): v for k, v in config.items()}
        missing = [k for k in cls._CONFIG_KEYS if k not in config]
        unknown = sorted(set(config) - set(cls._CONFIG_KEYS) - set(_WELL_POSED_DEFAULTS))
        if missing or unknown:
            raise ValueError(
                f"{cls.__name__}.from_config: config has missing keys {missing} and unknown keys {unknown}; "
                f"expected {list(cls._CONFIG_KEYS)} and optionally {list(_WELL_POSED_DEFAULTS)}"
            )
        return {**_WELL_POSED_DEFAULTS, **config}

    @classmethod
    def from_config(cls, config: dict, dtype: Optional[torch.dtype] = None) -> "_DynamicsModel":
        """A freshly initialised model from :meth:`to_config`'s dict, in ``dtype`` (default dtype if omitted).

        Options added after format 1 (``baseline``, ``time_step``, ``half_widths``,
        ``coefficient_bound``, ``normalize``) may be absent: they then take the format-1 behaviour.
        The former key ``layers`` (older files) is read as ``num_layers`` without a warning.

        Raises
        ------
        ValueError
            If ``config`` lacks a key, has an unknown one, or holds an invalid value.
        """
        _check_dtype(cls, dtype)
        model = cls(**cls._kwargs_from_config(config))
        return model if dtype is None else model.to(dtype)

    @torch.no_grad()
    def fit_statistics(self, pos: torch.Tensor, vel: torch.Tensor, node_attr: torch.Tensor,
                       target: torch.Tensor) -> Dict[str, float]:
        """Set the normalisation buffers from training samples ``(S, N, 3)`` / ``(S, N, node_attr_dim)``.

        The residual is ``target - baseline``; see :func:`~relaxed_e3nn.discrete._wellposed.fitted_statistics`.
        Returns the fitted values (``attr_scale`` as a list).
        """
        if pos.dim() != 3 or vel.shape != pos.shape or target.shape != pos.shape:
            raise ValueError(f"fit_statistics: pos, vel and target must share a shape (S, N, 3), got "
                             f"{tuple(pos.shape)}, {tuple(vel.shape)}, {tuple(target.shape)}")
        if node_attr.shape != pos.shape[:2] + (self.node_attr_dim,):
            raise ValueError(f"fit_statistics: node_attr must have shape {tuple(pos.shape[:2]) + (self.node_attr_dim,)}")
        center = self.center.to(pos.dtype)
        base = self._baseline(pos.reshape(-1, 3), vel.reshape(-1, 3), center.expand(pos.numel() // 3, 3))
        stats = fitted_statistics(pos, vel, node_attr, target - base.view_as(target), center)
        for name, value in stats.items():
            getattr(self, name).copy_(value)
        return {k: (v.tolist() if v.dim() else float(v)) for k, v in stats.items()}

    def _baseline(self, pos, vel, node_center):
        if self.baseline == "none":
            return pos
        flight = pos + vel * self.time_step
        if self.baseline == "free_flight":
            return flight
        widths = torch.tensor(self.half_widths, dtype=pos.dtype, device=pos.device)
        return node_center + reflect_into_box(flight - node_center, widths)

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
        if self.normalize:
            x0 = (pos - node_center) / self.length_scale
            v, attr, layer_center = vel / self.velocity_scale, node_attr / self.attr_scale, torch.zeros_like(pos)
            speed = torch.log1p((v * v).sum(-1, keepdim=True))
        else:
            x0, v, attr, layer_center = pos, vel, node_attr, node_center
            speed = (vel * vel).sum(-1, keepdim=True)
        features = self.embedding(torch.cat([attr, speed], dim=-1))
        edge_attr = attr[edge_src] * attr[edge_dst]
        x = x0
        for layer in self.layers:
            features, x = self._layer(layer, features, x, v, layer_center, edge_src, edge_dst, edge_attr)
        if not self.normalize and self.baseline == "none":
            return x  # the format-1 model, bit for bit
        residual = (x - x0) * self.target_scale
        if bool(self.output_bound > 0):
            residual = squash(residual, self.output_bound)
        return self._baseline(pos, vel, node_center) + residual


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
    num_layers : int
        Number of message-passing layers (``layers``: deprecated name).
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
    baseline : {"none", "free_flight", "reflected"}
        What the network's residual is added to; ``"reflected"`` (free flight folded back by the
        walls) needs ``half_widths`` and a group that maps the box onto itself.
    time_step : float, optional
        Time from input to target (needed by the baselines).
    half_widths : sequence of 3 floats, optional
        The box, for the ``"reflected"`` baseline (about ``center``).
    coefficient_bound : float, optional
        Bound of the invariant coefficient networks (see :class:`PointGroupMessagePassing`).
    normalize : bool
        Scalar normalisation of inputs and residual, bounded output (see the module docstring).

    Examples
    --------
    >>> import torch
    >>> from relaxed_e3nn.discrete import DEGNN
    >>> flips = torch.stack([torch.diag(torch.tensor(s, dtype=torch.float64))
    ...                      for s in [(1., 1, 1), (-1., 1, 1), (1., -1, 1), (-1., -1, 1)]])
    >>> model = DEGNN(flips, node_attr_dim=1, hidden=8, num_layers=2)
    >>> src, dst = torch.tensor([0, 1]), torch.tensor([1, 0])
    >>> model(torch.randn(2, 3), torch.randn(2, 3), torch.ones(2, 1), src, dst).shape
    torch.Size([2, 3])
    """

    _CONFIG_KEYS = _DynamicsModel._CONFIG_KEYS + (
        "group", "group_name", "variant", "reduce", "orbit_width", "node_orbit",
    )

    @renamed_arguments(layers="num_layers")
    def __init__(
        self,
        group,
        node_attr_dim: int,
        hidden: int = 64,
        num_layers: int = 4,
        variant: str = "pooling",
        center=None,
        reduce: str = "mean",
        orbit_width: Optional[int] = None,
        node_orbit: bool = False,
        **well_posed,
    ):
        super().__init__(node_attr_dim, hidden, num_layers, center, **well_posed)
        self.variant = variant  # validated by the layers
        # float64 master copy of the group (the layers' buffers follow the model's dtype), kept
        # for the config so the group survives save/load exactly whatever the model's dtype
        self._group_elements = group_elements(group)
        if isinstance(group, str):
            group = point_group(group)  # its canonical name
        self.group_name: Optional[str] = getattr(group, "schoenflies", None)
        if self.baseline == "reflected":
            check_box_subgroup(self._group_elements, self.half_widths, "DEGNN")
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
                    coefficient_bound=self.coefficient_bound,
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

    def __init__(self, hidden: int, edge_attr_dim: int = 0, coefficient_bound: Optional[float] = None):
        super().__init__()
        self.hidden = int(hidden)
        self.edge_attr_dim = int(edge_attr_dim)
        self.coefficient_bound = None if coefficient_bound is None else float(coefficient_bound)
        self.invariant_linear = torch.nn.Linear(2 * self.hidden + 1 + self.edge_attr_dim, self.hidden)
        self.message_linear = torch.nn.Linear(self.hidden, self.hidden)
        self.radial_coefficient = _mlp(self.hidden, self.hidden, 1)
        self.velocity_coefficient = _mlp(self.hidden, self.hidden, 1)
        self.node_mlp = _mlp(2 * self.hidden, self.hidden, self.hidden)
        if self.coefficient_bound is not None:  # bounded coefficients start at zero
            zero_last_layer(self.radial_coefficient)
            zero_last_layer(self.velocity_coefficient)

    def forward(self, node_features, pos, vel, edge_src, edge_dst, edge_attr=None):
        dst, src = edge_dst, edge_src
        diff = pos[dst] - pos[src]
        scalars = [node_features[dst], node_features[src], (diff * diff).sum(-1, keepdim=True)]
        if self.edge_attr_dim:
            scalars.append(edge_attr)
        hidden = torch.nn.functional.silu(self.invariant_linear(torch.cat(scalars, dim=-1)))
        messages = torch.nn.functional.silu(self.message_linear(hidden))
        n = pos.shape[0]
        bound = self.coefficient_bound
        radial = bounded(self.radial_coefficient(messages), bound)
        displacement = scatter(diff * radial, dst, dim=0, dim_size=n, reduce="mean")
        new_pos = pos + displacement + bounded(self.velocity_coefficient(node_features), bound) * vel
        aggregated = scatter(messages, dst, dim=0, dim_size=n, reduce="sum")
        return node_features + self.node_mlp(torch.cat([node_features, aggregated], dim=-1)), new_pos


class EGNN(_DynamicsModel):
    """E(3)-equivariant baseline with the same call signature as :class:`DEGNN` (``center`` is unused).

    Parameters
    ----------
    node_attr_dim : int
        Number of per-particle invariant scalars.
    hidden, num_layers : int
        Width and depth (``layers``: deprecated name of ``num_layers``).
    center : array_like, optional
        Accepted for a uniform interface; E(3)-equivariance makes the output independent of it.
    baseline : {"none", "free_flight"}
        The reflected baseline is not E(3)-equivariant, so EGNN does not take it.
    time_step, half_widths, coefficient_bound, normalize
        As for :class:`DEGNN`.
    """

    @renamed_arguments(layers="num_layers")
    def __init__(self, node_attr_dim: int, hidden: int = 64, num_layers: int = 4, center=None, **well_posed):
        super().__init__(node_attr_dim, hidden, num_layers, center, **well_posed)
        if self.baseline == "reflected":
            raise ValueError("EGNN: the 'reflected' baseline breaks E(3); use 'free_flight' (x + v dt)")
        for _ in range(self.num_layers):
            self.layers.append(EGNNLayer(self.hidden, edge_attr_dim=self.node_attr_dim,
                                         coefficient_bound=self.coefficient_bound))

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
