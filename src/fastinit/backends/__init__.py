"""Backend selection and dispatch.

Each backend is a module here with ``NAME``, ``IMPORT_ERROR`` (None, or why it cannot run),
``supports(device)`` and ``run(fills)``. ``auto`` picks, per device: CPU tensors -> ``cpu`` (the
C++ fill), else ``reference``; CUDA tensors -> ``cuda`` when its module loads, else ``triton``
when Triton imports, else ``reference``; any other device -> ``reference``. A backend named
explicitly (``set_backend`` or FASTINIT_BACKEND) that cannot run raises its original error
instead of falling back.
"""
from __future__ import annotations

import importlib
import os
import warnings
from collections import OrderedDict
from typing import Optional, Sequence

import torch

from ..contract import DTYPE_CODES, Distribution, thread_generator
from ..contract_numbers import HOST_DISTRIBUTIONS as _HOST_CODES
from ..contract_numbers import MAX_DIMS
from ..errors import BackendUnavailableError, GraphCaptureError, UnsafeTargetError
from ..plan import (PLAIN_TENSOR_TYPES, Fill, check_storage, descriptor_fills,
                    has_real_storage)
from ..sharding import local_tensor

BACKENDS = ("cpu", "cuda", "triton", "reference")
AUTO_ORDER = {"cpu": ("cpu", "reference"), "cuda": ("cuda", "triton", "reference")}

ENV_VAR = "FASTINIT_BACKEND"
# Distributions computed on the host by the reference, whatever the selected backend.
HOST_DISTRIBUTIONS = frozenset(Distribution[name] for name in _HOST_CODES)

_selected = "auto"
# The error of an unusable FASTINIT_BACKEND, raised at first use (see _select_from_environment).
_environment_error: Exception | None = None
_last_run: dict[str, str] = {}


def _module(name: str):
    """The backend module; imported on first use (Triton's import is slow)."""
    return importlib.import_module(f"{__name__}.{name}")


def _unavailable_reason(name: str) -> str | None:
    error = _module(name).IMPORT_ERROR
    return None if error is None else f"{type(error).__name__}: {error}"


def set_backend(name: str) -> None:
    """Select the backend for every later call: "auto", "cpu", "cuda", "triton" or "reference".

    ``auto`` (the default) picks per device: the C++ backend for CPU tensors, CUDA C++ (else
    Triton) for CUDA tensors, the NumPy reference elsewhere. Every backend gives the same values.

    Args:
        name: the backend's name, case-insensitive.

    Raises:
        ValueError: `name` is not one of the names above.
        BackendUnavailableError: the named backend cannot run here (the original import error
            is chained).

    Examples:
        >>> fastinit.set_backend("reference")
        >>> fastinit.get_backend()
        'reference'
        >>> fastinit.set_backend("auto")
    """
    global _selected, _environment_error
    name = str(name).strip().lower()
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose one of auto, {', '.join(BACKENDS)}")
    if name != "auto":
        module = _module(name)
        if module.IMPORT_ERROR is not None:
            raise BackendUnavailableError(
                f"backend {name!r} cannot run here: {_unavailable_reason(name)}"
            ) from module.IMPORT_ERROR
    _selected = name
    _environment_error = None


def get_backend() -> str:
    """The name of the selected backend.

    Returns:
        "auto", "cpu", "cuda", "triton" or "reference", as given to :func:`set_backend` (or the
        FASTINIT_BACKEND environment variable).
    """
    return _selected


