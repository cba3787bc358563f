r"""Loss terms and error metrics shared by training and evaluation.

Every target contributes sums that add up over batches and over data-parallel ranks:
``sq`` (sum of squared errors), ``abs`` (sum of absolute errors) and ``count`` (number of
error components). The loss of a set :math:`S` of structures is

.. math::
    \mathcal L = \sum_t w_t \, \frac{\sum_{c \in S} (\hat y_c - y_c)^2}{n_t(S)}

with :math:`n_t(S)` the number of components of target :math:`t` in :math:`S`. The energy
term uses the per-atom energy error :math:`(\hat E - E)/N_{\text{atoms}}` (one component per
structure), forces one component per atom and Cartesian direction, stress nine per periodic
structure, a node target ``d`` per atom and a graph target ``d`` per structure. Because
:math:`n_t` is the count over the *global* batch, per-rank losses sum exactly to the
single-process loss.
"""
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import torch

__all__ = ["TargetSpec", "target_sums", "loss_from_sums", "metrics_from_sums"]


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
                counts[name] = 9 * int(graph.pbc.any(dim=1).sum())
            elif self.output == "node":
                counts[name] = self.widths[name] * graph.num_nodes
            else:
                counts[name] = self.widths[name] * graph.num_graphs
        return counts


def target_sums(spec: TargetSpec, output: Dict[str, torch.Tensor], graph) -> Dict[str, Dict[str, torch.Tensor]]:
    """Sums of squared (differentiable) and absolute errors of every target for one batch."""
    sums = {}

    def add(name, error):
        sums[name] = {"sq": error.pow(2).sum(), "abs": error.detach().abs().sum()}
        if name == "energy":
            sums["energy_total"] = {"sq": (error.detach() * n_atoms).pow(2).sum(),
                                    "abs": (error.detach() * n_atoms).abs().sum()}

    if spec.output == "energy":
        n_atoms = torch.bincount(graph.batch, minlength=graph.num_graphs).to(output["energy"].dtype)
        for name in spec.names:
            if name == "energy":
                add(name, (output["energy"] - graph.graph_targets["energy"].reshape(-1)) / n_atoms)
            elif name == "forces":
                add(name, output["forces"] - graph.node_targets["forces"])
            elif name == "stress":
                periodic = graph.pbc.any(dim=1)
                add(name, (output["stress"] - graph.graph_targets["stress"])[periodic])
    else:
        key = "node_output" if spec.output == "node" else "graph_output"
        prediction = output[key]
        rows = prediction.shape[0]
        start = 0
        for name in spec.names:
            width = spec.widths[name]
            source = graph.node_targets if spec.output == "node" else graph.graph_targets
            target = source[name].reshape(rows, -1).to(prediction.dtype)
            add(name, prediction[:, start:start + width] - target)
            start += width
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
