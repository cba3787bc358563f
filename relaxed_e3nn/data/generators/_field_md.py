r"""Neutral bimetallic clusters in a uniform electric field, sampled by Langevin dynamics.

The internal energy is ase's EMT potential; each species carries a fixed partial charge
:math:`q_s` and the composition makes the cluster neutral, :math:`\sum_i q_i = 0`. A uniform
field :math:`\mathbf E` adds

.. math::
    E_\text{field} = -\boldsymbol\mu \cdot \mathbf E, \qquad
    \boldsymbol\mu = \sum_i q_i \mathbf r_i, \qquad
    \mathbf F_i^\text{field} = q_i \mathbf E,

which is translation invariant because the cluster is neutral. Energy and forces (EMT plus
field) are stored as ``info["REF_energy"]`` (eV) and ``arrays["REF_forces"]`` (eV/Å), the
charges as ase's ``initial_charges`` (read back as the ``"charges"`` node feature).

Symmetry: a polar vector :math:`\mathbf E` is invariant exactly under :math:`C_{\infty v}` about
:math:`\hat E` (rotations about it and mirrors containing it), so the energy as a function of
the geometry keeps :math:`C_{\infty v}` of the O(3) symmetry of the field-free problem (within
the molecule's own symmetry, which is trivial for a generic snapshot).
"""
from typing import List, Mapping, Optional, Sequence, Union

import numpy as np
from ase import Atoms, units
from ase.calculators.calculator import Calculator, all_changes
from ase.calculators.emt import EMT
from ase.calculators.mixing import SumCalculator
from ase.md.langevin import Langevin
from scipy.spatial.transform import Rotation

from relaxed_e3nn._settings import renamed_arguments
from relaxed_e3nn.data.generators._checks import (
    check_bool, check_count, check_positive, check_vector, make_rng,
)
from relaxed_e3nn.data.generators._orbit import symmetrizing_elements

__all__ = ["field_md", "UniformFieldCalculator"]

_EMT_ELEMENTS = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt")


class UniformFieldCalculator(Calculator):
    r"""Energy :math:`-\sum_i q_i \mathbf r_i \cdot \mathbf E` and forces :math:`q_i \mathbf E` of fixed charges.

    Parameters
    ----------
    field : array_like
        Field vector (V/Å); with charges in units of e the energy is in eV.

    The charges are the atoms' ``initial_charges``.
    """

    implemented_properties = ["energy", "forces"]

    def __init__(self, field, **kwargs):
        super().__init__(**kwargs)
        self.field = check_vector("field", field)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        charges = self.atoms.get_initial_charges()
        dipole = charges @ self.atoms.positions
        self.results["energy"] = float(-dipole @ self.field)
        self.results["forces"] = charges[:, None] * self.field[None, :]


def _compact_fcc_cluster(num_atoms: int, lattice: float, rng: np.random.Generator) -> np.ndarray:
    """``num_atoms`` fcc sites closest to a random point near the origin, centred, randomly rotated."""
    span = np.arange(-3, 4)
    grid = np.array(np.meshgrid(span, span, span, indexing="ij")).reshape(3, -1).T
    grid = grid[grid.sum(axis=1) % 2 == 0] * (lattice / 2.0)  # fcc: integer points with even sum
    centre = rng.uniform(-0.5, 0.5, size=3) * lattice / 2.0
    order = np.argsort(np.linalg.norm(grid - centre, axis=1), kind="stable")
    positions = grid[order[:num_atoms]]
    positions = positions - positions.mean(axis=0)
    rotation = Rotation.random(random_state=int(rng.integers(2**31 - 1))).as_matrix()
    return positions @ rotation.T