def backend_info() -> dict:
    """What is available, what is selected, and which backend last ran on each device type.

    Returns:
        A dict: ``selected`` (:func:`get_backend`), ``available`` (backend names that can run
        here), ``unavailable`` (name -> why not), ``cpu_simd`` (the instruction set the C++
        backend picked, e.g. "avx512 (x86-64-v4)"), ``tensor_calls`` ("loaded" when the
        drop-in call reads torch tensors natively, fastinit._C_tensor, else why not) and
        ``last_run`` (device type -> the backend that filled its last tensors).
    """
    reasons = {name: _unavailable_reason(name) for name in BACKENDS}
    cpu = _module("cpu")
    return {
        "selected": _selected,
        "available": [name for name, why in reasons.items() if why is None],
        "unavailable": {name: why for name, why in reasons.items() if why is not None},
        "cpu_simd": cpu.simd_level() if cpu.IMPORT_ERROR is None else None,
        "tensor_calls": cpu.TENSOR_CALLS_STATUS,
        "last_run": dict(_last_run),
    }


def backend_for(device: torch.device):
    """The backend module that fills tensors on `device` under the current selection.

    Raises:
        ValueError, BackendUnavailableError: FASTINIT_BACKEND names a backend that cannot be
            used (and set_backend() has not been called since).
    """
    if _environment_error is not None:
        raise type(_environment_error)(
            f"{ENV_VAR}={os.environ.get(ENV_VAR, '').strip()!r}: {_environment_error}"
        ) from _environment_error
    if _selected == "auto":
        for name in AUTO_ORDER.get(device.type, ("reference",)):
            module = _module(name)
            if module.IMPORT_ERROR is None and module.supports(device):
                return module
        return _module("reference")
    module = _module(_selected)
    if not module.supports(device):
        raise BackendUnavailableError(f"backend {_selected!r} cannot fill tensors on {device}")
    return module


def execute(fills: Sequence[Fill], dense: Sequence[tuple] = ()) -> None:
    """Run validated fills: one backend call per (device, dtype) group, in place.

    Fills of tensors without real storage (meta, fake, functional) are dropped; every other
    tensor's storage is checked, for all fills, before any backend writes. Whole plain CPU
    tensors are planned, checked and filled by the C++ backend in one native call
    (`_fill_whole_tensors`); the others are planned here (plan.descriptor_fills).

    Args:
        fills: the fills.
        dense: more whole tensors for that native call, as (tensor, dist, params, seed, stream)
            rows with what make_fill checks checked, each tensor accepted by
            `dense_native_codes`.
    """
    if len(fills) == 1 and not dense:  # one whole plain CPU tensor (a drop-in call): the native path alone
        f = fills[0]
        if f.layout is None and f.first_index == 0 and fill_whole_natively(
                f.tensor, f.dist, f.params, f.seed, f.stream):
            return
    if not dense and _fill_all_natively(fills):  # whole plain CPU tensors: one native call
        return
    inference_refused = not torch.is_inference_mode_enabled()
    fills = [f for f in fills if has_real_storage(f.tensor)]
    for f in fills:
        if inference_refused and local_tensor(f.tensor).is_inference():
            raise UnsafeTargetError(
                "Inplace update to inference tensor outside InferenceMode is not allowed: "
                f"a tensor of shape {tuple(f.tensor.shape)} was created under "
                "torch.inference_mode(); initialise it inside inference_mode or clone it")
        check_storage(f.tensor)
    native = [f for f in fills if f.layout is None and f.first_index == 0 and f.tensor.numel()
              and _natively_planned(f.tensor, f.dist)]
    native_ids = {id(f) for f in native}
    targets = descriptor_fills([f for f in fills if id(f) not in native_ids])
    groups: "OrderedDict[tuple, list[Fill]]" = OrderedDict()
    for f in targets:
        host_only = f.dist in HOST_DISTRIBUTIONS
        groups.setdefault((f.tensor.device, f.tensor.dtype, host_only), []).append(f)
    # Every group's backend is resolved before any of them writes. Host-only distributions
    # (docs/contract.md, "Extreme parameters") have one implementation, the reference's.
    runs = [(_module("reference") if host_only else backend_for(device), device, group)
            for (device, _, host_only), group in groups.items()]
    with torch.no_grad():
        if native or dense:  # whole plain CPU tensors: planned, checked and filled in one native call
            _fill_whole_tensors([(f.tensor, f.dist, f.params, f.seed, f.stream) for f in native]
                                + list(dense))
        for backend, device, group in runs:
            backend.run(group)
            if group[0].dist not in HOST_DISTRIBUTIONS:
                _last_run[device.type] = backend.NAME
        for f in fills:  # (`_fill_whole_tensors` bumped those it filled)
            if f.tensor.numel() and id(f) not in native_ids:
                torch.autograd.graph.increment_version(local_tensor(f.tensor))


