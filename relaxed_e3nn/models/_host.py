r"""A relaxed host model (NequIP, MACE) as an energy model on an ``AtomicGraph``.

:class:`HostPotential` holds a relaxed host model (built by
:func:`relaxed_e3nn.nn.relaxed_nequip_model` / :func:`~relaxed_e3nn.nn.relaxed_mace_model`) and gives
it the interface of :class:`~relaxed_e3nn.models.RelaxedNetwork`'s energy output, so the trainer,
evaluation, the calculator and validated symmetry breaking use it unchanged:

.. math::
    E_b = \text{scale}\,E^\text{host}_b(\{\mathbf r_e\}) + \sum_{i \in b} E^0_{Z_i},

with forces and stress by :func:`~relaxed_e3nn.models.energy_forces_stress`. The host receives the
package's edge vectors :math:`\mathbf r_e = \mathbf x_\text{src} - \mathbf x_\text{dst} + \mathbf S_e C`
in its own convention: NequIP's ``edge_vectors`` (``edge_index = [dst, src]``, sender − receiver as
ours), MACE's ``edge_index = [src, dst]`` with Cartesian ``shifts`` chosen so that its receiver − sender
vectors are :math:`-\mathbf r_e`. Species and cutoff come from the host's recipe (NequIP ``type_names``
and ``r_max``, MACE ``atomic_numbers`` and ``r_max``). The host's own energy shifts (NequIP's ``per_type_energy_shifts``, MACE's
``atomic_energies``) stay inside :math:`E^\text{host}`; leave them at zero to let the package fit
:math:`E^0`.

Files: the wrapper is saved as its host kind with the recipe (:mod:`relaxed_e3nn.models._io`); its
state is the host's under ``host.`` plus the ``atomic_energies`` and ``scale`` buffers.
"""
import dataclasses
from typing import Dict, List, Mapping, Sequence

import torch
from ase.data import atomic_numbers

from relaxed_e3nn.data import AtomicGraph
from relaxed_e3nn.models._outputs import energy_forces_stress
from relaxed_e3nn.models._species import species_indices, species_table
from relaxed_e3nn._checks import dtype_name
from relaxed_e3nn.nn.hosts import (HOST_KINDS, host_metadata, recipe_of, relaxed_mace_model, relaxed_nequip_model,
                                    set_host_metadata)

__all__ = ["HostPotential", "HostPotentialConfig", "is_potential_state", "host_model_section", "build_host_potential"]

_FITTED = ("atomic_energies", "scale")
#: keys of a training config's model section for a host kind
_SECTION_KEYS = ("kind", "config", "model_class", "irreps_relaxed", "relax_at", "atomic_energies", "scale")
_NEQUIP_TARGET = "nequip.model.NequIPGNNModel"


@dataclasses.dataclass(frozen=True)
class HostPotentialConfig:
    """What the trainer, evaluation and the calculator read of a model's ``config``."""

    host: str
    species: List[int]
    cutoff: float
    output: str = "energy"
    node_features: Dict[str, str] = dataclasses.field(default_factory=dict)
    relaxed: bool = True


def _species_and_cutoff(recipe: Mapping) -> tuple:
    """Atomic numbers (in the host's type order) and cutoff of a recipe."""
    config = recipe["config"]
    if recipe["host"] == "NequIP":
        names = list(config.get("type_names") or [])
        unknown = [name for name in names if name not in atomic_numbers]
        if not names or unknown:
            raise ValueError(f"HostPotential: the NequIP config's type_names must be chemical symbols, got {names}")
        return [atomic_numbers[name] for name in names], float(config["r_max"])
    kwargs = config["kwargs"]
    numbers = kwargs.get("atomic_numbers")
    numbers = numbers.get("__array__", numbers) if isinstance(numbers, Mapping) else numbers
    return [int(z) for z in numbers], float(kwargs["r_max"])


def is_potential_state(state: Mapping) -> bool:
    """Whether a host payload's ``state_dict`` is a :class:`HostPotential`'s (``host.*`` plus the fitted buffers)."""
    return all(name in state for name in _FITTED) and all(name in _FITTED or name.startswith("host.")
                                                          for name in state)


