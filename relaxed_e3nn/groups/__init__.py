"""Point groups as data: finite and continuous subgroups of O(3) as 3x3 matrices.

A :class:`PointGroup` knows its Schoenflies and Hermann–Mauguin names, its frame (the rotation
from the standard frame to the user's axes), its elements (finite groups), exact
membership for the continuous groups, subgroup relations, intersections, Haar sampling and the
Reynolds projector onto the invariants of any e3nn representation.

Constructors: :func:`point_group` (by name), :func:`point_group_from_elements`,
:func:`point_group_from_generators` (closure and naming), :func:`point_group_of` (the symmetry
of an ase / pymatgen structure), :func:`as_point_group` (any of these as a group argument).
:func:`parent_group_of` finds the ideal parent of a rattled structure (a symprec scan) and
:func:`check_parent` checks a candidate parent against structures (RMS displacement).
Helpers: :func:`frame_from_axes` (a frame from a principal and a secondary direction), :func:`describe_element` (classify one matrix),
:func:`D_from_matrix` (float64-exact representation matrices in e3nn's basis, with
:func:`proper_D_blocks` its per-``l`` blocks) and :func:`rotation_about` (axis-angle rotation
matrices, Rodrigues).

Examples
--------
>>> from relaxed_e3nn.groups import point_group
>>> g = point_group("D4h")
>>> g.order, g.hermann_mauguin
(16, '4/mmm')
>>> point_group("C4v").is_subgroup_of(point_group("Oh"))
True
"""
from ._catalogue import CONTINUOUS_GROUPS, MAX_AXIS_ORDER
from ._elements import SymmetryElement, describe_element
from ._linalg import rotation_about
from ._point_group import (
    PointGroup,
    frame_from_axes,
    point_group,
    point_group_from_elements,
    point_group_from_generators,
)
from ._parent import ParentCheck, ParentSymmetry, check_parent, parent_group_of
from ._structure import as_point_group, point_group_of
from ._wigner import D_from_matrix, proper_D_blocks

__all__ = [
    "PointGroup",
    "point_group",
    "point_group_from_elements",
    "point_group_from_generators",
    "point_group_of",
    "as_point_group",
    "parent_group_of",
    "ParentSymmetry",
    "check_parent",
    "ParentCheck",
    "frame_from_axes",
    "describe_element",
    "D_from_matrix",
    "proper_D_blocks",
    "rotation_about",
    "SymmetryElement",
    "MAX_AXIS_ORDER",
    "CONTINUOUS_GROUPS",
]