def fill_whole_natively(tensor: torch.Tensor, dist: int, params: Sequence[float],
                        seed: Optional[int], stream: int = 0, *,
                        generator: Optional[torch.Generator] = None) -> bool:
    """Fill a whole tensor in one native call, when the C++ backend plans it
    (`_natively_planned`), it is non-empty with real storage and no inference tensor outside
    inference mode; else draw nothing, write nothing and return False (`execute` runs it, or
    raises torch's error). One look at the tensor's metadata decides all of it; the native call
    then checks the storage's bounds and alignment before the seed is drawn. With
    fastinit._C_tensor loaded that look, the seed's draw and the version counter's bump happen in
    C++ (`_tensor_fill`); a tensor or generator it declines takes the raw-metadata call.

    Args:
        tensor: the tensor, all of it from contract index 0.
        dist, params, stream: the fill's, checked (see plan.make_fill); a uniform's parameters
            are [scale, shift, limit].
        seed: the fill's seed, checked; None: one draw from `generator`
            (`contract.draw_seed`), once the checks have passed.
        generator: where a seed of None is drawn from.

    Returns:
        Whether the tensor was filled.

    Raises:
        UnsafeTargetError: the tensor's elements lie outside its storage (torch's message);
            nothing is drawn or written.
    """
    if type(tensor) not in PLAIN_TENSOR_TYPES or not _native_backend_selected() \
            or dist in HOST_DISTRIBUTIONS:
        return False
    if _tensor_fill is not None:
        try:
            if _tensor_fill(tensor, dist, params, seed,
                            thread_generator() if generator is None else generator, stream):
                _last_run["cpu"] = _CPU.NAME
                return True
        except IndexError as exc:  # the storage's bounds, in torch's words
            raise UnsafeTargetError(str(exc)) from None
    with torch._C.DisableTorchFunction():  # fastinit's own look at the metadata
        code = _NATIVE_DTYPE_CODES.get(tensor.dtype)
        if (code is None or not tensor.is_cpu or tensor.dim() > MAX_DIMS
                or tensor.is_neg() or not tensor.numel() or torch._is_functional_tensor(tensor)
                or (tensor.is_inference() and not torch.is_inference_mode_enabled())):
            return False
        storage = tensor.untyped_storage()
        try:
            _CPU.fill_tensor(tensor.data_ptr(), storage.data_ptr(), storage.nbytes(),
                             tensor.storage_offset(), tensor.shape, tensor.stride(), code,
                             int(dist), params, seed, stream, generator)
        except IndexError as exc:  # the storage's bounds, in torch's words
            raise UnsafeTargetError(str(exc)) from None
    _last_run["cpu"] = _CPU.NAME
    _increment_version((tensor,))
    return True


def record_whole_natively(tensor: torch.Tensor, seed: Optional[int],
                          generator: Optional[torch.Generator]) -> Optional[tuple]:
    """What a `fused()` block records of a fill of all of `tensor`, in one native call
    (fastinit._C_tensor's ``record_tensor``): the storage's bounds checked, then the fill's seed
    drawn exactly as `fill_whole_natively` draws it; nothing is written.

    Args:
        tensor: the tensor, all of it from contract index 0, its fill's arguments checked.
        seed: the fill's seed, checked; None: one draw from `generator`.
        generator: where a seed of None is drawn from (None: the thread's generator,
            `contract.thread_generator`, else torch's default CPU generator).

    Returns:
        (storage address, first byte, one past the last byte, dense, seed, memory): the bytes
        of the storage the tensor spans, whether it writes each of them once, the seed, and a
        holder of its memory (`memory_tensor`); or None, having drawn nothing, when that module
        is not loaded or does not take the tensor (see ``record_tensor``) or the generator.

    Raises:
        UnsafeTargetError: the tensor's elements lie outside its storage (torch's message);
            nothing is drawn.
    """
    if _tensor_record is None:
        return None
    try:
        return _tensor_record(tensor, seed, thread_generator() if generator is None else generator)
    except IndexError as exc:  # the storage's bounds, in torch's words
        raise UnsafeTargetError(str(exc)) from None


