r"""Loss terms and error metrics shared by training and evaluation.

Every target contributes sums that add up over batches and over data-parallel ranks:
``sq`` (sum of squared errors), ``abs`` (sum of absolute errors) and ``count`` (number of
error components). The loss of a set :math:`S` of structures is

.. math::
    \mathcal L = \sum_t w_t \, \frac{\sum_{c \in S} (\hat y_c - y_c)^2}{n_t(S)}

with :math:`n_t(S)` the number of components of target :math:`t` in :math:`S`. The energy
term uses the per-atom energy error :math:`(\hat E - E)/N_{\text{atoms}}` (one component per
structure), forces one component per atom and Cartesian direction, stress nine per bulk
structure (periodic in all three directions; a slab has no volume stress), a node target
``d`` per atom and a graph target ``d`` per structure. Because :math:`n_t` is the count over
the *global* batch, per-rank losses sum exactly to the single-process loss.
"""
import dataclasses
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

import torch

__all__ = ["TargetSpec", "select_targets", "target_sums", "loss_from_sums", "structure_losses", "metrics_from_sums",
           "sum_counts", "ENERGY_TARGETS", "DEFAULT_LOSS_WEIGHTS"]

#: the targets of an energy model, and where a graph holds them
ENERGY_TARGETS = {"energy": "graph_targets", "forces": "node_targets", "stress": "graph_targets"}
#: loss weights of the energy model's terms when none is given (other targets: 1)
DEFAULT_LOSS_WEIGHTS = {"energy": 1.0, "forces": 10.0, "stress": 0.0}


@dataclass
class TargetSpec:
    """Which targets a model is fitted to and how.

    Attributes
    ----------
    output : {"energy", "node", "graph"}
        The model's output kind.
    names : list of str
        Targets compared with the model output (``energy``, ``forces``, ``stress`` for an
        energy model; the node or graph target names otherwise).
    weights : dict of str to float
        Loss weight of each name (0 = reported but not fitted).
    widths : dict of str to int
        Components per atom (node targets) or per structure (graph targets).
    """

    output: str
    names: List[str]
    weights: Dict[str, float]
    widths: Dict[str, int] = field(default_factory=dict)

    def fitted(self) -> "TargetSpec":
        """The same spec restricted to the targets with a positive loss weight (what a training step needs)."""
        names = [n for n in self.names if self.weights.get(n, 0.0) > 0]
        return dataclasses.replace(self, names=names, weights={n: self.weights[n] for n in names},
                                   widths={n: w for n, w in self.widths.items() if n in names})

    def prune(self, graphs: Sequence) -> list:
        """Shallow copies of ``graphs`` holding only the targets of this spec."""
        names = set(self.names)
        return [dataclasses.replace(g, node_targets={k: v for k, v in g.node_targets.items() if k in names},
                                    graph_targets={k: v for k, v in g.graph_targets.items() if k in names})
                for g in graphs]

    @property
    def compute_forces(self) -> bool:
        return self.output == "energy" and "forces" in self.names

    @property
    def compute_stress(self) -> bool:
        return self.output == "energy" and "stress" in self.names

    def count(self, graph) -> Dict[str, int]:
        """Number of error components of each target in ``graph`` (one structure or a batch)."""
        counts = {}
        for name in self.names:
            if name == "energy":
                counts[name] = graph.num_graphs
            elif name == "forces":
                counts[name] = 3 * graph.num_nodes
            elif name == "stress":
                counts[name] = 9 * int(graph.pbc.all(dim=1).sum())  # bulk only: see models._outputs
            elif self.output == "node":
                counts[name] = self.widths[name] * graph.num_nodes
            else:
                counts[name] = self.widths[name] * graph.num_graphs
        return counts


