"""RelaxedNetwork: a complete (relaxed) E(3) message-passing network on an ``AtomicGraph``."""
import copy
import dataclasses
import math
from typing import Dict, Optional

import torch
from e3nn import o3
from e3nn.math import soft_one_hot_linspace
from e3nn.nn import Gate
from e3nn.nn.models.gate_points_2101 import Convolution

from relaxed_e3nn._checks import check_float_dtype
from relaxed_e3nn._dtype import default_dtype
from relaxed_e3nn._scatter import scatter
from relaxed_e3nn.data import AtomicGraph
from relaxed_e3nn.models._config import RelaxedNetworkConfig
from relaxed_e3nn.models._species import species_indices, species_table
from relaxed_e3nn.models._outputs import energy_forces_stress
from relaxed_e3nn.nn import RelaxedConvolution, load_equivariant_state

__all__ = ["RelaxedNetwork"]

_ACT_SCALARS = {1: torch.nn.functional.silu, -1: torch.tanh}
_ACT_GATES = {1: torch.sigmoid, -1: torch.tanh}


def _radial_embedding(edge_length: torch.Tensor, cutoff: float, number: int, basis: str) -> torch.Tensor:
    r"""The edge scalars ``[E, number]``: the radial basis of ``RelaxedNetworkConfig.radial_basis``.

    ``"bessel"``: :math:`B_k(r) = \sin(k\pi x)/x \cdot u(x)`, :math:`x = r/r_c`, with the envelope

    .. math::
        u(x) = \exp\Big(1 - \frac{1}{1 - x^4}\Big), \quad x < 1,

    and 0 beyond the cutoff (:math:`u(0) = 1`, flat near 0, :math:`u(0.7) \approx 0.73`; :math:`u`
    vanishes with all its derivatives at the cutoff). ``"smooth_finite"``: :math:`\sqrt{n_b}`
    times e3nn's ``soft_one_hot_linspace(r, 0, r_c, n_b, "smooth_finite", cutoff=True)``. Edges have
    :math:`r > 0` (self-pairs are excluded from every graph).
    """
    if basis == "smooth_finite":
        return soft_one_hot_linspace(
            edge_length, start=0.0, end=cutoff, number=number, basis="smooth_finite", cutoff=True
        ).mul(number ** 0.5)
    x = (edge_length / cutoff).unsqueeze(-1)
    inside = x < 1.0
    gap = torch.where(inside, 1.0 - x.pow(4), torch.ones_like(x))  # no 1/0 (nor its gradient) outside
    envelope = torch.where(inside, torch.exp(1.0 - 1.0 / gap), torch.zeros_like(x))
    frequencies = torch.arange(1, number + 1, dtype=edge_length.dtype, device=edge_length.device) * math.pi
    return torch.sin(frequencies * x) / x * envelope


def _tp_path_exists(irreps_in1: o3.Irreps, irreps_in2: o3.Irreps, ir_out: o3.Irrep) -> bool:
    return any(ir_out in ir1 * ir2 for _, ir1 in irreps_in1.simplify() for _, ir2 in irreps_in2.simplify())


class _GatedLayer(torch.nn.Module):
    """A convolution followed by its gate nonlinearity (``gate_points_2101.Compose``)."""

    def __init__(self, conv: torch.nn.Module, gate: Gate):
        super().__init__()
        self.conv = conv
        self.gate = gate

    def forward(self, node_input, node_attr, edge_src, edge_dst, edge_attr, edge_scalars):
        return self.gate(self.conv(node_input, node_attr, edge_src, edge_dst, edge_attr, edge_scalars))


