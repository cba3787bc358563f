"""Where training structures come from: files (extxyz, CIF, pymatgen JSON, ...) and generators."""
import difflib
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import ase.io
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress, voigt_6_to_full_3x3_stress
from ase.geometry import cellpar_to_cell
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from relaxed_e3nn.data.generators import GENERATORS

__all__ = ["read_atoms", "attach_targets", "frame_rotation", "SIDECAR_FRAMES"]

_SOURCE_KEYS = ("path", "format", "index", "targets")

#: Named Cartesian frames of a sidecar: the orientation each tool gives a cell read from its
#: lengths and angles (``cellpar`` = a, b, c, alpha, beta, gamma).
SIDECAR_FRAMES = {
    # a along x, b in the xy-plane (ase.geometry.cellpar_to_cell, what ase.io.read gives a CIF)
    "cartesian_ase": lambda cellpar: cellpar_to_cell(cellpar),
    # c along z, a in the xz-plane (pymatgen Lattice.from_parameters, what CifParser gives a CIF)
    "cartesian_pymatgen": lambda cellpar: Lattice.from_parameters(*cellpar).matrix,
}
_VECTOR_TARGETS = ("forces",)
_TENSOR_TARGETS = ("stress",)
# a CIF stores lengths and angles in decimal text: the frame's cell matches ours to that precision
_FRAME_TOLERANCE = 1e-4


def read_atoms(source: Any, *, format: Optional[str] = None, index: str = ":",
               where: str = "data.train") -> List[Tuple[Any, str]]:
    """Read every structure of a data source as ``(ase.Atoms, origin)`` pairs.

    Parameters
    ----------
    source : str, dict or list
        * a path: ``.json`` files are pymatgen structures (a ``Structure.as_dict()``, a list
          of them, or a list of ``{"structure": ..., "energy": ..., "forces": ..., NAME: ...}``
          entries); anything else is read with ``ase.io.read`` (extxyz, CIF, ...);
        * ``{"path": ..., "format": ..., "index": ..., "targets": FILE.json}``: a file with
          its own options; ``targets`` is a JSON list with one ``{NAME: value}`` dict per
          structure (for formats such as CIF that hold no energies). Forces and stresses in
          it are Cartesian, in the frame named by the entry's ``"frame"`` (see
          :func:`frame_rotation`), required for CIF files;
        * ``{"generator": NAME, **kwargs}``: ``relaxed_e3nn.data.generators.GENERATORS[NAME](**kwargs)``;
        * a list of the above, concatenated in order.
    format, index : optional
        Defaults for ``ase.io.read``.
    where : str
        Config key named in error messages.

    Returns
    -------
    list of (ase.Atoms, str)
        Each structure and a human-readable origin (``file.xyz[3]``) for error messages.
    """
    if isinstance(source, (list, tuple)):
        out: List[Tuple[Any, str]] = []
        for k, item in enumerate(source):
            out.extend(read_atoms(item, format=format, index=index, where=f"{where}[{k}]"))
        return out
    if isinstance(source, (str, Path)):
        return _read_file(Path(source), format=format, index=index, where=where)
    if isinstance(source, dict):
        if "generator" in source:
            return _generate(source, where)
        if "path" not in source:
            raise ValueError(f"{where}: a mapping needs 'path' (a file) or 'generator' (a generator name), "
                             f"got keys {sorted(source)}")
        unknown = sorted(set(source) - set(_SOURCE_KEYS))
        if unknown:
            raise ValueError(f"{where}: unknown keys {unknown}; a file source takes {list(_SOURCE_KEYS)}")
        path, file_format = Path(source["path"]), source.get("format", format)
        items = _read_file(path, format=file_format, index=source.get("index", index), where=where)
        if source.get("targets") is not None:
            is_cif = (file_format or path.suffix.lstrip(".")).lower() == "cif"
            items = _attach_target_file(items, Path(source["targets"]), where, frame_required=is_cif)
        return items
    raise TypeError(f"{where}: expected a path, a mapping or a list of them, got {type(source).__name__}")


