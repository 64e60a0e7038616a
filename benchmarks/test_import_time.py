"""What `import fastinit` costs on top of `import torch`, in fresh interpreters:

    .venv/bin/python -m pytest benchmarks/test_import_time.py --benchmark-only -s

Each round is a new interpreter that times `import torch` and then `import fastinit` (so the
difference is fastinit's own imports, torch already loaded, on the same warm disk cache).
Target: at most 0.3 s extra (median). Not part of CI's pass/fail (testpaths = tests)."""
import json
import os
import statistics
import subprocess
import sys

ROUNDS = int(os.environ.get("FASTINIT_BENCH_ROUNDS", 11))
TARGET_EXTRA_S = 0.3

SCRIPT = """
import json, time
start = time.perf_counter()
import torch
middle = time.perf_counter()
import fastinit
end = time.perf_counter()
print(json.dumps([middle - start, end - middle]))
"""


def test_import_fastinit_over_torch(benchmark):
    samples = []

    def one_interpreter():
        out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                             check=True)
        samples.append(json.loads(out.stdout.splitlines()[-1]))

    benchmark.group = "import"
    benchmark.pedantic(one_interpreter, rounds=ROUNDS, iterations=1, warmup_rounds=1)
    measured = samples[1:]  # the warm-up round's sample is left out
    torch_s = statistics.median(s[0] for s in measured)
    extra_s = statistics.median(s[1] for s in measured)
    benchmark.extra_info.update(import_torch_s=torch_s, import_fastinit_extra_s=extra_s)
    print(f"\nimport torch: {torch_s:.3f} s (median of {len(measured)}); import fastinit after "
          f"it: +{extra_s:.3f} s (min {min(s[1] for s in measured):.3f}, max "
          f"{max(s[1] for s in measured):.3f}); target <= {TARGET_EXTRA_S} s")
    assert extra_s <= TARGET_EXTRA_S
