"""The `cpu` backend: the C++ fill of csrc/ (its own thread pool, csrc/cpu/thread_pool.cpp, and
SIMD across Philox counters), and, when it was built against the running torch, the module of
the entry points that take torch tensors (fastinit._C_tensor, csrc/torch)."""
from __future__ import annotations

import importlib
from typing import Sequence

import torch

from ..contract import draw_seed
from ..plan import Fill, pack_descriptors

NAME = "cpu"

try:
    from .. import _C
except ImportError as exc:  # the build was skipped or failed; kept to re-raise on request
    _C = None
    IMPORT_ERROR: ImportError | None = exc
else:
    IMPORT_ERROR = None


def tensor_calls_refusal(built_version: str, built_cxx11_abi: bool) -> str | None:
    """Why fastinit._C_tensor, built against torch `built_version` with that C++ ABI, must not be
    called under the running torch (anything but the exact version and ABI); None when it may."""
    if built_version != torch.__version__:
        return f"built against torch {built_version}, running torch {torch.__version__}"
    if bool(built_cxx11_abi) != bool(torch._C._GLIBCXX_USE_CXX11_ABI):
        return (f"built with _GLIBCXX_USE_CXX11_ABI={int(built_cxx11_abi)}, torch has "
                f"{int(torch._C._GLIBCXX_USE_CXX11_ABI)}")
    return None


def _load_tensor_calls():
    """(fastinit._C_tensor, "loaded") when it was built against the running torch, else (None,
    why not). Its stamps are read before any of its functions is called; a module built against
    another libtorch that does not even load is refused the same way."""
    if _C is None:
        return None, "fastinit._C is not loaded"
    name = f"{__package__.rpartition('.')[0]}._C_tensor"
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:
            return None, f"does not load ({exc})"
        return None, "not built (no torch in the build environment, or its compile failed)"
    except (ImportError, OSError) as exc:  # e.g. symbols of another libtorch
        return None, f"does not load ({type(exc).__name__}: {exc})"
    refusal = tensor_calls_refusal(module.TORCH_BUILD_VERSION, module.CXX11_ABI)
    return (None, f"not loaded: {refusal}") if refusal else (module, "loaded")


# fastinit._C_tensor, or None; and "loaded" or why not (backend_info()["tensor_calls"])
TENSOR_CALLS, TENSOR_CALLS_STATUS = _load_tensor_calls()


def supports(device) -> bool:
    return device.type == "cpu"


def run(fills: Sequence[Fill]) -> None:
    """Fill `fills` on as many threads as ``torch.get_num_threads()`` gives the calling thread.

    The count is passed per call: torch's setting is per thread, so a worker thread's
    ``torch.set_num_threads`` reaches the fill too. A small fill runs on the calling thread
    alone, and a large one never waits for a pool thread that is not running.
    """
    if fills:
        _C.fill(pack_descriptors(fills), torch.get_num_threads())


def fill_tensors(tensors: Sequence[tuple]) -> None:
    """Plan and fill whole dense tensors in one native call (see ``_C.fill_tensors``), on as
    many threads as ``torch.get_num_threads()`` gives the calling thread.

    Args:
        tensors: one tuple per tensor: (data address, storage address, storage bytes, storage
            offset, sizes, strides, dtype code, distribution code, parameters, seed, stream).

    Raises:
        IndexError: a tensor's elements lie outside its storage (torch's message).
        ValueError: a layout a descriptor cannot hold; nothing is written.
    """
    _C.fill_tensors(tensors, torch.get_num_threads())


def fill_whole_tensors(rows: Sequence[tuple]) -> bool:
    """Plan, check and fill whole plain CPU tensors in one native call of fastinit._C_tensor
    (``fill_tensors``), on as many threads as ``torch.get_num_threads()`` gives the calling
    thread, and bump their version counters, when that module is loaded and takes every one of
    them.

    Args:
        rows: one tuple per tensor: (tensor, distribution code, parameters, seed, stream).

    Returns:
        Whether they were filled; False: nothing was written.

    Raises:
        IndexError: a tensor's elements lie outside its storage (torch's message).
        ValueError: a descriptor that cannot be filled (e.g. misaligned data); nothing is
            written.
    """
    return TENSOR_CALLS is not None and TENSOR_CALLS.fill_tensors(rows)


def fill_tensor(data, storage_data, storage_nbytes, storage_offset, sizes, strides, dtype, dist,
                params, seed, stream, generator) -> None:
    """Plan and fill one whole dense tensor in one native call (see
    ``_C.fill_tensor``), on as many threads as ``torch.get_num_threads()`` gives the calling
    thread; the fields are those of a `fill_tensors` tuple.

    Args:
        seed: the seed, or None: ``contract.draw_seed(generator)``, drawn once every check has
            passed.

    Raises:
        IndexError, ValueError: as `fill_tensors`; nothing is drawn or written.
    """
    _C.fill_tensor(data, storage_data, storage_nbytes, storage_offset, sizes, strides, dtype,
                   dist, params, seed, stream, draw_seed, generator, torch.get_num_threads())


def plan_tensors(tensors: Sequence[tuple]) -> bytes:
    """Plan whole dense tensors as `fill_tensors` does, without filling them (for a launch on
    another device).

    Args:
        tensors: one tuple per tensor, as in `fill_tensors`.

    Returns:
        Their packed, checked descriptors (``_C.DESCRIPTOR_SIZE`` bytes each).

    Raises:
        IndexError, ValueError: as `fill_tensors`.
    """
    return _C.plan_tensors(tensors)


def simd_level() -> str:
    return _C.simd_level()
