r"""Cubic ABO3 perovskites with the ionic displacements of a ferroelectric phase.

The inputs are *ideal* cubic cells (space group Pm-3m, every site centrosymmetric: A and B
have site symmetry :math:`O_h`, O has :math:`D_{4h}`), so an exactly O(3)-equivariant model must
predict a zero displacement on every atom (Curie's principle). The targets are the per-atom
displacements of a polar phase, all parallel to one polar axis :math:`\hat d`:

============  =========  =====================  ==================
phase         axis       residual point group   HM symbol
============  =========  =====================  ==================
``"P4mm"``    [001]      :math:`C_{4v}`         4mm (tetragonal)
``"Amm2"``    [011]      :math:`C_{2v}`         mm2 (orthorhombic)
``"R3m"``     [111]      :math:`C_{3v}`         3m (rhombohedral)
============  =========  =====================  ==================

Displacement model (Å), smooth in the composition and the lattice constant :math:`a`, with
Shannon radii :math:`r_A, r_B, r_O` and per-species ferroactivities :math:`s_A, s_B`:

.. math::
    \delta_B = 0.15\, s_B\, \sigma\!\left(12\left(\frac{a}{2(r_B + r_O)} - 1\right)\right), \qquad
    \delta_A = 0.12\, s_A\, \sigma\!\left(12\left(\frac{a}{\sqrt2 (r_A + r_O)} - 1\right)\right),

    \mathbf u_B = \delta_B \hat d, \quad \mathbf u_A = \delta_A \hat d, \quad
    \mathbf u_O = -\delta_B \left(0.3 + 0.4 (\hat b \cdot \hat d)^2\right) \hat d,

where :math:`\sigma` is the logistic function and :math:`\hat b` the direction of the O atom's
B–O bond: a rattling B cation (room in its octahedron) or a lone-pair A cation (Pb, Bi)
off-centres along the polar axis, the oxygen cage moves the other way, apical oxygens more.
The lattice constant is the pseudo-cubic estimate
:math:`a_0 = (2(r_B + r_O) + \sqrt2 (r_A + r_O))/2` times a random strain in
:math:`[-4\%, +4\%]`, rounded to :math:`10^{-4}` Å (so that extxyz files hold the cells exactly). The field is invariant under exactly the residual group, so the residual
symmetry of the data (input ∩ target) is :math:`C_{4v}`, :math:`C_{2v}` or :math:`C_{3v}` about
:math:`\hat d`.
"""
import functools
from typing import Dict, List, Sequence, Tuple

import numpy as np
from ase import Atoms

from relaxed_e3nn._settings import renamed_arguments
from relaxed_e3nn.data.generators._checks import check_choice, check_count, check_positive, make_rng

__all__ = ["perovskite_distortion", "perovskite_compositions", "PEROVSKITE_PHASES"]

# Shannon ionic radii (Å): A in 12-fold, B in 6-fold, O2- in 6-fold coordination.
_RADIUS_A = {"Ba": 1.61, "Sr": 1.44, "Ca": 1.34, "Pb": 1.49, "K": 1.64, "Na": 1.39, "La": 1.36, "Bi": 1.45}
_RADIUS_B = {"Ti": 0.605, "Zr": 0.72, "Hf": 0.71, "Sn": 0.69, "Nb": 0.64, "Ta": 0.64,
             "Fe": 0.645, "Al": 0.535, "Ga": 0.62, "Sc": 0.745}
_RADIUS_O = 1.40
# tendency to off-centre: d0 B cations and lone-pair A cations are strongly ferroactive
_ACTIVITY_A = {"Ba": 0.2, "Sr": 0.1, "Ca": 0.1, "Pb": 1.0, "K": 0.3, "Na": 0.3, "La": 0.1, "Bi": 1.0}
_ACTIVITY_B = {"Ti": 1.0, "Zr": 0.3, "Hf": 0.3, "Sn": 0.2, "Nb": 0.9, "Ta": 0.6,
               "Fe": 0.5, "Al": 0.2, "Ga": 0.3, "Sc": 0.2}
