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


def triton_kernels_or_skip():
    """(fastinit.kernels.fill, device) for a module of Triton tests: the kernels run compiled
    on "cuda", or under TRITON_INTERPRET=1 on "cpu". Skips the module where they cannot run."""
    pytest.importorskip("triton", reason="the triton backend needs the triton package")
    from fastinit.backends import triton as triton_backend

    if triton_backend.IMPORT_ERROR is not None:
        pytest.skip(f"triton backend unavailable: {triton_backend.IMPORT_ERROR}",
                    allow_module_level=True)
    import triton
    from fastinit.kernels import fill as kernels

    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if interpreted and tuple(int(x) for x in triton.__version__.split(".")[:2]) < (3, 8):
        pytest.skip(f"Triton {triton.__version__}'s interpreter cannot run the kernels (a loop "
                    "bound loaded from memory); the interpreter tests need Triton >= 3.8",
                    allow_module_level=True)
    if not interpreted and not torch.cuda.is_available():
        pytest.skip("no CUDA device and TRITON_INTERPRET is not 1", allow_module_level=True)
    if interpreted and not isinstance(kernels.fill_kernel,
                                      triton.runtime.interpreter.InterpretedFunction):
        pytest.skip(
            "fastinit.kernels was imported before TRITON_INTERPRET=1 was set, so its kernels "
            "are compiled for a GPU; run with TRITON_INTERPRET=1 in the environment",
            allow_module_level=True,
        )
    return kernels, "cpu" if interpreted else "cuda"


def poisoned(shape, dtype, device="cpu"):
    """A tensor full of NaN, so an element a kernel failed to write shows up."""
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


def backend_params(names):
    """pytest parameters of backend names: in Triton's interpreter a "triton" case takes
    seconds, so there it is marked slow (the quick suite leaves it to the slow one)."""
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    return [pytest.param(name, marks=pytest.mark.slow) if name == "triton" and interpreted
            else name for name in names]