class HostPotential(torch.nn.Module):
    r"""A relaxed host model with the package's energy interface (see the module notes).

    Parameters
    ----------
    host : torch.nn.Module
        A relaxed NequIP or MACE model carrying its build recipe.

    Attributes
    ----------
    config : HostPotentialConfig
        ``host``, ``species`` (host type order), ``cutoff``, ``output = "energy"``.
    atomic_energies : torch.Tensor
        Buffer ``[num_species]``, :math:`E^0` (zeros at build; :meth:`set_atomic_energies`).
    scale : torch.Tensor
        Buffer ``[]`` (1 at build; :meth:`set_scale`).
    metadata : dict
        The host's file metadata (``host.relaxed_e3nn_metadata``); setting it keeps the recipe.
    """

    def __init__(self, host: torch.nn.Module):
        super().__init__()
        recipe = recipe_of(host)
        if recipe is None:
            raise ValueError("HostPotential: host must be a relaxed host model with a build recipe (built by "
                             "relaxed_e3nn.nn.relaxed_nequip_model or relaxed_mace_model)")
        species, cutoff = _species_and_cutoff(recipe)
        self.host = host
        self.config = HostPotentialConfig(recipe["host"], species, cutoff)
        dtype = next(host.parameters()).dtype
        self.register_buffer("species_index", species_table(species), persistent=False)
        self.register_buffer("atomic_energies", torch.zeros(len(species), dtype=dtype))
        self.register_buffer("scale", torch.ones((), dtype=dtype))

    @property
    def metadata(self) -> dict:
        return host_metadata(self.host)

    @metadata.setter
    def metadata(self, value: Mapping) -> None:
        recipe = recipe_of(self.host)
        set_host_metadata(self.host, {**dict(value or {}), "recipe": recipe})

    @property
    def relaxed_e3nn_metadata(self) -> dict:
        return self.metadata

    @relaxed_e3nn_metadata.setter
    def relaxed_e3nn_metadata(self, value: Mapping) -> None:
        self.metadata = value

    def set_atomic_energies(self, values: Sequence[float]) -> None:
        """Set :math:`E^0` (one value per species, in ``config.species`` order)."""
        values = torch.as_tensor(values, dtype=self.atomic_energies.dtype, device=self.atomic_energies.device)
        if values.shape != self.atomic_energies.shape or not torch.isfinite(values).all():
            raise ValueError(f"set_atomic_energies: values must be {len(self.config.species)} finite numbers, "
                             f"got {values.tolist()}")
        self.atomic_energies.copy_(values)

    def set_scale(self, value: float) -> None:
        """Set the factor multiplying the host's energy."""
        value = float(value)
        if not (value > 0 and value < float("inf")):
            raise ValueError(f"set_scale: value must be a finite positive number, got {value}")
        self.scale.fill_(value)

    def _types(self, graph: AtomicGraph) -> torch.Tensor:
        return species_indices(self.species_index, graph.atomic_numbers, self.config.species, "HostPotential")

    def host_energy(self, graph: AtomicGraph, edge_vec: torch.Tensor) -> torch.Tensor:
        """The host's per-graph energy ``[B]`` of ``graph`` with edge vectors ``edge_vec`` (package convention)."""
        types = self._types(graph)
        if self.config.host == "NequIP":
            data = {"pos": graph.pos, "edge_index": torch.stack([graph.edge_dst, graph.edge_src]),
                    "edge_vectors": edge_vec, "atom_types": types, "batch": graph.batch,
                    "num_atoms": torch.bincount(graph.batch, minlength=graph.num_graphs)}
            return self.host.model.func(data)["total_energy"].reshape(-1)
        pos = graph.pos if graph.pos.requires_grad else graph.pos.detach().clone()
        shifts = -edge_vec - (pos[graph.edge_dst] - pos[graph.edge_src])  # MACE: pos[dst] - pos[src] + shifts
        counts = torch.bincount(graph.batch, minlength=graph.num_graphs)
        ptr = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        node_attrs = torch.nn.functional.one_hot(types, len(self.config.species)).to(edge_vec.dtype)
        data = {"positions": pos, "node_attrs": node_attrs, "edge_index": torch.stack([graph.edge_src, graph.edge_dst]),
                "shifts": shifts, "unit_shifts": torch.zeros_like(shifts), "cell": graph.cell.to(edge_vec.dtype),
                "batch": graph.batch, "ptr": ptr}
        return self.host(data, training=self.training, compute_force=False)["energy"].reshape(-1)

    def forward(self, graph: AtomicGraph, compute_forces: bool = False, compute_stress: bool = False,
                compute_virial: bool = False) -> Dict[str, torch.Tensor]:
        """``"energy"`` ``[B]`` (eV), and on request ``"forces"``, ``"stress"``, ``"virial"`` (see the module notes)."""
        shifts = torch.zeros(graph.num_graphs, dtype=self.scale.dtype, device=self.scale.device)
        shifts = shifts.index_add(0, graph.batch, self.atomic_energies[self._types(graph)])

        def energy_of_edges(edge_vec):
            return self.scale * self.host_energy(graph, edge_vec) + shifts

        return energy_forces_stress(energy_of_edges, graph, compute_forces=compute_forces,
                                    compute_stress=compute_stress, compute_virial=compute_virial,
                                    create_graph=self.training)


