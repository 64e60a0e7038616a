"""The `cuda` backend (csrc/cuda, module fastinit._cuda).

Host-side tests run everywhere (CI: nvcc, no GPU): the build helpers of setup.py, how the
module's presence or absence shows in backend_info and set_backend, the launch table, and the
kernel's own per-thread code run on the host (`_cuda.emulate`, the same source as the kernel)
against the C++ CPU backend, bitwise. GPU tests run the kernels and skip, saying why, where no
usable GPU is visible.
"""
import importlib.util
import json
import os
import struct
import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import fastinit
from fastinit import backends
from fastinit.backends import cpu, reference
from fastinit.backends import cuda as cuda_backend
from fastinit.contract import (
    Distribution,
    stream_for_name,
)
from fastinit.errors import BackendUnavailableError
from fastinit.plan import DESCRIPTOR_FORMAT, DESCRIPTOR_SIZE, MAX_DIMS, make_fill, pack_descriptors

from conftest import poisoned
from contract_cases import (
    Z_TOLERANCE,
    assert_matches_reference,
    distributions,
    second_draw_indices,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    from fastinit import _cuda
except ImportError as exc:
    _cuda = None
    _CUDA_IMPORT_ERROR = exc
else:
    _CUDA_IMPORT_ERROR = None

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
FP32_MATH_DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SEED = 0x1234_5678_9ABC_DEF1


NAMES = list(distributions(torch.float32))

needs_module = pytest.mark.skipif(
    _cuda is None, reason=f"fastinit._cuda is not built here ({_CUDA_IMPORT_ERROR})"
)


def _gpu_skip_reason():
    if not torch.cuda.is_available():
        return (f"no CUDA GPU visible to torch {torch.__version__} "
                f"(torch.version.cuda={torch.version.cuda})")
    if cuda_backend.IMPORT_ERROR is not None:
        return f"the cuda backend cannot run: {cuda_backend.IMPORT_ERROR}"
    if not cuda_backend.supports(torch.device("cuda", torch.cuda.current_device())):
        return f"the cuda backend cannot run: {cuda_backend.device_problem('cuda')}"
    return None


GPU_SKIP_REASON = _gpu_skip_reason()
needs_gpu = pytest.mark.skipif(GPU_SKIP_REASON is not None, reason=str(GPU_SKIP_REASON))


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality (NaN == NaN with the same payload), on the CPU."""
    a, b = a.detach().cpu().contiguous(), b.detach().cpu().contiguous()
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    ints = {8: torch.int64, 4: torch.int32, 2: torch.int16}[a.element_size()]
    return torch.equal(a.view(ints), b.view(ints))


def uses_fp64_libm(fill) -> bool:
    """fp64 math with log/sin/cos or the AS241 quantile, whose last bits differ between the
    device's libm and the host's: CPU and GPU then agree to an ulp, not bit for bit."""
    fp64_math = fill.tensor.dtype == torch.float64 or fill.dist == Distribution.TRUNC_NORMAL_FP64
    return fp64_math and fill.dist not in (Distribution.UNIFORM, Distribution.CONSTANT)


def assert_same_as_cpu(fill):
    """The target of `fill` holds the CPU backend's values: bit for bit, except for fp64 libm
    math, where one ulp of the output dtype (a last-bit difference may flip its rounding)."""
    expected = cpu_values(fill)
    if not uses_fp64_libm(fill):
        assert same_bits(fill.tensor, expected), f"{fill.dist!r} {fill.tensor.dtype}"
        return
    dtype = fill.tensor.dtype
    rtol = 1e-12 if dtype == torch.float64 else torch.finfo(dtype).eps
    torch.testing.assert_close(fill.tensor.cpu(), expected, rtol=rtol, atol=1e-12)


def cpu_values(fill):
    """The C++ CPU backend's values for `fill`, as a CPU tensor shaped like its target."""
    out = torch.empty(fill.tensor.shape, dtype=fill.tensor.dtype)
    cpu.run([make_fill(out, fill.dist, fill.params, fill.seed, fill.stream, fill.first_index)])
    return out


# ---------------------------------------------------------------------------------------------
# Host side: presence, absence and error reporting.


def test_backend_info_reports_cuda_either_way():
    info = fastinit.backend_info()
    assert ("cuda" in info["available"]) != ("cuda" in info["unavailable"])
    if "cuda" in info["unavailable"]:
        reason = info["unavailable"]["cuda"]
        assert reason.startswith("ImportError: ") and len(reason) > len("ImportError: ")
        if _cuda is None:
            assert "_cuda" in reason
        else:
            assert "cannot use a GPU here" in reason or "ROCm" in reason


@pytest.mark.skipif(os.environ.get("FASTINIT_CUDA") != "1",
                    reason="only a FASTINIT_CUDA=1 build must contain fastinit._cuda")
def test_required_cuda_build_produced_the_module():
    assert _cuda is not None, f"FASTINIT_CUDA=1 but fastinit._cuda does not import: " \
                              f"{_CUDA_IMPORT_ERROR}"


@needs_module
def test_module_reports_why_it_cannot_run():
    problem = _cuda.runtime_problem()
    assert isinstance(problem, str)
    assert _cuda.runtime_version() >= 11000
    if problem:
        assert cuda_backend.IMPORT_ERROR is not None
        assert problem in str(cuda_backend.IMPORT_ERROR)
        assert "CUDA runtime" in problem  # names the runtime it was built with
        if _cuda.driver_version() == 0:
            assert "no CUDA driver" in problem


def test_set_backend_cuda_raises_the_original_error(monkeypatch):
    original = ImportError("sentinel: fastinit._cuda cannot load")
    monkeypatch.setattr(cuda_backend, "IMPORT_ERROR", original)
    with pytest.raises(BackendUnavailableError, match="sentinel") as info:
        fastinit.set_backend("cuda")
    assert info.value.__cause__ is original
    assert fastinit.get_backend() == "auto"


@pytest.mark.skipif(cuda_backend.IMPORT_ERROR is None, reason="the cuda backend can run here")
def test_set_backend_cuda_unavailable_here_chains_the_real_error():
    with pytest.raises(BackendUnavailableError) as info:
        fastinit.set_backend("cuda")
    assert info.value.__cause__ is cuda_backend.IMPORT_ERROR
    assert str(cuda_backend.IMPORT_ERROR) in str(info.value)


def test_auto_falls_back_quietly_without_the_cuda_module(monkeypatch):
    monkeypatch.setattr(cuda_backend, "IMPORT_ERROR", ImportError("no _cuda"))
    for name in backends.AUTO_ORDER["cuda"]:
        backends._module(name)  # imports (Triton's may warn) happen before the check
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chosen = backends.backend_for(torch.device("cuda", 0))
    assert chosen.NAME in ("triton", "reference")
    assert backends.AUTO_ORDER["cuda"] == ("cuda", "triton", "reference")
    assert "cuda" in backends.BACKENDS


def test_cuda_backend_supports_only_cuda_devices():
    assert not cuda_backend.supports(torch.device("cpu"))
    assert not cuda_backend.supports(torch.device("meta"))


# ---------------------------------------------------------------------------------------------
# Host side: setup.py's build helpers (imported as a module: setup() only runs as __main__).


def _load_setup():
    spec = importlib.util.spec_from_file_location("fastinit_setup", os.path.join(ROOT, "setup.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def setup_module(tmp_path, monkeypatch):
    module = _load_setup()
    # Nothing outside the test's own environment may supply a toolkit.
    monkeypatch.setattr(module, "DEFAULT_CUDA_HOMES", (str(tmp_path / "no-cuda"),))
    return module


def test_setup_arch_list_to_gencode(setup_module):
    flags = setup_module.cuda_arch_flags("8.0;9.0+PTX")
    assert flags == ["-gencode", "arch=compute_80,code=[sm_80]",
                     "-gencode", "arch=compute_90,code=[sm_90,compute_90]"]
    assert setup_module.cuda_arch_flags(None) == flags  # the default covers sm_80 and sm_90
    assert setup_module.cuda_arch_flags("9.0a, 10.0") == [
        "-gencode", "arch=compute_90a,code=[sm_90a]", "-gencode", "arch=compute_100,code=[sm_100]"]
    with pytest.raises(setup_module.CudaBuildError, match="sm_90"):
        setup_module.cuda_arch_flags("sm_90")
    with pytest.raises(setup_module.CudaBuildError, match="'6.0': the fill kernels need sm_70"):
        setup_module.cuda_arch_flags("6.0;8.0")


def test_setup_required_cuda_without_nvcc_fails_clearly(setup_module, tmp_path):
    env = {"FASTINIT_CUDA": "1", "PATH": str(tmp_path)}
    with pytest.raises(setup_module.CudaBuildError,
                       match=r"FASTINIT_CUDA=1 requires the CUDA module, but no CUDA compiler "
                             r"\(nvcc\) found") as info:
        setup_module.cuda_extension(env)
    assert "FASTINIT_CUDA=0" in str(info.value)


def test_setup_required_cuda_with_bad_cuda_home_fails_clearly(setup_module, tmp_path):
    env = {"FASTINIT_CUDA": "1", "PATH": os.environ.get("PATH", ""),
           "CUDA_HOME": str(tmp_path)}
    with pytest.raises(setup_module.CudaBuildError, match="CUDA_HOME="):
        setup_module.cuda_extension(env)


def test_setup_auto_without_nvcc_warns_and_builds_cpu_only(setup_module, tmp_path):
    with pytest.warns(UserWarning, match="building CPU-only"):
        assert setup_module.cuda_extension({"PATH": str(tmp_path)}) is None


def test_setup_cuda_off_skips_the_toolkit(setup_module):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert setup_module.cuda_extension({"FASTINIT_CUDA": "0",
                                            "PATH": os.environ.get("PATH", "")}) is None


def test_setup_rejects_an_unknown_mode(setup_module):
    with pytest.raises(setup_module.CudaBuildError, match="auto, 1, 0"):
        setup_module.cuda_mode({"FASTINIT_CUDA": "maybe"})


def test_setup_with_nvcc_builds_the_cuda_extension(setup_module):
    env = {"FASTINIT_CUDA": "1", "PATH": os.environ.get("PATH", "")}
    nvcc, _ = setup_module.find_nvcc(env)
    if nvcc is None:
        pytest.skip("no nvcc on PATH")
    ext = setup_module.cuda_extension(env)
    assert ext.name == "fastinit._cuda"
    assert "cudart_static" in ext.libraries
    assert "--fmad=false" in ext.nvcc_flags
    assert ext.cuda_sources == ["csrc/cuda/fill_cuda.cu"]


def _run_setup_script(env_overrides, *args):
    """setup.py as pip runs it, with torch made unimportable."""
    env = dict(os.environ, **env_overrides)
    script = ("import sys; sys.modules['torch'] = None; sys.argv = ['setup.py'] + sys.argv[1:]; "
              "exec(compile(open('setup.py').read(), 'setup.py', 'exec'), "
              "{'__name__': '__main__', '__file__': 'setup.py'})")
    return subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_setup_script_runs_without_torch():
    run = _run_setup_script({"FASTINIT_CUDA": "0"}, "--version")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == fastinit.__version__


def test_setup_script_required_cuda_without_toolkit_fails(tmp_path):
    run = _run_setup_script({"FASTINIT_CUDA": "1", "CUDA_HOME": str(tmp_path / "none")},
                            "--version")
    assert run.returncode != 0
    assert "FASTINIT_CUDA=1 requires the CUDA module" in run.stderr


# ---------------------------------------------------------------------------------------------
# Host side: the launch table.


def _fake_fill_bytes(numel, first_index=0, dtype_code=0, dist=1, data=0x10000, ndim=1,
                     size=None, stride=1, global_stride=1):
    pad = MAX_DIMS - 1
    return struct.pack(DESCRIPTOR_FORMAT, data, numel, first_index, 1, 2, dist, dtype_code, ndim, 0,
                       numel if size is None else size, *[1] * pad, stride, *[0] * pad,
                       global_stride, *[0] * pad, *([0.0] * 8))


@needs_module
def test_launch_table_layout():
    sizes = [(1, 0), (2048, 0), (2049, 0), (2048, 1), (0, 5), (5000, 4093)]
    packed = b"".join(_fake_fill_bytes(n, first) for n, first in sizes)
    table, count, chunks, shift, dtype = _cuda.build_table(packed, num_sms=132, chunk_shift=11)
    assert (count, shift, dtype) == (len(sizes), 11, 0)
    expected = []
    for i, (n, first) in enumerate(sizes):
        k = 0 if n == 0 else ((first + n - 1) >> 11) - (first >> 11) + 1
        expected += [(i, c) for c in range(k)]
    assert chunks == len(expected) == 1 + 1 + 2 + 2 + 0 + 4
    assert bytes(table[: count * DESCRIPTOR_SIZE]) == packed
    refs = np.frombuffer(bytes(table[count * DESCRIPTOR_SIZE:]), dtype=np.uint32).reshape(-1, 2)
    assert [tuple(r) for r in refs.tolist()] == expected


@needs_module
def test_launch_table_chunk_size_follows_the_work():
    small = _fake_fill_bytes(10_000)
    big = _fake_fill_bytes(1 << 30)
    assert _cuda.build_table(small, num_sms=132)[3] == _cuda.MIN_CHUNK_SHIFT
    assert _cuda.build_table(big, num_sms=132)[3] == _cuda.MAX_CHUNK_SHIFT
    assert _cuda.build_table(b"", num_sms=132)[2] == 0


@needs_module
@pytest.mark.parametrize("bad,match", [
    (_fake_fill_bytes(5) + _fake_fill_bytes(5, dtype_code=2), "one launch fills one dtype"),
    (_fake_fill_bytes(5, first_index=-1), "descriptor 0: first_index: -1 is negative"),
    (_fake_fill_bytes(5) + _fake_fill_bytes(-5), "descriptor 1: numel: -5 is negative"),
    (_fake_fill_bytes(5, dist=9), "descriptor 0: dist: unknown distribution code 9"),
    (_fake_fill_bytes(5, dtype_code=7), "descriptor 0: dtype: unknown dtype code 7"),
    (_fake_fill_bytes(5, data=0), "descriptor 0: data: null address"),
    (_fake_fill_bytes(5, data=4098), "descriptor 0: data: address 4098 is not aligned"),
    (_fake_fill_bytes(5)[:-1], "whole number"),
    (_fake_fill_bytes(5, ndim=0), "ndim: 0 is outside"),
    (_fake_fill_bytes(5, ndim=MAX_DIMS + 1), "is outside"),
    (_fake_fill_bytes(5, size=4), "differs from the product of its sizes"),
    (_fake_fill_bytes(5, stride=-1), "must be >= 0"),
])
def test_launch_table_rejects_bad_descriptors(bad, match):
    with pytest.raises(ValueError, match=match):
        _cuda.build_table(bad, num_sms=132)


@needs_module
def test_launch_by_value_validates_before_touching_cuda():
    # No GPU is needed to get these errors: validation comes before any CUDA call.
    good = _fake_fill_bytes(5)
    with pytest.raises(ValueError, match="descriptor 1: data: null address"):
        _cuda.launch_by_value(good + _fake_fill_bytes(5, data=0), 132, 0, 0)
    with pytest.raises(ValueError, match="descriptor 1: dtype: code 2 differs"):
        _cuda.launch_by_value(good + _fake_fill_bytes(5, dtype_code=2), 132, 0, 0)
    with pytest.raises(ValueError, match=f"{_cuda.ARG_TABLE_CAPACITY + 1} descriptors exceed"):
        _cuda.launch_by_value(good * (_cuda.ARG_TABLE_CAPACITY + 1), 132, 0, 0)


@needs_module
def test_arg_table_fits_the_kernel_parameter_space():
    # 32,764 bytes: the kernel parameter limit on Volta+ with CUDA 12.1+; the table also holds
    # one uint32 block start per descriptor, plus one, and a count.
    capacity = _cuda.ARG_TABLE_CAPACITY
    assert capacity >= 64
    assert capacity * (DESCRIPTOR_SIZE + 4) + 8 <= 32764 - 64


@needs_module
def test_launch_checks_its_arguments_before_touching_cuda():
    _cuda.launch(0, 0, 0, 16, 0, 0, 0)  # nothing to launch: returns without a CUDA call
    with pytest.raises(ValueError, match="null or misaligned"):
        _cuda.launch(0, 1, 1, 16, 0, 0, 0)
    with pytest.raises(ValueError, match="dtype"):
        _cuda.launch(4096, 1, 1, 16, 9, 0, 0)


# ---------------------------------------------------------------------------------------------
# Host side: the kernel's per-thread code, run on the host, against the CPU backend.


def emulate(fills, chunk_shift=0, by_value=False):
    _cuda.emulate(pack_descriptors(fills), chunk_shift, by_value=by_value)


@needs_module
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size,first_index,offset", [
    (1, 0, 0), (7, 3, 1), (2047, 0, 0), (2048, 0, 0), (2049, 0, 0), (2049, 1, 0),
    (4096, 5, 3), (70_001, 0, 0), (70_001, 2**34 + 1, 0), (3000, 4 * 2**32 - 130, 0),
    (3000, 4 * 2**32 - 130, 2),
])
def test_kernel_code_matches_cpu_backend(name, size, first_index, offset, dtype):
    """Aligned and unaligned routes, masked heads and tails, chunk boundaries, offsets past
    2^31 and across the 2^32 boundary of the block counter: bit for bit the CPU's values, and
    the guard elements around the target stay untouched."""
    dist, params = distributions(dtype)[name]
    guard = 9
    buffer = poisoned((size + offset + guard,), dtype)
    target = buffer[offset: offset + size]
    fill = make_fill(target, dist, params, SEED, 7, first_index)
    for chunk_shift in (11, 0):
        buffer.fill_(float("nan"))
        emulate([fill], chunk_shift)
        assert same_bits(target, cpu_values(fill)), f"chunk_shift {chunk_shift}"
        assert torch.isnan(buffer[:offset]).all() and torch.isnan(buffer[offset + size:]).all()


@needs_module
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_kernel_code_wide_trunc_normal_second_draws(dtype):
    """The elements of a wide trunc_normal that take their second draw: bitwise the CPU's."""
    dist, params = distributions(dtype)["trunc_wide"]
    for index in second_draw_indices(params, SEED, 7):
        fill = make_fill(poisoned((300,), dtype), dist, params, SEED, 7, max(0, index - 150))
        emulate([fill], 11)
        assert same_bits(fill.tensor, cpu_values(fill)), f"index {index}"


@needs_module
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_code_uniform_matches_reference(dtype):
    dist, params = distributions(dtype)["uniform"]
    out, ref = poisoned((5003,), dtype), poisoned((5003,), dtype)
    emulate([make_fill(out[1:], dist, params, 5, 0, 3)], 11)
    reference.run([make_fill(ref[1:], dist, params, 5, 0, 3)])
    assert_matches_reference(out[1:], ref[1:], "uniform", dtype)


def _guarded_fills(dtype, device, count=230, guard=5, seed=1000):
    """`count` targets of mixed sizes and distributions carved from one poisoned buffer, with
    `guard` poisoned elements before, between and after them."""
    rng = np.random.default_rng(int(seed))
    edge = [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 2047, 2048, 2049, 4095, 4097]
    sizes = [edge[i] if i < len(edge) else int(rng.integers(1, 3000)) for i in range(count)]
    sizes[count // 2] = 65_537
    buffer = poisoned((sum(sizes) + guard * (count + 1),), dtype, device)
    names = NAMES
    fills, spans, offset = [], [], guard
    for i, n in enumerate(sizes):
        dist, params = distributions(dtype)[names[i % len(names)]]
        first = int(rng.integers(0, 2**40)) if i % 3 == 0 else 0
        fills.append(make_fill(buffer[offset: offset + n], dist, params, seed + i,
                               stream_for_name(f"layer{i}.weight"), first))
        spans.append((offset, n))
        offset += n + guard
    return buffer, fills, spans


def _check_guarded(buffer, fills, spans):
    written = torch.zeros(buffer.shape, dtype=torch.bool)
    for start, n in spans:
        written[start: start + n] = True
    host = buffer.cpu()
    assert torch.isnan(host[~written]).all(), "a guard element was written"
    for f in fills:
        if f.tensor.numel():
            if f.tensor.is_cuda:
                assert_same_as_cpu(f)
            else:  # the kernel code on the host uses the host's libm too: bit for bit
                assert same_bits(f.tensor, cpu_values(f)), f"{f.dist!r} {f.tensor.numel()}"


@needs_module
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_kernel_code_many_guarded_tensors(dtype):
    buffer, fills, spans = _guarded_fills(dtype, "cpu")
    emulate([f for f in fills if f.tensor.numel()], 11)
    _check_guarded(buffer, fills, spans)


@needs_module
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("chunk_shift", [11, 0])
def test_kernel_code_by_value_table_maps_every_block(dtype, chunk_shift):
    """The by-value table's block -> (tensor, chunk) search, empty tensors included (first,
    in the middle, last): every element written once with the CPU's values, no guard touched."""
    count = min(_cuda.ARG_TABLE_CAPACITY, 60)
    buffer, fills, spans = _guarded_fills(dtype, "cpu", count=count)
    empty = make_fill(buffer[:0], fills[1].dist, fills[1].params, 3)
    fills = [empty] + fills[:count // 3] + [empty, empty] + fills[count // 3:-3] + [empty]
    emulate(fills, chunk_shift, by_value=True)
    _check_guarded(buffer, fills, spans[:-3] + [(s, 0) for s, _ in spans[-3:]])


# ---------------------------------------------------------------------------------------------
# GPU: the kernels themselves.


def cuda_fill(tensor, name, seed=SEED, stream=7, first_index=0):
    dist, params = distributions(tensor.dtype)[name]
    fill = make_fill(tensor, dist, params, seed, stream, first_index)
    cuda_backend.run([fill])
    return fill


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", [1, 3, 5, 2047, 2048, 2049, 65_536, 65_537, (1 << 20) + 3])
def test_cuda_matches_reference(name, size, dtype):
    out = poisoned((size,), dtype, "cuda")
    fill = cuda_fill(out, name)
    torch.cuda.synchronize()
    ref = torch.empty(size, dtype=dtype)
    reference.run([make_fill(ref, fill.dist, fill.params, fill.seed, fill.stream)])
    assert_matches_reference(out, ref, name, dtype)


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", NAMES)
def test_cuda_matches_cpu_bitwise(name, dtype):
    """The shared headers with --fmad=false: the GPU's values are the CPU's, bit for bit, for
    every fp32-math distribution; fp64 math differs only in the last bits of log/sin/cos."""
    out = poisoned((100_003,), dtype, "cuda")
    fill = cuda_fill(out, name)
    assert_same_as_cpu(fill)


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("first_index", [1, 2, 3, 5, 2**31 - 3, 2**34 + 1, 4 * 2**32 - 130])
@pytest.mark.parametrize("name", ["uniform", "normal", "trunc_normal"])
def test_cuda_first_index_offsets(name, first_index, dtype):
    out = poisoned((5000,), dtype, "cuda")
    fill = cuda_fill(out, name, seed=99, stream=3, first_index=first_index)
    ref = torch.empty(5000, dtype=dtype)
    reference.run([make_fill(ref, fill.dist, fill.params, 99, 3, first_index)])
    assert_matches_reference(out, ref, name, dtype)
    if dtype != torch.float64:
        assert same_bits(out, cpu_values(fill))


@needs_gpu
def test_cuda_shards_concatenate_to_the_whole():
    whole = torch.empty(100_007, device="cuda")
    cuda_fill(whole, "normal", seed=5)
    sizes = [1, 4098, 3, 65_536, 30_369]
    parts = [torch.empty(n, device="cuda") for n in sizes]
    starts = np.cumsum([0] + sizes[:-1])
    dist, params = distributions(torch.float32)["normal"]
    cuda_backend.run([make_fill(p, dist, params, 5, 7, int(s)) for p, s in zip(parts, starts)])
    assert same_bits(torch.cat(parts), whole)


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("offset", [1, 2, 3, 5, 7])
def test_cuda_unaligned_views(offset, dtype):
    base = poisoned((20_000 + offset,), dtype, "cuda")
    target = base[offset:]
    fill = cuda_fill(target, "uniform", first_index=offset % 3)
    assert torch.isnan(base[:offset]).all()
    assert same_bits(target, cpu_values(fill))


@needs_gpu
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("by_value", [True, False], ids=["by_value", "uploaded"])
def test_cuda_many_guarded_tensors_one_launch_per_dtype(dtype, by_value, monkeypatch):
    buffer, fills, spans = _guarded_fills(
        dtype, "cuda", count=min(240, cuda_backend.ARG_TABLE_CAPACITY) if by_value else 240)
    if not by_value:  # every call takes the uploaded table
        monkeypatch.setattr(cuda_backend, "ARG_TABLE_CAPACITY", 0)
    entry = "launch_by_value" if by_value else "launch"
    launches = []
    original = getattr(cuda_backend._cuda, entry)

    def counting_launch(*args):
        launches.append(args)
        return original(*args)

    monkeypatch.setattr(cuda_backend._cuda, entry, counting_launch)
    fastinit.set_backend("cuda")
    backends.execute(fills)
    assert len(launches) == 1
    assert backends.backend_info()["last_run"]["cuda"] == "cuda"
    _check_guarded(buffer, fills, spans)


@needs_gpu
def test_cuda_matches_triton():
    from fastinit.backends import triton as triton_backend

    if triton_backend.IMPORT_ERROR is not None:
        pytest.skip(f"triton backend unavailable: {triton_backend.IMPORT_ERROR}")
    for dtype in DTYPES:
        for name in ("uniform", "normal", "trunc_normal"):
            a = poisoned((123_457,), dtype, "cuda")
            b = poisoned((123_457,), dtype, "cuda")
            fill = cuda_fill(a, name, first_index=11)
            triton_backend.run([make_fill(b, fill.dist, fill.params, fill.seed, fill.stream, 11)])
            if name == "uniform" and dtype != torch.float64:
                assert same_bits(a, b), dtype
            else:  # each within the contract's tolerance of the truth: twice that apart
                assert_matches_reference(a, b.cpu(), name, dtype, z_tolerance=2 * Z_TOLERANCE)


@needs_gpu
def test_cuda_runs_on_the_current_stream():
    """Upload and kernel queue on torch's current stream: behind a long sleep and a zero_()
    there, and before a clone() there. On any other stream the fill would run at once and the
    later zero_() would overwrite it."""
    side = torch.cuda.Stream()
    out = torch.empty(1 << 22, device="cuda")
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)
        out.zero_()
        fill = cuda_fill(out, "uniform")
        after = out.clone()
    side.synchronize()
    assert same_bits(after, cpu_values(fill))


@needs_gpu
def test_drop_in_api_runs_the_cuda_backend():
    t = torch.empty(1000, 37, device="cuda", dtype=torch.bfloat16)
    fastinit.kaiming_uniform_(t, seed=123)
    assert fastinit.backend_info()["last_run"]["cuda"] == "cuda"
    expected = torch.empty(1000, 37, dtype=torch.bfloat16)
    fastinit.kaiming_uniform_(expected, seed=123)
    assert same_bits(t, expected)


@needs_gpu
def test_failed_launch_raises_runtime_error_with_the_cuda_error():
    table = torch.zeros(4096, dtype=torch.uint8, device="cuda")
    bad_device = torch.cuda.device_count() + 3
    with pytest.raises(RuntimeError, match="cudaErrorInvalidDevice"):
        _cuda.launch(table.data_ptr(), 1, 1, 16, 0, 0, bad_device)


CONTEXT_PROBE = """
import ctypes, json, threading, torch
from fastinit import _cuda
libcuda = ctypes.CDLL("libcuda.so.1")

def current_context():
    context = ctypes.c_void_p()
    assert libcuda.cuCtxGetCurrent(ctypes.byref(context)) == 0
    return context.value

out = {}
def fresh_thread():  # no context is current on a new thread
    out["before"] = current_context()
    out["problem"] = _cuda.device_problem(DEVICE)
    out["after"] = current_context()
worker = threading.Thread(target=fresh_thread)
worker.start()
worker.join()
print(json.dumps(out))
"""


def _probe_json(script):
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout.splitlines()[-1])


@needs_gpu
def test_device_scope_restores_no_context_on_a_fresh_thread():
    """A thread with no current CUDA context has none again after the module used a device
    (the old scope restored cudaGetDevice's answer, device 0, creating a context there)."""
    out = _probe_json(CONTEXT_PROBE.replace("DEVICE", "0"))
    assert out == {"before": None, "problem": "", "after": None}


@needs_gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_no_stray_context_on_gpu_0():
    script = """
import json, torch, fastinit
t = torch.empty(1000, device="cuda:1")
fastinit.set_backend("cuda")
fastinit.normal_(t, seed=1)
torch.cuda.synchronize(1)
print(json.dumps([torch._C._cuda_hasPrimaryContext(0), torch._C._cuda_hasPrimaryContext(1)]))
"""
    assert _probe_json(script) == [False, True]


@needs_gpu
def test_cuda_graph_capture_of_a_small_call_replays_the_same_values():
    fastinit.set_backend("cuda")
    tensors = [poisoned((n,), torch.float32, "cuda") for n in (5, 70_001, 2049)]
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        with torch.cuda.graph(graph, stream=stream):
            for i, t in enumerate(tensors):
                fastinit.normal_(t, 0.5, 2.0, seed=40 + i)
    torch.cuda.current_stream().wait_stream(stream)
    for t in tensors:
        t.fill_(float("nan"))
    graph.replay()
    torch.cuda.synchronize()
    for i, t in enumerate(tensors):
        expected = torch.empty(t.shape)
        fastinit.normal_(expected, 0.5, 2.0, seed=40 + i)
        assert same_bits(t, expected)


@needs_gpu
def test_cuda_graph_capture_of_a_staged_table_raises_clearly():
    fastinit.set_backend("cuda")
    count = cuda_backend.ARG_TABLE_CAPACITY + 1
    buffer, fills, spans = _guarded_fills(torch.float32, "cuda", count=count)
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        with pytest.raises(RuntimeError, match="inside CUDA graph capture: the cuda backend "
                                               "stages the descriptor table"):
            with torch.cuda.graph(graph, stream=stream):
                backends.execute(fills)
    torch.cuda.synchronize()
    assert torch.isnan(buffer).all(), "a tensor was written by the refused capture"


@needs_gpu
def test_triton_under_cuda_graph_capture_raises_clearly():
    from fastinit.backends import triton as triton_backend
    if triton_backend.IMPORT_ERROR is not None:
        pytest.skip(f"Triton cannot run: {triton_backend.IMPORT_ERROR}")
    t = poisoned((1000,), torch.float32, "cuda")
    graph = torch.cuda.CUDAGraph()
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        with pytest.raises(RuntimeError, match="inside CUDA graph capture: the triton backend"):
            with torch.cuda.graph(graph, stream=stream):
                triton_backend.run([make_fill(t, *distributions(torch.float32)["uniform"], 1)])
    assert torch.isnan(t).all()


@needs_gpu
def test_cuda_buffer_past_two_to_the_31_elements():
    n = 2**31 + 4099
    free, _ = torch.cuda.mem_get_info()
    if free < 2 * n + (1 << 30):
        pytest.skip(f"needs {2 * n / 2**30:.1f} GiB of free GPU memory, {free / 2**30:.1f} free")
    big = torch.full((n,), float("nan"), dtype=torch.bfloat16, device="cuda")
    fill = cuda_fill(big, "uniform", seed=77, stream=0)
    for start in (0, 2**31 - 2500, n - 5000):
        ref = torch.empty(5000, dtype=torch.bfloat16)
        reference.run([make_fill(ref, fill.dist, fill.params, 77, 0, start)])
        assert same_bits(big[start: start + 5000], ref), start
    del big
    torch.cuda.empty_cache()
