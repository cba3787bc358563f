"""Checks shared by the host-model tests (NequIP, MACE): θ set by hand, symmetry of energy and forces.

Each host test module supplies ``energy_forces(model, pos) -> (energy, forces)`` for its host; the
functions here set θ and compare a model's energy and forces on a structure and on its image under
an O(3) element ``g`` (float64 ``[3, 3]``): ``E(g x) = E(x)`` and ``F(g x) = F(x) gᵀ``.
"""
import torch
from e3nn import o3

from _geometry import random_orthogonal
from _tolerance import tolerance
from relaxed_e3nn.nn import relaxed_parameters, rotate

__all__ = ["cluster", "symmetry_error", "set_random_thetas_", "set_polar_thetas_", "random_axis",
           "assert_jointly_equivariant"]


def cluster(num_atoms=8, seed=0, spacing=1.6) -> torch.Tensor:
    """Positions (float64 ``[num_atoms, 3]``) of a random compact cluster without close pairs."""
    generator = torch.Generator().manual_seed(seed)
    points = []
    while len(points) < num_atoms:
        candidate = (torch.rand(3, generator=generator, dtype=torch.float64) - 0.5) * 4.0
        if all((candidate - p).norm() > spacing for p in points):
            points.append(candidate)
    return torch.stack(points)


def random_axis(seed=0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    axis = torch.randn(3, generator=generator, dtype=torch.float64)
    return axis / axis.norm()


def symmetry_error(energy_forces, model, pos: torch.Tensor, g: torch.Tensor, model_on_image=None) -> float:
    """Largest relative error of ``E(g x) = E(x)`` and ``F(g x) = F(x) gᵀ`` (float64 comparison).

    ``model_on_image`` (default ``model``) is evaluated on ``g x``: ``rotate(model, g)`` checks joint
    equivariance, ``model`` itself the symmetry of a fixed θ.
    """
    energy, forces = energy_forces(model, pos)
    energy_g, forces_g = energy_forces(model if model_on_image is None else model_on_image, pos @ g.T)
    energy, forces = energy.detach().double(), forces.detach().double()
    energy_error = (energy_g.detach().double() - energy).abs().max() / energy.abs().max().clamp(min=1e-30)
    forces_error = (forces_g.detach().double() - forces @ g.T).abs().max() / forces.abs().max().clamp(min=1e-30)
    return float(max(energy_error, forces_error))


@torch.no_grad()
def set_random_thetas_(model, seed=0, scale=0.5) -> None:
    """Every θ entry random (breaking entries of size ``scale``), 0e entries kept at 1."""
    generator = torch.Generator().manual_seed(seed)
    for _, irreps, theta in relaxed_parameters(model):
        values = scale * torch.randn(theta.shape, generator=generator, dtype=torch.float64)
        for mul_ir, sl in zip(irreps, irreps.slices()):
            if mul_ir.ir == o3.Irrep("0e"):
                values[sl] = 1.0
        theta.copy_(values.to(theta.dtype))


@torch.no_grad()
def set_polar_thetas_(model, axis: torch.Tensor, strength=0.7) -> None:
    """θ of every layer: 0e = 1, the 1o copy = ``strength * axis``, everything else 0 (keeps C∞v about axis)."""
    for _, irreps, theta in relaxed_parameters(model):
        values = torch.zeros(theta.shape, dtype=torch.float64)
        for mul_ir, sl in zip(irreps, irreps.slices()):
            if mul_ir.ir == o3.Irrep("0e"):
                values[sl] = 1.0
            elif mul_ir.ir == o3.Irrep("1o"):
                values[sl] = strength * axis
        theta.copy_(values.to(theta.dtype))


def assert_jointly_equivariant(energy_forces, model, dtype, seed=0) -> None:
    """Random θ, random O(3) elements g: ``rotate(model, g)`` on ``g x`` matches, ``model`` on ``g x`` does not."""
    set_random_thetas_(model, seed=seed)
    pos = cluster(seed=seed + 1)
    elements = random_orthogonal(4, seed=seed + 2)
    for g in elements:
        assert symmetry_error(energy_forces, model, pos, g, rotate(model, g)) <= tolerance(dtype, "rel")
    # negative control: without rotating θ the same elements are broken
    assert min(symmetry_error(energy_forces, model, pos, g) for g in elements[1:]) > 1e-3
