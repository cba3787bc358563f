"""Argument checks shared by the generators: every bad option raises a clear error naming it."""
import numbers
from typing import Sequence, Tuple

import numpy as np

__all__ = ["check_count", "check_positive", "check_range", "check_vector", "check_choice", "check_bool", "make_rng"]


def check_count(name: str, value, minimum: int = 1) -> int:
    """An integer ``>= minimum`` (bools rejected)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def check_positive(name: str, value, allow_zero: bool = False) -> float:
    """A finite real number ``> 0`` (or ``>= 0`` with ``allow_zero``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r}")
    value = float(value)
    bad = (value < 0) if allow_zero else (value <= 0)
    if not np.isfinite(value) or bad:
        raise ValueError(f"{name} must be a finite number {'>=' if allow_zero else '>'} 0, got {value}")
    return value


def check_range(name: str, value) -> Tuple[float, float]:
    """A pair ``(low, high)`` of finite numbers ``> 0`` with ``low <= high``."""
    if len(value) != 2:
        raise ValueError(f"{name} must be (low, high), got {value!r}")
    low = check_positive(f"{name}[0]", value[0])
    high = check_positive(f"{name}[1]", value[1])
    if high < low:
        raise ValueError(f"{name} must be (low, high) with low <= high, got {value!r}")
    return low, high


def check_vector(name: str, value, allow_zero: bool = True) -> np.ndarray:
    """A finite 3-vector as a float64 array."""
    try:
        vector = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a 3-vector of numbers, got {value!r}") from None
    if vector.shape != (3,):
        raise ValueError(f"{name} must be a 3-vector, got shape {vector.shape}")
    if not np.all(np.isfinite(vector)):
        raise ValueError(f"{name} must be finite, got {vector.tolist()}")
    if not allow_zero and np.linalg.norm(vector) == 0:
        raise ValueError(f"{name} must be a nonzero 3-vector")
    return vector


def check_choice(name: str, value, choices: Sequence[str]) -> str:
    """One of ``choices``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")
    return value


def check_bool(name: str, value) -> bool:
    """A Python or numpy bool (no truthy stand-ins such as 0, 1 or "yes")."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def make_rng(seed) -> np.random.Generator:
    """A numpy generator from an integer seed (the one source of randomness of a generator)."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed must be an integer, got {seed!r}")
    return np.random.default_rng(int(seed))
