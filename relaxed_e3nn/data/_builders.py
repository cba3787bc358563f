"""Atomic graphs from arrays, ase ``Atoms``, pymatgen structures and files (extxyz, CIF, ...)."""
import os
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from relaxed_e3nn.data._graph import AtomicGraph
from relaxed_e3nn.data._neighbors import neighbor_list

__all__ = ["from_arrays", "from_ase", "from_pymatgen", "read"]

# file formats ``read`` accepts, and the extensions that imply them
_FORMATS = ("extxyz", "cif", "traj", "vasp")
_EXTENSIONS = {".xyz": "extxyz", ".extxyz": "extxyz", ".cif": "cif", ".traj": "traj", ".vasp": "vasp"}
_FILENAMES = {"POSCAR": "vasp", "CONTCAR": "vasp"}

# per-atom names that ase stores under another key
_ARRAY_ALIASES = {"charges": ("charges", "initial_charges"), "magmoms": ("magmoms", "initial_magmoms")}


def _where(structure_index: Optional[int]) -> str:
    return "" if structure_index is None else f" (structure {structure_index})"


def _resolve_dtype(dtype) -> torch.dtype:
    dtype = torch.get_default_dtype() if dtype is None else dtype
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    return dtype


def _tensor(value, dtype: torch.dtype) -> torch.Tensor:
    """Floating arrays take ``dtype``; integer and bool arrays keep an integer/bool type."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype == bool:
        return torch.as_tensor(array.copy(), dtype=torch.bool)
    if np.issubdtype(array.dtype, np.integer):
        return torch.as_tensor(array.astype(np.int64))
    if np.issubdtype(array.dtype, np.complexfloating):
        raise TypeError(f"complex arrays are not supported, got dtype {array.dtype}")
    try:
        return torch.as_tensor(array.astype(np.float64), dtype=dtype)
    except (TypeError, ValueError) as err:
        raise TypeError(f"cannot convert an array of dtype {array.dtype} to a tensor") from err


def _voigt_to_matrix(stress: np.ndarray, name: str, where: str) -> np.ndarray:
    """ase's Voigt order (xx, yy, zz, yz, xz, xy) -> symmetric 3x3."""
    stress = np.asarray(stress, dtype=np.float64)
    if stress.shape == (3, 3):
        return stress
    if stress.shape == (6,):
        xx, yy, zz, yz, xz, xy = stress
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    raise ValueError(f"{name} must be a Voigt 6-vector or a 3x3 matrix{where}, got shape {stress.shape}")