# charge-neutral A(n+) B((6-n)+) O3 pairs
_VALENCE_CLASSES = [(("Ba", "Sr", "Ca", "Pb"), ("Ti", "Zr", "Hf", "Sn")),
                    (("K", "Na"), ("Nb", "Ta")),
                    (("La", "Bi"), ("Fe", "Al", "Ga", "Sc"))]
# held out of training; every A and every B species of these also occurs in a training composition
_TEST_COMPOSITIONS = [("Sr", "Ti"), ("Pb", "Zr"), ("Ba", "Hf"), ("Ca", "Sn"),
                      ("Na", "Ta"), ("Bi", "Ga"), ("La", "Sc")]

#: phase name -> (unnormalised polar axis, residual point group, Hermann-Mauguin symbol)
PEROVSKITE_PHASES: Dict[str, Tuple[Tuple[int, int, int], str, str]] = {
    "P4mm": ((0, 0, 1), "C4v", "4mm"),
    "Amm2": ((0, 1, 1), "C2v", "mm2"),
    "R3m": ((1, 1, 1), "C3v", "3m"),
}


def perovskite_compositions() -> Tuple[List[Tuple[str, str]], List[Tuple[str, str]]]:
    """The ``(A, B)`` compositions of the training and the held-out test split.

    Returns
    -------
    train, test : list of (str, str)
        21 training and 7 test compositions; all 28 are charge-neutral ABO3. Each species of
        a test composition appears in some training composition, so a model can generalise to
        the unseen *combination*.
    """
    everything = [(a, b) for a_list, b_list in _VALENCE_CLASSES for a in a_list for b in b_list]
    test = list(_TEST_COMPOSITIONS)
    train = [c for c in everything if c not in test]
    return train, test


def _displacements(a_species: str, b_species: str, lattice: float, frac: np.ndarray,
                   direction: np.ndarray) -> np.ndarray:
    """Per-site displacement vectors (Å) of the 5-atom cell, order A, B, O, O, O."""
    r_a, r_b = _RADIUS_A[a_species], _RADIUS_B[b_species]
    sigmoid = lambda x: 1.0 / (1.0 + np.exp(-x))  # noqa: E731
    delta_b = 0.15 * _ACTIVITY_B[b_species] * sigmoid(12.0 * (lattice / (2.0 * (r_b + _RADIUS_O)) - 1.0))
    delta_a = 0.12 * _ACTIVITY_A[a_species] * sigmoid(12.0 * (lattice / (np.sqrt(2.0) * (r_a + _RADIUS_O)) - 1.0))
    out = np.zeros((5, 3))
    out[0] = delta_a * direction
    out[1] = delta_b * direction
    for k in range(2, 5):
        # the O at a face centre bonds its B neighbor along the axis where its coordinate is 0
        bond = (np.abs(frac[k] - 0.5) > 0.25).astype(np.float64)
        out[k] = -delta_b * (0.3 + 0.4 * float(bond @ direction) ** 2) * direction
    return out


@functools.lru_cache(maxsize=None)
def _cubic_cell(a_species: str, b_species: str):
    """Ideal cubic ABO3 built with pymatgen: (symbols, fractional coordinates), order A, B, O, O, O."""
    # pymatgen takes seconds to import and is needed only here (once per species pair: cached)
    from pymatgen.core import Lattice, Structure

    structure = Structure.from_spacegroup("Pm-3m", Lattice.cubic(4.0), [a_species, b_species, "O"],
                                          [[0.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, 0.5, 0.0]])
    order = np.argsort([{a_species: 0, b_species: 1, "O": 2}[site.specie.symbol] for site in structure],
                       kind="stable")
    symbols = [structure[int(i)].specie.symbol for i in order]
    frac = np.array([structure[int(i)].frac_coords for i in order]) % 1.0
    frac.setflags(write=False)
    return tuple(symbols), frac


