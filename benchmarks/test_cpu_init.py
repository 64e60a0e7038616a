"""fastinit's C++ CPU backend against torch.nn.init and against `fill_` (the memory floor) on one
64M-element tensor per case, in one run (the drop-in calls at 1K to 64M elements, idle and with
one core busy, are in test_host_cost.py):

    .venv/bin/python -m pytest benchmarks/test_cpu_init.py --benchmark-only

The three arms are interleaved: each benchmark round runs fastinit, torch and fill_ once each,
the first arm rotating from round to round, so drift on a shared machine moves all three alike.
pytest-benchmark times whole rounds; each arm's median over the rounds is in `extra_info` and in
the ratio table at the end. Set FASTINIT_BENCH_NUMEL to change the size. Not part of CI's
pass/fail (testpaths = tests)."""
import os

import pytest
import torch

import fastinit
from fastinit.bench import DISTRIBUTIONS
from interleave import interleaved

NUMEL = int(os.environ.get("FASTINIT_BENCH_NUMEL", 64 * 2**20))
COLS = 4096
ROUNDS = 11
WARMUP_ROUNDS = 1


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def target(request):
    fastinit.set_backend("cpu")
    t = torch.empty((NUMEL // COLS, COLS), dtype=getattr(torch, request.param))
    t.fill_(0.0)  # first touch outside the timings
    yield request.param, t
    fastinit.set_backend("auto")


@pytest.mark.parametrize("case", list(DISTRIBUTIONS))
def test_init(benchmark, target, case):
    dtype_name, t = target
    ours, theirs = DISTRIBUTIONS[case]
    interleaved(benchmark, {"fastinit": lambda: ours(t), "torch": lambda: theirs(t),
                            "fill_": lambda: t.fill_(1.0)},
                1, ROUNDS, WARMUP_ROUNDS, f"{case} {dtype_name}", numel=t.numel(),
                dtype=dtype_name)
