r"""Charged particles in uniform electric and magnetic fields: accelerations from the Lorentz force.

Each sample has ``num_particles`` point charges with positions :math:`\mathbf r_i`, velocities
:math:`\mathbf v_i`, charges :math:`q_i` and masses :math:`m_i`; the target is

.. math::
    \mathbf a_i = \frac{q_i}{m_i}\left(\mathbf E + \mathbf v_i \times \mathbf B
        + k \sum_{j \ne i} q_j \frac{\mathbf r_i - \mathbf r_j}{|\mathbf r_i - \mathbf r_j|^3}\right).

:math:`\mathbf E` is a polar vector (``1o``), :math:`\mathbf B` an axial one (``1e``); a model
can only produce :math:`\mathbf v \times \mathbf B` (``1o ⊗ 1e → 1o``) and :math:`q\mathbf E` by
breaking O(3) with exactly these two irreps. The residual group is
:math:`C_{\infty v}(\hat E) \cap C_{\infty h}(\hat B)`:

- :math:`\mathbf E \parallel \mathbf B`: :math:`C_\infty` about the common axis;
- :math:`\mathbf E \perp \mathbf B`: :math:`C_s`, the mirror whose normal is :math:`\hat B`;
- otherwise :math:`C_1`; only :math:`\mathbf E`: :math:`C_{\infty v}`; only :math:`\mathbf B`:
  :math:`C_{\infty h}`; neither: O(3).

Stored per atom: ``arrays["velocities"]``, ``initial_charges`` (the ``"charges"`` feature),
``masses`` and the target ``arrays["accelerations"]``; per sample ``info["E_field"]``,
``info["B_field"]``, ``parent_group``, ``residual_group`` and ``axis``.
"""
from typing import List, Sequence, Tuple

import numpy as np
from ase import Atoms

from relaxed_e3nn._settings import renamed_arguments
from relaxed_e3nn.data.generators._checks import (
    check_bool, check_count, check_positive, check_range, check_vector, make_rng,
)
from relaxed_e3nn.data.generators._orbit import symmetrizing_elements

__all__ = ["lorentz", "lorentz_accelerations", "lorentz_residual_group"]


