"""fastinit's C++ CPU backend against torch.nn.init and against `fill_` (the memory floor) on one
64M-element tensor per case, in one run:

    .venv/bin/python -m pytest benchmarks/test_cpu_init.py --benchmark-only

Set FASTINIT_BENCH_NUMEL to change the size. Not part of CI's pass/fail (testpaths = tests)."""
import math
import os

import pytest
import torch

import fastinit

NUMEL = int(os.environ.get("FASTINIT_BENCH_NUMEL", 64 * 2**20))
COLS = 4096

CASES = {
    "uniform": (lambda t: fastinit.uniform_(t, -1, 1), lambda t: torch.nn.init.uniform_(t, -1, 1)),
    "normal": (lambda t: fastinit.normal_(t, 0, 0.02), lambda t: torch.nn.init.normal_(t, 0, 0.02)),
    "trunc_normal": (lambda t: fastinit.trunc_normal_(t, std=0.02),
                     lambda t: torch.nn.init.trunc_normal_(t, std=0.02)),
    "kaiming_uniform_": (lambda t: fastinit.kaiming_uniform_(t, a=math.sqrt(5)),
                         lambda t: torch.nn.init.kaiming_uniform_(t, a=math.sqrt(5))),
    "xavier_normal_": (fastinit.xavier_normal_, torch.nn.init.xavier_normal_),
}
IMPLS = ("fastinit", "torch", "fill_")


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def target(request):
    fastinit.set_backend("cpu")
    t = torch.empty((NUMEL // COLS, COLS), dtype=getattr(torch, request.param))
    t.fill_(0.0)  # first touch outside the timings
    yield request.param, t
    fastinit.set_backend("auto")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", list(CASES))
def test_init(benchmark, target, case, impl):
    dtype_name, t = target
    ours, theirs = CASES[case]
    fn = {"fastinit": ours, "torch": theirs, "fill_": lambda x: x.fill_(1.0)}[impl]
    benchmark.group = f"{case} {dtype_name}"
    benchmark.extra_info.update(impl=impl, numel=t.numel(), dtype=dtype_name)
    benchmark.pedantic(fn, args=(t,), rounds=11, iterations=1, warmup_rounds=1)
