r"""ASE calculator for energy models (:class:`~relaxed_e3nn.models.RelaxedNetwork`,
:class:`~relaxed_e3nn.models.HostPotential`).

>>> from relaxed_e3nn.calculators import RelaxedCalculator   # doctest: +SKIP
>>> atoms.calc = RelaxedCalculator("model.pt")               # doctest: +SKIP
>>> atoms.get_potential_energy(), atoms.get_forces()         # doctest: +SKIP
"""
import os
from typing import Optional, Union

import numpy as np
import torch
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from relaxed_e3nn._checks import check_float_dtype, model_dtype
from relaxed_e3nn.data import from_ase
from relaxed_e3nn.models import (GRAPH_MODELS, HostPotential, RelaxedNetwork, load_graph_model, model_from_dict,
                                 model_to_dict)

__all__ = ["RelaxedCalculator"]


class RelaxedCalculator(Calculator):
    r"""Energy, forces and stress of an energy model for ASE.

    The model is a :class:`~relaxed_e3nn.models.RelaxedNetwork` with ``output="energy"`` or a
    relaxed NequIP / MACE model in a :class:`~relaxed_e3nn.models.HostPotential` (what training
    with ``model.kind: NequIP | MACE`` writes).

    Every call rebuilds the neighbor list with :func:`relaxed_e3nn.data.from_ase` at the model's
    cutoff and evaluates the model (a RelaxedNetwork in its stored frame ``config.frame``: the
    calculator passes the structure's own Cartesian coordinates and the model rotates them into
    the frame it was trained in). Forces are :math:`-\partial E/\partial \mathbf{x}` and the stress is
    :math:`\sigma = \frac{1}{V}\,\partial E/\partial\varepsilon` for a symmetric strain
    :math:`\varepsilon` (eV/Å³, ASE's sign and Voigt order ``xx, yy, zz, yz, xz, xy``); the
    stress is only available for structures with a periodic direction and a cell of non-zero volume.

    Precision: the graph is built from ASE's float64 positions with their centroid subtracted in
    float64 *before* the cast to the model's dtype (:func:`relaxed_e3nn.data.from_arrays`), so a
    float32 model gives the same forces for a structure 10⁶ Å from the origin as at the origin.
    Bad input (NaN positions, a degenerate cell, a cutoff that would make billions of pairs) raises
    there, naming the argument, before the model runs.

    Parameters
    ----------
    path_or_model : str, os.PathLike, RelaxedNetwork or HostPotential
        A model file written by :func:`relaxed_e3nn.save`, or a model with ``output="energy"``.
        A model object is used as is (moved to ``device`` if needed, and rebuilt in ``dtype`` when
        that differs from its own, in which case it is a copy).
    device : str or torch.device
        Where the model runs.
    dtype : torch.dtype, optional
        ``torch.float32`` or ``torch.float64``: the dtype of the evaluation; the model's own by default.
    **kwargs
        Passed to ``ase.calculators.calculator.Calculator``.

    Raises
    ------
    ValueError
        For a model that is not an energy model (a node / graph RelaxedNetwork, a DEGNN / EGNN
        dynamics model), or (at evaluation) for atoms of species the model was not trained on.

    Notes
    -----
    **Consequences of a relaxed (symmetry-breaking) model.** A model whose learned
    :math:`\theta` breaks rotational symmetry has an energy that depends on the orientation of
    the structure in space:

    * the energy is still a function of the positions only, so forces are conservative and
      NVE dynamics conserve the total energy; the model is still invariant under translations,
      so the total force vanishes and linear momentum is conserved;
    * the forces exert a net **torque** :math:`\sum_i \mathbf{x}_i \times \mathbf{F}_i \neq 0`,
      so **angular momentum is not conserved** (a free cluster starts to spin), and the energy
      of a structure changes when the structure is rotated;
    * the virial :math:`-\sum_i \mathbf{x}_i \otimes \mathbf{F}_i` need not be symmetric: its
      antisymmetric part is that torque density. The reported stress is the derivative with respect
      to a *symmetric* strain, i.e. the symmetric part only (the 6-component Voigt form cannot
      hold more); the rotational part of the response is not represented.

    A strictly equivariant model (``config.relaxed = False``, or a relaxed one at
    :math:`\theta_\mathrm{breaking} = 0`) has none of these effects.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, path_or_model: Union[str, os.PathLike, RelaxedNetwork, HostPotential], device="cpu",
                 dtype: Optional[torch.dtype] = None, **kwargs):
        super().__init__(**kwargs)
        if dtype is not None:
            check_float_dtype("dtype", dtype, "RelaxedCalculator")
        if isinstance(path_or_model, GRAPH_MODELS):
            model = path_or_model
            if dtype is not None and dtype != model_dtype(model):
                model = model_from_dict(model_to_dict(model), map_location=device, dtype=dtype)
            model = model.to(device)
        elif isinstance(path_or_model, (str, os.PathLike)):
            model = load_graph_model(path_or_model, map_location=device, dtype=dtype, where="RelaxedCalculator")
        else:
            raise TypeError(
                "RelaxedCalculator: path_or_model must be a path or a RelaxedNetwork or HostPotential, "
                f"got {type(path_or_model).__name__}"
            )
        if model.config.output != "energy":
            raise ValueError(
                f"RelaxedCalculator: the model must have output='energy', this one has output={model.config.output!r}"
            )
        self.model = model
        self.device = torch.device(device)
        self.dtype = model_dtype(model)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        config = self.model.config
        unknown = sorted(set(int(z) for z in atoms.numbers) - set(config.species))
        if unknown:
            raise ValueError(
                f"RelaxedCalculator: the atoms contain atomic numbers {unknown} that the model was not trained on "
                f"(model species: {config.species})"
            )
        periodic = bool(np.all(atoms.pbc)) and abs(float(np.linalg.det(atoms.cell[:]))) > 0.0
        if "stress" in properties and not periodic:
            raise PropertyNotImplementedError(
                "RelaxedCalculator: stress needs a cell periodic in all three directions with non-zero volume "
                "(a slab's cell volume includes its vacuum; relaxed_e3nn.models.surface_stress_from_virial "
                "of model(graph, compute_virial=True)['virial'] gives its area-normalised 2-D stress)"
            )
        graph = from_ase(atoms, config.cutoff, node_features=list(config.node_features), dtype=self.dtype)
        graph = graph.to(device=self.device)
        was_training = self.model.training
        self.model.eval()
        try:
            out = self.model(graph, compute_forces=True, compute_stress=periodic)
        finally:
            self.model.train(was_training)
        energy = float(out["energy"].detach().sum())
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out["forces"].detach().cpu().double().numpy(),
        }
        if periodic:
            stress = out["stress"].detach()[0].cpu().double().numpy()
            self.results["stress"] = full_3x3_to_voigt_6_stress(stress)
