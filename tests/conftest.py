import pytest
import torch

import fastinit


@pytest.fixture(autouse=True)
def _reset_backend_and_seed():
    """Each test starts on the `auto` backend with torch's default generator seeded to 0."""
    fastinit.set_backend("auto")
    torch.manual_seed(0)
    yield
    fastinit.set_backend("auto")


def poisoned(shape, dtype, device="cpu"):
    """A tensor full of NaN, so an element a kernel failed to write shows up."""
    return torch.full(shape, float("nan"), dtype=dtype, device=device)
