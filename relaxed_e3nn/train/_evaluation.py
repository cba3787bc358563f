"""Errors of a model on labelled structures, sharded over data-parallel ranks."""
from typing import Dict, Optional, Sequence

import torch

from relaxed_e3nn.data import collate
from relaxed_e3nn.train._distributed import DistributedContext
from relaxed_e3nn.train._inference import model_device
from relaxed_e3nn.train._targets import TargetSpec, metrics_from_sums, select_targets, sum_counts, target_sums

__all__ = ["evaluate", "evaluate_sharded", "metrics_by_config_type"]


def evaluate(model: torch.nn.Module, graphs: Sequence, *, batch_size: int = 16,
             loss_weights: Optional[Dict[str, float]] = None,
             node_targets: Sequence[str] = (), graph_targets: Sequence[str] = ()) -> Dict[str, float]:
    """Errors of ``model`` on labelled structures: MAE and RMSE per target and the weighted loss.

    The targets are chosen by :func:`~relaxed_e3nn.train._targets.select_targets`, the rule the
    trainer uses for its validation and test metrics.

    Parameters
    ----------
    model : RelaxedNetwork
        Its ``config.output`` decides the targets: ``energy`` compares energies (per atom,
        ``energy_mae``; per structure, ``energy_total_mae``), forces and (periodic) stress,
        whichever every structure carries; ``node``/``graph`` compares ``node_targets`` /
        ``graph_targets``, concatenated in order.
    graphs : sequence of AtomicGraph
    batch_size : int
    loss_weights : dict, optional
        Weights of the ``loss`` entry (defaults as in :class:`~relaxed_e3nn.train.TrainConfig`).
    node_targets, graph_targets : sequence of str
        Targets of a node / graph model.
    """
    if len(graphs) == 0:
        raise ValueError("evaluate: graphs is empty")
    if batch_size < 1:
        raise ValueError(f"evaluate: batch_size must be >= 1, got {batch_size}")
    output = getattr(getattr(model, "config", None), "output", "energy")
    spec = select_targets(output, graphs, loss_weights=loss_weights, node_targets=node_targets,
                          graph_targets=graph_targets, where="evaluate")
    return evaluate_sharded(model, spec.prune(graphs), spec, batch_size, DistributedContext(device=model_device(model)))


def evaluate_sharded(model, graphs: Sequence, spec: TargetSpec, batch_size: int,
                     ctx: DistributedContext) -> Dict[str, float]:
    """Metrics of ``model`` on ``graphs``: each rank evaluates ``graphs[rank::world_size]``; sums are reduced."""
    was_training = model.training
    model.eval()
    names = list(spec.names) + (["energy_total"] if "energy" in spec.names else [])
    totals = torch.zeros(len(names), 2, dtype=torch.float64, device=ctx.device)
    mine = list(range(len(graphs)))[ctx.rank::ctx.world_size]
    try:
        for start in range(0, len(mine), batch_size):
            batch = collate([graphs[i] for i in mine[start:start + batch_size]]).to(device=ctx.device)
            with torch.enable_grad() if spec.compute_forces or spec.compute_stress else torch.no_grad():
                output = model(batch, compute_forces=spec.compute_forces, compute_stress=spec.compute_stress)
            sums = target_sums(spec, {k: v.detach() for k, v in output.items()}, batch)
            for row, name in enumerate(names):
                totals[row, 0] += sums[name]["sq"].detach().to(torch.float64)
                totals[row, 1] += sums[name]["abs"].detach().to(torch.float64)
    finally:
        model.train(was_training)
    ctx.all_reduce_(totals)
    counts = sum_counts(spec, graphs)
    as_dict = {name: {"sq": float(totals[row, 0]), "abs": float(totals[row, 1])} for row, name in enumerate(names)}
    return metrics_from_sums(spec, as_dict, counts)


def metrics_by_config_type(model, graphs: Sequence, types: Sequence, spec: TargetSpec, batch_size: int,
                           ctx: DistributedContext) -> Dict[str, Dict[str, float]]:
    """:func:`evaluate_sharded` of each group of ``graphs`` with the same ``types`` entry (MACE's table).

    ``types[k]`` is ``info["config_type"]`` of ``graphs[k]`` (``None`` is grouped as ``"-"``);
    each value also carries ``count``, the number of structures of that type.
    """
    groups: Dict[str, list] = {}
    for graph, kind in zip(graphs, types):
        groups.setdefault("-" if kind is None else str(kind), []).append(graph)
    table = {}
    for kind in sorted(groups):
        table[kind] = {"count": len(groups[kind]),
                       **evaluate_sharded(model, groups[kind], spec, batch_size, ctx)}
    return table
