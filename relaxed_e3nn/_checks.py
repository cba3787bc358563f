"""Argument checks and choice lists shared by every subpackage (the one home of each).

Each check raises with the argument's name and what was expected, so callers never repeat the
message. Nothing here imports the rest of the package.
"""
import math
import re
from typing import Any, Iterable, Sequence

import numpy as np
import torch
from e3nn import o3

__all__ = [
    "DTYPES",
    "RELAX_AT",
    "ORDINARY_OPTIMIZERS",
    "THETA_OPTIMIZERS",
    "dtype_from_name",
    "dtype_name",
    "model_dtype",
    "parse_irreps",
    "check_choice",
    "orthogonality_error",
    "as_orthogonal_matrix",
    "is_int",
    "is_number",
    "check_number",
    "check_float_dtype",
    "check_finite",
]

#: the floating-point dtypes models, builders and files accept, by config name
DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: where a relaxed convolution places its relaxed weights
RELAX_AT = ("edge", "node", "both")
#: optimizers for ordinary (non-θ) weights, and for the relaxed weights θ
ORDINARY_OPTIMIZERS = ("adam", "adamw", "sgd")
THETA_OPTIMIZERS = ("irrep_adam", "sgd")


def is_int(value) -> bool:
    """True for Python/numpy ints, False for bools."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_number(value) -> bool:
    """True for real numbers (ints or floats), False for bools and strings."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def check_choice(name: str, value: Any, choices: Iterable, where: str = "") -> Any:
    """Return ``value`` if it is one of ``choices``, else raise ``ValueError`` naming ``name``."""
    choices = tuple(choices)
    if value not in choices:
        prefix = f"{where}: " if where else ""
        raise ValueError(f"{prefix}{name} must be one of {choices}, got {value!r}")
    return value


def dtype_from_name(name: str, argument: str = "dtype") -> torch.dtype:
    """``"float32"``/``"float64"`` (or the torch dtype itself) to the torch dtype; others raise."""
    if isinstance(name, torch.dtype):
        if name not in DTYPES.values():
            raise ValueError(f"{argument} must be torch.float32 or torch.float64, got {name}")
        return name
    check_choice(argument, name, DTYPES)
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """The config name of a torch dtype (``torch.float64`` -> ``"float64"``)."""
    return str(dtype).replace("torch.", "")


def model_dtype(model: torch.nn.Module) -> torch.dtype:
    """The floating dtype of a module's first floating parameter or buffer (torch's default if none)."""
    for tensor in list(model.parameters()) + list(model.buffers()):
        if torch.is_floating_point(tensor):
            return tensor.dtype
    return torch.get_default_dtype()


def parse_irreps(name: str, value, where: str = "") -> o3.Irreps:
    """``value`` as `e3nn.o3.Irreps`; malformed input raises ``ValueError`` naming ``name``."""
    prefix = f"{where}: " if where else ""
    if isinstance(value, o3.Irreps):
        return value
    if not isinstance(value, (str, o3.Irrep, list, tuple)):
        raise ValueError(f"{prefix}{name} must be an irreps string such as '16x0e+8x1o', got {value!r}")
    if isinstance(value, str) and re.search(r"(^|\+)\s*-\s*\d+\s*x", value):
        raise ValueError(f"{prefix}{name} must have non-negative multiplicities, got {value!r}")
    try:
        irreps = o3.Irreps(value)
    except (ValueError, TypeError, AssertionError, IndexError) as err:
        raise ValueError(f"{prefix}{name} must be an irreps string such as '16x0e+8x1o', got {value!r}") from err
    if any(mul < 0 for mul, _ in irreps):
        raise ValueError(f"{prefix}{name} must have non-negative multiplicities, got {value!r}")
    return irreps


def orthogonality_error(R) -> float:
    r"""Max-abs entry of :math:`R R^\top - I` in float64 (``inf`` for non-finite input)."""
    R64 = np.asarray(R.detach().cpu() if isinstance(R, torch.Tensor) else R, dtype=np.float64)
    if not np.isfinite(R64).all():
        return math.inf
    eye = np.eye(R64.shape[-1])
    return float(np.abs(R64 @ np.swapaxes(R64, -1, -2) - eye).max()) if R64.size else 0.0


