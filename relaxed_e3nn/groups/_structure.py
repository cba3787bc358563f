"""The Cartesian point group of an atomic structure (ase / pymatgen)."""
import warnings

import numpy as np

from ._linalg import canonical_sign, frame_from_axes, nearest_orthogonal, perpendicular_unit
from ._point_group import PointGroup, point_group, point_group_from_elements, point_group_from_generators

__all__ = ["point_group_of", "as_point_group"]


def as_point_group(group, name="group", default=None):
    """The one reading of a group argument: a PointGroup, a catalogue name or a structure.

    Parameters
    ----------
    group : PointGroup, str, ase.Atoms, pymatgen Structure / Molecule, or None
        A structure stands for its point group (:func:`point_group_of`).
    name : str
        The argument's name, for error messages.
    default : str, optional
        The group ``None`` stands for (e.g. ``"O3"``); without it ``None`` stays ``None``.

    Returns
    -------
    PointGroup or None
    """
    if group is None:
        return None if default is None else point_group(default)
    if isinstance(group, PointGroup):
        return group
    if isinstance(group, str):
        return point_group(group)
    try:
        return point_group_of(group)
    except TypeError:
        raise TypeError(
            f"{name} must be a PointGroup, a group name, or an ase Atoms / pymatgen structure"
            f"{' (or None)' if default is not None else ''}, got {type(group).__name__}"
        ) from None


def _structure_kind(obj):
    """Convert ``obj`` to ``("crystal", Structure)`` or ``("molecule", Molecule)``."""
    # pymatgen and ase are imported on first use: pymatgen takes seconds to import and is
    # needed only for structures (no import cycle is involved)
    from pymatgen.core import Molecule, Structure

    if isinstance(obj, Structure):
        return "crystal", obj
    if isinstance(obj, Molecule):
        return "molecule", obj
    from ase import Atoms  # on first use, as above (groups stays light to import)

    if isinstance(obj, Atoms):
        from pymatgen.io.ase import AseAtomsAdaptor  # on first use, as above

        if len(obj) == 0:
            raise ValueError("atoms_or_structure has no atoms")
        if not np.all(np.isfinite(obj.positions)):
            raise ValueError("atoms_or_structure has NaN or inf positions")
        if obj.pbc.any():
            if abs(np.linalg.det(obj.cell.array)) < 1e-8:
                raise ValueError(
                    "atoms_or_structure is periodic (pbc has True entries) but its cell is degenerate; "
                    "give a full 3x3 cell (vacuum along non-periodic directions) or set pbc=False"
                )
            return "crystal", AseAtomsAdaptor.get_structure(obj)
        # built directly: the adaptor's charge/spin check rejects odd-electron molecules and single
        # atoms, and charge and spin play no part in the point group
        return "molecule", Molecule(obj.get_chemical_symbols(), obj.positions, charge_spin_check=False)
    raise TypeError(
        "atoms_or_structure must be an ase.Atoms, pymatgen Structure or pymatgen Molecule, "
        f"got {type(obj).__name__}"
    )


def point_group_of(atoms_or_structure, symprec=0.01, tol=1e-2, eigen_tolerance=None):
    """The point group of a crystal or molecule, as Cartesian matrices.

    Parameters
    ----------
    atoms_or_structure : ase.Atoms, pymatgen.core.Structure or pymatgen.core.Molecule
        ase ``Atoms`` with any periodic direction are treated as a 3-D periodic crystal with
        their cell (a slab with vacuum gets the point group of its periodic stacking; the
        vacuum direction must be in the cell); ``pbc=False`` atoms are molecules.
    symprec : float
        Distance tolerance in Å: spglib's ``symprec`` for crystals (via pymatgen's
        ``SpacegroupAnalyzer``), the ``tolerance`` of pymatgen's ``PointGroupAnalyzer`` for
        molecules.
    tol : float
        Entrywise matrix tolerance used when closing and naming the operations (the operations
        of a structure symmetric only within ``symprec`` are orthogonal only approximately;
        they are projected onto O(3) first).
    eigen_tolerance : float, optional
        Molecules only: pymatgen's tolerance on the eigenvalues of the normalized inertia tensor
        (default 0.01); a rattled molecule needs about ``symprec / R`` (``R`` its RMS radius).

    Returns
    -------
    PointGroup
        Crystals: the rotational parts of the space-group operations converted from lattice to
        Cartesian coordinates, ``R = Lᵀ W L⁻ᵀ`` (rows of ``L`` are the lattice vectors), so a
        hexagonal crystal with ``c`` along z has its 6-fold axis along z. Molecules: the
        operations about the centre of mass; linear molecules give ``Cinfv`` or ``Dinfh`` with
        the molecular axis, a single atom gives ``O3``.
    """
    if not (isinstance(symprec, (int, float)) and symprec > 0):
        raise ValueError(f"symprec must be a positive float (Å), got {symprec!r}")
    kind, obj = _structure_kind(atoms_or_structure)
    if kind == "crystal":
        from pymatgen.symmetry.analyzer import SpacegroupAnalyzer  # on first use (pymatgen is slow to import)

        with warnings.catch_warnings():  # spglib's own deprecation notice about its error handling
            warnings.filterwarnings("ignore", category=DeprecationWarning, module="spglib")
            ops = SpacegroupAnalyzer(obj, symprec=symprec).get_point_group_operations(cartesian=True)
        mats = np.stack([op.rotation_matrix for op in ops])
        return point_group_from_elements(nearest_orthogonal(mats), tol=tol)

    if len(obj) == 0:
        raise ValueError("atoms_or_structure has no atoms")
    if len(obj) == 1:
        return PointGroup("O3")
    from pymatgen.symmetry.analyzer import PointGroupAnalyzer  # on first use (pymatgen is slow to import)

    extra = {} if eigen_tolerance is None else {"eigen_tolerance": float(eigen_tolerance)}
    analyzer = PointGroupAnalyzer(obj, tolerance=symprec, **extra)
    symbol = analyzer.sch_symbol
    if "*" in symbol:
        centred = obj.cart_coords - obj.center_of_mass
        axis = canonical_sign(np.linalg.svd(centred)[2][0])
        frame = frame_from_axes(axis, perpendicular_unit(axis))
        return PointGroup("Dinfh" if symbol.startswith("D") else "Cinfv", frame)
    # the operations found are closed here, with a bound on the order: pymatgen's own closure
    # (get_symmetry_operations) never stops when approximate operations do not close
    mats = np.stack([op.rotation_matrix for op in analyzer.symmops])
    return point_group_from_generators(nearest_orthogonal(mats), tol=tol)
