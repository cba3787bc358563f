r"""The parent symmetry of real (rattled, thermal) structures: a symprec scan and a direct check.

A structure from MD or a relaxation has no exact symmetry; its *parent* is the point group of
the ideal structure it fluctuates about. :func:`parent_group_of` finds it by scanning the
symmetry tolerance ``symprec`` and keeping the group that stays the same over a plateau;
:func:`check_parent` tests a candidate parent directly, by the RMS displacement that each of its
elements causes after the best matching of atoms.

Conventions
-----------
Groups are sets of Cartesian 3x3 matrices in the structures' own coordinates.

* Molecules (``pbc`` all False): an element ``g`` acts about a centre ``c`` (default: the
  centre of mass), :math:`x \mapsto g (x - c) + c`.
* Crystals (any ``pbc`` True; the cell is taken as 3-D periodic, as :func:`point_group_of` does):
  ``g`` acts on Cartesian coordinates about the origin of the lattice, followed by the best
  translation :math:`t` (a point-group element is the rotational part of a space-group
  operation ``{g | t}``), :math:`x \mapsto g x + t`, with periodic images matched by the
  minimum-image convention in fractional coordinates. The lattice itself must be mapped onto
  itself: :math:`g a_i` must be a lattice vector for every cell vector :math:`a_i`.
"""
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np
import torch
from ase import Atoms
from scipy.optimize import linear_sum_assignment

from relaxed_e3nn._checks import is_int, is_number

from ._catalogue import AXIAL_COSET_REPRESENTATIVES
from ._elements import describe_element
from ._linalg import rotation_about
from ._point_group import PointGroup, point_group
from ._structure import as_point_group, point_group_of

__all__ = ["ParentSymmetry", "parent_group_of", "ParentCheck", "check_parent"]

#: continuous groups ordered by inclusion where comparable (a larger rank is more symmetric)
_CONTINUOUS_RANK = {"Cinf": 1, "Cinfv": 2, "Cinfh": 2, "Dinf": 2, "Dinfh": 3, "SO3": 4, "O3": 5}
_SAME_GROUP_TOL = 0.05  # entrywise: the approximate operations of a rattled structure move with symprec


@dataclass(frozen=True)
class ParentSymmetry:
    """The result of :func:`parent_group_of`.

    Attributes
    ----------
    group : PointGroup
        The parent group (``C1`` when the structure has no symmetry).
    symprec_range : (float, float) or None
        The plateau (Å) over which ``group`` holds: from its RMS displacement (floored at the
        scan's smallest ``symprec``) to the largest scanned ``symprec`` at which it was found;
        ``None`` when no group is stable.
    scan : tuple of (float, str)
        Every scanned ``symprec`` with the Schoenflies name found there (``"?"`` where the
        analysis gave no group).
    candidates : tuple of (str, float, float)
        Every distinct group of the scan: name, RMS displacement (Å, as :func:`check_parent`)
        and the largest ``symprec`` at which it was found.
    """

    group: PointGroup
    symprec_range: Optional[Tuple[float, float]]
    scan: Tuple[Tuple[float, str], ...]
    candidates: Tuple[Tuple[str, float, float], ...] = ()

    @property
    def has_symmetry(self) -> bool:
        """False when the parent is C1 ("no symmetry")."""
        return self.group.schoenflies != "C1"

    def summary(self) -> str:
        """One line: the group and its plateau, or "no symmetry"."""
        if not self.has_symmetry:
            return "no symmetry (no group above C1 is stable over a plateau of the symprec scan)"
        low, high = self.symprec_range
        return f"{self.group.schoenflies}, stable for symprec {low:.3g} .. {high:.3g} Å"

    def table(self) -> str:
        """The scan as text, one ``symprec -> group`` line per scanned value, then the candidates."""
        lines = [f"  symprec {s:9.3g} Å  {name}" for s, name in self.scan]
        lines += [f"  candidate {name}: RMS displacement {rms:.3g} Å, found up to symprec {high:.3g} Å"
                  for name, rms, high in self.candidates]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary() + "\n" + self.table()


