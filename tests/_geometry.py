"""Geometry written without the package, shared by the tests: rotations, mirrors, groups, structures.

The point-group tests compare the package against matrices built here, independently of the
catalogue in ``relaxed_e3nn.groups``. ``rot`` and ``mirror`` return numpy arrays; their torch
twins ``rotation_about`` and ``reflection`` return float64 tensors, as do ``close_group`` and
the random elements.
"""
import math

import numpy as np
import torch
from ase.build import bulk
from e3nn import o3
from scipy.spatial.transform import Rotation

PHI = (1 + math.sqrt(5)) / 2
INVERSION = -torch.eye(3, dtype=torch.float64)


def rot(axis, angle):
    """Rotation by ``angle`` about ``axis`` (any length), numpy ``(3, 3)``."""
    axis = np.asarray(axis, float)
    return Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix()


def mirror(normal):
    r"""Reflection :math:`1 - 2 n n^\top` through the plane with normal ``normal``, numpy ``(3, 3)``."""
    n = np.asarray(normal, float)
    n = n / np.linalg.norm(n)
    return np.eye(3) - 2 * np.outer(n, n)


def rotation_about(axis, angle) -> torch.Tensor:
    """:func:`rot` as a float64 tensor."""
    return torch.from_numpy(rot(axis, float(angle)))


def reflection(normal) -> torch.Tensor:
    """:func:`mirror` as a float64 tensor."""
    return torch.from_numpy(mirror(normal))


def close_group(generators, max_order=200) -> torch.Tensor:
    """All products of the ``(3, 3)`` generators, deduplicated to 1e-8, as ``(|G|, 3, 3)`` float64."""
    elements = [torch.eye(3, dtype=torch.float64)]
    frontier = list(elements)
    while frontier:
        new = []
        for a in frontier:
            for g in generators:
                b = torch.as_tensor(g, dtype=torch.float64) @ a
                if not any((b - c).abs().max() < 1e-8 for c in elements):
                    elements.append(b)
                    new.append(b)
        frontier = new
        if len(elements) > max_order:
            raise RuntimeError("group does not close")
    return torch.stack(elements)


def random_rotation(seed=None) -> torch.Tensor:
    """A Haar-random proper rotation (float64); ``seed`` an int, a ``torch.Generator`` or None (global RNG)."""
    generator = torch.Generator().manual_seed(seed) if isinstance(seed, int) else seed
    q = torch.randn(4, generator=generator, dtype=torch.float64)
    return o3.quaternion_to_matrix(q / q.norm())


def random_orthogonal(n, seed=None) -> list:
    """``n`` random O(3) elements (float64): Haar rotations, every second one times -1 (improper)."""
    generator = torch.Generator().manual_seed(seed) if isinstance(seed, int) else seed
    return [random_rotation(generator) * (1 if k % 2 == 0 else -1) for k in range(n)]


def rattled_cu(seed=0, repeat=(2, 2, 2), amplitude=0.05):
    """A cubic fcc Cu supercell (a = 3.6 Å) with every atom displaced by ~``amplitude`` Å."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True) * repeat
    atoms.rattle(amplitude, seed=seed)
    return atoms
