r"""Forces and stress of an energy model by automatic differentiation (the one home of this step).

A network only has to say how its per-graph energy depends on the edge vectors,
:math:`E(\{\mathbf r_e\})`; :func:`energy_forces_stress` differentiates it:

.. math::
    \mathbf F_i = -\frac{\partial E}{\partial \mathbf x_i}, \qquad
    \sigma_b = \frac{1}{V_b}\,\frac{\partial E_b}{\partial \varepsilon_b}\Big|_{\varepsilon = 0},

with a symmetric strain :math:`\varepsilon_b` per graph acting on the edge vectors as
:math:`\mathbf r_e \to \mathbf r_e (1 + \varepsilon_{b(e)})` (equivalent to straining positions
and cell together, because edge vectors are differences of positions plus cell shifts). The sign
is ASE's (positive stress = tensile). Graphs with no periodic direction or zero cell volume get a
NaN stress.
"""
import contextlib
from typing import Callable, Dict

import torch

from relaxed_e3nn.data import AtomicGraph

__all__ = ["energy_forces_stress", "stress_from_virial"]


def energy_forces_stress(
    energy_of_edges: Callable[[torch.Tensor], torch.Tensor],
    graph: AtomicGraph,
    *,
    compute_forces: bool = False,
    compute_stress: bool = False,
    create_graph: bool = False,
) -> Dict[str, torch.Tensor]:
    r"""Evaluate an energy model and, on request, its forces and stress.

    Parameters
    ----------
    energy_of_edges : callable
        Maps the edge vectors ``[E, 3]`` of ``graph`` (``graph.edge_vec`` convention) to the
        per-graph energies ``[B]``; everything else it needs (species, node features) it reads
        from the graph itself.
    graph : AtomicGraph
    compute_forces, compute_stress : bool
        Also return ``"forces"`` ``[N, 3]`` and ``"stress"`` ``[B, 3, 3]`` (eV/Å³).
    create_graph : bool
        Keep the derivatives differentiable (``True`` when training on forces or stress).

    Returns
    -------
    dict
        ``"energy"`` ``[B]``, plus ``"forces"`` and ``"stress"`` when asked for. When the energy
        does not depend on the positions (no edges, frozen weights) the derivatives are zeros.
    """
    derivatives = compute_forces or compute_stress
    with torch.enable_grad() if derivatives else contextlib.nullcontext():
        pos = graph.pos
        if derivatives and not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
        edge_vec = graph.edge_vec(pos)
        strain = None
        if compute_stress:
            strain = torch.zeros(graph.num_graphs, 3, 3, dtype=pos.dtype, device=pos.device, requires_grad=True)
            symmetric = 0.5 * (strain + strain.transpose(1, 2))
            edge_vec = edge_vec + torch.einsum("ei,eij->ej", edge_vec, symmetric[graph.batch[graph.edge_dst]])
        energy = energy_of_edges(edge_vec)
        result = {"energy": energy}
        if not derivatives:
            return result
        inputs = [pos] + ([strain] if strain is not None else [])
        grads = [None] * len(inputs)
        if energy.requires_grad:  # autograd metadata, no device synchronisation
            grads = torch.autograd.grad(energy.sum(), inputs, create_graph=create_graph, allow_unused=True)
        grads = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]
    if compute_forces:
        result["forces"] = -grads[0]
    if compute_stress:
        result["stress"] = stress_from_virial(graph, grads[1])
    return result


def stress_from_virial(graph: AtomicGraph, virial: torch.Tensor) -> torch.Tensor:
    r""":math:`\sigma_b = W_b / V_b` with :math:`W_b = \partial E_b/\partial\varepsilon_b`; NaN where undefined.

    Parameters
    ----------
    graph : AtomicGraph
        Supplies the cells ``[B, 3, 3]`` and periodicity ``[B, 3]``.
    virial : torch.Tensor
        ``[B, 3, 3]`` derivative of each graph's energy with respect to its strain.

    Returns
    -------
    torch.Tensor
        ``[B, 3, 3]``; NaN for graphs without a periodic direction or with zero cell volume.
    """
    cell = graph.cell.to(virial.dtype)
    volume = torch.linalg.det(cell).abs()
    periodic = graph.pbc.to(torch.bool).any(dim=1) & (volume > 0)
    safe = torch.where(periodic, volume, torch.ones_like(volume))
    stress = virial / safe[:, None, None]
    return torch.where(periodic[:, None, None], stress, torch.full_like(stress, float("nan")))