def select_targets(output: str, graphs: Sequence, *, loss_weights: Optional[Mapping[str, float]] = None,
                   node_targets: Sequence[str] = (), graph_targets: Sequence[str] = (),
                   require_weighted: bool = False, origins: Optional[Sequence[str]] = None,
                   keys: Optional[Mapping[str, Optional[str]]] = None, output_dim: Optional[int] = None,
                   where: str = "data") -> TargetSpec:
    """The targets a model of kind ``output`` is compared with on ``graphs`` (training and evaluation alike).

    The rule: an energy model compares ``energy``, ``forces`` and ``stress`` (stress on
    structures periodic in all three directions only) wherever every structure they apply to
    carries them; a node / graph model compares ``node_targets`` / ``graph_targets``, in order,
    each with the same number of components in every structure. Loss weights default to :data:`DEFAULT_LOSS_WEIGHTS` (1 for
    other targets); a target of weight 0 is reported, not fitted.

    Parameters
    ----------
    output : {"energy", "node", "graph"}
    graphs : sequence of AtomicGraph
    loss_weights : mapping, optional
    node_targets, graph_targets : sequence of str
    require_weighted : bool
        Training: a target with a positive weight must be carried by every structure it applies
        to (else ``ValueError`` naming the structures), and some weight must be positive.
    origins : sequence of str, optional
        Names of the structures for error messages.
    keys : mapping, optional
        ``{"energy": energy_key, ...}`` as configured, named in error messages.
    output_dim : int, optional
        The model's output width; the node / graph targets must add up to it.
    where : str
        Prefix of error messages.
    """
    weights = {**DEFAULT_LOSS_WEIGHTS, **(loss_weights or {})}
    origins = list(origins) if origins is not None else [f"structure {k}" for k in range(len(graphs))]
    if output == "energy":
        names = _energy_targets(graphs, weights, require_weighted, origins, keys or {}, where)
        widths: Dict[str, int] = {}
    else:
        names = list(node_targets if output == "node" else graph_targets)
        if not names:
            raise ValueError(f"{where}: a model with output {output!r} needs "
                             f"{'node_targets' if output == 'node' else 'graph_targets'}")
        widths = _target_widths(output, names, graphs, origins, where)
        if output_dim is not None and output_dim != sum(widths.values()):
            raise ValueError(f"model.irreps_out has dimension {output_dim} but the targets {names} have "
                             f"{sum(widths.values())} components together ({widths})")
        if require_weighted and not any(weights.get(n, 1.0) > 0 for n in names):
            raise ValueError(f"loss: every loss weight of the targets {names} is zero")
    return TargetSpec(output=output, names=names, weights={n: float(weights.get(n, 1.0)) for n in names},
                      widths=widths)


def _energy_targets(graphs, weights, require_weighted, origins, keys, where) -> List[str]:
    names = []
    for name, holder in ENERGY_TARGETS.items():
        relevant = [k for k, g in enumerate(graphs) if name != "stress" or bool(g.pbc.all())]
        missing = [origins[k] for k in relevant if name not in getattr(graphs[k], holder)]
        if require_weighted and weights[name] > 0:
            if not relevant:
                raise ValueError(f"loss.{name} > 0 but no structure is periodic in all three directions (a slab's "
                                 f"stress is not defined per volume); set loss.stress: 0")
            if missing:
                key = keys.get(name)
                raise ValueError(
                    f"{where}: {len(missing)} structures have no {name} (e.g. {missing[:3]}); "
                    + (f"data.{name}_key is {key!r}" if key else
                       f"set data.{name}_key to the name it is stored under, or loss.{name}: 0"))
        if relevant and not missing:
            names.append(name)
    if not names:
        raise ValueError(f"{where}: the structures carry no energies, forces or stresses to compare with")
    if require_weighted and not any(weights[n] > 0 for n in names):
        raise ValueError("loss: every loss weight of the energy model is zero")
    return names


def _target_widths(output, names, graphs, origins, where) -> Dict[str, int]:
    widths: Dict[str, int] = {}
    for name in names:
        for graph, origin in zip(graphs, origins):
            source = graph.node_targets if output == "node" else graph.graph_targets
            if name not in source:
                raise ValueError(f"{where}: target {name!r} is missing from the structures (e.g. {origin})")
            rows = graph.num_nodes if output == "node" else 1
            width = source[name].numel() // max(rows, 1)
            if widths.setdefault(name, width) != width:
                raise ValueError(f"{where}: target {name!r} has {width} components in {origin} but "
                                 f"{widths[name]} elsewhere")
    return widths


def _target_errors(spec: TargetSpec, output: Dict[str, torch.Tensor], graph):
    """``(name, error, owner)`` per target: the error rows and the structure each row belongs to.

    Energy rows are per-atom energy errors (one per structure), force and node-target rows one per
    atom, stress rows one per bulk (fully periodic) structure, graph-target rows one per structure.
    """
    rows = []
    if spec.output == "energy":
        n_atoms = torch.bincount(graph.batch, minlength=graph.num_graphs).to(output["energy"].dtype)
        structures = torch.arange(graph.num_graphs, device=graph.batch.device)
        for name in spec.names:
            if name == "energy":
                rows.append((name, (output["energy"] - graph.graph_targets["energy"].reshape(-1)) / n_atoms,
                             structures))
            elif name == "forces":
                rows.append((name, output["forces"] - graph.node_targets["forces"], graph.batch))
            elif name == "stress":
                periodic = graph.pbc.all(dim=1)  # slabs have no volume stress (NaN)
                rows.append((name, (output["stress"] - graph.graph_targets["stress"])[periodic], structures[periodic]))
        return rows
    key = "node_output" if spec.output == "node" else "graph_output"
    prediction = output[key]
    owner = graph.batch if spec.output == "node" else torch.arange(graph.num_graphs, device=graph.batch.device)
    start = 0
    for name in spec.names:
        width = spec.widths[name]
        source = graph.node_targets if spec.output == "node" else graph.graph_targets
        target = source[name].reshape(prediction.shape[0], -1).to(prediction.dtype)
        rows.append((name, prediction[:, start:start + width] - target, owner))
        start += width
    return rows


