r"""One check of joint equivariance for the tests: ``f(D_1(g) x_1, ..., D_θ(g) θ) = D_out(g) f(x_1, ..., θ)``.

A relaxed layer is equivariant *jointly* in its inputs and its relaxed weights θ: θ is just one
more argument with its own irreps. :func:`equivariance_error` returns the largest relative error

.. math::
    \max_{g}\ \max_k \frac{\| f_k(g\cdot x) - D_{\mathrm{out},k}(g) f_k(x) \|_\infty}{\| f_k(x) \|_\infty}

over the outputs ``k`` and the group elements ``g``. Without ``elements`` the ``g`` are random
O(3) elements, parity included, drawn by e3nn's own check (``e3nn.util.test.equivariance_error``,
which also translates ``"cartesian_points"`` arguments when asked); with ``elements`` (a finite
point group, say) exactly those, acting on points about ``center``.

Each argument (and output) is described like in e3nn: an ``o3.Irreps`` (or its string), the
string ``"cartesian_points"`` (positions, acted on by ``x -> c + g (x - c)``) or None (left
alone: indices, invariant attributes, a θ held fixed).

The package's user-facing check is ``relaxed_e3nn.symmetry.equivariance_error`` (per output irrep
block, for reports); this module is the tests' short form that returns one number to compare
with ``_tolerance.tolerance(dtype, "rel")``.
"""
import torch
from e3nn import o3
from e3nn.util import test as e3nn_test

__all__ = ["equivariance_error"]

POINTS = "cartesian_points"


def _as_list(value):
    """One output or one description as a list of one (an ``o3.Irreps`` is a tuple, but one description)."""
    return list(value) if isinstance(value, (list, tuple)) and not isinstance(value, o3.Irreps) else [value]


def _spec(spec):
    return spec if spec is None or spec == POINTS else o3.Irreps(spec)


def _act(g: torch.Tensor, value: torch.Tensor, spec, center: torch.Tensor) -> torch.Tensor:
    """``g`` (float64) acting on one argument or output, in the float64 transform dtype."""
    value = value.detach().to(torch.float64)
    if spec is None:
        return value
    if spec == POINTS:
        return center + (value - center) @ g.T
    return value @ spec.D_from_matrix(g).T


def _scales(func, args) -> torch.Tensor:
    outputs = [out.detach().to(torch.float64) for out in _as_list(func(*args))]
    return torch.stack([out.abs().max().clamp(min=1e-30) for out in outputs])


def equivariance_error(func, args, irreps_in, irreps_out, elements=None, num_elements=4, center=None,
                       translate=False) -> float:
    """Largest relative equivariance error of ``func`` (see the module docstring).

    Parameters
    ----------
    func : callable
        Takes ``*args``, returns a tensor or a tuple of tensors.
    args : sequence of torch.Tensor
        The inputs, θ included where the joint equivariance is tested.
    irreps_in, irreps_out : sequence
        One description per argument / output: ``o3.Irreps`` or str, ``"cartesian_points"``, None.
    elements : sequence of (3, 3) tensors, optional
        The group elements to test; default ``num_elements`` random O(3) elements, half of
        them improper.
    num_elements : int
        How many random elements when ``elements`` is None (rounded up to an even number).
    center : array_like, optional
        The point that ``elements`` act about on ``"cartesian_points"`` (default the origin).
    translate : bool
        With random elements, also test a random translation of the ``"cartesian_points"``.

    Returns
    -------
    float
        The largest relative error.
    """
    args = list(args)
    irreps_in = [_spec(s) for s in _as_list(irreps_in)]
    irreps_out = [_spec(s) for s in _as_list(irreps_out)]
    if len(irreps_in) != len(args):
        raise ValueError(f"irreps_in: expected one description per argument ({len(args)}), got {len(irreps_in)}")
    scales = _scales(func, args)
    if elements is None:
        errors = e3nn_test.equivariance_error(
            func, args, irreps_in, irreps_out, ntrials=max(1, (num_elements + 1) // 2),
            do_parity=True, do_translation=translate,
        )
        return max(float((err.to(torch.float64) / scales).max()) for err in errors.values())
    c = torch.zeros(3, dtype=torch.float64) if center is None else torch.as_tensor(center, dtype=torch.float64)
    worst = 0.0
    reference = [out.detach() for out in _as_list(func(*args))]
    for g in elements:
        g = torch.as_tensor(g, dtype=torch.float64)
        moved = [a if s is None else _act(g, a, s, c).to(a.dtype) for a, s in zip(args, irreps_in)]
        outputs = _as_list(func(*moved))
        for k, (out, ref, spec) in enumerate(zip(outputs, reference, irreps_out)):
            error = (out.detach().to(torch.float64) - _act(g, ref, spec, c)).abs().max()
            worst = max(worst, float(error / scales[k]))
    return worst