def as_orthogonal_matrix(R, name: str = "R", tol: float = None, batched: bool = False) -> torch.Tensor:
    r"""``R`` as a tensor of 3x3 orthogonal matrices, or a ``ValueError``/``TypeError`` naming ``name``.

    Parameters
    ----------
    R : array-like, shape ``[3, 3]`` (or ``[G, 3, 3]`` with ``batched=True``)
    tol : float, optional
        Largest allowed :math:`\max|R R^\top - I|`; default 1e-9 for float64 input, else 1e-5.
    """
    if not isinstance(R, torch.Tensor):
        try:
            R = torch.as_tensor(np.asarray(R, dtype=np.float64))
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"{name} must be a 3x3 matrix, got {type(R).__name__}") from err
    shape_ok = R.dim() == 3 and R.shape[1:] == (3, 3) if batched else R.shape == (3, 3)
    if not shape_ok:
        expected = "[G, 3, 3] orthogonal matrices" if batched else "a 3x3 orthogonal matrix"
        raise ValueError(f"{name} must be {expected}, got shape {tuple(R.shape)}")
    if not torch.is_floating_point(R) or not torch.isfinite(R).all():
        raise ValueError(f"{name} must be finite real 3x3 matrices")
    if tol is None:
        tol = 1e-9 if R.dtype == torch.float64 else 1e-5
    error = orthogonality_error(R)
    if error > tol:
        raise ValueError(f"{name} must be orthogonal (R R^T = I), but |R R^T - I| = {error:.2e}")
    return R


def check_number(name: str, value, where: str = "", *, positive: bool = False) -> float:
    """``value`` as a finite Python float, or an exception naming ``name``.

    Strings (``"4.0"``), bools, ``None`` and other non-numbers raise ``TypeError`` (nothing is
    converted quietly); NaN, inf (and, with ``positive=True``, values ``<= 0``) raise ``ValueError``.
    A 0-d tensor or numpy scalar counts as a number.
    """
    prefix = f"{where}: " if where else ""
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.ndim == 0:
        value = value.item()  # a bool tensor becomes a bool, refused below
    if not is_number(value):
        raise TypeError(f"{prefix}{name} must be a number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or (positive and value <= 0):
        expected = "a positive finite number" if positive else "a finite number"
        raise ValueError(f"{prefix}{name} must be {expected}, got {value}")
    return value


def check_float_dtype(name: str, dtype, where: str = "") -> torch.dtype:
    """``dtype`` if it is ``torch.float32`` or ``torch.float64``, else a ``TypeError`` naming ``name``.

    Half precision (``float16``, ``bfloat16``) is refused: e3nn's constants, the neighbor-list
    shifts and the equivariance tolerances of this package are not defined for it.
    """
    if dtype not in DTYPES.values():
        prefix = f"{where}: " if where else ""
        raise TypeError(f"{prefix}{name} must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def check_finite(name: str, value, where: str = "") -> None:
    """Raise ``ValueError`` naming ``name`` (and the first bad index) if ``value`` holds NaN or inf.

    ``value`` is a tensor or an array; integer and bool data always pass. Reads the values on the
    host: call it where data enter (graph build, collate, load), never per forward pass.
    """
    if isinstance(value, torch.Tensor):
        if not torch.is_floating_point(value) and not torch.is_complex(value):
            return
        bad = ~torch.isfinite(value.detach())
        if not bool(bad.any()):
            return
        first = tuple(int(i) for i in torch.nonzero(bad)[0].tolist())
        count = int(bad.sum())
    else:
        array = np.asarray(value)
        if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.complexfloating)):
            return
        bad = ~np.isfinite(array)
        if not bad.any():
            return
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        count = int(bad.sum())
    prefix = f"{where}: " if where else ""
    at = f" (first at index {list(first)})" if first else ""
    raise ValueError(f"{prefix}{name} contains NaN or inf: {count} non-finite value(s){at}")
