"""Data preparation for training: read the sources, build graphs, choose the targets, split, shuffle.

Structures of one orbit (the same ``info["orbit_id"]``: a sample and its symmetry images) are
never separated: the split (:func:`make_split`) and the mini-batches (:func:`epoch_batches`) keep
them whole (:func:`relaxed_e3nn.data.orbit_split`, :func:`relaxed_e3nn.data.orbit_batches`).
Without orbit ids both are exactly the plain random split and shuffle.
"""
import warnings
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import torch
from e3nn import o3

from relaxed_e3nn.data import from_ase, orbit_batches, orbit_ids_of, orbit_split, symmetrize
from relaxed_e3nn.train._config import DataConfig, TrainConfig
from relaxed_e3nn.train._sources import read_atoms
from relaxed_e3nn.train._symmetry import group_from_config
from relaxed_e3nn.train._targets import TargetSpec, select_targets

__all__ = ["Sets", "load_sets", "training_targets", "make_split", "apply_split", "epoch_permutation",
           "epoch_batches", "train_orbit_ids", "average_num_neighbors", "MIN_NEIGHBORS", "MIN_VALIDATION"]

_SET_NAMES = ("train", "val", "test")
#: below this average number of neighbors per atom the graphs are "very sparse" (a warning)
MIN_NEIGHBORS = 1.0
#: validation sets smaller than this give a warning (early stopping and the best epoch are noise)
MIN_VALIDATION = 10


@dataclass
class Sets:
    """Graphs of each data source (``train``, ``val``, ``test``), a name and the ase structure of each."""

    graphs: Dict[str, list]
    origins: Dict[str, List[str]]
    atoms: Optional[Dict[str, list]] = None

    def every(self):
        """``(graphs, origins)`` of all sources together."""
        graphs = [g for name in _SET_NAMES for g in self.graphs[name]]
        origins = [o for name in _SET_NAMES for o in self.origins[name]]
        return graphs, origins


def epoch_permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    """Order of the training structures in ``epoch``: a function of ``(seed, epoch)`` only."""
    generator = torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2**63))
    return torch.randperm(n, generator=generator)


def epoch_batches(orbit_ids: Sequence, batch_size: int, seed: int, epoch: int) -> List[List[int]]:
    """Mini-batches of ``epoch`` (indices into the training set): whole orbits, about ``batch_size``
    structures each (rounded to whole orbits); without orbit ids, :func:`epoch_permutation` cut
    into chunks of ``batch_size``."""
    return orbit_batches(orbit_ids, batch_size, seed=seed, epoch=epoch)


def load_sets(cfg: TrainConfig, model_dict: Dict[str, Any], dtype: torch.dtype) -> Sets:
    """Read every source of ``cfg.data`` and build its graphs with the model's cutoff and features.

    Completes ``model_dict`` in place: ``species`` (the data's, when not given), ``cutoff``
    (5 Å by default) and ``num_neighbors`` (the training data's average number of neighbors
    per atom within the cutoff, :func:`average_num_neighbors`, when not given). Raises
    ``ValueError`` naming the source and structure for unreadable or empty sources, species
    outside ``model.species`` and targets the model output cannot fit.
    """
    d = cfg.data
    raw = {}
    for name in _SET_NAMES:
        source = getattr(d, name)
        raw[name] = [] if source is None else read_atoms(source, format=d.format, index=d.index,
                                                          where=f"data.{name}")
        if source is not None and not raw[name]:
            raise ValueError(f"data.{name}: the source holds no structures")
    group = group_from_config(d.symmetrize, "data.symmetrize")
    if group is not None and raw["train"]:
        images = symmetrize([atoms for atoms, _ in raw["train"]], group)
        order = len(images) // len(raw["train"])
        raw["train"] = [(atoms, f"{raw['train'][k // order][1]} image {k % order}") for k, atoms in enumerate(images)]
    present = sorted({int(z) for items in raw.values() for atoms, _ in items for z in atoms.numbers})
    if model_dict.get("species") is None:
        model_dict["species"] = present
    unknown = sorted(set(present) - set(model_dict["species"]))
    if unknown:
        raise ValueError(f"data: species {unknown} occur in the data but not in model.species "
                         f"{model_dict['species']}")
    model_dict.setdefault("cutoff", 5.0)
    _check_output_targets(model_dict.get("output", "energy"), d)
    features = list((model_dict.get("node_features") or {}).keys())
    graphs, origins = {}, {}
    for name, items in raw.items():
        graphs[name] = []
        for atoms, origin in items:
            try:
                graph = from_ase(atoms, float(model_dict["cutoff"]), node_features=features,
                                 node_targets=d.node_targets, graph_targets=d.graph_targets,
                                 energy_key=d.energy_key, forces_key=d.forces_key, stress_key=d.stress_key,
                                 dtype=dtype)
            except (ValueError, TypeError) as err:
                raise ValueError(f"data.{name}: {origin}: {err}") from None
            graphs[name].append(graph)
        origins[name] = [origin for _, origin in items]
    average = average_num_neighbors(graphs["train"], origins["train"], float(model_dict["cutoff"]))
    if model_dict.get("num_neighbors") is None:
        model_dict["num_neighbors"] = max(average, MIN_NEIGHBORS)  # stored in the model's config
    return Sets(graphs, origins, {name: [atoms for atoms, _ in items] for name, items in raw.items()})


