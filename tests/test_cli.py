"""The command line: one-line errors with exit status 1 or 2 (run as subprocesses, as a user
runs them), `--params` counts, help text on every option, the version line, the demo's
repeated phases and verdict, the plots, and the density check behind `explain --plot`
(with a negative control: a parameter drawn from the wrong distribution is rejected)."""
from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import subprocess
import sys

import pytest
import torch
from torch import nn

import fastinit
from fastinit import cli
from fastinit.check import density_checks, format_verdict, ks_statistic
from fastinit.demo import format_std_verdict
from fastinit.llama import tiny_llama
from fastinit.progress import Progress

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"

try:
    import matplotlib  # noqa: F401
    HAVE_MATPLOTLIB = True
except ImportError:
    HAVE_MATPLOTLIB = False
needs_matplotlib = pytest.mark.skipif(not HAVE_MATPLOTLIB,
                                      reason="matplotlib is not installed (pip install "
                                             "'.[plot]'; the CI set-up installs it)")


def run_cli(*args, cwd=REPO, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fastinit", *args], capture_output=True,
                          text=True, timeout=timeout, cwd=cwd)


BROKEN_MODULE = "import torch\nraise RuntimeError('broken on purpose')\n"

ERROR_CASES = [
    # (arguments, exit status, words the one error line must contain)
    (["demo", "--device", "gpu"], 2, ["unknown device 'gpu'", "devices here: cpu"]),
    (["bench", "--device", "tpu"], 2, ["'tpu'", "devices here: cpu"]),
    (["bench", "--device", "cuda:63"], 1, ["'cuda:63'", "devices here: cpu"]),
    (["demo", "--params", "100X"], 2, ["'100X' is not a count", "100M"]),
    (["demo", "--params", "0"], 2, ["'0' is not a positive count"]),
    (["demo", "--repeats", "0"], 2, ["'0' is not a positive integer"]),
    (["bench", "--numel", "lots"], 2, ["'lots' is not a count"]),
    (["explain", "fastinit.llama"], 2, ["PACKAGE.MODULE:FACTORY", "'fastinit.llama'"]),
    (["explain", "no_such_module_here:f"], 1, ["cannot import 'no_such_module_here'"]),
    (["explain", "fastinit.llama:no_such_factory"], 1,
     ["has no attribute 'no_such_factory'", "tiny_llama"]),
    (["explain", "fastinit.llama:Llama"], 1, ["without arguments", "config"]),
    (["explain", "fastinit.llama:LlamaConfig"], 1, ["not a torch.nn.Module"]),
    (["explain", "broken_models:small"], 1, ["importing 'broken_models' failed",
                                            "broken on purpose"]),
    (["frobnicate"], 2, ["invalid choice: 'frobnicate'"]),
    (["demo", "--params", "100T", "--device", "cpu"], 1, ["out of memory", "GiB available",
                                                           "--params"]),
]


@pytest.mark.parametrize("args,status,words", ERROR_CASES, ids=[" ".join(c[0]) for c in ERROR_CASES])
def test_errors_are_one_line_without_traceback(tmp_path, args, status, words):
    (tmp_path / "broken_models.py").write_text(BROKEN_MODULE)
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == status, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fastinit"), lines
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.slow
def test_closed_pipe_is_quiet(tmp_path):
    """`fastinit explain ... | head -1`: the reader leaves early, no traceback (the table is
    far larger than a pipe's buffer, so the writer does see the closed pipe)."""
    (tmp_path / "many.py").write_text(
        "from torch import nn\n"
        "def layers():\n"
        "    return nn.Sequential(*[nn.Linear(8, 8) for _ in range(3000)])\n")
    proc = subprocess.Popen([sys.executable, "-m", "fastinit", "explain", "many:layers"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=tmp_path, bufsize=1)
    assert proc.stdout.readline().split()[:2] == ["name", "shape"]
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=300) in (0, 1)
    assert "Traceback" not in stderr and "BrokenPipe" not in stderr, stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where CUDA is missing")
@pytest.mark.parametrize("command", ["demo", "bench"])
def test_missing_cuda_is_one_line(command):
    proc = run_cli(command, "--device", "cuda")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"fastinit {command}: error: device 'cuda' is not available: "
        + ("this torch is built without CUDA" if torch.version.cuda is None
           else "no usable GPU or driver found") + "; devices here: cpu"]


