"""Shared test fixtures: every dtype-sensitive test runs in float32 and float64, seeded, offline."""
import random

import numpy as np
import pytest
import torch

from _tolerance import tolerance

torch.set_num_threads(1)


@pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
def dtype(request):
    """Run the test in both precisions with the default dtype set accordingly."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(request.param)
    try:
        yield request.param
    finally:
        torch.set_default_dtype(old)


@pytest.fixture
def float_tolerance(dtype):
    """Absolute tolerance for order-one quantities in the current ``dtype`` (see ``_tolerance``)."""
    return tolerance(dtype, "abs")


@pytest.fixture(autouse=True)
def _seed():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield
