"""Ratios measured in the same run: after the benchmarks, one table per (case, dtype) group with
fastinit's speedup over torch.nn.init and its fraction of the `fill_` rate."""
import collections


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    groups = collections.defaultdict(dict)
    for bench in session.benchmarks:
        if bench.has_error or not bench.stats or "impl" not in bench.extra_info:
            continue
        groups[bench.group][bench.extra_info["impl"]] = (bench.stats.median, bench.extra_info)
    tr = terminalreporter
    tr.section("fastinit ratios (medians, same run)")
    tr.write_line(f"{'group':<34}{'fastinit G/s':>14}{'torch G/s':>11}{'fill_ G/s':>11}"
                  f"{'vs torch':>10}{'of fill_':>10}")
    for group, impls in sorted(groups.items()):
        if not {"fastinit", "torch"} <= impls.keys():
            continue
        numel = impls["fastinit"][1]["numel"]
        ours, theirs = impls["fastinit"][0], impls["torch"][0]
        fill = impls["fill_"][0] if "fill_" in impls else None
        fill_cols = (f"{numel / fill / 1e9:>11.3f}" if fill else f"{'-':>11}")
        fraction = f"{100 * fill / ours:>9.0f}%" if fill else f"{'-':>10}"
        tr.write_line(f"{group:<34}{numel / ours / 1e9:>14.3f}{numel / theirs / 1e9:>11.3f}"
                      f"{fill_cols}{theirs / ours:>9.1f}x{fraction}")