def test_explain_finds_modules_in_the_current_folder(tmp_path):
    """The installed console script (not `python -m`, which adds the folder itself)."""
    script = shutil.which("fastinit", path=os.path.dirname(sys.executable))
    if script is None:
        pytest.skip("the fastinit console script is not installed next to this Python")
    (tmp_path / "mymodels.py").write_text(
        "from torch import nn\n"
        "def small():\n"
        "    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))\n")
    proc = subprocess.run([script, "explain", "mymodels:small"], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    rows = [line.split()[0] for line in proc.stdout.splitlines()[2:]]
    assert rows == ["0.weight", "0.bias", "2.weight", "2.bias"], proc.stdout


def test_explain_shows_a_factorys_constructor_init(tmp_path):
    """The model is built under meta_init(): explain shows the init its constructor does, as
    materialize replays it, and says nothing about layer defaults."""
    (tmp_path / "initmodels.py").write_text(
        "from torch import nn\n"
        "def with_constructor_init():\n"
        "    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))\n"
        "    nn.init.normal_(model[0].weight, std=0.02)\n"
        "    nn.init.zeros_(model[0].bias)\n"
        "    return model\n")
    proc = run_cli("explain", "initmodels:with_constructor_init", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
    rows = {line.split()[0]: line for line in proc.stdout.splitlines()[2:]}
    assert re.search(r"\bnormal\s.*mean=0, std=0\.02\s+constructor$", rows["0.weight"]), proc.stdout
    assert re.search(r"\bconstant\s.*\b0\s+constructor$", rows["0.bias"]), proc.stdout
    assert re.search(r"kaiming_uniform.*\sdefault$", rows["2.weight"]), proc.stdout


@pytest.mark.parametrize("text,count", [
    ("100M", 100_000_000), ("1.3B", 1_300_000_000), ("7e9", 7_000_000_000), ("350k", 350_000),
    ("1_000", 1000), ("2G", 2_000_000_000), ("1.5e3K", 1_500_000), ("20000000", 20_000_000),
    ("4Mi", 4 * 2**20), ("1ki", 1024), ("1.5Gi", 3 * 2**29), ("256MI", 2**28), ("1Ti", 2**40),
])
def test_parse_count(text, count):
    assert cli.parse_count(text) == count


@pytest.mark.parametrize("text", ["", "M", "abc", "1.3Q", "-5", "0", "1e-9", "1.2.3", "100 MB",
                                  "4Bi", "4iM", "4Mib"])
def test_parse_count_rejects(text):
    with pytest.raises(argparse.ArgumentTypeError, match="count"):
        cli.parse_count(text)


def test_count_help_gives_both_meanings():
    bench = cli.build_parser()._subparsers._group_actions[0].choices["bench"]
    text = " ".join(bench.format_help().split())
    assert "powers of 1000" in text and "powers of 1024" in text and "16Mi" in text


def test_plot_sizes_end_at_max_numel():
    from fastinit.bench import plot_sizes

    assert plot_sizes(4 * 2**20) == [1024 * 4**k for k in range(7)]  # 4Mi: powers of 4 only
    four_million = plot_sizes(4_000_000)
    assert four_million[:-1] == [1024 * 4**k for k in range(6)]
    assert four_million[-1] == 976 * 4096  # 4M in whole 4096-element rows, not 1,048,576
    assert plot_sizes(1000) == [1000]


def test_bench_leaves_the_reference_backend_out_unless_asked():
    from fastinit.bench import bench_backends

    cpu = torch.device("cpu")
    default = bench_backends(cpu)
    assert "cpu" in default and "reference" not in default
    assert bench_backends(cpu, ["reference", "cpu"]) == ["reference", "cpu"]
    assert bench_backends(cpu, ["cuda"]) == []  # cuda does not fill CPU tensors
    assert cli.backend_list("cpu, reference") == ["cpu", "reference"]
    for bad in ("numpy", "", "cpu,,gpu"):
        with pytest.raises(argparse.ArgumentTypeError, match="backends"):
            cli.backend_list(bad)


def test_bench_table_explains_its_columns():
    from fastinit.bench import Row, format_table

    table = format_table([Row("cpu", "cpu", "float32", "uniform_", 1024, 1.0, 10.0, 1.25)])
    legend = [line for line in table.splitlines() if line.startswith("of fill_:")]
    assert len(legend) == 1 and "above 100%" in legend[0]
    assert table.splitlines()[-1].split()[-2:] == ["10.0x", "125%"]


def test_every_option_has_help():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(subparsers.choices) == {"demo", "bench", "explain"}
    assert all(a.help for a in subparsers._choices_actions)
    checked = 0
    for name, sub in [("fastinit", parser)] + list(subparsers.choices.items()):
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help.strip(), (name, action.option_strings or action.dest)
            checked += 1
    assert checked >= 15


def test_version_line_names_the_backends():
    line = cli.install_summary()
    assert line.startswith(f"fastinit {fastinit.__version__}: cpu")
    info = fastinit.backend_info()
    for name in info["available"]:
        if name != "reference":
            assert name in line
    for name in info["unavailable"]:
        assert f"; {name}: " in line
    assert "\n" not in line and "Error" not in line


@pytest.mark.parametrize("why,short", [
    ("ImportError: fastinit._cuda cannot use a GPU here: cudaGetDeviceCount failed: "
     "cudaErrorInsufficientDriver (CUDA driver version is insufficient); no CUDA driver found",
     "no GPU driver here"),
    ("ImportError: fastinit._cuda cannot use a GPU here: cudaErrorNoDevice", "no GPU here"),
    ("ImportError: fastinit._cuda was not built (no nvcc at install time, or FASTINIT_CUDA=0)",
     "not built (this torch has no CUDA)" if torch.version.cuda is None
     else "not built (no nvcc at install time)"),
    ("ModuleNotFoundError: No module named 'triton'", "triton not installed"),
    ("OSError: libfoo.so: cannot open shared object file; more", "OSError: libfoo.so: cannot "
                                                                 "open shared object file"),
])
def test_short_reasons(why, short):
    assert cli._short_reason(why) == short


def test_std_verdict():
    ok = [("a", 0.02004, 0.02), ("b", 1.0, 1.0)]
    assert format_std_verdict(ok).endswith("all 2 within 1%: ok")
    bad = ok + [("c", 0.0204, 0.02)]
    line = format_std_verdict(bad)
    assert line.endswith("1 of 3 outside 1%: FAILED") and "(c: 0.0204 vs expected 0.02)" in line


@pytest.mark.slow
def test_demo_repeats_fast_phases_and_gives_a_verdict():
    proc = run_cli("demo", "--params", "20M", "--device", "cpu", "--repeats", "3")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for phase in ("fastinit.materialize", r"floor \(to_empty \+ fill_ of every parameter\)"):
        assert re.search(rf"^{phase}: median [0-9.]+ s over 3 runs \([0-9.]+-[0-9.]+ s, "
                         rf"spread \d+%\)", out, re.M), out
    assert re.search(r"^std check over (\d+) random parameters: .*; all \1 within 1%: ok$", out,
                     re.M), out
    assert "module's own init" not in out
    assert "Warning" not in proc.stderr, proc.stderr  # the demo asks for the layer defaults
    assert re.search(r"^speedup: [0-9.]+x \(torch way over fastinit's median; [0-9.]+-[0-9.]+x",
                     out, re.M), out


# ---------------------------------------------------------------------------------------------
# The density check behind `explain --plot`


def test_ks_statistic_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    sample = torch.randn(5000, dtype=torch.float64).sort().values
    ours = ks_statistic(sample, torch.special.ndtr)
    assert ours == pytest.approx(stats.kstest(sample.numpy(), "norm").statistic, rel=1e-9)


def test_density_checks_pass_on_fastinit_init():
    model = tiny_llama()
    fastinit.reset_parameters(model, seed=3)
    checks = density_checks(model)
    assert len(checks) == 16  # 14 linear weights, the embedding and lm_head; no constants
    assert all(c.ok for c in checks), format_verdict(checks)
    assert format_verdict(checks).endswith(": ok")


@pytest.mark.parametrize("wrong", ["normal", "wider"])
def test_density_checks_reject_a_wrong_distribution(wrong):
    """Negative control: the same std drawn from a normal, or a bound 5% too wide, fails."""
    model = nn.Sequential(nn.Linear(512, 512), nn.Linear(512, 512))
    fastinit.reset_parameters(model, seed=0)
    bound = 1 / 512 ** 0.5
    with torch.no_grad():
        if wrong == "normal":
            model[1].weight.normal_(0.0, bound / 3 ** 0.5, generator=torch.Generator().manual_seed(0))
        else:
            model[1].weight.uniform_(-1.05 * bound, 1.05 * bound,
                                     generator=torch.Generator().manual_seed(0))
    checks = {c.name: c for c in density_checks(model)}
    assert checks["0.weight"].ok
    assert not checks["1.weight"].ok and checks["1.weight"].ks > 2 * checks["1.weight"].critical
    assert "1 FAILED" in format_verdict(list(checks.values()))
    assert "1.weight" in format_verdict(list(checks.values()))


def test_density_checks_refuse_meta_tensors():
    with torch.device("meta"):
        model = nn.Linear(4, 4)
    with pytest.raises(ValueError, match="meta device"):
        density_checks(model)


# ---------------------------------------------------------------------------------------------
# Plots


def _assert_png(path):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > 10_000, len(data)


@pytest.mark.slow
@needs_matplotlib
def test_explain_plot_writes_png(tmp_path):
    path = tmp_path / "tiny.png"
    proc = run_cli("explain", "fastinit.llama:tiny_llama", "--plot", str(path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_png(path)
    assert re.search(r"^Kolmogorov-Smirnov check of 16 random tensors at p = 0.001: highest "
                     r"D / critical [0-9.]+ \(\S+: D = [0-9.]+, n = [0-9,]+, critical [0-9.]+\): "
                     r"ok$", proc.stdout, re.M), proc.stdout


@needs_matplotlib
def test_explain_plot_panels_show_n_and_the_critical_value(tmp_path):
    import matplotlib
    from fastinit.plots import plot_density_checks

    model = nn.Sequential(nn.Linear(64, 32), nn.Linear(512, 512))
    fastinit.reset_parameters(model, seed=0)
    checks = density_checks(model)
    path = tmp_path / "checks.svg"
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text as text, to read it back
        plot_density_checks(checks, str(path), "two layers")
    svg = path.read_text()
    assert "ranked by D / critical value" in svg
    for check in checks:
        assert f"n = {check.sample.numel():,}" in svg and f"critical {check.critical:.4f}" in svg
    line = format_verdict(checks)
    assert "D / critical" in line and "n = " in line


@pytest.mark.slow
@needs_matplotlib
def test_bench_plot_writes_png(tmp_path):
    path = tmp_path / "sweep.png"
    proc = run_cli("bench", "--plot", str(path), "--max-numel", "16384", "--dtype", "float32",
                   "--device", "cpu")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _assert_png(path)
    assert "backend auto: 3 sizes from 1,024 to 16,384 elements x 6 distributions" in proc.stdout
    assert "sweep cpu float32: 18/18" in proc.stderr


def test_sweep_points_cover_every_size_and_distribution():
    from fastinit.bench import DISTRIBUTIONS, plot_sizes, run_sweep

    sizes = plot_sizes(4096)
    assert sizes == [1024, 4096] and plot_sizes(256 * 2**20)[-1] == 256 * 2**20
    points = run_sweep("cpu", "float32", sizes, repeats=1)
    assert [(p.numel, p.distribution) for p in points] == [
        (n, d) for n in sizes for d in DISTRIBUTIONS]
    assert all(p.fastinit_gelems > 0 and p.torch_gelems > 0 and p.fill_gelems > 0 for p in points)


# ---------------------------------------------------------------------------------------------
# Progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_redraws_one_line_on_a_terminal():
    out = _Terminal()
    progress = Progress("work", 3, out, interval=0.0)
    for step in ("a", "b", "c"):
        progress.step(step)
    progress.close()
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")
    assert text.count("\r") == 3 and "\r  work: 3/3 c" in text


def test_progress_writes_lines_to_a_log_at_most_every_interval():
    out = io.StringIO()
    progress = Progress("work", 1000, out, log_interval=3600.0)
    for i in range(1000):
        progress.step(f"step {i}")
    progress.close()
    assert out.getvalue().splitlines() == ["  work: 1/1000 step 0", "  work: 1000/1000 step 999"]


def test_progress_to_none_is_silent():
    progress = Progress("work", 2, None)
    progress.step()
    progress.step()
    progress.close()
    assert progress.done == 2
