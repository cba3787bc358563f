r"""Orbits of a symmetrised dataset: making the images, and splits and batches that keep them whole.

A dataset is exactly invariant under a finite group :math:`G` when, with every sample
:math:`x`, it holds all its images :math:`g \cdot x`, :math:`g \in G` (the *orbit* of
:math:`x`). Curie's argument (the gradient with respect to the relaxed weights stays
:math:`G`-invariant) holds for a loss summed over whole orbits: a mini-batch or a validation
split that holds part of an orbit breaks :math:`G` by sampling alone. Every structure of an
orbit carries the same ``info["orbit_id"]``; :func:`orbit_split` and :func:`orbit_batches` never
separate structures with the same id. Structures without an id form orbits of their own.
"""
import math
from typing import Dict, Hashable, List, Optional, Sequence

import numpy as np
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress

from relaxed_e3nn._checks import as_orthogonal_matrix, is_int, is_number
from relaxed_e3nn.groups import PointGroup, as_point_group, point_group_from_elements

__all__ = ["ORBIT_ID_KEY", "AXIAL_KEYS", "symmetrize", "orbit_ids_of", "orbit_split", "orbit_batches"]

#: the ``atoms.info`` key that names a structure's orbit
ORBIT_ID_KEY = "orbit_id"
#: keys (``info``, ``arrays``, calculator results) transformed as axial vectors, ``det(g) g v``
AXIAL_KEYS = ("B_field", "magnetic_field", "angular_momentum", "magmom", "magmoms", "initial_magmoms")
_PER_ATOM_RESULTS = ("forces", "energies", "stresses", "magmoms", "charges", "dipoles")


# ---------------------------------------------------------------------------------------- images
def _finite_group(group_elements) -> PointGroup:
    """``group_elements`` (a PointGroup, a name or ``[G, 3, 3]`` matrices) as a finite PointGroup."""
    if isinstance(group_elements, (str, PointGroup)):
        group = as_point_group(group_elements, "group_elements")
    else:
        mats = as_orthogonal_matrix(group_elements, "group_elements", tol=1e-6, batched=True)
        try:
            group = point_group_from_elements(mats, tol=1e-6)
        except ValueError as err:
            raise ValueError(f"group_elements must be the elements of a finite point group: {err}") from None
    if not group.is_finite:
        raise ValueError(
            f"group_elements is the continuous group {group.schoenflies}; symmetrize needs a finite group "
            f"(a finite subgroup with the same invariants up to the model's l, e.g. C4v for Cinfv)"
        )
    return group


def _transform(key: str, value, g: np.ndarray, per_atom: bool, axial: Sequence[str],
               invariant: Sequence[str], where: str):
    """The image of one stored quantity under ``g`` (copied where it does not transform)."""
    if key in invariant or value is None or isinstance(value, (str, bytes, bool, int, float, np.generic)):
        return value.copy() if isinstance(value, np.ndarray) else value
    array = np.asarray(value)
    if array.dtype.kind not in "fc":
        return value.copy() if isinstance(value, np.ndarray) else value
    shape = array.shape[1:] if per_atom else array.shape
    if shape == ():
        return array.copy()
    if shape == (3,):
        sign = np.sign(np.linalg.det(g)) if key in axial else 1.0
        return sign * array @ g.T
    if shape == (3, 3):
        return np.einsum("ij,...jk,lk->...il", g, array, g)
    if "stress" in key.lower() and shape in ((6,), (9,)):
        matrix = voigt_6_to_full_3x3_stress(array) if shape == (6,) else array.reshape(array.shape[:-1] + (3, 3))
        rotated = np.einsum("ij,...jk,lk->...il", g, matrix, g)
        return full_3x3_to_voigt_6_stress(rotated) if shape == (6,) else rotated.reshape(array.shape)
    raise ValueError(
        f"{where}[{key!r}] has shape {array.shape}: symmetrize cannot tell how it transforms (vectors end "
        f"in 3, rank-2 tensors in (3, 3), stress may be Voigt 6 or 9); pass invariant=[{key!r}] if it does "
        f"not change under rotations"
    )


def _image(atoms: Atoms, g: np.ndarray, centre: np.ndarray, axial, invariant, where: str) -> Atoms:
    """``g`` applied about ``centre`` to positions, cell, arrays, info and calculator results."""
    image = atoms.copy()  # copies arrays, info, cell, pbc and constraints; not the calculator
    image.positions = (atoms.positions - centre) @ g.T + centre
    if atoms.cell.rank > 0:
        image.set_cell(atoms.cell.array @ g.T, scale_atoms=False)
    for key, value in atoms.arrays.items():
        if key not in ("positions", "numbers"):
            image.arrays[key] = _transform(key, value, g, True, axial, invariant, f"{where}.arrays")
    image.info = {key: _transform(key, value, g, False, axial, invariant, f"{where}.info")
                  for key, value in atoms.info.items()}
    results = getattr(atoms.calc, "results", None)
    if results:
        image.calc = SinglePointCalculator(image, **{
            key: _transform(key, value, g, key in _PER_ATOM_RESULTS, axial, invariant, f"{where}.calc.results")
            for key, value in results.items()})
    return image