def _check_float(name, value, low=0.0):
    if not (is_number(value) and math.isfinite(value) and value > low):
        raise ValueError(f"{name} must be a finite number > {low}, got {value!r}")
    return float(value)


def _group_at(atoms, symprec, radius) -> Optional[PointGroup]:
    """The group the analysers find at one ``symprec`` of the scan; ``None`` where they fail.

    Crystals: :func:`point_group_of` (spglib returns closed operations). Molecules: the
    operations of pymatgen's ``PointGroupAnalyzer`` (relative inertia tolerance
    ``symprec / radius`` within [0.01, 0.1]: a rattled molecule's moments split by about that
    much) are only approximately a group; they are turned into the atom permutations they
    induce, closed as permutations (exact), the structure is averaged over them
    (:func:`_idealized`) and the group of the averaged structure is returned. The input was
    validated before the scan, so a ``ValueError`` here comes from the analysis itself.
    """
    if radius <= 0:
        try:
            return point_group_of(atoms, symprec=float(symprec))
        except ValueError:
            return None
    # imported on first use, as in _structure: pymatgen takes seconds to import (no import cycle)
    from pymatgen.core import Molecule
    from pymatgen.symmetry.analyzer import PointGroupAnalyzer

    scale = min(0.1, max(0.01, symprec / radius))
    molecule = Molecule(atoms.get_chemical_symbols(), atoms.positions, charge_spin_check=False)
    try:
        analyzer = PointGroupAnalyzer(molecule, tolerance=float(symprec), eigen_tolerance=scale)
        if "*" in analyzer.sch_symbol:
            return point_group_of(atoms, symprec=float(symprec), eigen_tolerance=scale)
        x = atoms.positions - atoms.get_center_of_mass()
        perms = [_matched_sq(atoms.numbers, x @ op.rotation_matrix.T, x)[2] for op in analyzer.symmops]
        ideal = _idealized(x, _close_permutations(perms), symprec)
        return point_group_of(Atoms(numbers=atoms.numbers, positions=ideal), symprec=1e-4)
    except ValueError:
        return None


def _close_permutations(perms, limit: int = 240):
    """The group generated by atom permutations (``ValueError`` beyond ``limit`` elements)."""
    identity = tuple(range(len(perms[0])))
    found = {identity}
    frontier = [identity]
    generators = [tuple(int(i) for i in p) for p in perms]
    while frontier:
        new = []
        for p in frontier:
            for q in generators:
                composed = tuple(p[i] for i in q)
                if composed not in found:
                    found.add(composed)
                    new.append(composed)
        if len(found) > limit:
            raise ValueError(f"the operations found generate more than {limit} atom permutations")
        frontier = new
    return [np.array(p) for p in found]


def _idealized(x, perms, symprec, iterations: int = 8):
    r"""Average centred positions ``x`` over a permutation group: the nearest symmetric structure.

    For each permutation :math:`\pi` the best orthogonal :math:`R_\pi` with
    :math:`R_\pi x_i pprox x_{\pi(i)}` (Procrustes, reflections allowed) is found and
    :math:`x_i \leftarrow \mathrm{mean}_\pi R_\pi^	op x_{\pi(i)}`; iterated, the error shrinks
    quadratically. Elements that fix every atom (the plane of a planar molecule) induce the
    identity permutation; a structure flat within ``symprec`` is therefore made exactly flat.
    """
    for _ in range(iterations):
        total = np.zeros_like(x)
        for perm in perms:
            u, _, vt = np.linalg.svd(x[perm].T @ x)
            total += x[perm] @ (u @ vt)
        x = total / len(perms)
    u, singular, vt = np.linalg.svd(x, full_matrices=False)
    if singular[-1] <= symprec * math.sqrt(len(x)):
        x = x - np.outer(x @ vt[-1], vt[-1])
    return x


def _same(a: PointGroup, b: PointGroup) -> bool:
    if a.schoenflies != b.schoenflies:
        return False
    return a.is_subgroup_of(b, tol=_SAME_GROUP_TOL) and b.is_subgroup_of(a, tol=_SAME_GROUP_TOL)


