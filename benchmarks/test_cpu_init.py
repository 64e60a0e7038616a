"""fastinit's C++ CPU backend against torch.nn.init and against `fill_` (the memory floor) on one
64M-element tensor per case, in one run:

    .venv/bin/python -m pytest benchmarks/test_cpu_init.py --benchmark-only

The three arms are interleaved: each benchmark round runs fastinit, torch and fill_ once each,
the first arm rotating from round to round, so drift on a shared machine moves all three alike.
pytest-benchmark times whole rounds; each arm's median over the rounds is in `extra_info` and in
the ratio table at the end. Set FASTINIT_BENCH_NUMEL to change the size. Not part of CI's
pass/fail (testpaths = tests)."""
import os
import statistics
import time

import pytest
import torch

import fastinit
from fastinit.bench import DISTRIBUTIONS

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
    arms = {"fastinit": ours, "torch": theirs, "fill_": lambda x: x.fill_(1.0)}
    seconds = {name: [] for name in arms}
    order = list(arms)

    def one_round():
        for name in order:
            start = time.perf_counter()
            arms[name](t)
            seconds[name].append(time.perf_counter() - start)
        order.append(order.pop(0))  # the next round starts with the next arm

    benchmark.group = f"{case} {dtype_name}"
    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1, warmup_rounds=WARMUP_ROUNDS)
    medians = {name: statistics.median(s[WARMUP_ROUNDS:]) for name, s in seconds.items()}
    benchmark.extra_info.update(numel=t.numel(), dtype=dtype_name, median_s=medians)
