"""The bulk-copper data the training benchmarks share: strained, rattled fcc Cu labelled with EMT.

Cubic supercells of 32, 48, 72 and 108 atoms (a = 3.61 Å, in turn), each strained by up to
±2 % (a random symmetric strain) and rattled by 0.1 Å, with ase's EMT energy and forces stored
in a single-point calculator (what an extxyz file gives back).
"""
import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator

__all__ = ["SIZES", "copper_frames"]

SIZES = ((2, 2, 2), (2, 2, 3), (2, 3, 3), (3, 3, 3))  # 32, 48, 72, 108 atoms


def copper_frames(num_frames: int, seed: int) -> list:
    """``num_frames`` labelled cells, sizes cycling through :data:`SIZES`; deterministic in ``seed``."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(num_frames):
        atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(SIZES[k % len(SIZES)])
        strain = np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3))
        atoms.set_cell(atoms.cell[:] @ (0.5 * (strain + strain.T)), scale_atoms=True)
        atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
        atoms.calc = EMT()
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    return frames