def _symmetry_rank(group: PointGroup):
    """Sort key, larger = more symmetric: continuous groups above finite ones, then by order."""
    if group.is_finite:
        return (0, group.order)
    return (1, _CONTINUOUS_RANK[group.schoenflies])


def _scan_grid(min_symprec, max_symprec, points_per_decade) -> np.ndarray:
    low = _check_float("min_symprec", min_symprec)
    high = _check_float("max_symprec", max_symprec)
    if high <= low:
        raise ValueError(f"max_symprec must exceed min_symprec, got {high!r} <= {low!r}")
    if not (is_int(points_per_decade) and points_per_decade >= 1):
        raise ValueError(f"points_per_decade must be a positive int, got {points_per_decade!r}")
    num = int(math.ceil(math.log10(high / low) * points_per_decade)) + 1
    return np.logspace(math.log10(low), math.log10(high), num)


def _rms_radius(atoms: Atoms) -> float:
    """Mass-weighted RMS distance from the centre of mass (0 for crystals: not used there)."""
    if atoms.pbc.any():
        return 0.0
    masses = atoms.get_masses()
    x = atoms.positions - atoms.get_center_of_mass()
    return float(np.sqrt((masses[:, None] * x ** 2).sum() / masses.sum()))


def _distinct_groups(grid, found):
    """``[[group, largest symprec at which it was found], ...]`` over the scan, one per group."""
    distinct = []
    for s, group in zip(grid, found):
        if group is None:
            continue
        match = next((entry for entry in distinct if _same(entry[0], group)), None)
        if match is None:
            distinct.append([group, float(s)])
        else:
            match[1] = float(s)
    return distinct


def parent_group_of(atoms, symprec=None, *, min_symprec: float = 1e-5, max_symprec: float = 0.5,
                    points_per_decade: int = 6, plateau: float = 3.0) -> ParentSymmetry:
    r"""The parent point group of an ideal or rattled structure, by a scan of ``symprec``.

    For each ``symprec`` of a log-spaced grid from ``min_symprec`` to ``max_symprec`` the point
    group is found with :func:`point_group_of` (spglib for crystals, pymatgen's
    ``PointGroupAnalyzer`` for molecules). Every distinct group :math:`G` of the scan is then
    measured directly: its RMS displacement :math:`r_G` (the largest over its elements, as in
    :func:`check_parent`) is the tolerance from which it holds, and :math:`s_G`, the largest
    ``symprec`` at which the scan found it, the tolerance up to which it is still the answer.
    :math:`G` is *stable* when :math:`s_G \ge p \max(r_G, \mathrm{min\_symprec})` with
    :math:`p` = ``plateau``; the parent is the most symmetric stable group (continuous groups
    above finite ones, then the larger order; ties: the wider plateau).

    Why not "the widest run of one group": a structure rattled by :math:`a` is C1 for every
    ``symprec`` below a few :math:`a` (decades of the scan), while the analysers find the ideal
    group only from several times :math:`a` on (their operations are built from noisy axes);
    the direct measurement :math:`r_G \approx 2.4a` places the plateau where the group really
    holds. Groups that an analyser reports at large tolerances without holding (a tetrahedral
    molecule called O at 0.5 Å) have :math:`r_G > s_G` and are never stable.

    Parameters
    ----------
    atoms : ase.Atoms, pymatgen Structure or Molecule
        As :func:`point_group_of` (any periodic direction: a 3-D crystal with its cell).
    symprec : float, optional
        Skip the scan and use this tolerance (Å); the result's ``scan`` has this one entry.
    min_symprec, max_symprec : float
        The scanned range (Å).
    points_per_decade : int
        Grid density (6: neighboring values a factor 1.47 apart).
    plateau : float
        Smallest ratio :math:`s_G / \max(r_G, \mathrm{min\_symprec})` of a stable group.

    Returns
    -------
    ParentSymmetry
        The group, its plateau, the scan and the candidates; ``group`` is C1 and
        ``has_symmetry`` False when no group above C1 is stable. A single atom gives ``O3``.

    Examples
    --------
    >>> from ase.build import molecule
    >>> parent_group_of(molecule("CH4")).group.schoenflies
    'Td'
    """
    if symprec is not None:
        symprec = _check_float("symprec", symprec)
        group = point_group_of(atoms, symprec=symprec)
        return ParentSymmetry(group, (symprec, symprec), ((symprec, group.schoenflies),))
    grid = _scan_grid(min_symprec, max_symprec, points_per_decade)
    plateau = _check_float("plateau", plateau, low=1.0)
    structure = _as_atoms(atoms, "atoms")  # bad input raises here, not inside the scan
    radius = _rms_radius(structure) if len(structure) > 1 else 0.0
    found = [_group_at(structure, s, radius) for s in grid]
    scan = tuple((float(s), g.schoenflies if g is not None else "?") for s, g in zip(grid, found))
    candidates, best = [], None
    for group, high in _distinct_groups(grid, found):
        rms = _structure_rms(structure, check_elements(group), None)[0]
        candidates.append((group.schoenflies, float(rms), high))
        low = max(rms, grid[0])
        if high >= plateau * low * (1 - 1e-9):
            key = (_symmetry_rank(group), high / low)
            if best is None or key > best[0]:
                best = (key, group, (float(low), high))
    if best is None:
        return ParentSymmetry(point_group("C1"), None, scan, tuple(candidates))
    return ParentSymmetry(best[1], best[2], scan, tuple(candidates))


