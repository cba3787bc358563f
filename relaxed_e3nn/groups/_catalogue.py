"""Names, generators and standard-frame elements of the point groups.

Standard frames: principal axis along z; the C2' axes of D_n along x and its images
under C_n; σv contains z and x; σh is the xy-plane; σd bisects neighboring C2' axes; cubic groups
have their 4-fold (2-fold for T, Th, Td) axes along x, y, z and 3-fold axes along the body
diagonals; icosahedral groups have 2-fold axes along x, y, z and a 5-fold axis along (0, 1, φ).
"""
import functools
import math
import re

import numpy as np

from ._linalg import index_of, reflection, rotation_about, unique_matrices

__all__ = [
    "MAX_AXIS_ORDER",
    "CONTINUOUS_GROUPS",
    "AXIAL_COMPONENTS",
    "parse_name",
    "standard_elements",
    "standard_generators",
    "hermann_mauguin",
    "closure",
]

#: largest n accepted in C_n, C_nv, C_nh, D_n, D_nh, D_nd (and S_2n)
MAX_AXIS_ORDER = 8

CONTINUOUS_GROUPS = ("Cinf", "Cinfv", "Cinfh", "Dinf", "Dinfh", "SO3", "O3")

# An element R of an axial group with axis n satisfies R n = s n; it lies in the component
# (det R, s). C∞ = {(+1, +1)}; σv = (-1, +1); C2' = (+1, -1); σh, i, S(φ) = (-1, -1).
AXIAL_COMPONENTS = {
    "Cinf": frozenset({(1, 1)}),
    "Cinfv": frozenset({(1, 1), (-1, 1)}),
    "Cinfh": frozenset({(1, 1), (-1, -1)}),
    "Dinf": frozenset({(1, 1), (1, -1)}),
    "Dinfh": frozenset({(1, 1), (-1, 1), (1, -1), (-1, -1)}),
}

_GOLDEN = (1.0 + math.sqrt(5.0)) / 2.0
_E = np.eye(3)
_INV = -np.eye(3)
_SIGMA_H = reflection([0.0, 0.0, 1.0])
_SIGMA_V = reflection([0.0, 1.0, 0.0])  # the xz-plane: contains z and x
_C2X = rotation_about([1.0, 0.0, 0.0], math.pi)


def _cz(n):
    return rotation_about([0.0, 0.0, 1.0], 2.0 * math.pi / n)


def _sz(n):
    """Improper rotation S_n about z: rotation by 2π/n followed by σh."""
    return _SIGMA_H @ _cz(n)


# coset representatives of C∞ (about z) in the axial groups, standard frame
AXIAL_COSET_REPRESENTATIVES = {
    "Cinf": (_E,),
    "Cinfv": (_E, _SIGMA_V),
    "Cinfh": (_E, _SIGMA_H),
    "Dinf": (_E, _C2X),
    "Dinfh": (_E, _SIGMA_V, _C2X, _SIGMA_H),
}

_VALID_PATTERNS = (
    "C1, Ci, Cs, Cn, Cnv, Cnh, S2n, Dn, Dnh, Dnd (n = 2..%d), T, Td, Th, O, Oh, I, Ih, "
    "Cinf, Cinfv, Cinfh, Dinf, Dinfh, SO3, O3 (case-insensitive; '∞' may replace 'inf'; aliases "
    "C1h, C1v, S1 -> Cs, S2 -> Ci, D1 -> C2, D1h -> C2v, D1d -> C2h, Kh -> O3)" % MAX_AXIS_ORDER
)

# aliases whose standard-frame generators differ from the canonical group's: they are built from
# these generators and then identified (which yields the canonical name and a rotated frame)
ALIAS_GENERATORS = {
    "C1v": (_SIGMA_V,),
    "D1": (_C2X,),
    "D1h": (_C2X, _SIGMA_H),
    "D1d": (_C2X, reflection([1.0, 0.0, 0.0])),  # σd bisecting the (single) C2' axis x and -x
}

_FIXED = {
    "c1": "C1", "ci": "Ci", "cs": "Cs", "c1h": "Cs", "s1": "Cs", "s2": "Ci",
    "t": "T", "td": "Td", "th": "Th", "o": "O", "oh": "Oh", "i": "I", "ih": "Ih",
    "cinf": "Cinf", "cinfv": "Cinfv", "cinfh": "Cinfh", "dinf": "Dinf", "dinfh": "Dinfh",
    "so3": "SO3", "o3": "O3", "kh": "O3",
    "c1v": "C1v", "d1": "D1", "d1h": "D1h", "d1d": "D1d",
}


def _check_n(n, name):
    if not 2 <= n <= MAX_AXIS_ORDER:
        raise ValueError(
            f"point group {name!r}: axis order n = {n} is out of range; supported n = 2..{MAX_AXIS_ORDER} "
            f"(valid names: {_VALID_PATTERNS})"
        )


