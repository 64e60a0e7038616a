"""fastinit's C++ CPU backend against torch.nn.init and against `fill_` (the memory floor) on one
64M-element tensor per case, and the drop-in `uniform_` and `normal_` against torch.nn.init's at
1K, 64K, 1M and 64M elements on an idle machine and with one core taken by another busy process
(whole calls, Python included), in one run:

    .venv/bin/python -m pytest benchmarks/test_cpu_init.py --benchmark-only

The three arms are interleaved: each benchmark round runs fastinit, torch and fill_ once each,
the first arm rotating from round to round, so drift on a shared machine moves all three alike.
pytest-benchmark times whole rounds; each arm's median over the rounds is in `extra_info` and in
the ratio table at the end. Set FASTINIT_BENCH_NUMEL to change the size. Not part of CI's
pass/fail (testpaths = tests)."""
import os
import statistics
import subprocess
import sys
import time

import pytest
import torch

import fastinit
from fastinit.bench import DISTRIBUTIONS

NUMEL = int(os.environ.get("FASTINIT_BENCH_NUMEL", 64 * 2**20))
COLS = 4096
ROUNDS = 11
WARMUP_ROUNDS = 1
SIZES = {"1K": 2**10, "64K": 2**16, "1M": 2**20, "64M": 2**26}
CALL_ELEMENTS = 2**21  # a round times enough calls of a small size to cover this many elements


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


@pytest.fixture(scope="module", params=["idle", "one core busy"])
def load(request):
    """Nothing more, or another process spinning on a core for the duration of the tests: fills
    must not wait for threads it deschedules."""
    if request.param == "idle":
        yield request.param
        return
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)  # running before the first round
    try:
        yield request.param
    finally:
        busy.kill()
        busy.wait()


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("case", ["uniform_", "normal_"])
def test_dropin_by_size(benchmark, load, size, case):
    """fastinit's drop-in call against torch.nn.init's on fp32, interleaved as in test_init, with
    enough calls per round that a round of a small size is not just timer noise."""
    fastinit.set_backend("cpu")
    numel = SIZES[size]
    t = torch.empty((max(1, numel // 1024), min(numel, 1024)))
    t.fill_(0.0)
    ours, theirs = DISTRIBUTIONS[case]
    arms = {"fastinit": ours, "torch": theirs}
    calls = max(1, CALL_ELEMENTS // numel)
    seconds = {name: [] for name in arms}
    order = list(arms)

    def one_round():
        for name in order:
            call = arms[name]
            start = time.perf_counter()
            for _ in range(calls):
                call(t)
            seconds[name].append((time.perf_counter() - start) / calls)
        order.append(order.pop(0))

    benchmark.group = f"{case} {size} fp32, {load}"
    try:
        benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1, warmup_rounds=WARMUP_ROUNDS)
    finally:
        fastinit.set_backend("auto")
    medians = {name: statistics.median(s[WARMUP_ROUNDS:]) for name, s in seconds.items()}
    benchmark.extra_info.update(numel=numel, dtype="float32", load=load, median_s=medians,
                                loadavg=os.getloadavg(), threads=torch.get_num_threads(),
                                time=time.strftime("%H:%M:%S"))
