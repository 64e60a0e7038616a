"""The timing of the benchmarks: arms interleaved round by round, each arm's median recorded
for the ratio table (conftest.py), and a second process that keeps one core busy."""
import contextlib
import os
import statistics
import subprocess
import sys
import time

import torch


def interleaved(benchmark, arms: dict, calls: int = 1, rounds: int = 11, warmup_rounds: int = 1,
                group=None, **info) -> dict:
    """Median seconds per call of each arm over `rounds` rounds (after `warmup_rounds`).

    Each round times every arm once, `calls` calls in a row, with `time.perf_counter`; the first
    arm rotates from round to round, so drift on a shared machine moves all arms alike. The
    medians go into ``extra_info["median_s"]`` with `info`, the load average and torch's thread
    count.
    """
    seconds = {name: [] for name in arms}
    order = list(arms)

    def one_round():
        for name in order:
            call = arms[name]
            start = time.perf_counter()
            for _ in range(calls):
                call()
            seconds[name].append((time.perf_counter() - start) / calls)
        order.append(order.pop(0))

    if group is not None:
        benchmark.group = group
    benchmark.pedantic(one_round, rounds=rounds, iterations=1, warmup_rounds=warmup_rounds)
    medians = {name: statistics.median(s[warmup_rounds:]) for name, s in seconds.items()}
    benchmark.extra_info.update(median_s=medians, loadavg=os.getloadavg(),
                                threads=torch.get_num_threads(), time=time.strftime("%H:%M:%S"),
                                **info)
    return medians


@contextlib.contextmanager
def one_core_busy():
    """Another process spinning on a core for the duration of the block."""
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)
    try:
        yield
    finally:
        busy.kill()
        busy.wait()
