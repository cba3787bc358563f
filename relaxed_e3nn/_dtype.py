"""The default-dtype context manager (the one home of this helper)."""
import contextlib

import torch

__all__ = ["default_dtype"]


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Run the body with ``dtype`` as torch's default dtype, restoring the old one after.

    e3nn modules take the default dtype for the Clebsch-Gordan constants they build at
    construction, and a float32-built module converted to float64 keeps float32-accurate
    constants: build modules in the dtype they will run in.
    """
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)
