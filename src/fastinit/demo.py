"""`fastinit demo`: a ~1.3B-parameter Llama-style decoder built on the meta device, materialised
with fastinit (one fused pass) and the torch way (`to_empty` + every module's
`reset_parameters`), with times, speedup, bytes/s against the floor (allocating the same
parameters and writing them once with `fill_`) and a per-layer std check.

The two fast phases (fastinit and the floor) run several times, interleaved, and their medians
and spread are reported, so that the comparison means something on a noisy machine; the slow
torch way runs once."""
from __future__ import annotations

import gc
import math
import statistics
import sys
import time

import torch

from . import model as whole_model
from .llama import Llama, LlamaConfig
from .progress import Progress

STD_TOLERANCE = 0.01  # the std check's verdict: every measured std within 1% of the expected


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn, device):
    _sync(device)
    t0 = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - t0


def _build(config: LlamaConfig) -> Llama:
    with torch.device("meta"):
        return Llama(config)


def _torch_way(model: Llama, device: torch.device, out=sys.stderr) -> None:
    model.to_empty(device=device)
    modules = [m for m in model.modules() if callable(getattr(m, "reset_parameters", None))]
    progress = Progress("torch way, reset_parameters", len(modules), out)
    for m in modules:
        m.reset_parameters()
        progress.step("modules")
    progress.close()


def expected_std(row) -> float | None:
    """The std a parameter's init implies, from its explain() row."""
    detail = row.parameters  # describe_parameters: "lo, hi" or "mean=m, std=s"
    if row.distribution.startswith("uniform"):
        lo, hi = (float(v) for v in detail.split(","))
        return (hi - lo) / math.sqrt(12.0)
    if row.distribution.startswith("normal"):
        return float(detail.split("std=")[1])
    return None


