import os

import torch

# Without a GPU the Triton kernels run in Triton's interpreter. The variable must be set before
# anything imports triton (backend_info() does, from any test module), hence here.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402

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
