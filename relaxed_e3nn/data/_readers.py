"""Atomic graphs from ase ``Atoms``, pymatgen structures and files (extxyz, CIF, traj, POSCAR)."""
import os
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import ase.io
import numpy as np
import torch
from ase import Atoms
from ase.io.formats import string2index
from ase.stress import voigt_6_to_full_3x3_stress

from relaxed_e3nn.data._builders import from_arrays, numeric_array, where_suffix
from relaxed_e3nn.data._graph import AtomicGraph
from relaxed_e3nn.data._neighbors import DEFAULT_MAX_PAIRS

__all__ = ["from_ase", "from_pymatgen", "read"]

# file formats ``read`` accepts, and the extensions that imply them
_FORMATS = ("extxyz", "cif", "traj", "vasp")
_EXTENSIONS = {".xyz": "extxyz", ".extxyz": "extxyz", ".cif": "cif", ".traj": "traj", ".vasp": "vasp"}
_FILENAMES = {"POSCAR": "vasp", "CONTCAR": "vasp"}

# occupancies within this of 1 count as full, of each other as a tie
_OCCUPANCY_TOLERANCE = 1e-3
# per-atom names that ase stores under another key
_ARRAY_ALIASES = {"charges": ("charges", "initial_charges"), "magmoms": ("magmoms", "initial_magmoms")}


def _voigt_to_matrix(name: str, stress, where: str) -> np.ndarray:
    """ase's Voigt order (xx, yy, zz, yz, xz, xy) -> symmetric 3x3."""
    stress = numeric_array(name, stress, where).astype(np.float64)
    if stress.shape == (3, 3):
        return stress
    if stress.shape == (6,):
        return voigt_6_to_full_3x3_stress(stress)
    raise ValueError(f"{name} must be a Voigt 6-vector or a 3x3 matrix{where}, got shape {stress.shape}")