@renamed_arguments(n="num_samples")
def perovskite_distortion(num_samples: int = 100, seed: int = 0, *, phase: str = "P4mm", split: str = "train",
                          supercells: Sequence[int] = (1, 2), strain: float = 0.04) -> List[Atoms]:
    r"""Ideal cubic ABO3 cells with the displacement targets of a ferroelectric phase.

    Parameters
    ----------
    num_samples : int
        Number of structures.
    seed : int
        Seed of the composition, strain and supercell choices.
    phase : {"P4mm", "Amm2", "R3m"}
        Polar phase: displacements along [001], [011] or [111].
    split : {"train", "test", "all"}
        Which compositions to draw from (see :func:`perovskite_compositions`).
    supercells : sequence of int
        Supercell sizes ``k`` (a ``k x k x k`` repetition of the 5-atom cell), drawn uniformly.
    strain : float
        Half-width of the uniform relative strain applied to the pseudo-cubic lattice constant.

    Returns
    -------
    list of ase.Atoms
        Periodic cubic cells with ``arrays["displacements"]`` (Å, ``[N, 3]``) and ``info``
        keys ``composition``, ``lattice_constant``, ``phase``, ``split``, ``parent_group``
        (``"Oh"``), ``residual_group`` (``"C4v"``, ``"C2v"`` or ``"C3v"``) and ``axis`` (unit
        polar axis).
    """
    num_samples = check_count("num_samples", num_samples)
    phase = check_choice("phase", phase, list(PEROVSKITE_PHASES))
    split = check_choice("split", split, ["train", "test", "all"])
    strain = check_positive("strain", strain, allow_zero=True)
    if strain >= 0.5:
        raise ValueError(f"strain must be below 0.5 (a relative strain half-width), got {strain}")
    if isinstance(supercells, (int, np.integer)):
        supercells = (supercells,)
    supercells = [check_count("supercells entry", k) for k in supercells]
    if not supercells:
        raise ValueError("supercells must name at least one supercell size")
    rng = make_rng(seed)
    train, test = perovskite_compositions()
    pool = {"train": train, "test": test, "all": train + test}[split]

    axis_int, residual, hm_symbol = PEROVSKITE_PHASES[phase]
    direction = np.asarray(axis_int, dtype=np.float64)
    direction /= np.linalg.norm(direction)

    structures = []
    for _ in range(num_samples):
        a_species, b_species = pool[int(rng.integers(len(pool)))]
        r_a, r_b = _RADIUS_A[a_species], _RADIUS_B[b_species]
        a0 = 0.5 * (2.0 * (r_b + _RADIUS_O) + np.sqrt(2.0) * (r_a + _RADIUS_O))
        # rounded to 1e-4 Å: the positions (multiples of a/4) are then exact in extxyz's 8-decimal
        # text, so a written and re-read cell keeps its Oh site symmetry to the last bit
        lattice = round(float(a0 * (1.0 + rng.uniform(-strain, strain))), 4)
        size = supercells[int(rng.integers(len(supercells)))]
        symbols, frac = _cubic_cell(a_species, b_species)
        displacement = _displacements(a_species, b_species, lattice, frac, direction)
        atoms = Atoms(symbols=list(symbols), scaled_positions=frac, cell=np.eye(3) * lattice, pbc=True)
        atoms.arrays["displacements"] = displacement
        if size > 1:
            atoms = atoms.repeat((size, size, size))  # repeats per-atom arrays too
        atoms.info.update({
            "composition": f"{a_species}{b_species}O3",
            "lattice_constant": lattice,
            "supercell": size,
            "phase": phase,
            "split": split,
            "parent_group": "Oh",
            "residual_group": residual,
            "residual_group_hm": hm_symbol,
            "axis": direction.copy(),
            "trajectory": len(structures),  # independent samples: each its own block of evidence
        })
        structures.append(atoms)
    return structures