def host_model_section(kind: str, section: Mapping, *, where: str = "config section 'model'") -> dict:
    """Check a training config's model section for a host ``kind`` and complete it.

    The section holds ``kind``, ``config`` (NequIP: the model config, ``_target_`` defaulting to
    ``nequip.model.NequIPGNNModel``; MACE: the keyword arguments of ``model_class``), optional
    ``model_class`` (MACE), ``irreps_relaxed`` (default 2), ``relax_at`` (default ``"both"``) and the
    fitted values ``atomic_energies`` / ``scale``. The returned dict adds ``species``, ``cutoff`` and
    ``output = "energy"`` (what the data preparation reads).
    """
    if kind not in HOST_KINDS:
        raise ValueError(f"{where}: kind must be one of {list(HOST_KINDS)}, got {kind!r}")
    unknown = sorted(set(section) - set(_SECTION_KEYS))
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown} for model.kind {kind!r}; known keys are {list(_SECTION_KEYS)}")
    config = section.get("config")
    if not isinstance(config, Mapping):
        raise ValueError(f"{where}: model.config must be the {kind} model's config (a dict) for model.kind {kind!r}, "
                         f"got {type(config).__name__}")
    config = dict(config)
    if kind == "NequIP":
        config.setdefault("_target_", _NEQUIP_TARGET)
        recipe = {"host": kind, "config": config}
    else:
        recipe = {"host": kind, "config": {"kwargs": config}}
    try:
        species, cutoff = _species_and_cutoff(recipe)
    except (KeyError, TypeError) as err:
        raise ValueError(f"{where}: model.config lacks what model.kind {kind!r} needs: {err!r}") from err
    return {**dict(section), "kind": kind, "config": config, "species": species, "cutoff": cutoff,
            "output": "energy", "relaxed": True}


def build_host_potential(section: Mapping, dtype: torch.dtype) -> HostPotential:
    """The :class:`HostPotential` of a section completed by :func:`host_model_section`, built in ``dtype``."""
    options = {"irreps_relaxed": section.get("irreps_relaxed", 2), "relax_at": section.get("relax_at", "both")}
    if section["kind"] == "NequIP":
        host = relaxed_nequip_model({**section["config"], "model_dtype": dtype_name(dtype)}, **options)
    else:
        host = relaxed_mace_model(section["config"], model_class=section.get("model_class", "mace.modules.MACE"),
                                  dtype=dtype, **options)
    model = HostPotential(host)
    if section.get("atomic_energies") is not None:
        model.set_atomic_energies(section["atomic_energies"])
    if section.get("scale") is not None:
        model.set_scale(section["scale"])
    return model
