"""The GPU kernels compiled ahead of time, without a GPU (scripts/gpu_static_report.py): every
Triton variant and CUDA kernel for sm_80 and sm_90 uses at most 128 registers and spills
nothing, each Triton variant compiles in at most 10 s, and ptxas run again on a reported PTX
file (Triton's, and the PTX nvcc kept) gives the report's figures. Skips only where Triton's
bundled ptxas (Triton) or nvcc (CUDA) is absent.
"""
import importlib.util
import json
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(os.path.dirname(HERE), "scripts", "gpu_static_report.py")

spec = importlib.util.spec_from_file_location("gpu_static_report", SCRIPT)
report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(report)

pytestmark = pytest.mark.slow  # every Triton variant is a real compile: minutes in all

MAX_COMPILE_S = 10.0


def _nvcc():
    import setup

    return setup.find_nvcc()[0]


@pytest.fixture(scope="module")
def triton_rows():
    if report.triton_bin("ptxas") is None:
        pytest.skip("Triton with its bundled ptxas is not installed")
    # In a process of its own: the test session sets TRITON_INTERPRET=1 (tests/conftest.py),
    # under which Triton's kernels are interpreted Python and cannot be compiled for a GPU.
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, SCRIPT, "--json", "--backend", "triton"], env=env,
                          capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def cuda_rows(tmp_path_factory):
    if _nvcc() is None:
        pytest.skip("no nvcc")
    return report.report(backends=("cuda",), folder=str(tmp_path_factory.mktemp("cuda")))


def _over(rows):
    return [(r["arch"], r["kernel"], r["dtype"], r["registers"], r["spill_bytes"])
            for r in rows if r["spill_bytes"] or r["registers"] > report.REGISTER_LIMIT]


def test_triton_variants_fit(triton_rows):
    """Every (distribution, path) variant for every output dtype on both architectures: no
    spills, at most 128 registers, at most 10 s to compile; Triton's own cubin agrees."""
    assert {(r["arch"], r["dtype"]) for r in triton_rows} == {
        (a, d) for a in report.ARCHS for d in report.DTYPES}
    assert len(triton_rows) == len(report.ARCHS) * len(report.DTYPES) * 5 * 2
    assert not _over(triton_rows)
    slow = [(r["arch"], r["kernel"], r["dtype"], r["compile_s"]) for r in triton_rows
            if r["compile_s"] > MAX_COMPILE_S]
    assert not slow
    assert all(r["registers"] == r["cubin_registers"] for r in triton_rows)


def test_ptxas_on_a_reported_ptx_agrees(triton_rows):
    """ptxas run separately on reported PTX files gives the report's registers and spills."""
    for row in (triton_rows[0], triton_rows[len(triton_rows) // 2], triton_rows[-1]):
        assert os.path.isfile(row["ptx"])
        again = report.run_ptxas(row["ptx"], row["arch"], "triton")
        assert (again["registers"], again["spill_bytes"]) == (row["registers"],
                                                               row["spill_bytes"])


def test_ptxas_on_a_reported_cuda_ptx_agrees(cuda_rows):
    """nvcc's ptxas run separately on the PTX nvcc kept gives the report's registers and
    spills for the row's kernel (each architecture's PTX holds every kernel)."""
    for row in (cuda_rows[0], cuda_rows[len(cuda_rows) // 2 + 1], cuda_rows[-1]):
        assert os.path.isfile(row["ptx"]) and row["ptx"].endswith(f"sm{row['arch']}.ptx")
        again = report.run_ptxas(row["ptx"], row["arch"], "cuda", row["function"])
        assert (again["registers"], again["spill_bytes"]) == (row["registers"],
                                                               row["spill_bytes"])


def test_cuda_kernels_fit(cuda_rows):
    """Both CUDA kernels (descriptor table in memory, and by value) for every dtype on both
    architectures: no spills, at most 128 registers."""
    assert {(r["arch"], r["kernel"], r["dtype"]) for r in cuda_rows} == {
        (a, k, d) for a in report.ARCHS for k in ("fill_kernel", "fill_kernel_by_value")
        for d in report.DTYPES}
    assert not _over(cuda_rows)


def test_ptxas_log_is_parsed():
    """The parser reads ptxas -v's figures (a wrong parser would report 0 everywhere)."""
    log = ("ptxas info    : Compiling entry function '_Z3foov' for 'sm_90'\n"
           "ptxas info    : Function properties for _Z3foov\n"
           "    24 bytes stack frame, 20 bytes spill stores, 28 bytes spill loads\n"
           "ptxas info    : Used 80 registers, used 0 barriers, 360 bytes cmem[0]\n")
    assert report.parse_ptxas(log) == {
        "_Z3foov": {"registers": 80, "spill_bytes": 48, "stack_bytes": 24, "entry": True}}


def test_table_lists_every_row():
    rows = [{"backend": "cuda", "arch": 80, "kernel": "k", "dtype": "float32", "registers": 40,
             "spill_bytes": 0, "compile_s": 1.0}]
    text = report.table(rows)
    assert "registers" in text.splitlines()[0] and "40" in text.splitlines()[1]