def lorentz_accelerations(positions, velocities, charges, masses, E, B, coulomb: float = 0.0) -> np.ndarray:
    r"""Accelerations :math:`\mathbf a_i` of the module docstring for one configuration.

    Parameters
    ----------
    positions, velocities : array_like
        ``[N, 3]`` (distinct positions when ``coulomb != 0``).
    charges, masses : array_like
        ``[N]``; masses positive.
    E, B : array_like
        Field 3-vectors.
    coulomb : float
        Coulomb constant :math:`k`.
    """
    positions = np.asarray(positions, dtype=np.float64)
    velocities = np.asarray(velocities, dtype=np.float64)
    charges = np.asarray(charges, dtype=np.float64)
    masses = np.asarray(masses, dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3 or velocities.shape != positions.shape:
        raise ValueError(f"positions and velocities must both be [N, 3], got {positions.shape} and {velocities.shape}")
    if charges.shape != (len(positions),) or masses.shape != (len(positions),):
        raise ValueError(f"charges and masses must be [N] with N = {len(positions)}, got {charges.shape} and {masses.shape}")
    if np.any(masses <= 0):
        raise ValueError("masses must be positive")
    electric, magnetic = check_vector("E", E), check_vector("B", B)
    diff = positions[:, None, :] - positions[None, :, :]  # r_i - r_j
    dist = np.linalg.norm(diff, axis=-1)
    np.fill_diagonal(dist, np.inf)
    if coulomb != 0 and np.any(dist == 0):
        raise ValueError("positions must be distinct when coulomb != 0")
    coulomb_field = coulomb * np.einsum("j,ijk->ik", charges, diff / dist[..., None] ** 3)
    force_per_charge = electric[None, :] + np.cross(velocities, magnetic[None, :]) + coulomb_field
    return (charges / masses)[:, None] * force_per_charge


def lorentz_residual_group(electric, magnetic, atol: float = 1e-9) -> Tuple[str, np.ndarray]:
    """Name and axis of :math:`C_{\\infty v}(E) \\cap C_{\\infty h}(B)` (see the module docstring).

    The axis is the common axis (parallel fields), the mirror normal :math:`\\hat B` (``Cs``), the
    field direction (one field only) or ``z`` (no field, or ``C1``).
    """
    electric = check_vector("E", electric)
    magnetic = check_vector("B", magnetic)
    e_norm, b_norm = np.linalg.norm(electric), np.linalg.norm(magnetic)
    z = np.array([0.0, 0.0, 1.0])
    if e_norm <= atol and b_norm <= atol:
        return "O3", z
    if b_norm <= atol:
        return "Cinfv", electric / e_norm
    if e_norm <= atol:
        return "Cinfh", magnetic / b_norm
    e_hat, b_hat = electric / e_norm, magnetic / b_norm
    if np.linalg.norm(np.cross(e_hat, b_hat)) <= atol:
        return "Cinf", b_hat
    if abs(e_hat @ b_hat) <= atol:
        return "Cs", b_hat
    return "C1", z


@renamed_arguments(n="num_samples")
def lorentz(num_samples: int = 100, seed: int = 0, *, E: Sequence[float] = (1.0, 0.0, 0.0),
            B: Sequence[float] = (0.0, 1.0, 0.0), num_particles: int = 5, box: float = 2.0,
            min_distance: float = 0.8, coulomb: float = 0.1, speed: float = 1.0,
            mass_range: Sequence[float] = (1.0, 3.0), symbol: str = "H",
            symmetrize: bool = False) -> List[Atoms]:
    r"""Samples of charged particles with their Lorentz + Coulomb accelerations.

    Parameters
    ----------
    num_samples : int
        Number of samples.
    seed : int
        Seeds positions, velocities, charges and masses.
    E, B : array_like
        Uniform electric (polar) and magnetic (axial) fields.
    num_particles : int
        Particles per sample.
    box : float
        Positions are uniform in ``[-box, box]^3`` (rejection keeps pairs ``>= min_distance`` apart).
    min_distance : float
        Smallest allowed particle distance (keeps the Coulomb term bounded).
    coulomb : float
        Coulomb constant :math:`k` (0 for independent particles).
    speed : float
        Standard deviation of each velocity component.
    mass_range : (float, float)
        Masses are uniform in this range; charges are ``±1`` at random.
    symbol : str
        Chemical symbol given to every particle (the model's single species).
    symmetrize : bool
        Follow every sample by its images under a finite subgroup of the residual group
        (``C4`` for ``Cinf``, the mirror for ``Cs``, ...; ``info["symmetrized_by"]``), so that the
        dataset as a set is exactly invariant under it; ``num_samples`` then counts independent samples
        and ``num_samples * |subgroup|`` structures are returned. The images of one sample share
        ``info["orbit_id"]`` (its index), which splits and batches keep together.

    Returns
    -------
    list of ase.Atoms
        See the module docstring for the stored keys.
    """
    num_samples = check_count("num_samples", num_samples)
    electric = check_vector("E", E)
    magnetic = check_vector("B", B)
    num_particles = check_count("num_particles", num_particles)
    box = check_positive("box", box)
    min_distance = check_positive("min_distance", min_distance, allow_zero=True)
    coulomb = check_positive("coulomb", coulomb, allow_zero=True)
    speed = check_positive("speed", speed, allow_zero=True)
    low, high = check_range("mass_range", mass_range)
    if (2 * box) ** 3 < num_particles * (min_distance ** 3):
        raise ValueError(f"box={box} is too small for {num_particles} particles {min_distance} apart")
    symmetrize = check_bool("symmetrize", symmetrize)
    rng = make_rng(seed)
    residual, axis = lorentz_residual_group(electric, magnetic)
    subgroup, elements = symmetrizing_elements(residual, axis) if symmetrize else ("C1", np.eye(3)[None])

    samples = []
    for _ in range(num_samples):
        positions = np.empty((0, 3))
        for _attempt in range(10000):
            if len(positions) == num_particles:
                break
            trial = rng.uniform(-box, box, size=3)
            if len(positions) == 0 or np.min(np.linalg.norm(positions - trial, axis=1)) >= min_distance:
                positions = np.vstack([positions, trial])
        else:
            raise ValueError(f"could not place {num_particles} particles {min_distance} apart in box={box}")
        velocities = speed * rng.standard_normal((num_particles, 3))
        charges = rng.choice([-1.0, 1.0], size=num_particles)
        masses = rng.uniform(low, high, size=num_particles)

        for g in elements:
            # an element of the fields' stabiliser maps a solution to a solution: r, v, a -> g r, g v, g a
            r_g, v_g = positions @ g.T, velocities @ g.T
            atoms = Atoms(symbols=[symbol] * num_particles, positions=r_g)
            atoms.set_initial_charges(charges)
            atoms.set_masses(masses)
            atoms.arrays["velocities"] = v_g
            atoms.arrays["accelerations"] = lorentz_accelerations(r_g, v_g, charges, masses, electric, magnetic,
                                                                  coulomb)
            atoms.info.update({
                "E_field": electric.copy(),
                "B_field": magnetic.copy(),
                "parent_group": "O3",
                "residual_group": residual,
                "axis": axis.copy(),
                "symmetrized_by": subgroup,
                "orbit_id": len(samples) // len(elements),  # the images of one sample share it
                "trajectory": len(samples) // len(elements),  # independent samples: one block each
            })
            samples.append(atoms)
    return samples
