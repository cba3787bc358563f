"""Seeded, offline generators of datasets with known symmetry (breaking).

Each generator lives in its own private module and is registered in ``GENERATORS`` by name,
so ``relaxed-e3nn generate NAME`` and a training config's ``{generator: NAME, ...}`` find it. A generator is
called as ``GENERATORS[name](num_samples=..., seed=..., **options)`` and returns a list of
``ase.Atoms`` whose ``info`` documents the known answer: ``parent_group`` (the symmetry of the
inputs), ``residual_group`` (the symmetry that the targets keep) and ``axis``; ``trajectory`` names
the independent unit of each structure (a sample, or an MD run), the evidence block of the
trainer's validated breaking, and ``orbit_id`` the images of one sample under ``symmetrize``.

==========================  ==========================================================  ===================
name                        data                                                        residual symmetry
==========================  ==========================================================  ===================
``perovskite_distortion``   ideal cubic ABO3 -> ferroelectric displacements             C4v / C2v / C3v
``field_md``                neutral clusters in a uniform field (energy, forces)        C∞v about E
``lorentz``                 charges in uniform E and B (accelerations)                  C∞, Cs or C1
``shape_deformation``       cube -> cube / tetragonal prism / irregular shape           Oh / D4h / C1
``box_nbody``               charged / gravitating particles in a box with walls         Oh / D4h / D2h
==========================  ==========================================================  ===================
"""
from typing import Callable, Dict

from relaxed_e3nn.data.generators._box_nbody import BoxDynamicsData, box_nbody, box_nbody_preset
from relaxed_e3nn.data.generators._box_nbody_atoms import box_nbody_atoms
from relaxed_e3nn.data.generators._field_md import UniformFieldCalculator, field_md
from relaxed_e3nn.data.generators._lorentz import lorentz, lorentz_accelerations, lorentz_residual_group
from relaxed_e3nn.data.generators._perovskite import (
    PEROVSKITE_PHASES, perovskite_compositions, perovskite_distortion,
)
from relaxed_e3nn.data.generators._shape import SHAPE_TARGETS, shape_deformation

__all__ = [
    "GENERATORS",
    "perovskite_distortion", "perovskite_compositions", "PEROVSKITE_PHASES",
    "field_md", "UniformFieldCalculator",
    "lorentz", "lorentz_accelerations", "lorentz_residual_group",
    "shape_deformation", "SHAPE_TARGETS",
    "box_nbody", "box_nbody_atoms", "box_nbody_preset", "BoxDynamicsData",
]

GENERATORS: Dict[str, Callable] = {
    "perovskite_distortion": perovskite_distortion,
    "field_md": field_md,
    "lorentz": lorentz,
    "shape_deformation": shape_deformation,
    "box_nbody": box_nbody_atoms,
}