def _names(value, argument: str) -> List[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    try:
        names = list(value)
    except TypeError:
        raise TypeError(f"{argument} must be a name or a sequence of names, got {value!r}") from None
    for name in names:
        if not isinstance(name, str):
            raise TypeError(f"{argument} must contain strings, got {name!r}")
    return names


def _atom_array(atoms, name: str, argument: str, where: str) -> np.ndarray:
    for key in _ARRAY_ALIASES.get(name, (name,)):
        if key in atoms.arrays:
            return np.asarray(atoms.arrays[key])
    if name == "velocities" and "momenta" in atoms.arrays:
        return atoms.get_velocities()
    available = sorted(atoms.arrays)
    raise ValueError(f"{argument}: per-atom array {name!r} is missing{where}; atoms.arrays has {available}")


def _graph_values(names, source: Mapping[str, object], source_name: str, where: str = "") -> Dict[str, np.ndarray]:
    """The ``graph_targets`` entries of ``source`` (``atoms.info``, ``structure.properties``) as arrays."""
    values = {}
    for name in _names(names, "graph_targets"):
        if name not in source:
            raise ValueError(
                f"graph_targets: {name!r} is missing from {source_name}{where}; it has {sorted(source)}"
            )
        values[name] = np.asarray(source[name])
    return values


def _calculator_results(atoms) -> Dict[str, object]:
    calc = getattr(atoms, "calc", None)
    results = getattr(calc, "results", None)
    return dict(results) if isinstance(results, dict) else {}


def _scalar(name: str, value, where: str) -> np.ndarray:
    array = numeric_array(name, value, where).astype(np.float64)
    if array.size != 1:
        raise ValueError(f"{name} must be a single number{where}, got shape {array.shape}")
    return array.reshape(())


def _add_energy_forces_stress(atoms, graph: dict, targets: dict, keys, where: str) -> None:
    """The energy, forces and stress under the caller's keys (``keys``: energy, forces, stress key),
    or an attached calculator's results."""
    results = _calculator_results(atoms)
    sources = (("energy", atoms.info, "atoms.info", graph, _scalar),
               ("forces", atoms.arrays, "atoms.arrays", targets, numeric_array),
               ("stress", atoms.info, "atoms.info", graph, _voigt_to_matrix))
    for key, (name, source, source_name, out, convert) in zip(keys, sources):
        if key is not None:
            if key not in source:
                raise ValueError(f"{name}_key {key!r} is missing from {source_name}{where}")
            out[name] = convert(f"{name}_key {key!r}", source[key], where)
        elif results.get(name) is not None:
            out[name] = convert(name, results[name], where)
    if "forces" in targets and np.shape(targets["forces"]) != (len(atoms), 3):
        raise ValueError(f"forces must have shape [{len(atoms)}, 3]{where}, got {np.shape(targets['forces'])}")


def _resolve_occupancy(atoms, majority_species: bool, where: str):
    """``atoms`` unchanged when every site is fully occupied by one species; else refuse or take the majority.

    ase's CIF reader keeps one atom per site and records ``atoms.info["occupancy"]``
    (``{kind: {symbol: fraction}}``, ``atoms.arrays["spacegroup_kinds"]`` maps atoms to kinds);
    the atom it keeps is an arbitrary one of the site's species.
    """
    if not isinstance(majority_species, bool):
        raise TypeError(f"majority_species must be a bool, got {type(majority_species).__name__}")
    occupancy = atoms.info.get("occupancy")
    if not isinstance(occupancy, Mapping) or not occupancy:
        return atoms
    kinds = atoms.arrays.get("spacegroup_kinds", np.arange(len(atoms)))
    symbols = atoms.get_chemical_symbols()
    changed = False
    for index, kind in enumerate(kinds):
        fractions = occupancy.get(str(kind), occupancy.get(kind))
        if not isinstance(fractions, Mapping) or not fractions:
            continue
        ordered = sorted(((float(f), s) for s, f in fractions.items()), reverse=True)
        if len(ordered) == 1 and abs(ordered[0][0] - 1.0) <= _OCCUPANCY_TOLERANCE:
            continue
        described = ", ".join(f"{s} {f:g}" for f, s in ordered)
        if not majority_species:
            raise ValueError(
                f"atoms: site {index} has partial occupancy ({described}){where}; an ordered structure is "
                f"needed (pass majority_species=True to take each site's majority species)"
            )
        if len(ordered) > 1 and abs(ordered[0][0] - ordered[1][0]) <= _OCCUPANCY_TOLERANCE:
            raise ValueError(f"atoms: site {index} has no majority species ({described}){where}")
        if symbols[index] != ordered[0][1]:
            symbols[index], changed = ordered[0][1], True
    if changed:
        atoms = atoms.copy()
        atoms.set_chemical_symbols(symbols)
    return atoms


def from_ase(
    atoms,
    cutoff: float,
    *,
    node_features: Union[str, Sequence[str]] = (),
    node_targets: Union[str, Sequence[str]] = (),
    graph_targets: Union[str, Sequence[str]] = (),
    energy_key: Optional[str] = None,
    forces_key: Optional[str] = None,
    stress_key: Optional[str] = None,
    dtype: Optional[torch.dtype] = None,
    structure_index: Optional[int] = None,
    majority_species: bool = False,
    max_pairs: Optional[float] = DEFAULT_MAX_PAIRS,
) -> AtomicGraph:
    r"""An :class:`AtomicGraph` from an ``ase.Atoms``, with its inputs and targets.

    Parameters
    ----------
    atoms : ase.Atoms
        The structure; its cell and ``pbc`` decide the periodic images.
    cutoff : float
        Neighbor-list radius (Å).
    node_features, node_targets : str or sequence of str
        Names of per-atom arrays in ``atoms.arrays`` (e.g. ``"velocities"``, ``"charges"``,
        ``"displacements"``). ``"velocities"`` falls back to ``atoms.get_velocities()`` when
        only momenta are stored; ``"charges"``/``"magmoms"`` fall back to ase's
        ``initial_charges``/``initial_magmoms``. Per-atom scalars are stored as ``[N]``.
    graph_targets : str or sequence of str
        Names of entries of ``atoms.info``; scalars are stored as ``[1]``, arrays as ``[1, ...]``.
    energy_key, forces_key, stress_key : str, optional
        ``atoms.info`` key of the energy and stress, ``atoms.arrays`` key of the forces (e.g.
        ``"REF_energy"``, ``"REF_forces"``). When not given, the results of an attached
        calculator are used if present (nothing is computed). They are stored as
        ``graph_targets["energy"]`` ``[1]``, ``node_targets["forces"]`` ``[N, 3]`` and
        ``graph_targets["stress"]`` ``[1, 3, 3]`` (Voigt 6-vectors are expanded).
    dtype : torch.dtype, optional
        ``torch.float32`` or ``torch.float64``; default ``torch.get_default_dtype()``.
    structure_index : int, optional
        Index quoted in error messages (``read`` passes the position in the file).
    majority_species : bool
        How to treat sites of partial occupancy (ase's ``atoms.info["occupancy"]``, read from a
        CIF): refused by default; with ``True`` each such site takes its majority species (a tie
        is still refused). A vacancy (total occupancy below one) keeps the atom.
    max_pairs : float or None
        Bound on the estimated neighbor-list size (see :func:`~relaxed_e3nn.data.neighbor_list`).

    Returns
    -------
    AtomicGraph
        Positions relative to their centroid, which is kept in ``origin`` (see :func:`from_arrays`).

    Raises
    ------
    ValueError
        A requested key that is missing (naming it and the structure), a site of partial
        occupancy, an empty structure, non-finite positions or targets, a degenerate cell, too
        many estimated pairs, a non-positive cutoff.
    TypeError
        Non-numeric values (e.g. a string energy), a cutoff that is not a number, a ``dtype``
        other than float32/float64.

    Examples
    --------
    >>> from ase.build import bulk
    >>> graph = from_ase(bulk("Cu", "fcc", a=3.6), cutoff=3.0)
    >>> graph.num_nodes, graph.num_edges
    (1, 12)
    """
    if not isinstance(atoms, Atoms):
        raise TypeError(f"from_ase: atoms must be an ase.Atoms, got {type(atoms).__name__}")
    where = where_suffix(structure_index)
    features = {
        name: _atom_array(atoms, name, "node_features", where) for name in _names(node_features, "node_features")
    }
    targets = {
        name: _atom_array(atoms, name, "node_targets", where) for name in _names(node_targets, "node_targets")
    }
    graph = _graph_values(graph_targets, atoms.info, "atoms.info", where)

    _add_energy_forces_stress(atoms, graph, targets, (energy_key, forces_key, stress_key), where)
    atoms = _resolve_occupancy(atoms, majority_species, where)
    return from_arrays(
        atoms.get_positions(),
        atoms.get_atomic_numbers(),
        cutoff,
        cell=np.asarray(atoms.get_cell()),
        pbc=np.asarray(atoms.pbc, dtype=bool),
        node_features=features,
        node_targets=targets,
        graph_targets=graph,
        dtype=dtype,
        structure_index=structure_index,
        max_pairs=max_pairs,
    )


def from_pymatgen(
    structure,
    cutoff: float,
    *,
    node_features: Union[str, Sequence[str]] = (),
    node_targets: Union[str, Sequence[str]] = (),
    graph_targets: Union[str, Sequence[str]] = (),
    dtype: Optional[torch.dtype] = None,
) -> AtomicGraph:
    r"""An :class:`AtomicGraph` from a pymatgen ``Structure`` (periodic) or ``Molecule``.

    Parameters
    ----------
    structure : pymatgen.core.Structure or pymatgen.core.Molecule
        Ordered structure (one species per site). A ``Structure`` keeps its lattice and
        ``lattice.pbc``; a ``Molecule`` has no cell.
    cutoff : float
        Neighbor-list radius (Å).
    node_features, node_targets : str or sequence of str
        Names of ``site_properties`` (e.g. ``"magmom"``, ``"charge"``, ``"velocities"``).
    graph_targets : str or sequence of str
        Names of entries of ``structure.properties``.
    dtype : torch.dtype, optional
        Floating dtype; default ``torch.get_default_dtype()``.

    Returns
    -------
    AtomicGraph
    """
    from pymatgen.core import Molecule, Structure  # imported on use: pymatgen takes seconds to import

    if not isinstance(structure, (Structure, Molecule)):
        raise TypeError(
            f"from_pymatgen: structure must be a pymatgen Structure or Molecule, got {type(structure).__name__}"
        )
    if not structure.is_ordered:
        raise ValueError("from_pymatgen: structure is disordered (partial occupancies); order it first")
    if len(structure) == 0:
        raise ValueError("from_pymatgen: empty structure")

    def site_arrays(names, argument):
        out = {}
        for name in _names(names, argument):
            if name not in structure.site_properties:
                raise ValueError(
                    f"{argument}: site property {name!r} is missing; the structure has "
                    f"{sorted(structure.site_properties)}"
                )
            out[name] = np.asarray(structure.site_properties[name])
        return out

    properties = dict(getattr(structure, "properties", None) or {})
    graph = _graph_values(graph_targets, properties, "structure.properties")

    numbers = np.array([site.specie.Z for site in structure], dtype=np.int64)
    if isinstance(structure, Structure):
        cell = np.asarray(structure.lattice.matrix, dtype=np.float64)
        pbc = np.asarray(getattr(structure.lattice, "pbc", (True, True, True)), dtype=bool)
    else:
        cell, pbc = None, np.zeros(3, dtype=bool)
    return from_arrays(
        np.asarray(structure.cart_coords, dtype=np.float64),
        numbers,
        cutoff,
        cell=cell,
        pbc=pbc,
        node_features=site_arrays(node_features, "node_features"),
        node_targets=site_arrays(node_targets, "node_targets"),
        graph_targets=graph,
        dtype=dtype,
    )


def _infer_format(path: Path, format: Optional[str]) -> str:
    if format is not None:
        if format not in _FORMATS:
            raise ValueError(f"read: unknown format {format!r}; supported formats are {list(_FORMATS)}")
        return format
    if path.name in _FILENAMES:
        return _FILENAMES[path.name]
    suffix = path.suffix.lower()
    if suffix not in _EXTENSIONS:
        raise ValueError(
            f"read: cannot infer the format of {str(path)!r} from its extension {suffix!r}; "
            f"known extensions are {sorted(_EXTENSIONS)} (or pass format= one of {list(_FORMATS)})"
        )
    return _EXTENSIONS[suffix]


def _frame_number(index, position: int) -> Optional[int]:
    """The frame of the file that is the ``position``-th structure ``index`` selects (``None``: unknown)."""
    if isinstance(index, str):
        index = string2index(index)
    if isinstance(index, int):
        return index if index >= 0 else None
    start, step = index.start or 0, index.step or 1
    return start + position * step if start >= 0 and step > 0 else None


def _broken_xyz_frame(path: Path) -> Optional[Tuple[int, int]]:
    """``(frame, line)`` (line 1-based) where an xyz file's chain of atom-count headers breaks, if it does.

    ase indexes an extended XYZ file before it yields its first frame, so its errors do not tell
    which frame is broken; walking the headers (count line, comment line, that many atom lines) does.
    """
    lines = path.read_text(errors="replace").splitlines()
    line = frame = 0
    while line < len(lines):
        if not lines[line].strip() and not any(rest.strip() for rest in lines[line:]):
            return None  # trailing blank lines
        try:
            count = int(lines[line].split()[0])
        except (ValueError, IndexError):
            return frame, line + 1
        if count < 0 or line + count + 2 > len(lines):
            return frame, line + 1
        line, frame = line + count + 2, frame + 1
    return None


def _iread(path: Path, index, fmt: str) -> Iterator:
    """ase's frames one by one; a parse error becomes a ``ValueError`` with the path and frame."""
    frames = ase.io.iread(str(path), index=index, format=fmt)
    position = 0
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            return
        except Exception as err:  # ase raises many types (XYZError, ValueError, KeyError, ...)
            frame = _frame_number(index, position)
            at = f"frame {frame}" if frame is not None else f"structure {position} of index {index!r}"
            broken = _broken_xyz_frame(path) if fmt == "extxyz" else None
            if broken is not None and (frame is None or broken[0] >= frame):
                at = f"frame {broken[0]} (line {broken[1]}: not a valid atom-count header or too few lines)"
            first = str(err).splitlines()[0] if str(err) else ""
            raise ValueError(f"read: cannot parse {str(path)!r} ({fmt}) at {at}: {type(err).__name__}: "
                             f"{first}") from err
        yield atoms
        position += 1


def read(
    path: Union[str, os.PathLike],
    cutoff: float,
    index: Union[int, str, slice] = ":",
    format: Optional[str] = None,
    **keywords,
) -> List[AtomicGraph]:
    r"""Read structures from a file into graphs.

    Extended XYZ (``.xyz``/``.extxyz``) carries energies, forces and stress either as a
    calculator's results (ase's ``energy=``/``forces`` columns) or under caller-named keys
    (``energy_key="REF_energy"``, ``forces_key="REF_forces"``); any other per-atom column
    (velocities, charges, ...) can be requested by name. CIF, ase trajectories (``.traj``)
    and VASP POSCAR files are read with ase. A CIF site of partial occupancy is refused unless
    ``majority_species=True``.

    Parameters
    ----------
    path : str or os.PathLike
        The file.
    cutoff : float
        Neighbor-list radius (Å).
    index : int, str or slice
        Which structures, in ase's syntax (``":"`` all, ``-1`` the last, ``"0:10"``).
    format : {"extxyz", "cif", "traj", "vasp"}, optional
        Inferred from the extension when omitted.
    **keywords
        ``node_features``, ``node_targets``, ``graph_targets``, ``energy_key``,
        ``forces_key``, ``stress_key``, ``dtype``, ``majority_species``, ``max_pairs`` as in
        :func:`from_ase`.

    Returns
    -------
    list of AtomicGraph

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        A file ase cannot parse (the message names the path and the frame), no structure at
        ``index``, or any error of :func:`from_ase` (naming the structure).
    TypeError
        Unknown keywords, an ``index`` that is not an int, a string or a slice.
    """
    allowed = {"node_features", "node_targets", "graph_targets", "energy_key", "forces_key", "stress_key", "dtype",
               "majority_species", "max_pairs"}
    unknown = set(keywords) - allowed
    if unknown:
        raise TypeError(f"read: unexpected keyword arguments {sorted(unknown)}; allowed are {sorted(allowed)}")
    if isinstance(index, bool) or not isinstance(index, (int, np.integer, str, slice)):
        raise TypeError(f"read: index must be an int, a string such as ':' or '0:10', or a slice, got {index!r}")
    index = int(index) if isinstance(index, np.integer) else index
    path = Path(path)
    fmt = _infer_format(path, format)
    if not path.is_file():
        raise FileNotFoundError(f"read: no such file {str(path)!r}")
    try:
        structures = list(_iread(path, index, fmt))
    except (IndexError, StopIteration) as err:
        raise ValueError(f"read: {str(path)!r} holds no structure at index {index!r}") from err
    if not structures:
        raise ValueError(f"read: {str(path)!r} holds no structures at index {index!r}")
    frames = [_frame_number(index, i) for i in range(len(structures))]
    return [from_ase(atoms, cutoff, structure_index=i if frame is None else frame, **keywords)
            for i, (atoms, frame) in enumerate(zip(structures, frames))]