@renamed_arguments(n="num_samples")
def field_md(num_samples: int = 100, seed: int = 0, *, field: Sequence[float] = (0.0, 0.0, 0.5),
             species: Sequence[str] = ("Cu", "Au"), charges: Optional[Mapping[str, float]] = None,
             num_atoms: Union[int, Sequence[int]] = 8, temperature: float = 600.0,
             frames_per_trajectory: int = 10, stride: int = 10, equilibration: int = 40,
             timestep: float = 2.0, symmetrize: bool = False) -> List[Atoms]:
    r"""Snapshots of neutral EMT clusters in a uniform field, with energies and forces.

    Parameters
    ----------
    num_samples : int
        Number of snapshots.
    seed : int
        Seeds cluster shapes, orientations, compositions and the thermostat.
    field : array_like
        The field :math:`\mathbf E` (V/Å). Its direction is the axis of the residual
        :math:`C_{\infty v}`; a zero field leaves the full O(3).
    species : sequence of str
        Two EMT elements; each cluster has ``num_atoms / 2`` of each.
    charges : mapping str -> float, optional
        Partial charge per species (units of e); must make the cluster neutral.
        Default ``{species[0]: +0.3, species[1]: -0.3}``.
    num_atoms : int or sequence of int
        Cluster size(s) (even, >= 2); a sequence is drawn from per trajectory.
    temperature : float
        Langevin thermostat temperature (K).
    frames_per_trajectory, stride, equilibration : int
        Snapshots per trajectory, MD steps between them and before the first.
    timestep : float
        MD time step (fs).
    symmetrize : bool
        Follow every snapshot by its images under ``C4v`` about the field (positions and forces
        rotated, energy unchanged; ``info["symmetrized_by"]``), making the dataset as a set exactly
        ``C4v``-invariant; ``num_samples`` then counts MD snapshots and ``8 num_samples`` structures are returned.
        The images of one snapshot share ``info["orbit_id"]`` (its index).

    Returns
    -------
    list of ase.Atoms
        Non-periodic clusters with ``info["REF_energy"]``, ``arrays["REF_forces"]``,
        ``initial_charges``, and ``info`` keys ``field``, ``parent_group`` (``"O3"``),
        ``residual_group`` (``"Cinfv"``, or ``"O3"`` for a zero field) and ``axis``.
    """
    num_samples = check_count("num_samples", num_samples)
    field = check_vector("field", field)
    species = list(species) if not isinstance(species, str) else [species]
    if len(species) != 2 or len(set(species)) != 2:
        raise ValueError(f"species must name two different elements, got {species!r}")
    for symbol in species:
        if symbol not in _EMT_ELEMENTS:
            raise ValueError(f"species: {symbol!r} has no EMT parameters; choose from {list(_EMT_ELEMENTS)}")
    if charges is None:
        charges = {species[0]: 0.3, species[1]: -0.3}
    if not isinstance(charges, Mapping) or set(charges) != set(species):
        raise ValueError(f"charges must map each of {species} to a number, got {charges!r}")
    charges = {k: float(v) for k, v in charges.items()}
    if abs(charges[species[0]] + charges[species[1]]) > 1e-12:
        raise ValueError(f"charges must make a cluster with equal counts of {species} neutral "
                         f"(q_1 + q_2 = 0), got {charges}")
    sizes = [num_atoms] if isinstance(num_atoms, (int, np.integer)) else list(num_atoms)
    sizes = [check_count("num_atoms", k, minimum=2) for k in sizes]
    if not sizes or any(k % 2 for k in sizes):
        raise ValueError(f"num_atoms must be even (equal counts of both species), got {num_atoms!r}")
    temperature = check_positive("temperature", temperature, allow_zero=True)
    frames_per_trajectory = check_count("frames_per_trajectory", frames_per_trajectory)
    stride = check_count("stride", stride)
    equilibration = check_count("equilibration", equilibration, minimum=0)
    timestep = check_positive("timestep", timestep)
    symmetrize = check_bool("symmetrize", symmetrize)
    rng = make_rng(seed)
    norm = float(np.linalg.norm(field))
    axis = field / norm if norm > 0 else np.array([0.0, 0.0, 1.0])
    residual = "Cinfv" if norm > 0 else "O3"
    subgroup, elements = symmetrizing_elements(residual, axis) if symmetrize else ("C1", np.eye(3)[None])

    snapshots: List[Atoms] = []
    num_runs = 0
    while len(snapshots) < num_samples * len(elements):
        size = sizes[int(rng.integers(len(sizes)))]
        symbols = np.array([species[0]] * (size // 2) + [species[1]] * (size // 2))
        symbols = list(rng.permutation(symbols))
        atoms = Atoms(symbols=symbols, positions=_compact_fcc_cluster(size, 3.9, rng))
        atoms.set_initial_charges([charges[s] for s in symbols])
        atoms.calc = SumCalculator([EMT(), UniformFieldCalculator(field)])
        masses = atoms.get_masses()[:, None]
        momenta = np.sqrt(masses * units.kB * temperature) * rng.standard_normal((size, 3))
        atoms.set_momenta(momenta - masses * momenta.sum(axis=0) / masses.sum())  # Maxwell-Boltzmann, zero total
        dynamics = Langevin(atoms, timestep * units.fs, temperature_K=temperature, friction=0.02,
                            fixcm=False, rng=rng)
        if equilibration:
            dynamics.run(equilibration)
        run = num_runs
        num_runs += 1
        for _ in range(frames_per_trajectory):
            dynamics.run(stride)
            energy, forces = float(atoms.get_potential_energy()), atoms.get_forces().copy()
            for g in elements:
                # g fixes the field: the energy is unchanged, positions and forces rotate with g
                frame = Atoms(symbols=atoms.get_chemical_symbols(), positions=atoms.positions @ g.T)
                frame.set_initial_charges(atoms.get_initial_charges())
                frame.info.update({
                    "REF_energy": energy,
                    "field": field.copy(),
                    "parent_group": "O3",
                    "residual_group": residual,
                    "axis": axis.copy(),
                    "symmetrized_by": subgroup,
                    "orbit_id": len(snapshots) // len(elements),  # the images of one sample share it
                    "trajectory": run,  # frames of one MD run are correlated: one block of evidence
                })
                frame.arrays["REF_forces"] = forces @ g.T
                snapshots.append(frame)
            if len(snapshots) == num_samples * len(elements):
                break
    return snapshots
