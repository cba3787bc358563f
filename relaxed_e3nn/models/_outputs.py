r"""Forces and stress of an energy model by automatic differentiation (the one home of this step).

A network only has to say how its per-graph energy depends on the edge vectors,
:math:`E(\{\mathbf r_e\})`; :func:`energy_forces_stress` differentiates it:

.. math::
    \mathbf F_i = -\frac{\partial E}{\partial \mathbf x_i}, \qquad
    W_b = \frac{\partial E_b}{\partial \varepsilon_b}\Big|_{\varepsilon = 0}, \qquad
    \sigma_b = \frac{W_b}{V_b},

with a symmetric strain :math:`\varepsilon_b` per graph acting on the edge vectors as
:math:`\mathbf r_e \to \mathbf r_e (1 + \varepsilon_{b(e)})` (equivalent to straining positions
and cell together, because edge vectors are differences of positions plus cell shifts). The sign
is ASE's (positive stress = tensile).

Periodicity decides what a stress is:

* periodic in all three directions (bulk): :math:`\sigma_b = W_b / V_b` in eV/Å³,
  :math:`V_b = |\det C_b|`;
* periodic in two directions (a slab, e.g. ``pbc = (True, True, False)``): the cell's volume
  includes whatever vacuum was put along the third vector, so :math:`W_b / V_b` would depend on
  that arbitrary choice. The ``"stress"`` of a slab is therefore NaN (excluded from losses and
  metrics), and its physical counterpart is the area-normalised 2-D stress of
  :func:`surface_stress_from_virial`,
  :math:`\sigma^{2D}_b = P_b W_b P_b / A_b` in eV/Å², with :math:`A_b = |\mathbf a_1 \times \mathbf a_2|`
  the area spanned by the two periodic cell vectors and :math:`P_b = 1 - \hat n \hat n^T` the
  projector onto their plane;
* fewer periodic directions (wires, molecules) or a zero volume: the stress is NaN.

The virial :math:`W_b` itself is returned as ``"virial"`` (eV) on request (``compute_virial``),
e.g. for :func:`surface_stress_from_virial`.
"""
import contextlib
from typing import Callable, Dict

import torch

from relaxed_e3nn.data import AtomicGraph

__all__ = ["energy_forces_stress", "stress_from_virial", "surface_stress_from_virial"]


def energy_forces_stress(
    energy_of_edges: Callable[[torch.Tensor], torch.Tensor],
    graph: AtomicGraph,
    *,
    compute_forces: bool = False,
    compute_stress: bool = False,
    compute_virial: bool = False,
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
        Also return ``"forces"`` ``[N, 3]``, and ``"stress"`` ``[B, 3, 3]`` (eV/Å³, NaN for
        graphs that are not periodic in all three directions).
    compute_virial : bool
        Also return the ``"virial"`` ``[B, 3, 3]`` (eV) the stress is computed from (finite for
        slabs too: see :func:`surface_stress_from_virial`).
    create_graph : bool
        Keep the derivatives differentiable (``True`` when training on forces or stress).

    Returns
    -------
    dict
        ``"energy"`` ``[B]``, plus ``"forces"``, ``"stress"`` and ``"virial"`` when asked for. When the energy
        does not depend on the positions (no edges, frozen weights) the derivatives are zeros.
    """
    strained = compute_stress or compute_virial
    derivatives = compute_forces or strained
    with torch.enable_grad() if derivatives else contextlib.nullcontext():
        pos = graph.pos
        if derivatives and not pos.requires_grad:
            pos = pos.detach().requires_grad_(True)
        edge_vec = graph.edge_vec(pos)
        strain = None
        if strained:
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
        result["stress"] = stress_from_virial(graph, grads[-1])
    if compute_virial:
        result["virial"] = grads[-1]
    return result


def stress_from_virial(graph: AtomicGraph, virial: torch.Tensor) -> torch.Tensor:
    r""":math:`\sigma_b = W_b / V_b` (eV/Å³) for bulk graphs; NaN for slabs, wires and molecules.

    Parameters
    ----------
    graph : AtomicGraph
        Supplies the cells ``[B, 3, 3]`` and periodicity ``[B, 3]``.
    virial : torch.Tensor
        ``[B, 3, 3]`` derivative of each graph's energy with respect to its strain (eV).

    Returns
    -------
    torch.Tensor
        ``[B, 3, 3]``; NaN for graphs that are not periodic in all three directions (a slab's
        cell volume includes its vacuum: see :func:`surface_stress_from_virial`) or have zero
        cell volume.
    """
    cell = graph.cell.to(virial.dtype)
    volume = torch.linalg.det(cell).abs()
    bulk = graph.pbc.to(torch.bool).all(dim=1) & (volume > 0)
    safe = torch.where(bulk, volume, torch.ones_like(volume))
    stress = virial / safe[:, None, None]
    return torch.where(bulk[:, None, None], stress, torch.full_like(stress, float("nan")))


def surface_stress_from_virial(graph: AtomicGraph, virial: torch.Tensor) -> torch.Tensor:
    r"""Area-normalised 2-D stress of slabs, :math:`\sigma^{2D}_b = P_b W_b P_b / A_b` (eV/Å²).

    For a graph periodic along exactly two cell vectors :math:`\mathbf a_1, \mathbf a_2`,
    :math:`A_b = |\mathbf a_1 \times \mathbf a_2|`, :math:`\hat n = (\mathbf a_1 \times \mathbf a_2) / A_b`
    and :math:`P_b = 1 - \hat n \hat n^T` keeps the in-plane (periodic) components. It does not
    depend on the vacuum along the third vector; multiplied by a slab thickness it gives the
    3-D stress of that thickness.

    Parameters
    ----------
    graph : AtomicGraph
        Supplies the cells ``[B, 3, 3]`` and periodicity ``[B, 3]``.
    virial : torch.Tensor
        ``[B, 3, 3]`` (eV), the ``"virial"`` of :func:`energy_forces_stress`.

    Returns
    -------
    torch.Tensor
        ``[B, 3, 3]`` in eV/Å² (zero along the normal); NaN for graphs that are not periodic in
        exactly two directions or whose periodic vectors span no area.
    """
    cell = graph.cell.to(virial.dtype)
    pbc = graph.pbc.to(torch.bool)
    slab = pbc.sum(dim=1) == 2
    # the two periodic vectors of each slab (for other graphs any two rows: masked below)
    order = torch.argsort((~pbc).to(torch.int8), dim=1, stable=True)[:, :2]
    vectors = torch.gather(cell, 1, order[:, :, None].expand(-1, -1, 3))
    normal = torch.linalg.cross(vectors[:, 0], vectors[:, 1])
    area = normal.norm(dim=1)
    slab = slab & (area > 0)
    safe = torch.where(slab, area, torch.ones_like(area))
    unit = normal / safe[:, None]
    projector = torch.eye(3, dtype=virial.dtype, device=virial.device) - unit[:, :, None] * unit[:, None, :]
    stress = projector @ virial @ projector / safe[:, None, None]
    return torch.where(slab[:, None, None], stress, torch.full_like(stress, float("nan")))
