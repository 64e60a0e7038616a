"""Host cost of a Triton launch per tensor, without a GPU: the descriptor rows (from fills), the
block map and its variant groups, and the op's validation (check_table, check_groups), for
lists of tiny CPU tensors (the host work does not depend on the device). The kernel itself is
not run. Prints microseconds per tensor, the median of --repeats runs (the tensor counts
interleaved); the total is the median of the runs' totals.

Usage: python scripts/triton_host_cost.py [--tensors 1 100 1000] [--repeats 15]
"""
import argparse
import statistics
import time

import numpy as np
import torch

from fastinit.backends import triton as triton_backend
from fastinit.contract import Distribution, trunc_normal_params
from fastinit.kernels.launch_table import (DEFAULT_CONFIG, build_block_map, check_groups,
                                           check_table)
from fastinit.plan import make_fill

DISTS = [(Distribution.UNIFORM, [0.2, -0.1]), (Distribution.NORMAL, [0.0, 0.02]),
         trunc_normal_params(0.0, 0.02, -0.04, 0.04, torch.float32),
         (Distribution.CONSTANT, [0.0])]


def fills_of(n):
    """n tiny tensors (4 x 4 fp32, one in four transposed), the distributions in turn."""
    out = []
    for i in range(n):
        t = torch.empty(4, 4)
        t = t.t() if i % 4 == 3 else t
        dist, params = DISTS[i % len(DISTS)]
        out.append(make_fill(t, dist, params, 1, i))
    return out


def time_stages(fills):
    """Seconds of each stage of one launch's host work over `fills`."""
    targets = [f.tensor for f in fills]
    t0 = time.perf_counter()
    rows = triton_backend.check_fills(fills)
    t1 = time.perf_counter()
    block_map, groups = build_block_map(rows, torch.float32, DEFAULT_CONFIG.min_chunk)
    table = np.concatenate([rows.reshape(-1), block_map.reshape(-1)])
    t2 = time.perf_counter()
    check_table(targets, table)
    check_groups(len(targets), table, groups)
    t3 = time.perf_counter()
    return {"rows": t1 - t0, "block_map": t2 - t1, "validation": t3 - t2}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tensors", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    lists = {n: fills_of(n) for n in args.tensors}
    runs = {n: [] for n in args.tensors}
    for _ in range(args.repeats):  # the counts interleaved, so a busy spell hits them alike
        for n, fills in lists.items():
            runs[n].append(time_stages(fills))
    print("tensors  rows us/tensor  block map us/tensor  validation us/tensor  total us/tensor")
    for n, stages in runs.items():
        per = {k: 1e6 * statistics.median(s[k] for s in stages) / n for k in stages[0]}
        total = 1e6 * statistics.median(sum(s.values()) for s in stages) / n
        print(f"{n:7d}  {per['rows']:14.1f}  {per['block_map']:19.1f}  "
              f"{per['validation']:20.1f}  {total:15.1f}")


if __name__ == "__main__":
    main()
