"""GPU benchmark, one script per device call: checks first, then CUDA-event medians.

    python benchmarks/gpu_bench.py [--numel 268435456] [--out DIR]

1. Correctness: every available GPU backend (cuda, triton) against the reference backend on
   poisoned tensors (bitwise for uniform and constant, the contract's tolerance otherwise).
2. One 256M-element tensor per distribution, fp32 and bf16: each backend against
   torch.nn.init and against `fill_` on the same tensor (median of CUDA-event timings).
3. A ResNet-50-shaped parameter set (161 tensors) and the 1.3B Llama-shaped model: fastinit's
   fused reset_parameters against a Python loop of every module's torch reset_parameters.
Prints one table (and writes it with the raw numbers as JSON under --out)."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

import torch

import fastinit
from fastinit import backends
from fastinit.backends import reference
from fastinit.bench import DISTRIBUTIONS
from fastinit.contract import Distribution, normal_params, trunc_normal_params, uniform_params
from fastinit.llama import Llama, LlamaConfig
from fastinit.plan import make_fill

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model_shapes import resnet50_shaped  # noqa: E402



def median_ms(fn, repeats: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def gpu_backends() -> list[str]:
    device = torch.device("cuda")
    return [name for name in ("cuda", "triton")
            if backends._module(name).IMPORT_ERROR is None and backends._module(name).supports(device)]


def check(backend: str) -> list[str]:
    """Failures of `backend` against the reference on poisoned CUDA tensors ([] = correct)."""
    failures = []
    backends.set_backend(backend)
    for dtype in (torch.float32, torch.bfloat16, torch.float16, torch.float64):
        cases = {
            "uniform": (Distribution.UNIFORM, uniform_params(-0.75, 1.25)),
            "normal": (Distribution.NORMAL, normal_params(0.5, 2.0)),
            "trunc_normal": trunc_normal_params(0.0, 0.02, -2.0, 2.0, dtype),
            "trunc_tail": trunc_normal_params(0.0, 1.0, -7.0, -5.0, dtype),
        }
        for n in (1, 3, 65535, 65537, 1_000_003):
            for name, (dist, params) in cases.items():
                out = torch.full((n,), float("nan"), dtype=dtype, device="cuda")
                backends.execute([make_fill(out, dist, params, 7, 11, 5)])
                ref = torch.empty(n, dtype=dtype)
                reference.run([make_fill(ref, dist, params, 7, 11, 5)])
                got = out.cpu()
                if torch.isnan(got).any():
                    failures.append(f"{backend} {name} {dtype} n={n}: unwritten elements")
                elif name == "uniform":
                    if not torch.equal(got, ref):
                        failures.append(f"{backend} {name} {dtype} n={n}: not bitwise")
                else:
                    std = abs(params[1])  # normal: std; trunc_normal: (mirror sign) * std
                    ulp = torch.finfo(dtype).eps * ref.double().abs()
                    if ((got.double() - ref.double()).abs() > 4e-6 * std + ulp).any():
                        failures.append(f"{backend} {name} {dtype} n={n}: beyond tolerance")
    backends.set_backend("auto")
    return failures


def bench_tensors(numel: int, names: list[str]) -> list[dict]:
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        t = torch.empty((numel // 4096, 4096), dtype=dtype, device="cuda")
        n, nbytes = t.numel(), t.numel() * t.element_size()
        fill = median_ms(lambda: t.fill_(1.0))
        for case, (ours, theirs) in DISTRIBUTIONS.items():
            torch_ms = median_ms(lambda: theirs(t), repeats=5 if case == "trunc_normal_" else 20)
            for name in names:
                backends.set_backend(name)
                ms = median_ms(lambda: ours(t))
                rows.append(dict(kind="tensor", case=case, dtype=str(dtype), backend=name,
                                 numel=n, ms=ms, torch_ms=torch_ms, fill_ms=fill,
                                 gbps=nbytes / ms / 1e6))
        backends.set_backend("auto")
    return rows


def bench_models(names: list[str]) -> list[dict]:
    rows = []
    for model_name, factory in (("resnet50", resnet50_shaped),
                                ("llama-1.3B", lambda: Llama(LlamaConfig.with_params(1.3e9)))):
        with torch.device("cuda"):
            model = factory()
        modules = [m for m in model.modules() if callable(getattr(m, "reset_parameters", None))]

        def torch_loop():
            for m in modules:
                m.reset_parameters()

        torch_ms = median_ms(torch_loop, repeats=5, warmup=1)
        for name in names:
            backends.set_backend(name)
            ms = median_ms(lambda: fastinit.reset_parameters(model, seed=0), repeats=10)
            rows.append(dict(kind="model", case=model_name, dtype="torch.float32", backend=name,
                             numel=sum(p.numel() for p in model.parameters()), ms=ms,
                             torch_ms=torch_ms, fill_ms=None, gbps=None))
        backends.set_backend("auto")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--numel", type=int, default=256 * 2**20)
    parser.add_argument("--out", default=os.environ.get("OUT"))
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("no CUDA device: nothing to measure")
        return 0
    names = gpu_backends()
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}, backends {names}, "
          f"{fastinit.backend_info()['unavailable']}")
    failures = [f for name in names for f in check(name)]
    if failures:
        print("CORRECTNESS FAILURES (no timings taken):\n" + "\n".join(failures))
        return 1
    print("correctness: every backend matches the reference")
    rows = bench_tensors(args.numel, names) + bench_models(names)
    print(f"{'case':<18}{'dtype':<16}{'backend':<8}{'ms':>9}{'torch ms':>10}{'vs torch':>10}"
          f"{'of fill_':>10}{'GB/s':>8}")
    for r in rows:
        of_fill = f"{100 * r['fill_ms'] / r['ms']:>9.0f}%" if r["fill_ms"] else f"{'-':>10}"
        gbps = f"{r['gbps']:>8.0f}" if r["gbps"] else f"{'-':>8}"
        print(f"{r['case']:<18}{r['dtype']:<16}{r['backend']:<8}{r['ms']:>9.3f}"
              f"{r['torch_ms']:>10.3f}{r['torch_ms'] / r['ms']:>9.1f}x{of_fill}{gbps}")
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "gpu_bench.json"), "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