class RelaxedNetwork(torch.nn.Module):
    r"""Message-passing network with relaxed (or, with ``relaxed=False``, strict) E(3) equivariance.

    Architecture (``gate_points_2101.Network`` on an :class:`~relaxed_e3nn.data.AtomicGraph`):

    * node input :math:`h^0_i = W\,\mathrm{onehot}(Z_i) \oplus f_i` (a learned species embedding,
      ``config.num_species_features`` scalars, followed by the ``config.node_features``; with
      ``num_species_features = 0`` the one-hot vector itself), node attribute
      :math:`\mathrm{onehot}(Z_i)`;
    * edges :math:`\mathbf{r}_e = \mathbf{x}_\text{src} - \mathbf{x}_\text{dst} + \mathbf{S}_e\mathbf{C}`
      (expressed in the model frame, :math:`F\mathbf{r}_e`), edge attribute
      :math:`Y^{0..l_\max}(\hat{\mathbf r}_e)` and edge scalars :math:`B_k(|\mathbf r_e|)`
      (``config.radial_basis``: Bessel functions times a smooth envelope, or ``smooth_finite``
      bumps) that vanish with all their derivatives at the cutoff (so the energy is smooth as
      atoms cross it);
    * ``num_layers`` x (convolution + gate), then a final convolution to the output irreps.
      Each convolution is a ``relaxed_e3nn.nn.RelaxedConvolution`` (own :math:`\theta`) when
      ``config.relaxed`` and a plain ``gate_points_2101.Convolution`` otherwise;
    * readout: ``"energy"`` :math:`E_b = \sum_{i\in b}(\text{scale}\,\varepsilon_i + E^0_{Z_i})`,
      forces :math:`-\partial E/\partial \mathbf{x}` and stress
      :math:`\sigma = \frac{1}{V}\,\partial E/\partial \varepsilon` (symmetric strain
      :math:`\varepsilon`, ASE sign convention, eV/Å³) by autograd
      (:func:`~relaxed_e3nn.models.energy_forces_stress`); ``"node"`` per-atom irreps;
      ``"graph"`` their mean or sum per graph.

    At :math:`\theta_\text{breaking} = 0` a relaxed network is exactly E(3)-equivariant and, with
    the same weights, numerically identical to its strict twin (:meth:`from_equivariant`).

    Build the network in the dtype it will run in (``dtype=``, default
    ``torch.get_default_dtype()``): e3nn's tensor products hold their Wigner 3j constants as
    buffers, and ``.to(torch.float64)`` on a float32-built network keeps float32-accurate
    constants (equivariance errors ~1e-10 instead of ~1e-15).
    :func:`~relaxed_e3nn.models.model_from_dict` with ``dtype=`` converts a built network properly.

    Parameters
    ----------
    config : RelaxedNetworkConfig or dict
        The architecture (a dict goes through ``RelaxedNetworkConfig.from_dict``); kept as
        ``self.config``. Change the frame of a built network with :meth:`set_frame`.
    dtype : torch.dtype, optional
        Floating dtype of the parameters, buffers and e3nn constants.

    Attributes
    ----------
    irreps_node_input, irreps_node_attr, irreps_edge_attr, irreps_out : o3.Irreps
        Irreps of the node input, node attribute, edge attribute and of the output.
    species_embedding : e3nn.o3.Linear or None
        The learned species embedding ``num_species x 0e -> num_species_features x 0e`` (``None``
        when ``config.num_species_features`` is 0).
    atomic_energies : torch.Tensor
        Buffer ``[num_species]``: the per-species energy shifts :math:`E^0` (zeros at build;
        :meth:`set_atomic_energies`). Saved with the weights.
    scale : torch.Tensor
        Buffer ``[]``: the factor multiplying the network output (1 at build; :meth:`set_scale`).
    metadata : dict
        Plain data saved with the model (see :func:`~relaxed_e3nn.models.save`); empty at build.
    """

    def __init__(self, config: RelaxedNetworkConfig, *, dtype: Optional[torch.dtype] = None):
        super().__init__()
        if isinstance(config, dict):
            config = RelaxedNetworkConfig.from_dict(config)
        if not isinstance(config, RelaxedNetworkConfig):
            raise TypeError(f"RelaxedNetwork: config must be a RelaxedNetworkConfig, got {type(config).__name__}")
        if dtype is not None:
            check_float_dtype("dtype", dtype, "RelaxedNetwork")
        config = copy.deepcopy(config)
        initial = config.initial_buffers
        config.initial_buffers = {}  # consumed here: the buffers are the only home of these values
        self.metadata: Dict = {}
        with default_dtype(dtype if dtype is not None else torch.get_default_dtype()):
            self._build(config)
        if "atomic_energies" in initial:
            self.set_atomic_energies(initial["atomic_energies"])
        if "scale" in initial:
            self.set_scale(initial["scale"])

    def _build(self, config: RelaxedNetworkConfig) -> None:
        self.config = config
        cfg = self.config
        num_species = len(cfg.species)

        self.irreps_node_attr = o3.Irreps(f"{num_species}x0e")
        self.irreps_node_features = {name: o3.Irreps(irreps) for name, irreps in cfg.node_features.items()}
        self.species_embedding = None
        irreps_input = o3.Irreps(f"{num_species}x0e")
        if cfg.num_species_features > 0:
            self.species_embedding = o3.Linear(irreps_input, f"{cfg.num_species_features}x0e")
            irreps_input = self.species_embedding.irreps_out
        for irreps in self.irreps_node_features.values():
            irreps_input = irreps_input + irreps
        self.irreps_node_input = irreps_input
        self.irreps_edge_attr = o3.Irreps.spherical_harmonics(cfg.lmax)
        self.irreps_hidden = o3.Irreps(cfg.irreps_hidden)
        self.irreps_out = o3.Irreps("0e") if cfg.output == "energy" else o3.Irreps(cfg.irreps_out)

        self.register_buffer("species_index", species_table(cfg.species), persistent=False)
        dtype = torch.get_default_dtype()
        self.register_buffer("frame", torch.tensor(cfg.frame, dtype=dtype), persistent=False)
        self.register_buffer("atomic_energies", torch.zeros(num_species, dtype=dtype))
        self.register_buffer("scale", torch.ones((), dtype=dtype))

        # the gates fix every layer's irreps; check the output is reachable before building convolutions
        gates = []
        chain = [self.irreps_node_input]
        for _ in range(cfg.num_layers):
            irreps = chain[-1]
            irreps_scalars = o3.Irreps([
                (mul, ir) for mul, ir in self.irreps_hidden
                if ir.l == 0 and _tp_path_exists(irreps, self.irreps_edge_attr, ir)
            ])
            irreps_gated = o3.Irreps([
                (mul, ir) for mul, ir in self.irreps_hidden
                if ir.l > 0 and _tp_path_exists(irreps, self.irreps_edge_attr, ir)
            ])
            ir_gate = "0e" if _tp_path_exists(irreps, self.irreps_edge_attr, o3.Irrep("0e")) else "0o"
            irreps_gates = o3.Irreps([(mul, ir_gate) for mul, _ in irreps_gated])
            gate = Gate(
                irreps_scalars, [_ACT_SCALARS[ir.p] for _, ir in irreps_scalars],
                irreps_gates, [_ACT_GATES[ir.p] for _, ir in irreps_gates],
                irreps_gated,
            )
            gates.append(gate)
            chain.append(gate.irreps_out)
        irreps = chain[-1]
        if not any(_tp_path_exists(irreps, self.irreps_edge_attr, ir) for _, ir in self.irreps_out):
            raise ValueError(
                f"RelaxedNetwork: no irrep of irreps_out={self.irreps_out} can be produced from the last hidden "
                f"features {irreps} with spherical harmonics up to lmax={cfg.lmax}; add layers or hidden irreps"
            )
        self.layers = torch.nn.ModuleList()
        for irreps_in, gate in zip(chain, gates):
            self.layers.append(_GatedLayer(self._make_convolution(irreps_in, gate.irreps_in), gate))
        self.layers.append(self._make_convolution(irreps, self.irreps_out))

    def _make_convolution(self, irreps_in: o3.Irreps, irreps_out: o3.Irreps) -> torch.nn.Module:
        cfg = self.config
        if not cfg.relaxed:
            return Convolution(
                irreps_in, self.irreps_node_attr, self.irreps_edge_attr, irreps_out,
                cfg.num_radial_basis, cfg.num_radial_layers, cfg.radial_neurons, cfg.num_neighbors,
            )
        return RelaxedConvolution(
            irreps_in, self.irreps_node_attr, self.irreps_edge_attr, irreps_out,
            cfg.num_radial_basis, cfg.num_radial_layers, cfg.radial_neurons, cfg.num_neighbors,
            irreps_relaxed=cfg.irreps_relaxed, relax_at=cfg.relax_at,
        )

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_equivariant(
        cls,
        model: "RelaxedNetwork",
        irreps_relaxed=None,
        relax_at: Optional[str] = None,
    ) -> "RelaxedNetwork":
        r"""The relaxed twin of a strict network, carrying its weights.

        The relaxed network is built from ``model``'s config (with ``relaxed=True``) and loaded
        with ``model.state_dict()``: only the relaxed weights (``*.theta.theta``,
        ``*.edge_relaxation.weight``, ``*.node_relaxation.weight``) are new, so at
        :math:`\theta_\text{breaking} = 0` (the initial state) the result computes exactly what
        ``model`` computes. ``model`` itself is not modified.

        Parameters
        ----------
        model : RelaxedNetwork
            A network with ``config.relaxed == False``.
        irreps_relaxed : int or str, optional
            Irreps of the new :math:`\theta`; ``model.config.irreps_relaxed`` by default.
        relax_at : {"both", "edge", "node"}, optional
            ``model.config.relax_at`` by default.
        """
        if not isinstance(model, RelaxedNetwork):
            raise TypeError(f"from_equivariant: model must be a RelaxedNetwork, got {type(model).__name__}")
        if model.config.relaxed:
            raise ValueError("from_equivariant: model is already relaxed (config.relaxed is True)")
        changes = {"relaxed": True}
        if irreps_relaxed is not None:
            changes["irreps_relaxed"] = irreps_relaxed
        if relax_at is not None:
            changes["relax_at"] = relax_at
        config = dataclasses.replace(model.config, **changes)  # validates the new fields
        reference = model.scale
        relaxed = cls(config, dtype=reference.dtype).to(device=reference.device)
        load_equivariant_state(relaxed, model.state_dict(), "RelaxedNetwork.from_equivariant")
        relaxed.metadata = copy.deepcopy(model.metadata)
        relaxed.train(model.training)
        return relaxed

    def set_atomic_energies(self, values) -> None:
        """Set the per-species energy shifts :math:`E^0` (aligned with ``config.species``)."""
        values = [float(v) for v in values]
        if len(values) != len(self.config.species):
            raise ValueError(
                f"set_atomic_energies: values must have one entry per species ({len(self.config.species)}), "
                f"got {len(values)}"
            )
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"set_atomic_energies: values must be finite, got {values}")
        with torch.no_grad():
            self.atomic_energies.copy_(torch.tensor(values, dtype=torch.float64))

    def set_scale(self, value: float) -> None:
        """Set the factor multiplying the network output."""
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"set_scale: value must be finite, got {value}")
        with torch.no_grad():
            self.scale.fill_(value)

    def set_frame(self, frame) -> None:
        r"""Set the frame :math:`F` (rows: the model's axes in input coordinates); see ``RelaxedNetworkConfig.frame``.

        For a relaxed model this reorients the learned symmetry breaking: the model with frame
        :math:`F` evaluated on :math:`R\cdot x` equals the model with frame :math:`F R` evaluated
        on :math:`x` (outputs transformed by :math:`D(R)`).
        """
        if isinstance(frame, torch.Tensor):
            frame = frame.detach().cpu().double().tolist()
        config = copy.deepcopy(self.config)
        try:
            config.frame = [[float(x) for x in row] for row in frame]
        except (TypeError, ValueError) as err:
            raise ValueError(f"set_frame: frame must be a 3x3 orthogonal matrix, got {frame!r}") from err
        config = RelaxedNetworkConfig.from_dict(config.to_dict())
        self.config.frame = config.frame
        with torch.no_grad():
            self.frame.copy_(torch.tensor(config.frame, dtype=torch.float64))

    # ------------------------------------------------------------------ forward
    def _species(self, graph: AtomicGraph) -> torch.Tensor:
        """Each atom's index in ``config.species``, after the checks that need no device synchronisation.

        Type, dtype, shapes and cutoff are Python-side metadata and are always checked. Checks on
        tensor values (finite positions, known species) read the tensors back to the host, which on
        an accelerator stalls every forward pass: they run for graphs on the CPU only (and not
        under ``torch.compile``); graphs on an accelerator rely on the validation done where they
        were built (:mod:`relaxed_e3nn.data` builders, :class:`~relaxed_e3nn.calculators.RelaxedCalculator`).
        """
        if not isinstance(graph, AtomicGraph):
            raise TypeError(f"RelaxedNetwork: graph must be an AtomicGraph, got {type(graph).__name__}")
        dtype = self.scale.dtype
        if graph.pos.dtype != dtype:
            raise TypeError(
                f"RelaxedNetwork: graph.pos has dtype {graph.pos.dtype} but the model is {dtype}; "
                f"use graph.to(dtype={dtype}) (or a model built in {graph.pos.dtype})"
            )
        if graph.num_nodes == 0:
            raise ValueError("RelaxedNetwork: graph has no atoms")
        if graph.pos.dim() != 2 or graph.pos.shape[1] != 3:
            raise ValueError(f"RelaxedNetwork: graph.pos must have shape [N, 3], got {tuple(graph.pos.shape)}")
        # a longer neighbor list is harmless (edges beyond the cutoff contribute exact zeros)
        if graph.cutoff < self.config.cutoff * (1 - 1e-9):
            raise ValueError(
                f"RelaxedNetwork: graph was built with cutoff {graph.cutoff} Å, shorter than the model's cutoff "
                f"{self.config.cutoff} Å; rebuild the graph with cutoff={self.config.cutoff}"
            )
        if graph.pos.device.type == "cpu" and not torch.compiler.is_compiling():
            self._check_values(graph)
        return species_indices(self.species_index, graph.atomic_numbers, self.config.species, "RelaxedNetwork")

    def _check_values(self, graph: AtomicGraph) -> None:
        if not bool(torch.isfinite(graph.pos).all()):
            raise ValueError("RelaxedNetwork: graph.pos contains NaN or inf")

    def _node_input(self, graph: AtomicGraph, species_one_hot: torch.Tensor, frame_d) -> torch.Tensor:
        dtype = self.scale.dtype
        parts = [species_one_hot if self.species_embedding is None else self.species_embedding(species_one_hot)]
        for name, irreps in self.irreps_node_features.items():
            if name not in graph.node_features:
                raise ValueError(
                    f"RelaxedNetwork: graph.node_features lacks {name!r} (config.node_features needs "
                    f"{sorted(self.irreps_node_features)}; the graph has {sorted(graph.node_features)})"
                )
            value = graph.node_features[name]
            if value.dim() == 1:
                value = value.unsqueeze(-1)
            if value.shape != (graph.num_nodes, irreps.dim):
                raise ValueError(
                    f"RelaxedNetwork: node_features[{name!r}] must have shape [{graph.num_nodes}, {irreps.dim}] "
                    f"(irreps {irreps}), got {tuple(graph.node_features[name].shape)}"
                )
            value = value.to(dtype)
            if frame_d is not None:
                value = value @ irreps.D_from_matrix(frame_d).T
            parts.append(value)
        return torch.cat(parts, dim=-1)

    def forward(
        self, graph: AtomicGraph, compute_forces: bool = False, compute_stress: bool = False,
        compute_virial: bool = False,
    ) -> Dict[str, torch.Tensor]:
        r"""Evaluate the network on a graph (or a batch of graphs).

        Parameters
        ----------
        graph : AtomicGraph
            Built with the model's cutoff (or a longer one), in the model's dtype, containing only
            known species and the ``config.node_features``.
        compute_forces : bool
            Also return ``"forces"`` :math:`= -\partial E/\partial \mathbf{x}` (``output="energy"`` only).
        compute_stress : bool
            Also return ``"stress"``
            :math:`= \frac{1}{V}\,\partial E/\partial\varepsilon` (``[B, 3, 3]``, eV/Å³, ASE sign
            convention), differentiating with respect to a symmetric strain
            :math:`\mathbf{x} \to (1+\varepsilon)\mathbf{x}`, cell likewise. Graphs not periodic
            in all three directions (slabs) or with zero cell volume get NaN.
        compute_virial : bool
            Also return the ``"virial"`` :math:`= \partial E/\partial\varepsilon` (``[B, 3, 3]``, eV),
            finite for slabs too (their surface stress:
            :func:`~relaxed_e3nn.models.surface_stress_from_virial`).

        Returns
        -------
        dict
            ``"energy"`` ``[B]`` (and, when asked for, ``"forces"`` ``[N, 3]``, ``"stress"`` and
            ``"virial"`` ``[B, 3, 3]``) for
            ``output="energy"``; ``"node_output"`` ``[N, d]`` for ``"node"``;
            ``"graph_output"`` ``[B, d]`` for ``"graph"``.

        Notes
        -----
        In training mode the derivatives keep their graph (``create_graph=True``) so that a loss on
        forces or stress can be back-propagated to the weights.
        """
        cfg = self.config
        if (compute_forces or compute_stress or compute_virial) and cfg.output != "energy":
            raise ValueError(f"RelaxedNetwork: forces and stress need output='energy', this model has {cfg.output!r}")
        species = self._species(graph)
        frame = None if cfg.frame_is_identity else self.frame
        if cfg.output == "energy":
            def energy_of_edges(edge_vec: torch.Tensor) -> torch.Tensor:
                node_output = self._propagate(graph, species, edge_vec, frame)
                atom_energy = self.scale * node_output[:, 0] + self.atomic_energies[species]
                return scatter(atom_energy, graph.batch, dim_size=graph.num_graphs)

            return energy_forces_stress(energy_of_edges, graph, compute_forces=compute_forces,
                                        compute_stress=compute_stress, compute_virial=compute_virial,
                                        create_graph=self.training)
        node_output = self._propagate(graph, species, graph.edge_vec(), frame)
        if frame is not None:
            node_output = node_output @ self.irreps_out.D_from_matrix(frame)
        node_output = self.scale * node_output
        if cfg.output == "node":
            return {"node_output": node_output}
        return {"graph_output": scatter(node_output, graph.batch, dim_size=graph.num_graphs, reduce=cfg.graph_reduce)}

    def _propagate(self, graph, species, edge_vec, frame) -> torch.Tensor:
        """The last convolution's output at every atom, from edge vectors in input coordinates."""
        cfg = self.config
        if frame is not None:
            edge_vec = edge_vec @ frame.T
        edge_attr = o3.spherical_harmonics(self.irreps_edge_attr, edge_vec, normalize=True, normalization="component")
        edge_length = edge_vec.norm(dim=1)
        edge_scalars = _radial_embedding(edge_length, cfg.cutoff, cfg.num_radial_basis, cfg.radial_basis)
        node_attr = torch.nn.functional.one_hot(species, len(cfg.species)).to(edge_vec.dtype)
        x = self._node_input(graph, node_attr, frame)
        for layer in self.layers:
            x = layer(x, node_attr, graph.edge_src, graph.edge_dst, edge_attr, edge_scalars)
        return x

    def extra_repr(self) -> str:
        cfg = self.config
        return (
            f"output={cfg.output}, irreps_out={self.irreps_out}, species={cfg.species}, cutoff={cfg.cutoff}, "
            f"relaxed={cfg.relaxed}"
        )

