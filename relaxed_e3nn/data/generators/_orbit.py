"""Exact symmetrisation of a dataset: every sample together with its images under a finite group.

A dataset of generic samples (random clusters, random particles) has the residual symmetry
only on average, so gradient descent meets it only up to sampling noise. Adding the images
``g·sample`` for every ``g`` of a finite subgroup ``G`` of the residual group makes the *set*
exactly ``G``-invariant; by Curie's principle the learned relaxed weights then stay exactly in
the ``G``-invariant subspace (with an update rule that commutes with ``D(g)``).
"""
from typing import Tuple

import numpy as np

from relaxed_e3nn.groups import frame_from_axes, point_group

__all__ = ["FINITE_SUBGROUP", "symmetrizing_elements"]

#: residual group -> the finite subgroup used to symmetrise (same invariants up to l = 3)
FINITE_SUBGROUP = {"Cinf": "C4", "Cinfv": "C4v", "Cinfh": "C4h", "Dinfh": "D4h", "Cs": "Cs", "C1": "C1",
                   "O3": "Oh", "SO3": "O"}


def symmetrizing_elements(residual: str, axis) -> Tuple[str, np.ndarray]:
    """The finite subgroup of ``residual`` (about ``axis``) used to symmetrise, and its elements.

    Parameters
    ----------
    residual : str
        Residual group name as the generators write it (``"Cinfv"``, ``"Cs"``, ...).
    axis : array_like
        Its principal axis (for ``Cs``: the mirror normal).

    Returns
    -------
    name : str
        Schoenflies name of the subgroup (``"C4v"`` for ``"Cinfv"``, ...).
    elements : np.ndarray
        ``[k, 3, 3]`` float64 matrices, identity first.
    """
    if residual not in FINITE_SUBGROUP:
        raise ValueError(f"cannot symmetrise for residual group {residual!r}; known: {sorted(FINITE_SUBGROUP)}")
    name = FINITE_SUBGROUP[residual]
    group = point_group(name, frame=frame_from_axes(axis))
    return name, group.elements.numpy().astype(np.float64)
