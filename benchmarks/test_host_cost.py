"""Host cost per call: what a drop-in call, a whole-model reset and a materialisation cost on
the host, fastinit against torch's way, arms interleaved in one run:

    .venv/bin/python -m pytest benchmarks/test_host_cost.py --benchmark-only

* the drop-in `kaiming_uniform_(w, a=sqrt(5))` on a 16x16 fp32 tensor against torch.nn.init's
  (target: at most 1.5x torch's time);
* the drop-in `uniform_` / `normal_` at 1K, 64K, 1M and 64M fp32 elements against
  torch.nn.init's, idle and with another process spinning on one core (target: at most 1.0x);
* `fastinit.reset_parameters` of 1000 `nn.Linear(16, 16)` against torch's loop of
  `reset_parameters` (target: at most 0.5x);
* `fastinit.materialize` of those 1000 layers built on meta against `to_empty` +
  `reset_parameters` (target: at most 0.7x).

Each round times every arm once with `time.perf_counter` (the first arm rotating from round to
round, so drift on a shared machine moves all arms alike); each arm's median over the rounds is
in `extra_info["median_s"]` and in the ratio table at the end. Not part of CI's pass/fail
(testpaths = tests): the targets are read from the table, not asserted."""
import math
import os
import statistics
import time

import pytest
import torch
from torch import nn

import fastinit
from interleave import interleaved, one_core_busy

ROUNDS = 15
WARMUP_ROUNDS = 2
SIZES = {"1K": 2**10, "64K": 2**16, "1M": 2**20, "64M": 2**26}
CALL_ELEMENTS = 2**21  # a round times enough calls of a small size to cover this many elements
SMALL_CALLS = 500      # calls per round of the 16x16 drop-in
LAYERS = 1000


@pytest.fixture(scope="module", params=["idle", "one core busy"])
def load(request):
    """Nothing more, or another process spinning on a core for the duration of the tests."""
    if request.param == "idle":
        yield request.param
        return
    with one_core_busy():
        yield request.param


def test_dropin_small_kaiming_uniform(benchmark, load):
    w = torch.empty(16, 16)
    a = math.sqrt(5)
    interleaved(benchmark, {
        "fastinit": lambda: fastinit.kaiming_uniform_(w, a=a),
        "torch": lambda: torch.nn.init.kaiming_uniform_(w, a=a),
    }, SMALL_CALLS, ROUNDS, WARMUP_ROUNDS, f"kaiming_uniform_ 16x16 fp32, {load}",
        numel=w.numel(), load=load)


@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("case", ["uniform_", "normal_"])
def test_dropin_by_size(benchmark, load, size, case):
    numel = SIZES[size]
    t = torch.empty((max(1, numel // 1024), min(numel, 1024)))
    t.fill_(0.0)
    ours, theirs = getattr(fastinit, case), getattr(torch.nn.init, case)
    interleaved(benchmark, {"fastinit": lambda: ours(t), "torch": lambda: theirs(t)},
                max(1, CALL_ELEMENTS // numel), ROUNDS, WARMUP_ROUNDS,
                f"{case} {size} fp32, {load}", numel=numel, dtype="float32", load=load)


def linears(device=None):
    with torch.device(device or "cpu"):
        return nn.Sequential(*(nn.Linear(16, 16) for _ in range(LAYERS)))


def torch_reset(model):
    for m in model.modules():
        if isinstance(m, nn.Linear):
            m.reset_parameters()


def test_reset_parameters_1000_linear(benchmark):
    model = linears()
    interleaved(benchmark, {
        "fastinit": lambda: fastinit.reset_parameters(model),
        "torch": lambda: torch_reset(model),
    }, 1, ROUNDS, WARMUP_ROUNDS, f"reset_parameters {LAYERS} x Linear(16, 16)",
        numel=LAYERS * 272)


def test_materialize_1000_linear(benchmark):
    """Each arm builds its model on meta outside the timing, then times the materialisation."""
    models = {}

    def fastinit_arm():
        fastinit.materialize(models["fastinit"])

    def torch_arm():
        models["torch"].to_empty(device="cpu")
        torch_reset(models["torch"])

    seconds = {"fastinit": [], "torch": []}
    arms = {"fastinit": fastinit_arm, "torch": torch_arm}
    order = list(arms)

    def one_round():
        for name in order:
            models[name] = linears("meta")
            start = time.perf_counter()
            arms[name]()
            seconds[name].append(time.perf_counter() - start)
        order.append(order.pop(0))

    benchmark.group = f"materialize {LAYERS} x Linear(16, 16) from meta"
    benchmark.pedantic(one_round, rounds=ROUNDS, iterations=1, warmup_rounds=WARMUP_ROUNDS)
    medians = {name: statistics.median(s[WARMUP_ROUNDS:]) for name, s in seconds.items()}
    benchmark.extra_info.update(median_s=medians, numel=LAYERS * 272, loadavg=os.getloadavg())