def attach_targets(atoms, values: Dict[str, Any]) -> None:
    """Store reference values on ``atoms``.

    ``energy``, ``forces`` and ``stress`` become a ``SinglePointCalculator`` (what extxyz
    files give); arrays with one row per atom go to ``atoms.arrays``, the rest to ``atoms.info``.
    """
    calc_values = {}
    for name, value in values.items():
        if name in ("energy", "forces", "stress", "free_energy"):
            array = np.asarray(value, dtype=float)
            if name == "stress" and array.shape == (3, 3):
                array = full_3x3_to_voigt_6_stress(array)
            calc_values[name] = float(array) if array.ndim == 0 else array
            continue
        array = np.asarray(value)
        if array.ndim >= 1 and array.shape[0] == len(atoms) and array.dtype != object:
            atoms.arrays[name] = array
        else:
            atoms.info[name] = value
    if calc_values:
        atoms.calc = SinglePointCalculator(atoms, **calc_values)


def frame_rotation(atoms, frame, where: str = "frame") -> np.ndarray:
    r"""The rotation taking vectors written in ``frame`` to the Cartesian frame of ``atoms``.

    A CIF file stores a cell as lengths and angles, and every tool that reads it picks its own
    orientation: ase puts a along x and b in the xy-plane, pymatgen puts c along z and a in the
    xz-plane (the two differ by a rotation of about 1° for a slightly sheared cubic cell). Forces
    and stresses given next to such a file are Cartesian in *some* orientation, so a sidecar
    names it.

    With the lattice vectors as rows, ``C_frame`` in ``frame`` and ``C`` in ``atoms.cell``, the
    rotation is the orthogonal ``R`` of the polar decomposition of ``C_frame^T C`` (the
    orthogonal Procrustes solution of ``C_frame R ≈ C``, exact up to the file's decimals), and

    .. math:: F = F_\text{frame} R, \qquad \sigma = R^T \sigma_\text{frame} R .

    Parameters
    ----------
    atoms : ase.Atoms
        The structure as read (its cell is the target frame).
    frame : str or dict
        ``"cartesian_ase"`` or ``"cartesian_pymatgen"`` (the orientation that tool gives the
        cell's lengths and angles, see :data:`SIDECAR_FRAMES`), or ``{"cell": [[...], [...], [...]]}``:
        the lattice vectors (rows, Å) in the frame the values were written in.
    where : str
        Named in error messages.

    Returns
    -------
    numpy.ndarray
        ``[3, 3]`` proper rotation ``R`` (vectors are rows: ``v = v_frame @ R``).
    """
    cell = np.asarray(atoms.cell[:], dtype=float)
    if abs(np.linalg.det(cell)) < 1e-9:
        raise ValueError(f"{where}: forces/stress in a named frame need a periodic structure with a full cell")
    if isinstance(frame, str) and frame in SIDECAR_FRAMES:
        source = np.asarray(SIDECAR_FRAMES[frame](atoms.cell.cellpar()), dtype=float)
    elif isinstance(frame, dict) and set(frame) == {"cell"}:
        source = np.asarray(frame["cell"], dtype=float)
        if source.shape != (3, 3) or not np.all(np.isfinite(source)):
            raise ValueError(f"{where}: 'cell' must be 3 finite lattice vectors (a 3x3 list), got {frame['cell']!r}")
    else:
        raise ValueError(f"{where}: expected one of {sorted(SIDECAR_FRAMES)} or {{'cell': 3x3 lattice vectors}}, "
                         f"got {frame!r}")
    u, _, vt = np.linalg.svd(source.T @ cell)
    rotation = u @ vt
    if np.linalg.det(rotation) < 0:
        raise ValueError(f"{where}: the cell of frame {frame!r} has the opposite handedness of the structure's")
    mismatch = np.linalg.norm(source @ rotation - cell) / np.linalg.norm(cell)
    if mismatch > _FRAME_TOLERANCE:
        raise ValueError(f"{where}: the cell of frame {frame!r} is not a rotation of the structure's cell "
                         f"(relative mismatch {mismatch:.2g}): lengths or angles differ")
    return rotation


def _rotate_targets(atoms, values: Dict[str, Any], rotation: np.ndarray, where: str) -> Dict[str, Any]:
    """Forces and stress of ``values`` turned by ``rotation`` (rows: ``v @ R``, ``R^T sigma R``)."""
    out = dict(values)
    for name in _VECTOR_TARGETS:
        if name in out:
            array = np.asarray(out[name], dtype=float)
            if array.ndim != 2 or array.shape[-1] != 3:
                raise ValueError(f"{where}: {name!r} must be [num_atoms, 3], got shape {array.shape}")
            out[name] = array @ rotation
    for name in _TENSOR_TARGETS:
        if name in out:
            array = np.asarray(out[name], dtype=float)
            if array.shape == (6,):
                array = voigt_6_to_full_3x3_stress(array)
            if array.shape != (3, 3):
                raise ValueError(f"{where}: {name!r} must be 6 Voigt components or 3x3, got shape {array.shape}")
            out[name] = rotation.T @ array @ rotation
    return out


