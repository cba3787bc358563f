"""Naming a finite subgroup of O(3) from its elements and finding its standard frame."""
import numpy as np

from ._catalogue import MAX_AXIS_ORDER, standard_elements
from ._linalg import canonical_sign, frame_from_axes, perpendicular_unit, rotation_axis_angle, same_set

__all__ = ["identify"]

_CUBIC = ("T", "Td", "Th", "O", "Oh", "I", "Ih")
_AXIS_TOL = 1e-4  # least |cos| tolerance when grouping rotation axes into lines (scaled up by tol)


def _axis_lines(proper, tol):
    """Group the non-identity proper rotations by axis line.

    Returns a list of ``(unit axis, order)``: ``order`` = number of rotations about that line,
    identity included, i.e. the order of the cyclic subgroup about it.
    """
    lines = []
    for q in proper:
        axis, angle = rotation_axis_angle(q)
        if angle <= tol:
            continue
        for line in lines:
            if abs(abs(line[0] @ axis) - 1.0) < max(_AXIS_TOL, tol):
                line[1] += 1
                break
        else:
            lines.append([axis, 2])
    return [(axis, order) for axis, order in lines]


def _name_rotation_group(proper, tol, max_axis_order=MAX_AXIS_ORDER):
    """Schoenflies name of a finite subgroup of SO(3) and its axis lines."""
    lines = _axis_lines(proper, tol)
    size = len(proper)
    if size == 1:
        return "C1", lines
    top = max(order for _, order in lines)
    if top > max_axis_order and size != 60:
        raise ValueError(
            f"the group has a {top}-fold rotation axis; supported axis orders are <= {max_axis_order}"
        )
    if len(lines) == 1:
        return f"C{size}", lines
    threefold = sum(1 for _, order in lines if order == 3)
    if size == 12 and threefold == 4:
        return "T", lines
    if size == 24 and threefold == 4:
        return "O", lines
    if size == 60:
        return "I", lines
    if size == 2 * top:
        return f"D{top}", lines
    raise ValueError(f"the {size} proper rotations do not form a finite rotation group")


def _full_name(rot_name, has_inversion, image_name):
    """Name of G from its rotation subgroup P, whether -I ∈ G, and P' = P ∪ {-g : g ∈ G \\ P}."""
    if has_inversion:
        if rot_name == "C1":
            return "Ci"
        if rot_name in ("T", "O", "I"):
            return rot_name + "h"
        n = int(rot_name[1:])
        if rot_name[0] == "C":
            return f"C{n}h" if n % 2 == 0 else f"S{2 * n}"
        return f"D{n}h" if n % 2 == 0 else f"D{n}d"
    if (image_name, rot_name) == ("O", "T"):
        return "Td"
    if rot_name == "C1":
        return "Cs"
    n = int(rot_name[1:])
    if rot_name[0] == "C" and image_name == f"C{2 * n}":
        return f"C{n}h" if n % 2 == 1 else f"S{2 * n}"
    if rot_name[0] == "C" and image_name == f"D{n}":
        return f"C{n}v"
    if rot_name[0] == "D" and image_name == f"D{2 * n}":
        return f"D{n}h" if n % 2 == 1 else f"D{n}d"
    raise ValueError(f"inconsistent group structure (rotation subgroup {rot_name}, image {image_name})")


def _frame_candidates(name, improper, lines, tol):
    """Candidate (z, x) axis pairs for the standard frame of ``name``."""
    def perpendicular(vectors, z):
        return [v for v in vectors if abs(v @ z) < max(_AXIS_TOL, tol)]

    if name in ("C1", "Ci"):
        yield np.array([0.0, 0, 1]), np.array([1.0, 0, 0])
        return
    mirrors = []
    twofold = []
    for g in improper:
        axis, angle = rotation_axis_angle(-g)  # σ_n = -C2(n)
        if abs(angle - np.pi) <= 1e-6 + tol:
            mirrors.append(axis)
    for axis, order in lines:
        if order % 2 == 0:
            twofold.append(axis)
    if name == "Cs":
        yield mirrors[0], perpendicular_unit(mirrors[0])
        return
    if name in _CUBIC:
        wanted = 4 if name[0] == "O" else 2
        axes = [axis for axis, order in lines if order == wanted]
        for z in axes[:1]:
            for x in perpendicular(axes, z):
                yield z, x
        return
    top = max(order for _, order in lines)
    for z in [axis for axis, order in lines if order == top]:
        if name[0] == "C" and name.endswith("v"):
            xs = [np.cross(m, z) for m in perpendicular(mirrors, z)]
        elif name[0] == "D":
            xs = perpendicular(twofold, z)
        else:
            xs = [perpendicular_unit(z)]
        for x in xs:
            yield z, x


def identify(elements, tol):
    """Schoenflies name and a proper frame ``R`` with ``R S Rᵀ == elements`` (S: standard elements).

    ``elements`` must already be a closed finite group (``[order, 3, 3]`` float64, orthogonal).
    Raises ``ValueError`` for structures outside the catalogue and ``RuntimeError`` if no frame
    reproduces the element set (which would be a bug).
    """
    dets = np.linalg.det(elements)
    proper = elements[dets > 0]
    improper = elements[dets < 0]
    rot_name, lines = _name_rotation_group(proper, tol)
    if len(improper) == 0:
        name = rot_name
    else:
        has_inversion = bool((np.abs(improper + np.eye(3)).reshape(-1, 9).max(-1) <= tol).any())
        image_name = None
        if not has_inversion:
            image_name, _ = _name_rotation_group(np.concatenate([proper, -improper]), tol, 2 * MAX_AXIS_ORDER)
        name = _full_name(rot_name, has_inversion, image_name)
    standard = standard_elements(name)
    if len(standard) != len(elements):
        raise ValueError(f"a group of order {len(elements)} cannot be {name} (order {len(standard)})")
    verify_tol = max(10.0 * tol, 1e-9)
    for z, x in _frame_candidates(name, improper, lines, tol):
        if name not in _CUBIC:
            # conjugation by C2(x) preserves every axial standard group: prefer a principal axis
            # whose first non-negligible component is positive
            z = canonical_sign(z, max(1e-6, tol))
        frame = frame_from_axes(z, x)
        if same_set(frame @ standard @ frame.T, elements, verify_tol):
            return name, frame
    raise RuntimeError(f"could not align the standard frame of {name} with the given elements")
