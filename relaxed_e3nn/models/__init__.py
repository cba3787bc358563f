"""Ready networks built from :mod:`relaxed_e3nn.nn`, and the model file format.

- :class:`RelaxedNetworkConfig` — every architectural choice, as a plain dataclass.
- :class:`RelaxedNetwork` — relaxed (or strict twin) message passing on an ``AtomicGraph``:
  energy + forces + stress, per-atom irreps, or per-graph irreps.
- :class:`HostPotential` — a relaxed NequIP / MACE model with the same energy interface.
- :func:`energy_forces_stress` — forces and stress of any energy model by autograd.
- :func:`save` / :func:`load` (also ``relaxed_e3nn.save`` / ``relaxed_e3nn.load``) and the
  payload functions :func:`model_to_dict` / :func:`model_from_dict` that training checkpoints wrap;
  optional file entries (``METADATA_KEYS``) travel as ``model.metadata``; :func:`load_graph_model`
  loads only the models that evaluate an ``AtomicGraph`` (``GRAPH_MODELS``: RelaxedNetwork, HostPotential).
"""
from relaxed_e3nn.models._config import RelaxedNetworkConfig
from relaxed_e3nn.models._host import HostPotential, HostPotentialConfig, build_host_potential, host_model_section
from relaxed_e3nn.models._io import (
    FORMAT_VERSION,
    GRAPH_MODELS,
    METADATA_KEYS,
    canonical_model_kind,
    load,
    load_graph_model,
    model_from_dict,
    model_to_dict,
    save,
    state_checksum,
)
from relaxed_e3nn.models._network import RelaxedNetwork
from relaxed_e3nn.models._outputs import energy_forces_stress, stress_from_virial, surface_stress_from_virial

__all__ = [
    "RelaxedNetworkConfig",
    "RelaxedNetwork",
    "HostPotential",
    "HostPotentialConfig",
    "host_model_section",
    "build_host_potential",
    "canonical_model_kind",
    "save",
    "load",
    "load_graph_model",
    "model_to_dict",
    "model_from_dict",
    "state_checksum",
    "energy_forces_stress",
    "stress_from_virial",
    "surface_stress_from_virial",
    "FORMAT_VERSION",
    "METADATA_KEYS",
    "GRAPH_MODELS",
]