# ---------------------------------------------------------------------- helpers
def _read_file(path: Path, *, format, index, where) -> List[Tuple[Any, str]]:
    if not path.is_file():
        raise FileNotFoundError(f"{where}: file {str(path)!r} does not exist")
    if (format is None and path.suffix.lower() == ".json") or format == "pymatgen":
        return _read_pymatgen_json(path, where)
    try:
        frames = ase.io.read(str(path), index=index, format=format)
    except Exception as err:  # ase raises many types for unreadable files
        raise ValueError(f"{where}: cannot read {str(path)!r} ({type(err).__name__}: {err})") from None
    if not isinstance(frames, list):
        frames = [frames]
    return [(atoms, f"{path.name}[{k}]") for k, atoms in enumerate(frames)]


def _read_pymatgen_json(path: Path, where) -> List[Tuple[Any, str]]:
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{where}: {str(path)!r} is not valid JSON ({err})") from None
    entries = content if isinstance(content, list) else [content]
    out = []
    for k, entry in enumerate(entries):
        origin = f"{path.name}[{k}]"
        if not isinstance(entry, dict):
            raise ValueError(f"{where}: {origin} must be a pymatgen Structure dict or "
                             f"{{'structure': ..., targets...}}, got {type(entry).__name__}")
        targets = {}
        if "structure" in entry:
            structure_dict = entry["structure"]
            targets = {key: value for key, value in entry.items() if key != "structure"}
        else:
            structure_dict = entry
        try:
            structure = Structure.from_dict(structure_dict)
        except Exception as err:  # pymatgen raises KeyError/TypeError/ValueError on malformed dicts
            raise ValueError(f"{where}: {origin} is not a pymatgen Structure ({type(err).__name__}: {err})") from None
        atoms = AseAtomsAdaptor.get_atoms(structure)
        for name, values in structure.site_properties.items():
            if name not in atoms.arrays:
                atoms.arrays[name] = np.asarray(values)
        attach_targets(atoms, targets)
        out.append((atoms, origin))
    return out


def _attach_target_file(items, path: Path, where, frame_required: bool):
    if not path.is_file():
        raise FileNotFoundError(f"{where}.targets: file {str(path)!r} does not exist")
    try:
        table = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{where}.targets: {str(path)!r} is not valid JSON ({err})") from None
    if not isinstance(table, list) or len(table) != len(items) or not all(isinstance(t, dict) for t in table):
        raise ValueError(f"{where}.targets: {str(path)!r} must be a JSON list of {len(items)} mappings "
                         f"(one per structure)")
    for k, ((atoms, origin), values) in enumerate(zip(items, table)):
        values = dict(values)
        frame = values.pop("frame", None)
        entry = f"{where}.targets[{k}] ({origin})"
        oriented = [name for name in _VECTOR_TARGETS + _TENSOR_TARGETS if name in values]
        if frame is not None:
            values = _rotate_targets(atoms, values, frame_rotation(atoms, frame, f"{entry}.frame"), entry)
        elif oriented and frame_required:
            raise ValueError(f"{entry}: {oriented} next to a CIF file need a 'frame': a CIF stores only the "
                             f"cell's lengths and angles, and tools orient it differently. Give "
                             f"'frame': 'cartesian_ase' or 'cartesian_pymatgen' (the tool whose Cartesian "
                             f"frame the values are in) or 'frame': {{'cell': [[...], [...], [...]]}} "
                             f"(the lattice vectors in that frame)")
        attach_targets(atoms, values)
    return items


def _generate(source: Dict[str, Any], where) -> List[Tuple[Any, str]]:
    kwargs = dict(source)
    name = kwargs.pop("generator")
    if name not in GENERATORS:
        close = difflib.get_close_matches(str(name), list(GENERATORS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else f"; available: {sorted(GENERATORS)}"
        raise ValueError(f"{where}: unknown generator {name!r}{hint}")
    try:
        frames = GENERATORS[name](**kwargs)
    except TypeError as err:
        raise ValueError(f"{where}: generator {name!r} rejected its arguments {kwargs}: {err}") from None
    return [(atoms, f"{name}[{k}]") for k, atoms in enumerate(frames)]

