"""fastinit's C++ CPU backend against torch.nn.init and against `fill_` (the memory floor) on one
64M-element tensor per case, in one run:

    .venv/bin/python -m pytest benchmarks/test_cpu_init.py --benchmark-only

Set FASTINIT_BENCH_NUMEL to change the size. Not part of CI's pass/fail (testpaths = tests)."""
import os

import pytest
import torch

import fastinit
from fastinit.bench import DISTRIBUTIONS

NUMEL = int(os.environ.get("FASTINIT_BENCH_NUMEL", 64 * 2**20))
COLS = 4096

IMPLS = ("fastinit", "torch", "fill_")


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def target(request):
    fastinit.set_backend("cpu")
    t = torch.empty((NUMEL // COLS, COLS), dtype=getattr(torch, request.param))
    t.fill_(0.0)  # first touch outside the timings
    yield request.param, t
    fastinit.set_backend("auto")


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", list(DISTRIBUTIONS))
def test_init(benchmark, target, case, impl):
    dtype_name, t = target
    ours, theirs = DISTRIBUTIONS[case]
    fn = {"fastinit": ours, "torch": theirs, "fill_": lambda x: x.fill_(1.0)}[impl]
    benchmark.group = f"{case} {dtype_name}"
    benchmark.extra_info.update(impl=impl, numel=t.numel(), dtype=dtype_name)
    benchmark.pedantic(fn, args=(t,), rounds=11, iterations=1, warmup_rounds=1)
