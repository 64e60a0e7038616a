"""`fastinit demo`: a ~1.3B-parameter Llama-style decoder built on the meta device, materialised
with fastinit (one fused pass) and the torch way (`to_empty` + every module's
`reset_parameters`), with times, speedup, bytes/s against the floor (allocating the same
parameters and writing them once with `fill_`) and a per-layer std check."""
from __future__ import annotations

import gc
import math
import sys
import time

import torch

from . import model as whole_model
from .llama import Llama, LlamaConfig


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
    for i, m in enumerate(modules, 1):
        m.reset_parameters()
        if i % 8 == 0 or i == len(modules):
            bar = "#" * (30 * i // len(modules))
            print(f"\r  torch way: [{bar:<30}] {i}/{len(modules)} modules", end="", file=out)
    print(file=out)


def expected_std(row) -> float | None:
    """The std a parameter's init implies, from its explain() row."""
    detail = row.bound_or_std
    if detail.startswith("U("):
        lo, hi = (float(v) for v in detail[2:-1].split(","))
        return (hi - lo) / math.sqrt(12.0)
    if detail.startswith("mean="):
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


def _fastinit_side(config: LlamaConfig, dtype, device, seed):
    """Materialise with fastinit; returns (result, seconds, std checks)."""
    model = _build(config).to(dtype)
    result, fast_s = _timed(lambda: whole_model.materialize(model, device, seed=seed), device)
    return result, fast_s, std_check(model, whole_model.explain(model))


def _fill_floor(config: LlamaConfig, dtype, device) -> float:
    """Seconds to allocate the same parameters and write them once with fill_: the floor."""
    def allocate_and_fill():
        model = _build(config).to(dtype).to_empty(device=device)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(1.0)

    return _timed(allocate_and_fill, device)[1]


def run_demo(params: float = 1.3e9, dtype: torch.dtype = torch.float32, device=None,
             seed: int = 0) -> dict:
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    config = LlamaConfig.with_params(params)
    nbytes = config.num_params() * torch.empty((), dtype=dtype).element_size()
    print(f"Llama-style decoder: {config.num_layers} layers, hidden {config.hidden_size}, "
          f"{config.num_params() / 1e9:.3f}B parameters, {dtype}, {nbytes / 2**30:.2f} GiB on {device}"
          + (f" ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else ""))

    # Untimed: the first allocation of this much memory can pay for the system backing it (a
    # VM's host faults pages in); every timed phase below then starts from the same state.
    _fill_floor(config, dtype, device)
    gc.collect()
    result, fast_s, checks = _fastinit_side(config, dtype, device, seed)
    print(f"fastinit.materialize: {fast_s:.3f} s ({len(result.fused)} tensors fused, "
          f"module's own init for {result.not_fused})")
    gc.collect()  # each phase frees its model: the next one gets the same memory
    fill_s = _fill_floor(config, dtype, device)
    print(f"floor (to_empty + fill_ of every parameter): {fill_s:.3f} s")
    gc.collect()
    _, torch_s = _timed(lambda: _torch_way(_build(config).to(dtype), device), device)
    gc.collect()

    print(f"torch way (to_empty + reset_parameters): {torch_s:.3f} s")
    print(f"speedup: {torch_s / fast_s:.1f}x; fastinit writes {nbytes / fast_s / 1e9:.2f} GB/s, "
          f"to_empty + fill_ {nbytes / fill_s / 1e9:.2f} GB/s ({100 * fill_s / fast_s:.0f}% of the "
          f"fill rate)")
    worst = max(checks, key=lambda c: abs(c[1] / c[2] - 1))
    print(f"std check over {len(checks)} random parameters: worst relative deviation "
          f"{abs(worst[1] / worst[2] - 1):.2e} ({worst[0]}: {worst[1]:.6g} vs expected {worst[2]:.6g})")
    for name, got, want in checks[:3] + checks[-3:]:
        print(f"  {name:<36} std {got:.6g}  expected {want:.6g}")
    return {"fastinit_s": fast_s, "torch_s": torch_s, "fill_s": fill_s, "bytes": nbytes,
            "worst_std_deviation": abs(worst[1] / worst[2] - 1)}
