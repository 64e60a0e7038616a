"""Strided descriptors on the CPU: a channels_last conv weight written in place against the
previous way (generate into a contiguous scratch tensor, then copy it into the target), and the
contiguous fast path against a baseline build, arms interleaved round by round in one run:

    .venv/bin/python -m pytest benchmarks/test_layouts.py --benchmark-only -s

FASTINIT_BASELINE=<checkout> (a built checkout of an earlier fastinit, whose _C takes the
112-byte "<QqqQQii8d" descriptor) adds that build's kernel as the "before" arm; without it, the
"before" arm runs the scratch-and-copy path with this build's contiguous kernel. The TP-sharded
model init per rank is benchmarks/tp_init.py. Not part of CI's pass/fail (testpaths = tests)."""
import glob
import importlib.util
import os
import statistics
import struct
import sys
import time

import pytest
import torch

from fastinit import plan
from fastinit.backends import cpu
from fastinit.contract import (
    DTYPE_CODES,
    Distribution,
    normal_params,
    trunc_normal_params,
    uniform_params,
)

NUMEL = int(os.environ.get("FASTINIT_BENCH_NUMEL", 64 * 2**20))
ROUNDS = int(os.environ.get("FASTINIT_BENCH_ROUNDS", 7))
BASELINE = os.environ.get("FASTINIT_BASELINE")


def _baseline_module():
    """The baseline checkout's _C, loaded beside this one (its init function is PyInit__C)."""
    (path,) = glob.glob(os.path.join(BASELINE, "src", "fastinit", "_C.*.so"))
    spec = importlib.util.spec_from_file_location("fastinit_baseline._C", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BASELINE_C = _baseline_module() if BASELINE else None


def _baseline_fill(t: torch.Tensor, dist: int, params) -> None:
    """The baseline's contiguous fill: its descriptor is (data, numel, first_index, seed,
    stream, dist, dtype, 8 params)."""
    padded = list(params) + [0.0] * (8 - len(params))
    BASELINE_C.fill(struct.pack("<QqqQQii8d", t.data_ptr(), t.numel(), 0, 7, 3, int(dist),
                                int(DTYPE_CODES[t.dtype]), *padded), 0)


def _fill(t: torch.Tensor, dist: int, params) -> None:
    cpu.run(plan.descriptor_fills([plan.make_fill(t, dist, params, 7, 3)]))


def interleaved(arms: dict, rounds: int) -> dict:
    """Median seconds of each arm, the arms run in turn each round, the order rotating."""
    names = list(arms)
    for name in names:
        arms[name]()  # warm-up: first touch, thread pool
    times = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            t0 = time.perf_counter()
            arms[name]()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def _report(benchmark, title: str, medians: dict, numel: int, base: str) -> None:
    benchmark.extra_info.update({f"{k} s": v for k, v in medians.items()})
    print(f"\n{title} ({numel} elements, medians of {ROUNDS} interleaved rounds)")
    for name, seconds in medians.items():
        print(f"  {name:<44}{seconds * 1e3:>9.1f} ms {numel / seconds / 1e9:>7.3f} G/s "
              f"{medians[base] / seconds:>6.2f}x vs {base}")


CASES = {  # name -> dtype -> (distribution, host parameters)
    "normal": lambda dtype: (Distribution.NORMAL, normal_params(0.0, 0.02)),
    "trunc_normal": lambda dtype: trunc_normal_params(0.0, 0.02, -0.04, 0.04, dtype),
    "uniform": lambda dtype: (Distribution.UNIFORM, uniform_params(-0.1, 0.1)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_channels_last_conv_weight(benchmark, case, dtype):
    """A 64M-element conv weight (out, in, 4, 4) in channels_last: in place vs scratch + copy."""
    dist, params = CASES[case](dtype)
    shape = (NUMEL // (1024 * 16), 1024, 4, 4)
    target = torch.empty(shape, dtype=dtype).to(memory_format=torch.channels_last)
    target.fill_(0.0)
    contiguous = torch.zeros(shape, dtype=dtype)

    def scratch_and_copy():
        scratch = torch.empty(shape, dtype=dtype)
        (_baseline_fill if BASELINE_C else _fill)(scratch, dist, params)
        target.copy_(scratch)

    arms = {
        "before: scratch + copy" + (" (baseline _C)" if BASELINE_C else ""): scratch_and_copy,
        "after: strided descriptor, in place": lambda: _fill(target, dist, params),
        "contiguous tensor, same size": lambda: _fill(contiguous, dist, params),
    }
    medians = {}
    benchmark.pedantic(lambda: medians.update(interleaved(arms, ROUNDS)), rounds=1, iterations=1)
    _report(benchmark, f"channels_last {case} {dtype}", medians, target.numel(), list(arms)[0])


@pytest.mark.skipif(BASELINE_C is None, reason="set FASTINIT_BASELINE to a built checkout")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("case", list(CASES))
def test_contiguous_fast_path_against_baseline(benchmark, case, dtype):
    dist, params = CASES[case](dtype)
    t = torch.zeros(NUMEL // 4096, 4096, dtype=dtype)
    arms = {"baseline _C": lambda: _baseline_fill(t, dist, params),
            "this build": lambda: _fill(t, dist, params)}
    medians = {}
    benchmark.pedantic(lambda: medians.update(interleaved(arms, ROUNDS)), rounds=1, iterations=1)
    _report(benchmark, f"contiguous {case} {dtype}", medians, t.numel(), "baseline _C")


def test_tp_sharded_init_per_rank(benchmark):
    """benchmarks/tp_init.py on 2 gloo ranks (Llama shape, 4 layers, TP on dims 0 and 1),
    launched with this checkout and, when FASTINIT_BASELINE is set, the baseline (its
    .venv/bin/python if it has one, else this interpreter with the baseline's src first on
    the path) in turn."""
    sys.path.insert(0, os.path.dirname(__file__))
    import tp_init

    arms = {"this build": (sys.executable, None)}
    if BASELINE:
        venv_python = os.path.join(BASELINE, ".venv", "bin", "python")
        arms = {"baseline": (venv_python, None) if os.path.exists(venv_python) else
                (sys.executable, {"PYTHONPATH": os.path.join(BASELINE, "src")}), **arms}
    runs = {name: [] for name in arms}

    def rounds():
        for _ in range(int(os.environ.get("FASTINIT_TP_ROUNDS", 2))):
            for name, (python, env) in arms.items():
                runs[name].append(tp_init.launch(python, 2, 3, 4, env))

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    base = next(iter(arms))
    medians = {name: statistics.median(max(r["median_s"] for r in run["ranks"]) for run in rs)
               for name, rs in runs.items()}
    print("\nTP-sharded Llama init per rank (2 ranks, slowest rank, medians)")
    for name, rs in runs.items():
        print(f"  {name:<14}{medians[name] * 1e3:>9.0f} ms  descriptors per rank "
              f"{rs[0]['ranks'][0]['descriptors']:>6}  {medians[base] / medians[name]:.2f}x vs {base}")
    benchmark.extra_info.update({f"{k} s": v for k, v in medians.items()})
