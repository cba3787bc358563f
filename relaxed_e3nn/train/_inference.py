"""Running a trained model on structures: graphs for a model, predictions back onto ``ase.Atoms``."""
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

from relaxed_e3nn._checks import model_dtype
from relaxed_e3nn.data import collate, from_ase

__all__ = ["graphs_for_model", "predict", "model_device", "stored_data_keys"]


def model_device(model) -> torch.device:
    """The device of a module's first parameter (the CPU for a module without parameters)."""
    for tensor in model.parameters():
        return tensor.device
    return torch.device("cpu")


def stored_data_keys(model) -> Dict[str, Any]:
    """The data keys a model was trained with (``model.metadata["data_keys"]``, written by
    :func:`~relaxed_e3nn.train.train`): ``energy``, ``forces``, ``stress`` (``None``: the
    calculator's values), ``node_targets`` and ``graph_targets``; empty for other models."""
    stored = (getattr(model, "metadata", None) or {}).get("data_keys") or {}
    return dict(stored) if isinstance(stored, dict) else {}


def graphs_for_model(model, atoms_list: Sequence, *, origins: Optional[Sequence[str]] = None,
                     node_targets: Sequence[str] = (), graph_targets: Sequence[str] = (),
                     energy_key: Optional[str] = None, forces_key: Optional[str] = None,
                     stress_key: Optional[str] = None, with_targets: bool = True) -> List:
    """Graphs of ``atoms_list`` built with the model's cutoff, dtype and node features.

    Keys and target names not given default to those the model was trained with
    (:func:`stored_data_keys`), so data labelled like the training data needs no options.
    Raises ``ValueError`` naming the structure when it holds a species the model was not
    trained on, or lacks a node feature or a requested target.
    """
    if len(atoms_list) == 0:
        raise ValueError("no structures to run the model on (the data is empty)")
    stored = stored_data_keys(model)
    energy_key = energy_key if energy_key is not None else stored.get("energy")
    forces_key = forces_key if forces_key is not None else stored.get("forces")
    stress_key = stress_key if stress_key is not None else stored.get("stress")
    node_targets = list(node_targets) or list(stored.get("node_targets") or [])
    graph_targets = list(graph_targets) or list(stored.get("graph_targets") or [])
    config = model.config
    species = set(config.species)
    features = list(config.node_features)
    dtype = model_dtype(model)
    origins = list(origins) if origins is not None else [f"structure {k}" for k in range(len(atoms_list))]
    graphs = []
    for atoms, origin in zip(atoms_list, origins):
        unknown = sorted({int(z) for z in atoms.numbers} - species)
        if unknown:
            raise ValueError(f"{origin}: atomic numbers {unknown} are not among the species the model was "
                             f"trained on {sorted(species)}")
        try:
            if with_targets:
                graph = from_ase(atoms, config.cutoff, node_features=features, node_targets=node_targets,
                                 graph_targets=graph_targets, energy_key=energy_key, forces_key=forces_key,
                                 stress_key=stress_key, dtype=dtype)
            else:
                bare = atoms.copy()
                bare.calc = None
                graph = from_ase(bare, config.cutoff, node_features=features, dtype=dtype)
        except (ValueError, TypeError) as err:
            raise ValueError(f"{origin}: {err}") from None
        graphs.append(graph)
    return graphs


def predict(model, atoms_list: Sequence, *, batch_size: int = 16, compute_forces: bool = True,
            compute_stress: bool = False) -> List:
    """Copies of ``atoms_list`` carrying the model's predictions.

    An energy model attaches a ``SinglePointCalculator`` with ``energy`` and ``forces`` (and
    ``stress`` for structures periodic in all three directions when ``compute_stress``), which ase's extxyz writer
    stores as the usual ``energy=`` / ``forces`` fields. A node model stores
    ``arrays["node_output"]`` (``[N, d]``), a graph model ``info["graph_output"]``.
    """
    if batch_size < 1:
        raise ValueError(f"predict: batch_size must be >= 1, got {batch_size}")
    graphs = graphs_for_model(model, atoms_list, with_targets=False)
    output_kind = model.config.output
    forces = compute_forces and output_kind == "energy"
    stress = compute_stress and output_kind == "energy"
    device = model_device(model)
    was_training = model.training
    model.eval()
    results = []
    try:
        for start in range(0, len(graphs), batch_size):
            chunk = graphs[start:start + batch_size]
            batch = collate(chunk).to(device=device)
            with torch.enable_grad() if (forces or stress) else torch.no_grad():
                out = model(batch, compute_forces=forces, compute_stress=stress)
            out = {k: v.detach().cpu().double().numpy() for k, v in out.items()}
            node_offsets = np.cumsum([0] + [g.num_nodes for g in chunk])
            for k, atoms in enumerate(atoms_list[start:start + batch_size]):
                a, b = node_offsets[k], node_offsets[k + 1]
                copy = atoms.copy()
                copy.calc = None
                if output_kind == "energy":
                    values = {"energy": float(out["energy"][k])}
                    if forces:
                        values["forces"] = out["forces"][a:b]
                    if stress and bool(np.all(atoms.pbc)):  # bulk only: a slab's volume holds vacuum
                        values["stress"] = full_3x3_to_voigt_6_stress(out["stress"][k])
                    copy.calc = SinglePointCalculator(copy, **values)
                elif output_kind == "node":
                    copy.arrays["node_output"] = out["node_output"][a:b]
                else:
                    copy.info["graph_output"] = out["graph_output"][k]
                results.append(copy)
    finally:
        model.train(was_training)
    return results