def average_num_neighbors(graphs: Sequence, origins: Sequence[str], cutoff: float) -> float:
    r"""Average number of neighbors per atom, :math:`\sum_b E_b / \sum_b N_b`, with warnings.

    The value ``model.num_neighbors`` defaults to (messages are divided by its square root). A
    ``UserWarning`` names the structures without a single edge and says when the average is
    below :data:`MIN_NEIGHBORS`: with a cutoff shorter than the nearest-neighbor distance the
    network sees isolated atoms and can fit nothing but per-species constants.
    """
    if not graphs:
        return 0.0
    edges = [g.num_edges for g in graphs]
    average = sum(edges) / max(sum(g.num_nodes for g in graphs), 1)
    empty = [origins[k] for k, e in enumerate(edges) if e == 0]
    if empty:
        warnings.warn(f"data.train: {len(empty)} of {len(graphs)} structures have no edge within the cutoff "
                      f"{cutoff:g} Å (e.g. {empty[:3]}); the model sees isolated atoms there. Is model.cutoff "
                      f"too short?", UserWarning, stacklevel=2)
    if average < MIN_NEIGHBORS:
        warnings.warn(f"data.train: {average:.3g} neighbors per atom on average within the cutoff {cutoff:g} Å "
                      f"(fewer than {MIN_NEIGHBORS:g}): the graphs are nearly empty", UserWarning, stacklevel=2)
    return float(average)


def _check_output_targets(output: str, d: DataConfig) -> None:
    if output == "energy" and (d.node_targets or d.graph_targets):
        raise ValueError("data.node_targets / data.graph_targets need model.output 'node' / 'graph'; "
                         "an energy model fits energy, forces and stress")
    if output == "node" and (not d.node_targets or d.graph_targets):
        raise ValueError("model.output 'node' needs data.node_targets (and no data.graph_targets)")
    if output == "graph" and (not d.graph_targets or d.node_targets):
        raise ValueError("model.output 'graph' needs data.graph_targets (and no data.node_targets)")


def training_targets(cfg: TrainConfig, model_dict: Dict[str, Any], sets: Sets) -> TargetSpec:
    """The targets of a run (:func:`~relaxed_e3nn.train._targets.select_targets` with the config's
    loss weights); every set is pruned to them in place."""
    d = cfg.data
    graphs, origins = sets.every()
    irreps_out = model_dict.get("irreps_out")
    spec = select_targets(model_dict.get("output", "energy"), graphs,
                          loss_weights={name: cfg.loss_weight(name) for name in cfg.loss},
                          node_targets=d.node_targets, graph_targets=d.graph_targets, require_weighted=True,
                          origins=origins, output_dim=o3.Irreps(irreps_out).dim if irreps_out else None,
                          keys={"energy": d.energy_key, "forces": d.forces_key, "stress": d.stress_key})
    for name in _SET_NAMES:
        sets.graphs[name] = spec.prune(sets.graphs[name])
    return spec


def make_split(n: int, d: DataConfig, seed: int, *, orbit_ids: Optional[Sequence] = None,
               selection_fraction: float = 0.0) -> Dict[str, Any]:
    """Indices of ``data.train`` held out for validation, testing and the symmetry decision.

    The parts are drawn in that order from one seeded permutation of the orbits (whole orbits,
    :func:`relaxed_e3nn.data.orbit_split`; single structures without ``orbit_ids``); ``val`` /
    ``test`` are empty when given as files. A ``selection`` entry (``selection_fraction`` of the
    structures, see :mod:`relaxed_e3nn.train._symmetry`) is present only when asked for.
    """
    if n == 0:
        raise ValueError("data.train holds no structures")
    ids = list(orbit_ids) if orbit_ids is not None else [None] * n
    fractions = [0.0 if d.val is not None else d.val_fraction, 0.0 if d.test is not None else d.test_fraction,
                 selection_fraction]
    try:
        val, test, selection, train = orbit_split(ids, fractions, seed=seed)
    except ValueError:
        train = []
    if not train:
        wanted = [max(1, int(round(f * n))) if f > 0 else 0 for f in fractions]
        raise ValueError(f"data: {n} structures are too few to hold out {wanted[0]} for validation, "
                         f"{wanted[1]} for testing" + (f" and {wanted[2]} for the symmetry decision"
                                                       if selection_fraction > 0 else ""))
    split = {"n": n, "val": val, "test": test, "train": train}
    if selection_fraction > 0:
        split["selection"] = selection
    return split


def apply_split(sets: Sets, split: Dict[str, Any], d: DataConfig):
    """``(train, val, test)`` graph lists of a split (given ``val`` / ``test`` sources win)."""
    source = sets.graphs["train"]
    if split["n"] != len(source):
        raise ValueError(f"--resume: data.train now holds {len(source)} structures, the checkpoint's "
                         f"split was made for {split['n']}")

    def pick(indices):
        return [source[i] for i in indices]

    val = sets.graphs["val"] if d.val is not None else pick(split["val"])
    test = sets.graphs["test"] if d.test is not None else pick(split["test"])
    return pick(split["train"]), val, test


def train_orbit_ids(sets: Sets, indices: Sequence[int]) -> List[Any]:
    """``info["orbit_id"]`` (or ``None``) of the ``data.train`` structures at ``indices``."""
    ids = orbit_ids_of(sets.atoms["train"]) if sets.atoms else [None] * len(sets.graphs["train"])
    return [ids[i] for i in indices]