def from_arrays(
    positions,
    atomic_numbers,
    cutoff: float,
    *,
    cell=None,
    pbc=None,
    node_features: Optional[Mapping[str, object]] = None,
    node_targets: Optional[Mapping[str, object]] = None,
    graph_targets: Optional[Mapping[str, object]] = None,
    dtype: Optional[torch.dtype] = None,
    structure_index: Optional[int] = None,
) -> AtomicGraph:
    r"""One :class:`AtomicGraph` from plain arrays; the builder every other reader goes through.

    Parameters
    ----------
    positions : array_like
        ``[N, 3]`` Cartesian positions (Å), finite, ``N >= 1``.
    atomic_numbers : array_like
        ``[N]`` integer atomic numbers.
    cutoff : float
        Neighbor-list radius (Å), positive.
    cell : array_like, optional
        ``[3, 3]`` lattice vectors as rows (stored as zeros when omitted).
    pbc : bool or array_like of 3 bools, optional
        Periodicity; default periodic when a cell is given, else not.
    node_features, node_targets : mapping of str to array_like, optional
        Per-atom arrays with ``N`` rows. A per-atom scalar is stored with shape ``[N]``.
    graph_targets : mapping of str to array_like, optional
        Per-structure values; a scalar is stored as ``[1]``, an array ``a`` as ``[1, *a.shape]``.
    dtype : torch.dtype, optional
        Floating dtype of positions, cell, shifts and float arrays; default
        ``torch.get_default_dtype()``.
    structure_index : int, optional
        Index of the structure in its file, quoted in error messages.

    Returns
    -------
    AtomicGraph
        A single graph (``batch`` all zeros, ``cell`` ``[1, 3, 3]``, ``pbc`` ``[1, 3]``).
    """
    where = _where(structure_index)
    dtype = _resolve_dtype(dtype)
    positions = np.asarray(positions.detach().cpu() if isinstance(positions, torch.Tensor) else positions,
                           dtype=np.float64)
    if positions.ndim != 2 or positions.shape[1] != 3:
        raise ValueError(f"positions must have shape [N, 3]{where}, got {positions.shape}")
    n = positions.shape[0]
    if n == 0:
        raise ValueError(f"empty structure{where}: positions has no atoms")
    if not np.all(np.isfinite(positions)):
        raise ValueError(f"positions contain NaN or inf{where}")
    numbers = np.asarray(atomic_numbers)
    if numbers.ndim != 1 or numbers.shape[0] != n:
        raise ValueError(
            f"atomic_numbers must have shape [{n}] to match positions{where}, got {numbers.shape}"
        )
    if not np.issubdtype(numbers.dtype, np.integer):
        if not np.all(np.equal(np.mod(numbers, 1), 0)):
            raise TypeError(f"atomic_numbers must be integers{where}, got dtype {numbers.dtype}")
        numbers = numbers.astype(np.int64)
    if np.any(numbers < 0):
        raise ValueError(f"atomic_numbers must be non-negative{where}")

    try:
        src, dst, shift = neighbor_list(positions, cutoff, cell=cell, pbc=pbc)
    except ValueError as err:
        raise ValueError(f"{err}{where}") from None
    if pbc is None:
        pbc = np.zeros(3, dtype=bool) if cell is None else np.ones(3, dtype=bool)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    cell = np.zeros((3, 3)) if cell is None else np.array(cell, dtype=np.float64)

    def per_atom(kind: str, values: Optional[Mapping[str, object]]) -> Dict[str, torch.Tensor]:
        out = {}
        for name, value in (values or {}).items():
            tensor = _tensor(value, dtype)
            if tensor.dim() == 0 or tensor.shape[0] != n:
                raise ValueError(
                    f"{kind} {name!r} must have {n} rows (one per atom){where}, got shape {tuple(tensor.shape)}"
                )
            if tensor.dim() == 2 and tensor.shape[1] == 1:
                tensor = tensor[:, 0]  # per-atom scalars are stored as [N]
            out[name] = tensor
        return out

    graph = {}
    for name, value in (graph_targets or {}).items():
        graph[name] = _tensor(value, dtype).reshape(1, *np.shape(value))

    return AtomicGraph(
        pos=torch.tensor(positions, dtype=dtype),
        atomic_numbers=torch.as_tensor(numbers, dtype=torch.int64),
        cell=torch.as_tensor(cell, dtype=dtype).reshape(1, 3, 3),
        pbc=torch.as_tensor(pbc.copy(), dtype=torch.bool).reshape(1, 3),
        edge_src=torch.as_tensor(src, dtype=torch.int64),
        edge_dst=torch.as_tensor(dst, dtype=torch.int64),
        edge_shift=torch.as_tensor(shift, dtype=dtype),
        batch=torch.zeros(n, dtype=torch.int64),
        cutoff=float(cutoff),
        node_features=per_atom("node feature", node_features),
        node_targets=per_atom("node target", node_targets),
        graph_targets=graph,
    )


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
        Floating dtype; default ``torch.get_default_dtype()``.
    structure_index : int, optional
        Index quoted in error messages (``read`` passes the position in the file).

    Returns
    -------
    AtomicGraph

    Raises
    ------
    ValueError
        A requested key that is missing (naming it and the structure), an empty structure,
        non-finite positions, a periodic cell of zero volume, a non-positive cutoff.

    Examples
    --------
    >>> from ase.build import bulk
    >>> graph = from_ase(bulk("Cu", "fcc", a=3.6), cutoff=3.0)
    >>> graph.num_nodes, graph.num_edges
    (1, 12)
    """
    from ase import Atoms

    if not isinstance(atoms, Atoms):
        raise TypeError(f"from_ase: atoms must be an ase.Atoms, got {type(atoms).__name__}")
    where = _where(structure_index)
    features = {
        name: _atom_array(atoms, name, "node_features", where) for name in _names(node_features, "node_features")
    }
    targets = {
        name: _atom_array(atoms, name, "node_targets", where) for name in _names(node_targets, "node_targets")
    }
    graph = _graph_values(graph_targets, atoms.info, "atoms.info", where)

    results = _calculator_results(atoms)
    if energy_key is not None:
        if energy_key not in atoms.info:
            raise ValueError(f"energy_key {energy_key!r} is missing from atoms.info{where}")
        graph["energy"] = np.asarray(atoms.info[energy_key], dtype=np.float64).reshape(())
    elif results.get("energy") is not None:
        graph["energy"] = np.asarray(results["energy"], dtype=np.float64).reshape(())
    if forces_key is not None:
        if forces_key not in atoms.arrays:
            raise ValueError(f"forces_key {forces_key!r} is missing from atoms.arrays{where}")
        targets["forces"] = np.asarray(atoms.arrays[forces_key], dtype=np.float64)
    elif results.get("forces") is not None:
        targets["forces"] = np.asarray(results["forces"], dtype=np.float64)
    if stress_key is not None:
        if stress_key not in atoms.info:
            raise ValueError(f"stress_key {stress_key!r} is missing from atoms.info{where}")
        graph["stress"] = _voigt_to_matrix(atoms.info[stress_key], "stress_key", where)
    elif results.get("stress") is not None:
        graph["stress"] = _voigt_to_matrix(results["stress"], "stress", where)
    if "forces" in targets and np.shape(targets["forces"]) != (len(atoms), 3):
        raise ValueError(f"forces must have shape [{len(atoms)}, 3]{where}, got {np.shape(targets['forces'])}")

    pbc = np.asarray(atoms.pbc, dtype=bool)
    return from_arrays(
        atoms.get_positions(),
        atoms.get_atomic_numbers(),
        cutoff,
        cell=np.asarray(atoms.get_cell()),
        pbc=pbc,
        node_features=features,
        node_targets=targets,
        graph_targets=graph,
        dtype=dtype,
        structure_index=structure_index,
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
    from pymatgen.core import Molecule, Structure

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
    and VASP POSCAR files are read with ase.

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
        ``forces_key``, ``stress_key``, ``dtype`` as in :func:`from_ase`.

    Returns
    -------
    list of AtomicGraph
    """
    import ase.io

    allowed = {"node_features", "node_targets", "graph_targets", "energy_key", "forces_key", "stress_key", "dtype"}
    unknown = set(keywords) - allowed
    if unknown:
        raise TypeError(f"read: unexpected keyword arguments {sorted(unknown)}; allowed are {sorted(allowed)}")
    path = Path(path)
    fmt = _infer_format(path, format)
    if not path.is_file():
        raise FileNotFoundError(f"read: no such file {str(path)!r}")
    try:
        structures = ase.io.read(str(path), index=index, format=fmt)
    except (StopIteration, IndexError) as err:
        raise ValueError(f"read: {str(path)!r} holds no structure at index {index!r}") from err
    if not isinstance(structures, list):
        structures = [structures]
    if not structures:
        raise ValueError(f"read: {str(path)!r} holds no structures at index {index!r}")
    return [from_ase(atoms, cutoff, structure_index=i, **keywords) for i, atoms in enumerate(structures)]
