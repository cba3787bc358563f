r"""Data statistics of an energy / node / graph model: the output scale and the per-species energy shifts.

The shifts are the one least-squares fit of this package (:func:`fit_atomic_energies` and the
trainer both use :func:`shift_normal_equations` and :func:`solve_shifts`): with the per-atom rows
:math:`A_b = n_{b\cdot}/N_b` (:math:`n_{bZ}` atoms of species :math:`Z` among :math:`N_b`) and the
per-atom residuals :math:`y_b = r_b/N_b` of the energies :math:`E_b` left after the network's own
energy :math:`\varepsilon_b`, :math:`r_b = E_b - \varepsilon_b`, the shifts minimise

.. math::
    \sum_b \Big(\frac{r_b - \sum_Z n_{bZ} E^0_Z}{N_b}\Big)^2 ,

the energy term of the training loss. Normal equations :math:`[A^\top A \mid A^\top y]` add up
over batches and over data-parallel ranks.
"""
import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
import torch
from ase.data import atomic_numbers, chemical_symbols

from relaxed_e3nn.data import collate
from relaxed_e3nn.train._distributed import DistributedContext
from relaxed_e3nn.train._targets import TargetSpec

__all__ = ["fit_atomic_energies", "initialise_output", "refit_atomic_energies", "composition",
           "shift_normal_equations", "solve_shifts", "atomic_energies_from_e0s"]


def composition(batch, species: Sequence[int]) -> torch.Tensor:
    """``[B, S]`` float64 counts :math:`n_{bZ}` of each species in each structure of ``batch``."""
    index = torch.full((max(int(z) for z in species) + 1,), -1, dtype=torch.long)
    index[torch.tensor([int(z) for z in species])] = torch.arange(len(species))
    z = batch.atomic_numbers.detach().cpu().long()
    known = z < len(index)
    column = torch.where(known, index[z.clamp(max=len(index) - 1)], torch.full_like(z, -1))
    if bool((column < 0).any()):
        unknown = sorted({int(a) for a in z[column < 0]})
        raise ValueError(f"species: atomic numbers {unknown} are not among {list(species)}")
    counts = torch.zeros(batch.num_graphs, len(species), dtype=torch.float64)
    counts.index_put_((batch.batch.detach().cpu().long(), column), torch.ones(len(z), dtype=torch.float64),
                      accumulate=True)
    return counts


def shift_normal_equations(counts: torch.Tensor, residual: torch.Tensor, n_atoms: torch.Tensor) -> torch.Tensor:
    r"""Normal equations of the per-atom shift fit, ``[S, S + 1]`` = :math:`[A^\top A \mid A^\top y]`.

    Rows :math:`A_b = n_{b\cdot}/N_b` and :math:`y_b = r_b / N_b` (residual energy per atom).
    """
    counts = counts.detach().cpu().double()
    n_atoms = n_atoms.detach().cpu().double()
    rows = counts / n_atoms[:, None]
    y = residual.detach().cpu().double() / n_atoms
    return torch.cat([rows.T @ rows, (rows.T @ y)[:, None]], dim=1)


def solve_shifts(normal: torch.Tensor) -> List[float]:
    """Minimum-norm solution of the normal equations of :func:`shift_normal_equations`."""
    normal = normal.detach().cpu().double().numpy()
    gram, rhs = normal[:, :-1], normal[:, -1]
    # lstsq on the Gram matrix gives pinv(A^T A) A^T y = pinv(A) y, also when A is rank deficient
    # (every structure with the same stoichiometry)
    solution, *_ = np.linalg.lstsq(gram, rhs, rcond=1e-12)
    return [float(e) for e in solution]


def _accumulated_normal_equations(graphs: Sequence, species: Sequence[int], batch_size: int,
                                  ctx: DistributedContext,
                                  network: Optional[Callable[[object], torch.Tensor]] = None) -> torch.Tensor:
    """Normal equations summed over this rank's share of ``graphs`` and over ranks.

    ``network(batch)`` gives the network's own energy of each structure (zero when ``None``).
    """
    normal = torch.zeros(len(species), len(species) + 1, dtype=torch.float64)
    mine = list(range(len(graphs)))[ctx.rank::ctx.world_size]
    for start in range(0, len(mine), batch_size):
        batch = collate([graphs[i] for i in mine[start:start + batch_size]]).to(device=ctx.device)
        counts = composition(batch, species)
        energies = batch.graph_targets["energy"].reshape(-1).detach().double().cpu()
        own = network(batch) if network is not None else torch.zeros_like(energies)
        normal += shift_normal_equations(counts, energies - own, counts.sum(dim=1))
    return ctx.all_reduce_(normal.to(ctx.device)).cpu()