# ---------------------------------------------------------------------------------------- check
@dataclass(frozen=True)
class ParentCheck:
    """The result of :func:`check_parent`.

    Attributes
    ----------
    group : PointGroup
        The group checked.
    tol : float
        The RMS displacement (Å) allowed.
    rms : np.ndarray
        ``[num_structures]``: per structure, the largest RMS displacement (Å) over the elements
        tested (for crystals, the larger of it and the lattice mismatch).
    worst : tuple of str
        Per structure, the element that gave ``rms`` (e.g. ``"C3, axis=(0, 0, 1)"``).
    """

    group: PointGroup
    tol: float
    rms: np.ndarray
    worst: Tuple[str, ...]

    @property
    def passed(self) -> bool:
        """Whether every structure is within ``tol``."""
        return bool(np.all(self.rms <= self.tol))

    @property
    def failed(self) -> np.ndarray:
        """Indices of the structures above ``tol``."""
        return np.flatnonzero(self.rms > self.tol)

    def summary(self) -> str:
        worst = int(np.argmax(self.rms)) if len(self.rms) else 0
        verdict = "holds" if self.passed else f"fails for {len(self.failed)} of {len(self.rms)} structures"
        detail = f"; largest RMS {self.rms[worst]:.3g} Å (structure {worst}, {self.worst[worst]})" if len(
            self.rms) else ""
        return f"parent {self.group.schoenflies} {verdict} at tol {self.tol:.3g} Å{detail}"

    def __str__(self) -> str:
        return self.summary()


def check_elements(group: PointGroup, num_samples: int = 24, seed: int = 0) -> np.ndarray:
    """The elements :func:`check_parent` applies, float64 ``[k, 3, 3]``.

    Finite groups: all elements. Continuous groups: ``num_samples`` Haar-random elements
    (seeded), plus the coset representatives (mirrors, C2') and the rotations by
    :math:`2\\pi/k`, ``k = 2, 3, 4, 6``, about the axis of axial groups, and the inversion for O3.
    """
    if group.is_finite:
        return group.elements.numpy()
    sampled = group.sample(num_samples, generator=torch.Generator().manual_seed(seed)).numpy()
    frame = group.frame.numpy()
    extra = [np.eye(3)]
    if group.schoenflies == "O3":
        extra.append(-np.eye(3))
    elif group.schoenflies in AXIAL_COSET_REPRESENTATIVES:
        extra += [frame @ rep @ frame.T for rep in AXIAL_COSET_REPRESENTATIVES[group.schoenflies]]
        extra += [rotation_about(frame[:, 2], 2 * math.pi / k) for k in (2, 3, 4, 6)]
    return np.concatenate([np.stack(extra), sampled])