def parse_name(name):
    """Canonical Schoenflies name (ASCII) of ``name``, or an alias key of ``ALIAS_GENERATORS``.

    Raises ``TypeError`` for non-strings and ``ValueError`` listing the valid patterns otherwise.
    """
    if not isinstance(name, str):
        raise TypeError(f"point group name must be a str, got {type(name).__name__}")
    key = name.strip().replace("∞", "inf").replace("_", "").replace(" ", "").replace("(3)", "3").lower()
    if key in _FIXED:
        return _FIXED[key]
    m = re.fullmatch(r"([cds])(\d+)([vhd]?)", key)
    if m:
        letter, digits, suffix = m.groups()
        n = int(digits)
        if letter == "s" and not suffix:
            if n % 2:
                raise ValueError(
                    f"point group {name!r}: S_n with odd n is the group C_nh; use 'C{n}h' "
                    f"(valid names: {_VALID_PATTERNS})"
                )
            _check_n(n // 2, name)
            return f"S{n}"
        if letter == "c" and suffix in ("", "v", "h"):
            _check_n(n, name)
            return f"C{n}{suffix}"
        if letter == "d" and suffix in ("", "h", "d"):
            _check_n(n, name)
            return f"D{n}{suffix}"
    raise ValueError(f"unknown point group name {name!r}; valid names: {_VALID_PATTERNS}")


def _split_axial(name, expected):
    """``(letter, n, suffix)`` of a canonical axial name such as ``"D4h"``; ``ValueError`` saying
    ``name`` is not ``expected`` otherwise."""
    m = re.fullmatch(r"([CDS])(\d+)([vhd]?)", name)
    if not m:
        raise ValueError(f"{name!r} is not {expected}")
    letter, digits, suffix = m.groups()
    return letter, int(digits), suffix


def standard_generators(name):
    """Generators (standard frame) of the finite group with canonical name ``name``."""
    if name in ALIAS_GENERATORS:
        return ALIAS_GENERATORS[name]
    fixed = {
        "C1": (_E,),
        "Ci": (_INV,),
        "Cs": (_SIGMA_H,),
    }
    if name in fixed:
        return fixed[name]
    c3_diag = rotation_about([1.0, 1.0, 1.0], 2.0 * math.pi / 3.0)
    t_gens = (rotation_about([0, 0, 1.0], math.pi), _C2X, c3_diag)
    o_gens = (_cz(4), rotation_about([1.0, 0, 0], math.pi / 2.0), c3_diag)
    i_gens = t_gens + (rotation_about([0.0, 1.0, _GOLDEN], 2.0 * math.pi / 5.0),)
    cubic = {
        "T": t_gens,
        "Td": t_gens + (reflection([1.0, -1.0, 0.0]),),
        "Th": t_gens + (_INV,),
        "O": o_gens,
        "Oh": o_gens + (_INV,),
        "I": i_gens,
        "Ih": i_gens + (_INV,),
    }
    if name in cubic:
        return cubic[name]
    letter, n, suffix = _split_axial(name, "a finite point group")
    if letter == "S":
        return (_sz(n),)
    if letter == "C":
        return {"": (_cz(n),), "v": (_cz(n), _SIGMA_V), "h": (_cz(n), _SIGMA_H)}[suffix]
    return {"": (_cz(n), _C2X), "h": (_cz(n), _C2X, _SIGMA_H), "d": (_sz(2 * n), _C2X)}[suffix]


def closure(generators, tol, max_order):
    """All products of ``generators`` (a ``[k, 3, 3]`` array), identity first.

    Breadth-first over the Cayley graph: the frontier is multiplied by every generator and new
    matrices (entrywise distance ``> tol`` to every known one) are kept. Raises ``ValueError`` if
    more than ``max_order`` elements appear (not a finite group of that size).
    """
    gens = np.asarray(generators, dtype=np.float64).reshape(-1, 3, 3)
    elements = np.eye(3)[None]
    frontier = elements
    while len(frontier):
        products = (frontier[:, None] @ gens[None]).reshape(-1, 3, 3)
        candidates = products[index_of(products, elements, tol) < 0]
        if len(candidates) == 0:
            break
        frontier = unique_matrices(candidates, tol)
        elements = np.concatenate([elements, frontier])
        if len(elements) > max_order:
            raise ValueError(
                f"the generators do not close into a finite group of order <= max_order={max_order} "
                f"(reached {len(elements)} elements)"
            )
    return elements


@functools.lru_cache(maxsize=None)
def _standard_elements_cached(name):
    elements = closure(standard_generators(name), 1e-9, 240)
    elements.setflags(write=False)
    return elements


def standard_elements(name):
    """Elements (read-only ``[order, 3, 3]`` float64 array, identity first) in the standard frame."""
    return _standard_elements_cached(name)


def hermann_mauguin(name):
    """Short Hermann–Mauguin symbol (ASCII: overbar written as a leading '-', ∞ as 'inf')."""
    fixed = {
        "C1": "1", "Ci": "-1", "Cs": "m", "C2v": "mm2", "D2": "222", "D2h": "mmm",
        "T": "23", "Th": "m-3", "Td": "-43m", "O": "432", "Oh": "m-3m", "I": "532", "Ih": "-5-3m",
        "Cinf": "inf", "Cinfv": "infm", "Cinfh": "inf/m", "Dinf": "inf2", "Dinfh": "inf/mm",
        "SO3": "infinf", "O3": "infinfm",
    }
    if name in fixed:
        return fixed[name]
    letter, n, suffix = _split_axial(name, "a canonical point group name")
    even = n % 2 == 0
    if letter == "S":  # S_2k: k even -> -(2k); k odd -> -k
        k = n // 2
        return f"-{n}" if k % 2 == 0 else f"-{k}"
    if letter == "C":
        if suffix == "":
            return str(n)
        if suffix == "v":
            return f"{n}mm" if even else f"{n}m"
        return f"{n}/m" if even else f"-{2 * n}"
    if suffix == "":
        return f"{n}22" if even else f"{n}2"
    if suffix == "h":
        return f"{n}/mmm" if even else f"-{2 * n}m2"
    return f"-{2 * n}2m" if even else f"-{n}m"
