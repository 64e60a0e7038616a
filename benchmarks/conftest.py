"""Ratios measured in the same run: after the benchmarks, one table per (case, dtype) group with
fastinit's speedup over torch.nn.init and its fraction of the `fill_` rate. A benchmark whose
rounds interleave the arms (test_cpu_init) reports each arm's median in extra_info["median_s"];
one benchmark per arm (test_model_init) reports its arm in extra_info["impl"]."""
import collections


def _arm_medians(benchmarks) -> dict:
    """{group: ({arm: median seconds}, numel)}."""
    groups = collections.defaultdict(dict)
    numels = {}
    for bench in benchmarks:
        info = bench.extra_info
        if bench.has_error or not bench.stats or not ({"median_s", "impl"} & info.keys()):
            continue
        numels[bench.group] = info["numel"]
        if "median_s" in info:
            groups[bench.group].update(info["median_s"])
        else:
            groups[bench.group][info["impl"]] = bench.stats.median
    return {group: (arms, numels[group]) for group, arms in groups.items()}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or not session.benchmarks:
        return
    tr = terminalreporter
    tr.section("fastinit ratios (medians, same run)")
    tr.write_line(f"{'group':<34}{'fastinit G/s':>14}{'torch G/s':>11}{'fill_ G/s':>11}"
                  f"{'vs torch':>10}{'of fill_':>10}")
    # a benchmark without a group (the host-cost cases) has the group None: sorted by name
    for group, (arms, numel) in sorted(_arm_medians(session.benchmarks).items(),
                                       key=lambda item: str(item[0])):
        if not {"fastinit", "torch"} <= arms.keys():
            continue
        ours, theirs, fill = arms["fastinit"], arms["torch"], arms.get("fill_")
        fill_cols = f"{numel / fill / 1e9:>11.3f}" if fill else f"{'-':>11}"
        fraction = f"{100 * fill / ours:>9.0f}%" if fill else f"{'-':>10}"
        tr.write_line(f"{str(group):<34}{numel / ours / 1e9:>14.3f}{numel / theirs / 1e9:>11.3f}"
                      f"{fill_cols}{theirs / ours:>9.1f}x{fraction}")