def memory_tensor(memory) -> torch.Tensor:
    """The tensor of the memory a `record_whole_natively` holder holds."""
    return _CPU.TENSOR_CALLS.memory_tensor(memory)


# torch's version counter bump of tensors written in place (a sequence of them)
_increment_version = torch._C._increment_version
# dtype -> the contract's dtype code, as the native call takes it
_NATIVE_DTYPE_CODES = {dtype: int(code) for dtype, code in DTYPE_CODES.items()}


def _native_backend_selected() -> bool:
    return (_selected in ("auto", "cpu") and _environment_error is None
            and _CPU.IMPORT_ERROR is None)


def _natively_planned(tensor: torch.Tensor, dist: int) -> bool:
    """Whether the C++ backend plans and fills this whole tensor in one native call: a plain
    (no subclass) CPU tensor of a real floating dtype, no negative bit, at most as many dims as a
    descriptor holds, a distribution the backends compute, the cpu backend selected for it."""
    return (type(tensor) in PLAIN_TENSOR_TYPES and tensor.device.type == "cpu"
            and tensor.dtype in DTYPE_CODES and dist not in HOST_DISTRIBUTIONS
            and _native_backend_selected() and tensor.dim() <= MAX_DIMS and not tensor.is_neg())


def dense_native_codes(tensors: Sequence[torch.Tensor]) -> Optional[list]:
    """Which of `tensors` `execute` may take as `dense` rows: for each, its dtype code when the
    C++ backend plans and fills all of it as one dense run (a plain CPU tensor, contiguous,
    non-empty, a real floating dtype, no negative bit, not functional, not an inference tensor
    outside inference mode), else None. fastinit._C_tensor decides in one call where it is
    loaded (it also declines what its `fill_tensors` does not take).

    Returns:
        The codes, or None when the C++ backend does not fill CPU tensors under the current
        selection.
    """
    if not _native_backend_selected():
        return None
    if _CPU.TENSOR_CALLS is not None:
        return _CPU.TENSOR_CALLS.dense_codes(tensors, PLAIN_TENSOR_TYPES)
    inference_ok = torch.is_inference_mode_enabled()
    codes = _NATIVE_DTYPE_CODES
    is_functional = torch._is_functional_tensor
    out = []
    with torch._C.DisableTorchFunction():  # fastinit's own look at the metadata
        for t in tensors:
            out.append(None if (type(t) not in PLAIN_TENSOR_TYPES or not t.is_cpu
                                or not t.is_contiguous() or t.is_neg() or not t.numel()
                                or is_functional(t) or (not inference_ok and t.is_inference()))
                       else codes.get(t.dtype))
    return out


def _native_row(tensor, code, dist, params, seed, stream) -> tuple:
    """The native call's row of one whole tensor (see _fill_rows)."""
    storage = tensor.untyped_storage()
    return (tensor.data_ptr(), storage.data_ptr(), storage.nbytes(), tensor.storage_offset(),
            tensor.shape, tensor.stride(), code, int(dist), params, seed, stream)