def structure_losses(spec: TargetSpec, output: Dict[str, torch.Tensor], graph) -> torch.Tensor:
    r"""The loss of every structure of a batch on its own, ``[num_graphs]`` (differentiable).

    .. math::
        \mathcal L(s) = \sum_t w_t \, \frac{\sum_{c \in s} (\hat y_c - y_c)^2}{n_t(s)},

    the training loss of the module notes with :math:`S = \{s\}` (a target a structure does not
    carry, e.g. stress of a molecule, contributes nothing to it).
    """
    losses = None
    for name, error, owner in _target_errors(spec, output, graph):
        weight = spec.weights.get(name, 0.0)
        if weight == 0.0:
            continue
        flat = error.reshape(error.shape[0], -1)
        sq = torch.zeros(graph.num_graphs, dtype=flat.dtype, device=flat.device).index_add_(
            0, owner, flat.pow(2).sum(dim=1))
        count = torch.zeros(graph.num_graphs, dtype=flat.dtype, device=flat.device).index_add_(
            0, owner, torch.full_like(flat[:, 0], float(flat.shape[1])))
        term = weight * sq / count.clamp(min=1)
        losses = term if losses is None else losses + term
    if losses is None:
        raise ValueError("structure_losses: every target has loss weight 0")
    return losses


def target_sums(spec: TargetSpec, output: Dict[str, torch.Tensor], graph) -> Dict[str, Dict[str, torch.Tensor]]:
    """Sums of squared (differentiable) and absolute errors of every target for one batch."""
    sums = {}
    for name, error, _ in _target_errors(spec, output, graph):
        sums[name] = {"sq": error.pow(2).sum(), "abs": error.detach().abs().sum()}
        if name == "energy":
            n_atoms = torch.bincount(graph.batch, minlength=graph.num_graphs).to(error.dtype)
            sums["energy_total"] = {"sq": (error.detach() * n_atoms).pow(2).sum(),
                                    "abs": (error.detach() * n_atoms).abs().sum()}
    return sums


def loss_from_sums(spec: TargetSpec, sums, counts: Dict[str, int]) -> torch.Tensor:
    """Weighted loss ``sum_t w_t sq_t / n_t`` with the (global) component counts ``counts``."""
    loss = None
    for name in spec.names:
        weight = spec.weights.get(name, 0.0)
        if weight == 0.0 or counts.get(name, 0) == 0:
            continue
        term = weight * sums[name]["sq"] / counts[name]
        loss = term if loss is None else loss + term
    if loss is None:
        anything = next(iter(sums.values()))["sq"]
        loss = anything * 0.0
    return loss


def metrics_from_sums(spec: TargetSpec, totals: Dict[str, Dict[str, float]], counts: Dict[str, int]) -> Dict[str, float]:
    """MAE and RMSE of every target, and the weighted loss, from accumulated sums.

    ``energy`` errors are per atom (``energy_mae`` in eV/atom); ``energy_total`` the same
    per structure (eV).
    """
    metrics = {"loss": 0.0}
    for name in spec.names:
        n = counts.get(name, 0)
        if n == 0:
            continue
        metrics[f"{name}_mae"] = totals[name]["abs"] / n
        metrics[f"{name}_rmse"] = (totals[name]["sq"] / n) ** 0.5
        metrics["loss"] += spec.weights.get(name, 0.0) * totals[name]["sq"] / n
        if name == "energy":
            metrics["energy_total_mae"] = totals["energy_total"]["abs"] / n
            metrics["energy_total_rmse"] = (totals["energy_total"]["sq"] / n) ** 0.5
    return metrics


def sum_counts(spec: TargetSpec, graphs: Sequence) -> Dict[str, int]:
    """Component counts of a list of structures."""
    total = {name: 0 for name in spec.names}
    for graph in graphs:
        for name, n in spec.count(graph).items():
            total[name] += n
    return total