def fit_atomic_energies(graphs: Sequence, species: Sequence[int], *, batch_size: int = 64) -> List[float]:
    r"""Per-species energy shifts :math:`E^0_Z` by per-atom least squares, :math:`E_b/N_b \approx \sum_Z n_{bZ} E^0_Z / N_b`.

    The fit the trainer makes before training (there with the untrained network's energy
    subtracted, see the module docstring); every structure weighs as in the energy loss.

    Parameters
    ----------
    graphs : sequence of AtomicGraph
        Structures with ``graph_targets["energy"]``.
    species : sequence of int
        Atomic numbers, the order of the result.
    batch_size : int
        Structures collated at a time.

    Returns
    -------
    list of float
        One shift per species (minimum-norm solution when the composition matrix is rank
        deficient, e.g. every structure has the same stoichiometry).
    """
    if len(graphs) == 0:
        raise ValueError("fit_atomic_energies: graphs is empty")
    missing = [k for k, g in enumerate(graphs) if "energy" not in g.graph_targets]
    if missing:
        raise ValueError(f"fit_atomic_energies: structures {missing[:5]} carry no energy")
    # only the energies are needed: structures with and without stress or forces batch together
    graphs = [dataclasses.replace(g, node_targets={}, graph_targets={"energy": g.graph_targets["energy"]})
              for g in graphs]
    normal = _accumulated_normal_equations(graphs, species, batch_size, DistributedContext())
    return solve_shifts(normal)


@torch.no_grad()
def refit_atomic_energies(model, graphs: Sequence, ctx: DistributedContext, batch_size: int) -> None:
    r"""Set the model's per-species shifts to the least-squares fit for its current network weights.

    The shifts enter only the energy term of the loss, where they are linear, so this is the
    exact minimiser of the training loss over them (the other weights fixed): the loss cannot
    increase. Without it the shifts stay at their initial fit while the network's own mean
    per-atom output moves as the forces are fitted (by about 1 eV/atom in the first few steps of
    the EMT copper example), and the network has no per-atom constant of its own to move it
    back: a nearly constant per-atom energy error that training does not remove. Each rank
    evaluates its share of ``graphs``; the normal equations are summed.
    """
    species = list(model.config.species)
    shifts = model.atomic_energies.detach().double().cpu()

    def network(batch):
        return model(batch)["energy"].detach().double().cpu() - composition(batch, species) @ shifts

    was_training = model.training
    model.eval()
    try:
        normal = _accumulated_normal_equations(graphs, species, batch_size, ctx, network)
    finally:
        model.train(was_training)
    model.set_atomic_energies(solve_shifts(normal))


