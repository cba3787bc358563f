"""Where training structures come from: files (extxyz, CIF, pymatgen JSON, ...) and generators."""
import difflib
import json
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import ase.io
import numpy as np
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from relaxed_e3nn.data.generators import GENERATORS

__all__ = ["read_atoms", "attach_targets"]

_SOURCE_KEYS = ("path", "format", "index", "targets")


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
          structure (for formats such as CIF that hold no energies);
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
        items = _read_file(Path(source["path"]), format=source.get("format", format),
                           index=source.get("index", index), where=where)
        if source.get("targets") is not None:
            items = _attach_target_file(items, Path(source["targets"]), where)
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


def _attach_target_file(items, path: Path, where):
    if not path.is_file():
        raise FileNotFoundError(f"{where}.targets: file {str(path)!r} does not exist")
    try:
        table = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{where}.targets: {str(path)!r} is not valid JSON ({err})") from None
    if not isinstance(table, list) or len(table) != len(items) or not all(isinstance(t, dict) for t in table):
        raise ValueError(f"{where}.targets: {str(path)!r} must be a JSON list of {len(items)} mappings "
                         f"(one per structure)")
    for (atoms, _), values in zip(items, table):
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