def symmetrize(atoms_list: Sequence[Atoms], group_elements, *, centre=None, axial: Sequence[str] = AXIAL_KEYS,
               invariant: Sequence[str] = ()) -> List[Atoms]:
    r"""Every structure followed by its images under a finite group, with ``info["orbit_id"]``.

    For each :math:`g` of the group (identity first, so image 0 is the original) the image has
    positions :math:`g (x - c) + c`, cell vectors :math:`g a_i`, and every stored quantity
    transformed by its shape: last axis 3 (forces, velocities, fields, dipoles) as polar
    vectors :math:`g v` (the keys in ``axial`` as axial vectors :math:`\det(g)\, g v`), last two
    axes (3, 3) as rank-2 tensors :math:`g T g^\top`, a ``*stress*`` in Voigt form (6 or 9) as
    a rank-2 tensor; scalars (energy, charges, masses), integers and strings are copied. This
    covers ``atoms.arrays``, ``atoms.info`` and the results of an attached calculator (e.g.
    ``energy``/``forces``/``stress`` read from extxyz).

    The group must be a symmetry of the physics (of the targets given the inputs): the images
    are then as valid as the original samples, and the dataset as a set is exactly
    :math:`G`-invariant.

    Parameters
    ----------
    atoms_list : sequence of ase.Atoms
    group_elements : PointGroup, str or array_like ``[G, 3, 3]``
        A finite point group (a name means the standard frame) or its elements, which must be
        orthogonal and closed under multiplication (within 1e-6).
    centre : array_like ``[3]``, optional
        The fixed point :math:`c`; default the centre of mass for molecules (``pbc`` all False)
        and the origin for periodic cells.
    axial : sequence of str
        Keys transformed as axial vectors (default :data:`AXIAL_KEYS`).
    invariant : sequence of str
        Keys copied unchanged whatever their shape.

    Returns
    -------
    list of ase.Atoms
        ``len(atoms_list) * order`` structures, the images of each input consecutive. Each has
        ``info["orbit_id"]``: the index of its input in ``atoms_list``; an input that already
        carries an orbit id joins the orbit of the first input with that id (symmetrising
        twice merges orbits, it never splits them).

    Raises
    ------
    ValueError
        A continuous group, matrices that are not orthogonal or not a group, a quantity whose
        transformation is ambiguous.
    """
    group = _finite_group(group_elements)
    if isinstance(atoms_list, Atoms) or not isinstance(atoms_list, Sequence):
        raise TypeError("atoms_list must be a sequence of ase.Atoms")
    if centre is not None:
        centre = np.asarray(centre, dtype=np.float64)
        if centre.shape != (3,) or not np.all(np.isfinite(centre)):
            raise ValueError(f"centre must be a finite vector of shape [3], got {centre!r}")
    elements = group.elements.numpy()
    first_of_orbit: Dict[Hashable, int] = {}
    out = []
    for index, atoms in enumerate(atoms_list):
        if not isinstance(atoms, Atoms):
            raise TypeError(f"atoms_list[{index}] must be an ase.Atoms, got {type(atoms).__name__}")
        old = atoms.info.get(ORBIT_ID_KEY)
        orbit = index if old is None else first_of_orbit.setdefault(old, index)
        c = centre if centre is not None else (np.zeros(3) if atoms.pbc.any() else atoms.get_center_of_mass())
        for g in elements:
            image = _image(atoms, g, c, tuple(axial), tuple(invariant), f"atoms_list[{index}]")
            image.info[ORBIT_ID_KEY] = orbit
            out.append(image)
    return out


# ---------------------------------------------------------------------------------------- orbits
def orbit_ids_of(structures: Sequence, key: str = ORBIT_ID_KEY) -> List[Optional[Hashable]]:
    """``structure.info[key]`` of each structure (``None`` where absent or without ``info``)."""
    return [getattr(s, "info", {}).get(key) for s in structures]


def _orbits(orbit_ids: Sequence) -> List[List[int]]:
    """Index lists of the orbits, in order of first appearance; ``None`` ids are singletons."""
    if isinstance(orbit_ids, (str, bytes)) or not isinstance(orbit_ids, (Sequence, np.ndarray, torch.Tensor)):
        raise TypeError(f"orbit_ids must be a sequence of orbit ids (None for none), got {type(orbit_ids).__name__}")
    ids = orbit_ids.tolist() if isinstance(orbit_ids, (np.ndarray, torch.Tensor)) else list(orbit_ids)
    orbits: List[List[int]] = []
    where: Dict[Hashable, int] = {}
    for i, orbit_id in enumerate(ids):
        if orbit_id is None:
            orbits.append([i])
            continue
        try:
            slot = where.setdefault(orbit_id, len(orbits))
        except TypeError:
            raise TypeError(f"orbit_ids[{i}] must be hashable (an int or str), got {orbit_id!r}") from None
        if slot == len(orbits):
            orbits.append([])
        orbits[slot].append(i)
    return orbits