def initialise_output(model, graphs: Sequence, spec: TargetSpec, *, fit_scale: bool, fit_shifts: bool,
                      max_structures: int = 64, batch_size: int = 8) -> None:
    r"""Data-dependent start: output ``scale`` and per-species energy shifts from the training set.

    With the untrained network's outputs :math:`\varepsilon` (scale 1, no shifts) on up to
    ``max_structures`` training structures, the scale :math:`s` makes the initial predictions
    as large as the targets (:func:`_fitted_scale`). Without ``fit_scale`` the model's own
    scale is kept. The shifts :math:`E^0_Z` are then the fit of the per-atom residual,
    :math:`(E_b - s\,\varepsilon_b)/N_b \approx \sum_Z n_{bZ} E^0_Z / N_b`, so training starts
    near the data instead of several eV per atom away from it. Both are set through the
    model's ``set_scale`` / ``set_atomic_energies``. The network runs on ``batch_size``
    structures at a time (one batch of ``max_structures`` would hold every edge's activations
    and their graph for the forces at once: gigabytes for 64 cells of 100 atoms).
    """
    if not (fit_scale or fit_shifts):
        return
    species = list(model.config.species)
    if fit_shifts:
        model.set_atomic_energies([0.0] * len(species))
    kept_scale = float(model.scale)
    if fit_scale:
        model.set_scale(1.0)
    sample = list(graphs[:max_structures])
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        chunks = []
        for start in range(0, len(sample), batch_size):
            chunk = collate(sample[start:start + batch_size]).to(device=device)
            with torch.enable_grad() if spec.compute_forces else torch.no_grad():
                chunks.append({k: v.detach().double() for k, v in
                               model(chunk, compute_forces=spec.compute_forces).items()})
    finally:
        model.train(was_training)
    # per-node and per-graph outputs concatenate in the order collate(sample) lays them out
    out = {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
    batch = collate(sample).to(device=device)  # targets and composition only: no activations
    n_atoms = torch.bincount(batch.batch, minlength=batch.num_graphs).double()
    evaluated_at = float(model.scale)  # the scale already inside ``out``
    scale = kept_scale
    if fit_scale:
        scale = _fitted_scale(spec, batch, out, n_atoms, default=kept_scale)
        model.set_scale(scale)
    if fit_shifts:
        # ``out`` holds the network energy at ``evaluated_at``; the model now runs at ``scale``
        network = out["energy"] if scale == evaluated_at else out["energy"] * (scale / evaluated_at)
        energies = batch.graph_targets["energy"].reshape(-1).double()
        normal = shift_normal_equations(composition(batch, species), energies - network, n_atoms)
        model.set_atomic_energies(solve_shifts(normal))


def _fitted_scale(spec: TargetSpec, batch, out, n_atoms: torch.Tensor, default: float) -> float:
    """Target size over the untrained network's size (``default`` when either is unusable).

    RMS force component over RMS predicted force component for an energy model with forces;
    RMS target over RMS output for node / graph models; the spread of per-atom energies for an
    energy-only fit. The network's own size is clamped to [0.1, 10]: an output that vanishes by
    symmetry (a strict model on centrosymmetric inputs, zero forces of a perfect crystal) must
    not be blown up.
    """
    several = batch.num_graphs > 1
    if spec.output == "energy" and "forces" in spec.names:
        target, raw = _rms(batch.node_targets["forces"]), _rms(out["forces"])
    elif spec.output == "energy":
        per_atom = batch.graph_targets["energy"].reshape(-1).double() / n_atoms
        target = float(per_atom.std()) if several else 0.0
        raw = float((out["energy"] / n_atoms).std()) if several else 0.0
    else:
        source = batch.node_targets if spec.output == "node" else batch.graph_targets
        target = _rms(torch.cat([source[n].reshape(len(source[n]), -1).double() for n in spec.names], dim=1))
        raw = _rms(out["node_output" if spec.output == "node" else "graph_output"])
    if math.isfinite(target) and target > 0 and math.isfinite(raw):
        return target / min(max(raw, 0.1), 10.0)
    return default


def _rms(tensor: torch.Tensor) -> float:
    return float(tensor.double().pow(2).mean().sqrt())


def atomic_energies_from_e0s(e0s: Dict[Any, float], species: Sequence[int]) -> List[float]:
    """Isolated-atom reference energies (config key ``E0s``) in the order of ``species``.

    Keys are element symbols (``"Cu"``) or atomic numbers (``29`` or ``"29"``); every species
    needs one, and a key that is no element, or an element not among ``species``, is refused.
    """
    by_number: Dict[int, float] = {}
    for key, value in e0s.items():
        text = str(key).strip()
        number = int(text) if text.isdigit() else atomic_numbers.get(text)
        if number is None or not 0 < number < len(chemical_symbols):
            raise ValueError(f"config: E0s key {key!r} is neither an element symbol nor an atomic number")
        if number in by_number:
            raise ValueError(f"config: E0s gives {chemical_symbols[number]} twice")
        if number not in species:
            raise ValueError(f"config: E0s[{key!r}]: {chemical_symbols[number]} is not among the model's species "
                             f"{[chemical_symbols[z] for z in species]}")
        if not math.isfinite(float(value)):
            raise ValueError(f"config: E0s[{key!r}] must be a finite energy in eV, got {value!r}")
        by_number[number] = float(value)
    missing = [chemical_symbols[z] for z in species if z not in by_number]
    if missing:
        raise ValueError(f"config: E0s has no isolated-atom energy for {missing} (it needs one per species)")
    return [by_number[int(z)] for z in species]
