r"""A cube deformed into a cube, a tetragonal prism or an irregular shape.

Input: the 8 vertices :math:`s(\pm1, \pm1, \pm1) + \mathbf t` of a cube of random half-width
:math:`s` and random centre :math:`\mathbf t`. Per-vertex targets, for the deformation
:math:`\mathbf x \mapsto \mathbf x'` of the vertex relative to the centre:

- ``arrays["displacements"]`` :math:`= \mathbf x' - \mathbf x` (``1o``);
- ``arrays["signal"]``: the spherical signal peaked at the target vertex, the real spherical
  harmonics :math:`Y_l(\hat{\mathbf x}')` for :math:`l = 0..l_\max` (e3nn's ``component``
  normalisation, irreps ``0e + 1o + 2e + ...``, stored in ``info["signal_irreps"]``).

Deformations and the residual symmetry of (input, target), within the cube's :math:`O_h`:

- ``"cube"``: identity, :math:`O_h` (nothing to break);
- ``"prism"``: :math:`(x, y, z) \mapsto (x/2, y/2, 2z)`, :math:`D_{4h}` about z — breaking by an
  even, rank-2 order parameter (``2e`` along z) and the :math:`D_{4h}`-invariant part of ``4e``;
- ``"irregular"``: a fixed (seed-independent) random displacement of each vertex, :math:`C_1`.
"""
from typing import List, Tuple

import numpy as np
import torch
from ase import Atoms
from e3nn import o3

from relaxed_e3nn._settings import renamed_arguments
from relaxed_e3nn.data.generators._checks import check_choice, check_count, check_positive, check_range, make_rng

__all__ = ["shape_deformation", "SHAPE_TARGETS"]

#: target -> (residual group within Oh, axis)
SHAPE_TARGETS = {"cube": ("Oh", (0.0, 0.0, 1.0)), "prism": ("D4h", (0.0, 0.0, 1.0)),
                 "irregular": ("C1", (0.0, 0.0, 1.0))}

_CUBE = np.array([[x, y, z] for x in (-1.0, 1.0) for y in (-1.0, 1.0) for z in (-1.0, 1.0)])
# fixed so that "irregular" means one shape, whatever the sampling seed
_IRREGULAR = np.random.default_rng(20240729).uniform(-0.5, 0.5, size=(8, 3))


def _deformed(target: str) -> np.ndarray:
    if target == "cube":
        return _CUBE.copy()
    if target == "prism":
        return _CUBE * np.array([0.5, 0.5, 2.0])
    return _CUBE + _IRREGULAR


def _spherical_signal(directions: np.ndarray, lmax: int) -> Tuple[np.ndarray, str]:
    """Real spherical harmonics of unit directions up to ``lmax`` (e3nn order and normalisation)."""
    irreps = o3.Irreps.spherical_harmonics(lmax)
    values = o3.spherical_harmonics(irreps, torch.as_tensor(directions, dtype=torch.float64),
                                    normalize=True, normalization="component")
    return values.numpy(), str(irreps)


@renamed_arguments(n="num_samples")
def shape_deformation(num_samples: int = 16, seed: int = 0, *, target: str = "prism", lmax: int = 4,
                      scale_range: Tuple[float, float] = (0.5, 1.5), translate: float = 1.0) -> List[Atoms]:
    r"""Cubes with per-vertex targets of a deformation into ``target``.

    Parameters
    ----------
    num_samples : int
        Number of samples (cubes of different sizes and centres).
    seed : int
        Seeds the sizes and centres.
    target : {"cube", "prism", "irregular"}
        The deformed shape (see the module docstring).
    lmax : int
        Highest degree of the spherical ``signal`` target.
    scale_range : (float, float)
        Range of the cube half-width :math:`s`.
    translate : float
        Centres are uniform in ``[-translate, translate]^3``.

    Returns
    -------
    list of ase.Atoms
        8 carbon "atoms" each (one species), non-periodic, with ``arrays["displacements"]``,
        ``arrays["signal"]`` and ``info`` keys ``target``, ``scale``, ``signal_irreps``,
        ``parent_group`` (``"Oh"``), ``residual_group`` and ``axis``.
    """
    num_samples = check_count("num_samples", num_samples)
    target = check_choice("target", target, list(SHAPE_TARGETS))
    lmax = check_count("lmax", lmax, minimum=0)
    low, high = check_range("scale_range", scale_range)
    translate = check_positive("translate", translate, allow_zero=True)
    rng = make_rng(seed)
    residual, axis = SHAPE_TARGETS[target]
    deformed = _deformed(target)
    signal, signal_irreps = _spherical_signal(deformed, lmax)

    samples = []
    for _ in range(num_samples):
        scale = float(rng.uniform(low, high))
        centre = rng.uniform(-translate, translate, size=3)
        atoms = Atoms(symbols=["C"] * 8, positions=scale * _CUBE + centre)
        atoms.arrays["displacements"] = scale * (deformed - _CUBE)
        atoms.arrays["signal"] = signal.copy()
        atoms.info.update({
            "target": target,
            "scale": scale,
            "signal_irreps": signal_irreps,
            "parent_group": "Oh",
            "residual_group": residual,
            "axis": np.asarray(axis),
            "trajectory": len(samples),  # independent samples: each its own block of evidence
        })
        samples.append(atoms)
    return samples