def _element_name(g) -> str:
    """``"C3 about (0, 0, 1)"``, ``"σ normal (1, 0, 0)"``, ``"i"``."""
    element = describe_element(g, tol=1e-6)
    if element.axis is None:
        return element.symbol
    where = "normal" if element.kind == "mirror" else "about"
    return f"{element.symbol} {where} ({', '.join(f'{v + 0.0:.3g}' for v in element.axis)})"


def _as_atoms(structure, name) -> Atoms:
    """``structure`` as validated ase ``Atoms`` (pymatgen structures converted); ``name`` for errors."""
    if isinstance(structure, Atoms):
        atoms = structure
    elif hasattr(structure, "to_ase_atoms"):  # pymatgen Structure / Molecule
        atoms = structure.to_ase_atoms()
    else:
        raise TypeError(f"{name} must be an ase.Atoms (or pymatgen structure), got {type(structure).__name__}")
    if len(atoms) == 0:
        raise ValueError(f"{name} has no atoms")
    if not np.all(np.isfinite(atoms.positions)):
        raise ValueError(f"{name} has NaN or inf positions")
    if atoms.pbc.any() and abs(np.linalg.det(atoms.cell.array)) < 1e-8:
        raise ValueError(f"{name} is periodic but its cell is degenerate; give a full 3x3 cell")
    return atoms


def _matched_sq(numbers, image, target, cell=None, inverse=None):
    """Per-species optimal assignment of ``image`` onto ``target``.

    Returns ``(sum of squared distances, matched displacements [N, 3], perm)`` with
    ``image[i]`` matched to ``target[perm[i]]``; periodic with minimum-image fractional
    coordinates when ``cell`` is given.
    """
    total, residual = 0.0, np.zeros_like(image)
    perm = np.arange(len(image))
    for z in np.unique(numbers):
        idx = np.flatnonzero(numbers == z)
        diff = target[idx][None, :, :] - image[idx][:, None, :]
        if cell is not None:
            frac = diff @ inverse
            diff = (frac - np.round(frac)) @ cell
        cost = np.einsum("ijk,ijk->ij", diff, diff)
        rows, cols = linear_sum_assignment(cost)
        total += float(cost[rows, cols].sum())
        residual[idx[rows]] = diff[rows, cols]
        perm[idx[rows]] = idx[cols]
    return total, residual, perm


def _lattice_error(cell, g) -> float:
    """Largest distance (Å) of an image ``g a_i`` of a cell vector from the lattice (``inf`` when
    the nearest integer matrix is not unimodular)."""
    images = cell @ g.T
    coefficients = np.round(images @ np.linalg.inv(cell))
    if abs(abs(np.linalg.det(coefficients)) - 1) > 1e-6:
        return math.inf
    return float(np.linalg.norm(images - coefficients @ cell, axis=1).max())


def _periodic_rms(atoms, g) -> float:
    """RMS after the best translation: candidates map one atom of the rarest species onto each
    atom of that species, scored by nearest-image distances, the best one refined by its mean
    residual and scored by the optimal assignment."""
    cell, numbers, x = atoms.cell.array, atoms.numbers, atoms.positions
    inverse = np.linalg.inv(cell)
    image = x @ g.T
    species, counts = np.unique(numbers, return_counts=True)
    rare = np.flatnonzero(numbers == species[np.argmin(counts)])
    candidates = x[rare] - image[rare[0]]
    frac = (x[None, None, :, :] - image[None, :, None, :] - candidates[:, None, None, :]) @ inverse
    dist = np.linalg.norm((frac - np.round(frac)) @ cell, axis=-1)  # [candidate, image atom, atom]
    dist = np.where(numbers[None, :, None] == numbers[None, None, :], dist, np.inf)
    t = candidates[int(np.argmin(dist.min(axis=2).sum(axis=1)))]
    _, residual, _ = _matched_sq(numbers, image + t, x, cell, inverse)
    t = t + residual.mean(axis=0)
    total, _, _ = _matched_sq(numbers, image + t, x, cell, inverse)
    return max(math.sqrt(total / len(x)), _lattice_error(cell, g))


