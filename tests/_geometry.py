"""Rotations and mirrors written without the package, shared by the point-group tests."""
import math

import numpy as np
from scipy.spatial.transform import Rotation

PHI = (1 + math.sqrt(5)) / 2


def rot(axis, angle):
    axis = np.asarray(axis, float)
    return Rotation.from_rotvec(axis / np.linalg.norm(axis) * angle).as_matrix()


def mirror(normal):
    n = np.asarray(normal, float)
    n = n / np.linalg.norm(n)
    return np.eye(3) - 2 * np.outer(n, n)
