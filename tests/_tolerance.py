"""The one tolerance table of the test suite: named kinds of comparison, per floating dtype.

Every dtype-sensitive test runs in float32 and float64 (the ``dtype`` fixture of
``conftest.py``); it asks this table how close two numbers must be instead of writing its own
numbers. The kinds:

``"abs"``
    absolute error of a quantity of order one (e3nn's ``float_tolerance``), and the relative
    error of a single linear map (the permutation layers of ``relaxed_e3nn.graph``);
``"rel"``
    relative error ``max|a - b| / max|b|`` of the output of a network of several layers
    (equivariance errors);
``"identity"``
    two computations of the same number with no extra arithmetic in between (a relaxed layer at
    θ = 0 against its plain e3nn counterpart);
``"gradient"``
    a gradient or its component outside an invariant subspace, relative to its scale;
``"step"``
    an optimizer step compared with its rotated twin.
"""
import torch

__all__ = ["TOLERANCE", "tolerance"]

TOLERANCE = {
    "abs": {torch.float32: 1e-5, torch.float64: 1e-10},
    "rel": {torch.float32: 2e-5, torch.float64: 1e-10},
    "identity": {torch.float32: 1e-6, torch.float64: 1e-12},
    "gradient": {torch.float32: 1e-5, torch.float64: 1e-11},
    "step": {torch.float32: 1e-5, torch.float64: 1e-12},
}


def tolerance(dtype: torch.dtype, kind: str = "abs") -> float:
    """The tolerance of one kind of comparison (see the module docstring) for ``dtype``.

    Raises
    ------
    KeyError
        For a kind or a dtype the table does not have (a test must not invent its own).
    """
    if kind not in TOLERANCE:
        raise KeyError(f"kind: expected one of {sorted(TOLERANCE)}, got {kind!r}")
    if dtype not in TOLERANCE[kind]:
        raise KeyError(f"dtype: expected torch.float32 or torch.float64, got {dtype!r}")
    return TOLERANCE[kind][dtype]