def natively_packed(fills: Sequence[Fill]) -> Optional[bytes]:
    """The packed descriptors of `fills`, planned in one native call, when every fill is a
    whole plain tensor (no layout of its own, from contract index 0, a real floating dtype, no
    negative bit, at most as many dims as a descriptor holds) on any device; else None, and the
    caller packs them in Python (`plan.pack_descriptors`), which gives the same bytes.

    Args:
        fills: checked fills (storage, overlap) of one launch.

    Returns:
        The descriptors as bytes, or None.
    """
    if _CPU.IMPORT_ERROR is not None:
        return None
    rows = []
    with torch._C.DisableTorchFunction():  # fastinit's own look at the metadata
        for f in fills:
            t = f.tensor
            code = _NATIVE_DTYPE_CODES.get(t.dtype)
            if (f.layout is not None or f.first_index or type(t) not in PLAIN_TENSOR_TYPES
                    or code is None or t.dim() > MAX_DIMS or t.is_neg()
                    or f.dist in HOST_DISTRIBUTIONS or torch._is_functional_tensor(t)):
                return None
            rows.append(_native_row(t, code, f.dist, f.params, f.seed, f.stream))
    try:
        return _CPU.plan_tensors(rows)
    except (IndexError, ValueError):  # the Python packing raises the error with its context
        return None


def _fill_all_natively(fills: Sequence[Fill]) -> bool:
    """Fill whole tensors in one native call (a fused pass of many small tensors), when every
    fill is of a whole plain tensor from contract index 0 that `_fill_rows_natively` takes;
    else write nothing and return False. Returns whether the tensors were filled."""
    for f in fills:
        if f.layout is not None or f.first_index:
            return False
    return _fill_rows_natively([(f.tensor, f.dist, f.params, f.seed, f.stream) for f in fills])


def execute_whole(rows: Sequence[tuple]) -> None:
    """Run fills of whole tensors from contract index 0 as `execute` runs their Fills, without
    making them where one native call takes them all (`fill_whole_natively` for one,
    `_fill_rows_natively` for more).

    Args:
        rows: (tensor, dist, params, seed, stream) of each, what make_fill checks checked.

    Raises:
        as `execute`.
    """
    if len(rows) == 1:
        if fill_whole_natively(*rows[0]):
            return
    elif _fill_rows_natively(rows):
        return
    execute([Fill(*row) for row in rows])


def _fill_rows_natively(rows: Sequence[tuple]) -> bool:
    """Fill whole tensors, (tensor, dist, params, seed, stream) rows, in one native call, when
    every tensor is a plain tensor with a distribution the backends compute, that
    fastinit._C_tensor takes (else `dense_native_codes` accepts), with allocated storage inside
    its bounds; else write nothing and return False (`execute` runs them its general way, or
    raises its error). Returns whether the tensors were filled."""
    for t, dist, _, _, _ in rows:
        if dist in HOST_DISTRIBUTIONS or type(t) not in PLAIN_TENSOR_TYPES:
            return False
    if rows and _native_backend_selected():
        try:
            if _CPU.fill_whole_tensors(rows):
                _last_run["cpu"] = _CPU.NAME
                return True
        except (IndexError, ValueError):  # a storage's bounds: execute raises its error
            return False
    codes = dense_native_codes([row[0] for row in rows])
    if codes is None or None in codes:
        return False
    native_rows = []
    with torch._C.DisableTorchFunction():  # fastinit's own look at the metadata
        for (t, dist, params, seed, stream), code in zip(rows, codes):
            row = _native_row(t, code, dist, params, seed, stream)
            if not row[1]:  # freed storage: execute raises its error
                return False
            native_rows.append(row)
    if native_rows:
        _fill_rows(native_rows)
        _increment_version(tuple(row[0] for row in rows))
    return True