def _targets(num: int, fractions, sizes) -> List[int]:
    if (fractions is None) == (sizes is None):
        raise ValueError("give exactly one of fractions and sizes")
    if sizes is not None:
        if not all(is_int(s) and s >= 0 for s in sizes) or sum(sizes) > num:
            raise ValueError(f"sizes must be non-negative ints summing to at most {num}, got {list(sizes)!r}")
        return [int(s) for s in sizes]
    if not all(is_number(f) and math.isfinite(f) and f >= 0 for f in fractions) or sum(fractions) > 1 + 1e-12:
        raise ValueError(f"fractions must be non-negative numbers summing to at most 1, got {list(fractions)!r}")
    return [max(1, int(round(f * num))) if f > 0 else 0 for f in fractions]


def orbit_split(orbit_ids: Sequence, fractions: Optional[Sequence[float]] = None, *,
                sizes: Optional[Sequence[int]] = None, seed: int = 0) -> List[List[int]]:
    """Split structures into parts that keep every orbit whole, deterministically for ``seed``.

    Orbits are taken in the order of ``numpy.random.default_rng(seed).permutation`` and dealt
    to the parts in turn: part ``k`` takes orbits until it holds its target ``round(f_k n)``
    structures (at least 1 for ``f_k > 0``; or ``sizes[k]``), stopping before an orbit that
    would overshoot by more than half the orbit (never while the part is empty). Sizes are
    therefore within about half an orbit of their targets. With singleton orbits the parts are
    exactly the trainer's random split (first fraction first).

    Parameters
    ----------
    orbit_ids : sequence
        One id per structure (:func:`orbit_ids_of`); ``None`` = an orbit of its own.
    fractions : sequence of float, optional
        Fractions of the structures for each part, summing to at most 1.
    sizes : sequence of int, optional
        Numbers of structures instead of fractions.
    seed : int

    Returns
    -------
    list of list of int
        ``len(fractions) + 1`` sorted index lists: the parts, then the rest.
    """
    orbits = _orbits(orbit_ids)
    num = sum(len(o) for o in orbits)
    targets = _targets(num, fractions, sizes)
    parts: List[List[int]] = [[] for _ in targets] + [[]]
    k = 0
    for o in np.random.default_rng(seed).permutation(len(orbits)).tolist():
        orbit = orbits[o]
        while k < len(targets) and (len(parts[k]) >= targets[k] or
                                    (parts[k] and len(parts[k]) + len(orbit) / 2 > targets[k])):
            k += 1
        parts[k].extend(orbit)
    empty = [i for i, t in enumerate(targets) if t > 0 and not parts[i]]
    if empty:
        raise ValueError(f"{len(orbits)} orbits are too few to give every requested part at least one orbit "
                         f"(empty parts: {empty})")
    return [sorted(p) for p in parts]


def _epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The trainer's per-epoch generator: a function of ``(seed, epoch)`` only."""
    return torch.Generator().manual_seed((int(seed) * 1_000_003 + int(epoch) * 7_919 + 17) % (2**63))


def orbit_batches(orbit_ids: Sequence, batch_size: int, *, seed: int = 0, epoch: int = 0,
                  shuffle: bool = True) -> List[List[int]]:
    """One epoch's mini-batches of structure indices, each made of whole orbits.

    The orbits are permuted with the trainer's per-epoch generator (a function of ``seed`` and
    ``epoch`` only; ``shuffle=False`` keeps their order of first appearance) and packed in that
    order: an orbit joins the current batch unless the batch is non-empty and would then exceed
    ``batch_size`` by more than half the orbit. With orbits of one size :math:`s` every batch
    (but possibly the last) holds :math:`\\max(1, \\lfloor B/s + 1/2 \\rfloor)` orbits (the
    nearest whole number of orbits, halves rounded up); with singleton orbits the batches are
    exactly the trainer's ``epoch_permutation`` cut into chunks of ``batch_size``.

    Parameters
    ----------
    orbit_ids : sequence
        One id per structure; ``None`` = an orbit of its own.
    batch_size : int
        Target number of structures per batch.
    seed, epoch : int
    shuffle : bool

    Returns
    -------
    list of list of int
        Every index exactly once; the members of an orbit together, in index order.
    """
    if not (is_int(batch_size) and batch_size >= 1):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not (is_int(seed) and is_int(epoch) and epoch >= 0):
        raise ValueError(f"seed and epoch must be ints (epoch >= 0), got seed={seed!r}, epoch={epoch!r}")
    orbits = _orbits(orbit_ids)
    order = (torch.randperm(len(orbits), generator=_epoch_generator(seed, epoch)).tolist() if shuffle
             else range(len(orbits)))
    batches: List[List[int]] = []
    current: List[int] = []
    for o in order:
        orbit = orbits[o]
        if current and len(current) + len(orbit) / 2 > batch_size:
            batches.append(current)
            current = []
        current.extend(orbit)
    if current:
        batches.append(current)
    return batches