def _structure_rms(atoms, elements, centre):
    """Largest RMS displacement over ``elements`` and the index of the element that gives it."""
    if atoms.pbc.any():
        errors = [_periodic_rms(atoms, g) for g in elements]
    else:
        c = atoms.get_center_of_mass() if centre is None else centre
        x = atoms.positions - c
        errors = [math.sqrt(_matched_sq(atoms.numbers, x @ g.T, x)[0] / len(x)) for g in elements]
    worst = int(np.argmax(errors))
    return errors[worst], worst


def check_parent(group, structures, tol: float = 0.3, *, centre=None, num_samples: int = 24,
                 seed: int = 0, raise_error: bool = True) -> ParentCheck:
    r"""Check that ``group`` is a symmetry of every structure within ``tol``.

    For every structure and every tested element ``g`` (see :func:`check_elements`) the image
    :math:`g \cdot x` (see the module docstring for the centre and, for crystals, the best
    translation) is matched to ``x`` atom by atom within each species by an optimal assignment
    (``scipy.optimize.linear_sum_assignment`` on squared distances, nearest periodic image for
    crystals), and

    .. math:: \mathrm{rms}(g) = \Big(\frac{1}{N}\sum_i \lVert g\cdot x_{\pi(i)} - x_i\rVert^2\Big)^{1/2}.

    A structure rattled by independent Gaussian displacements of standard deviation :math:`a`
    per coordinate gives :math:`\mathrm{rms} \approx \sqrt{6}\,a \approx 2.4a` for a generic
    element (the image and the target carry independent noise); the default ``tol`` of 0.3 Å
    accepts room-temperature thermal motion (:math:`a \approx 0.1` Å) and rejects a wrong parent,
    which displaces atoms by a fraction of a bond length.

    Parameters
    ----------
    group : PointGroup or str
        The candidate parent, in the structures' coordinates (a name means the standard frame).
    structures : ase.Atoms or sequence of ase.Atoms
        Molecules or crystals (pymatgen structures are converted with ``to_ase_atoms``).
    tol : float
        Largest allowed RMS displacement (Å).
    centre : array_like ``[3]``, optional
        Fixed point of the group for molecules (default: each molecule's centre of mass). Not
        allowed for crystals, whose best translation is searched.
    num_samples, seed : int
        Elements sampled from a continuous group (see :func:`check_elements`).
    raise_error : bool
        Raise ``ValueError`` when a structure exceeds ``tol`` (else only flag it in the result).

    Returns
    -------
    ParentCheck
        Per-structure largest RMS and the element that gave it; ``passed`` / ``failed``.
    """
    group = as_point_group(group, "group")
    tol = _check_float("tol", tol)
    if isinstance(structures, Atoms) or hasattr(structures, "to_ase_atoms"):
        structures = [structures]
    if not isinstance(structures, Sequence) or len(structures) == 0:
        raise ValueError("structures must be an ase.Atoms or a non-empty sequence of them")
    if centre is not None:
        centre = np.asarray(centre, dtype=np.float64)
        if centre.shape != (3,) or not np.all(np.isfinite(centre)):
            raise ValueError(f"centre must be a finite vector of shape [3], got {centre!r}")
    elements = check_elements(group, num_samples, seed)
    rms, worst = np.zeros(len(structures)), []
    for k, structure in enumerate(structures):
        atoms = _as_atoms(structure, f"structures[{k}]")
        if centre is not None and atoms.pbc.any():
            raise ValueError(f"centre applies to molecules only; structures[{k}] is periodic (the best "
                             f"translation is searched instead)")
        rms[k], which = _structure_rms(atoms, elements, centre)
        worst.append(_element_name(elements[which]))
    result = ParentCheck(group, tol, rms, tuple(worst))
    if raise_error and not result.passed:
        bad = ", ".join(f"{i} ({rms[i]:.3g} Å, {worst[i]})" for i in result.failed[:5])
        raise ValueError(f"group {group.schoenflies} is not a symmetry of the structures within tol={tol} Å: "
                         f"largest RMS displacement above tol for structures {bad}"
                         + (" ..." if len(result.failed) > 5 else ""))
    return result