def _fill_whole_tensors(rows: list) -> None:
    """Fill whole plain CPU tensors, each accepted by `_natively_planned` and non-empty, in one
    native call, and bump their version counters: fastinit._C_tensor's `fill_tensors`, else (not
    loaded, or it declines one of them) `_C`'s on rows of their metadata read here
    (`_fill_rows`).

    Args:
        rows: (tensor, dist, params, seed, stream) of each, what make_fill checks checked.

    Raises:
        UnsafeTargetError: a tensor's elements lie outside its storage (torch's message);
            nothing is written.
    """
    try:
        if _CPU.fill_whole_tensors(rows):
            _last_run["cpu"] = _CPU.NAME
            return
    except IndexError as exc:  # a storage's bounds, in torch's words
        raise UnsafeTargetError(str(exc)) from None
    _fill_rows([_native_row(t, _NATIVE_DTYPE_CODES[t.dtype], dist, params, seed, stream)
                for t, dist, params, seed, stream in rows])
    _increment_version(tuple(row[0] for row in rows))


def _fill_rows(batch: list) -> None:
    """One native call over rows of whole tensors: the C++ code checks every storage's bounds
    and alignment, collapses the dims and packs the descriptors, then fills
    (csrc/cpu/plan_cpu.h); nothing is written unless all pass."""
    try:
        _CPU.fill_tensors(batch)
    except IndexError as exc:  # a storage's bounds, in torch's words
        raise UnsafeTargetError(str(exc)) from None
    _last_run["cpu"] = _CPU.NAME


def overlap_order(packed: bytes, count: int) -> Optional[list[list[int]]]:
    """The launches a batch needs so that memory two of its fills share ends with the later
    fill's values, as filling them one after another leaves it (one launch writes all of its
    fills at once, so two that overlap would race).

    Args:
        packed: the batch's `count` packed descriptors (plan.pack_descriptors), with addresses.
        count: how many.

    Returns:
        None when no two of them overlap (one launch takes them all), else the indices of the
        fills of each launch, in launch order: fastinit._C's ``overlap_phases``, or one fill per
        launch where that module is not loaded.
    """
    if count < 2:
        return None
    if _CPU.IMPORT_ERROR is not None:
        return [[i] for i in range(count)]
    phases = _CPU._C.overlap_phases(packed)
    if not phases:
        return None
    order: list[list[int]] = [[] for _ in range(max(phases) + 1)]
    for i, phase in enumerate(phases):
        order[phase].append(i)
    return order


def check_not_capturing(why: str) -> None:
    """Refuse a launch that stages host memory while the current CUDA stream is being captured
    into a graph: a replay would read that host memory after it has been freed or reused.

    Args:
        why: which backend stages what, for the message.

    Raises:
        GraphCaptureError: the current CUDA stream is capturing (a RuntimeError).
    """
    if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
        raise GraphCaptureError(
            f"fastinit cannot run this fill inside CUDA graph capture: {why}, and a graph replay "
            f"would read that host memory after it is gone. Initialise these tensors before "
            f"capturing.")


def _select_from_environment() -> None:
    """Apply FASTINIT_BACKEND. A value that cannot be used warns here, at import, and the error
    is raised by every fill until set_backend() picks a backend."""
    global _environment_error
    name = os.environ.get(ENV_VAR, "").strip()
    if not name:
        return
    try:
        set_backend(name)
    except (ValueError, BackendUnavailableError) as exc:
        _environment_error = exc
        warnings.warn(f"fastinit: {ENV_VAR}={name!r} cannot be used ({exc}); every fill will raise "
                      f"this error until fastinit.set_backend() picks a backend", RuntimeWarning,
                      stacklevel=2)


_select_from_environment()
# The C++ module is loaded at import, not at the first CPU fill: its fork handler
# (csrc/cpu/fill_cpu.cpp) must be in place before the program forks worker processes.
_CPU = _module("cpu")
# fastinit._C_tensor's fill_tensor(tensor, dist, params, seed, generator, stream) -> filled, when
# it was built against the running torch (backends/cpu.py), else None
_tensor_fill = None if _CPU.TENSOR_CALLS is None else _CPU.TENSOR_CALLS.fill_tensor
# fastinit._C_tensor's record_tensor(tensor, seed, generator), or None (see _tensor_fill)
_tensor_record = None if _CPU.TENSOR_CALLS is None else _CPU.TENSOR_CALLS.record_tensor