def std_check(model: Llama, rows) -> list[tuple[str, float, float]]:
    """(name, measured std, expected std) of every random parameter (sampled for speed)."""
    params = dict(model.named_parameters())
    out = []
    for row in rows:
        want = expected_std(row)
        if want is None or row.name not in params:
            continue
        flat = params[row.name].detach().reshape(-1)
        sample = flat[:: max(1, flat.numel() // 1_000_000)].double()
        out.append((row.name, float(sample.std()), want))
    return out


def _fastinit_side(config: LlamaConfig, dtype, device, seed, check: bool):
    """Materialise with fastinit, each tensor its layer's default init as in the torch way;
    returns (result, seconds, std checks or None)."""
    model = _build(config).to(dtype)
    result, fast_s = _timed(lambda: whole_model.materialize(
        model, device, seed=seed, init="reset_parameters"), device)
    rows = whole_model.explain(model, reinit=True) if check else None
    return result, fast_s, std_check(model, rows) if check else None


def _fill_floor(config: LlamaConfig, dtype, device) -> float:
    """Seconds to allocate the same parameters and write them once with fill_: the floor."""
    def allocate_and_fill():
        model = _build(config).to(dtype).to_empty(device=device)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(1.0)

    return _timed(allocate_and_fill, device)[1]


def available_bytes(device: torch.device) -> int | None:
    """Memory free for new tensors on `device` (MemAvailable on Linux), None where unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def check_fits(nbytes: int, device: torch.device) -> None:
    """Refuse, before allocating anything, a model that cannot fit on `device`.

    Raises:
        MemoryError: `nbytes` (with 10% to spare) exceeds the memory available on `device`.
    """
    free = available_bytes(device)
    if free is not None and nbytes * 1.1 > free:
        raise MemoryError(f"the model needs {nbytes / 2**30:.2f} GiB and {device} has "
                          f"{free / 2**30:.2f} GiB available: try a smaller --params or "
                          f"--dtype bfloat16")


def _spread(times: list[float]) -> str:
    """`median 1.42 s over 3 runs (1.38-1.61 s, spread 16%)`."""
    median = statistics.median(times)
    if len(times) == 1:
        return f"{median:.3f} s (1 run)"
    return (f"median {median:.3f} s over {len(times)} runs ({min(times):.3f}-{max(times):.3f} s, "
            f"spread {100 * (max(times) - min(times)) / median:.0f}%)")


def format_std_verdict(checks, tolerance: float = STD_TOLERANCE) -> str:
    """The std check in one line, ending in its verdict: `...: all 163 within 1%: ok`."""
    deviation = [abs(got / want - 1) for _, got, want in checks]
    worst = max(range(len(checks)), key=deviation.__getitem__)
    name, got, want = checks[worst]
    outside = sum(d > tolerance for d in deviation)
    verdict = (f"all {len(checks)} within {100 * tolerance:g}%: ok" if not outside else
               f"{outside} of {len(checks)} outside {100 * tolerance:g}%: FAILED")
    return (f"std check over {len(checks)} random parameters: worst relative deviation "
            f"{deviation[worst]:.2e} ({name}: {got:.6g} vs expected {want:.6g}); {verdict}")


def run_demo(params: float = 1.3e9, dtype: torch.dtype = torch.float32, device=None,
             seed: int = 0, repeats: int = 3) -> dict:
    """Run the demo and print its report; returns the medians and the check's worst deviation.

    Args:
        params: approximate parameter count of the Llama-style model.
        dtype: dtype of its parameters.
        device: where to materialise it (default: CUDA if present, else the CPU).
        seed: fastinit's seed.
        repeats: runs of each fast phase (fastinit and the fill_ floor), interleaved.

    Returns:
        A dict with the median seconds ``fastinit_s``, ``fill_s``, the single ``torch_s``, the
        per-run lists ``fastinit_runs`` and ``fill_runs``, ``bytes`` and
        ``worst_std_deviation``.
    """
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = LlamaConfig.with_params(params)
    nbytes = config.num_params() * torch.empty((), dtype=dtype).element_size()
    print(f"Llama-style decoder: {config.num_layers} layers, hidden {config.hidden_size}, "
          f"{config.num_params() / 1e9:.3f}B parameters, {dtype}, {nbytes / 2**30:.2f} GiB on {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))
    check_fits(nbytes, device)
    print("phases: fastinit = materialize from meta (allocate + init in one fused pass); floor = "
          "to_empty + fill_ of every parameter (allocate + write once); torch way = to_empty + "
          "every module's reset_parameters")

    # Untimed: the first allocation of this much memory can pay for the system backing it (a
    # VM's host faults pages in); every timed phase below then starts from the same state.
    print(f"  warm-up: allocating and writing {nbytes / 2**30:.2f} GiB once, untimed ...",
          file=sys.stderr, flush=True)
    _fill_floor(config, dtype, device)
    fast_runs, fill_runs, checks = [], [], None
    progress = Progress(f"fastinit and floor, {repeats} runs each", 2 * repeats, sys.stderr,
                        interval=0.0)
    for run in range(repeats):  # interleaved, so that a slow spell of the machine hits both
        gc.collect()  # each phase frees its model: the next one gets the same memory
        result, fast_s, run_checks = _fastinit_side(config, dtype, device, seed,
                                                    check=run == repeats - 1)
        fast_runs.append(fast_s)
        checks = run_checks or checks
        progress.step(f"fastinit {fast_s:.3f} s")
        gc.collect()
        fill_runs.append(_fill_floor(config, dtype, device))
        progress.step(f"floor {fill_runs[-1]:.3f} s")
    progress.close()
    fast_s, fill_s = statistics.median(fast_runs), statistics.median(fill_runs)
    own = (f"; {', '.join(result.not_fused)}: set by the module's own reset_parameters"
           if result.not_fused else "")
    print(f"fastinit.materialize: {_spread(fast_runs)}; {len(result.fused)} tensors in one "
          f"fused pass{own}")
    print(f"floor (to_empty + fill_ of every parameter): {_spread(fill_runs)}")
    gc.collect()
    _, torch_s = _timed(lambda: _torch_way(_build(config).to(dtype), device), device)
    gc.collect()

    print(f"torch way (to_empty + reset_parameters): {torch_s:.3f} s (1 run)")
    print(f"speedup: {torch_s / fast_s:.1f}x (torch way over fastinit's median; "
          f"{torch_s / max(fast_runs):.1f}-{torch_s / min(fast_runs):.1f}x over its runs); "
          f"fastinit writes {nbytes / fast_s / 1e9:.2f} GB/s, to_empty + fill_ "
          f"{nbytes / fill_s / 1e9:.2f} GB/s (fastinit takes {100 * fast_s / fill_s:.0f}% of "
          f"the floor's time)")
    print(format_std_verdict(checks))
    for name, got, want in checks[:3] + checks[-3:]:
        print(f"  {name:<36} std {got:.6g}  expected {want:.6g}")
    worst = max(abs(got / want - 1) for _, got, want in checks)
    return {"fastinit_s": fast_s, "torch_s": torch_s, "fill_s": fill_s, "bytes": nbytes,
            "fastinit_runs": fast_runs, "fill_runs": fill_runs, "worst_std_deviation": worst}
