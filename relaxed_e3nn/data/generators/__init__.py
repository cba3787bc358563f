"""Seeded, offline generators of datasets with known symmetry (breaking).

Each generator lives in its own private module and is registered in ``GENERATORS`` by name,
so ``relaxed-e3nn generate NAME`` and the trainer's ``dataset: NAME`` find it.
"""
from typing import Callable, Dict

__all__ = ["GENERATORS"]

GENERATORS: Dict[str, Callable] = {}
