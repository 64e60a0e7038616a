"""README.md (and the pages under docs/) as a user reads them: every Python snippet runs as
written, in a fresh interpreter (a snippet whose first line says it needs CUDA, or timm, runs
where that is present; one that says it needs torchrun is an excerpt of a script under
examples/, checked line by line against it), every `fastinit ...` command quoted parses, every
command of a shell block runs from the clone as written (.venv/bin/ or an activated .venv),
every file linked exists, the contents link to the sections, and the sharded example runs
under torchrun with two CPU processes."""
from __future__ import annotations

import glob
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
# docs/api.md is generated from docstrings, whose examples are excerpts (tests/test_api_docs.py)
DOC_PAGES = sorted(p for p in glob.glob(os.path.join(REPO, "docs", "*.md"))
                   if os.path.basename(p) != "api.md")
SHARDED_EXAMPLE = os.path.join(REPO, "examples", "sharded_init.py")


def _read(path: str) -> str:
    with open(path, encoding="utf-8") as f:
        return f.read()


def code_blocks(language: str, paths=(README,)) -> list[tuple[str, str]]:
    """("FILE:LINE", code) of every fenced block of `language` in the files `paths`."""
    blocks = []
    for path in paths:
        text = _read(path)
        blocks += [(f"{os.path.relpath(path, REPO)}:{text.count(chr(10), 0, m.start()) + 2}",
                    m.group(1))
                   for m in re.finditer(rf"^```{language}\n(.*?)^```", text, re.M | re.S)]
    return blocks


PYTHON_BLOCKS = code_blocks("python", [README, *DOC_PAGES])


def _needs(code: str) -> str | None:
    first = code.splitlines()[0].lower()
    match = re.match(r"#\s*needs (cuda|torchrun|timm)", first)
    return match.group(1) if match else None


def test_readme_has_the_snippets():
    readme = code_blocks("python")
    assert len(readme) >= 6
    assert sum(_needs(code) is None for _, code in readme) >= 5
    assert any(where.startswith("docs/") for where, _ in PYTHON_BLOCKS)


def test_quick_start_comes_first():
    """`import fastinit` within the README's first 60 lines, in a snippet of at most 10."""
    where, code = code_blocks("python")[0]
    assert int(where.split(":")[1]) + len(code.splitlines()) <= 60, where
    assert "import fastinit" in code and len(code.strip().splitlines()) <= 10


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_contents_link_to_sections():
    text = _read(README)
    headings = {_anchor(h) for h in re.findall(r"^#{2,3} (.+)$", text, re.M)}
    contents = text.split("## Contents", 1)[1].split("\n## ", 1)[0]
    links = re.findall(r"\]\(#([^)]+)\)", contents)
    assert len(links) >= 8
    assert [link for link in links if link not in headings] == []
    top = [_anchor(h) for h in re.findall(r"^## (.+)$", text, re.M) if h != "Contents"]
    assert links == top, "the contents list every section, in order"


def _snippet_param(where: str, code: str):
    """A snippet as a test parameter; one that builds a Hugging Face or timm model or runs
    torch.compile takes seconds to import or compile, and is marked slow."""
    slow = any(word in code for word in ("transformers", "timm", "torch.compile"))
    return pytest.param(where, code, id=where, marks=[pytest.mark.slow] if slow else [])


@pytest.mark.parametrize("where,code", [_snippet_param(w, c) for w, c in PYTHON_BLOCKS])
def test_python_snippet_runs(tmp_path, where, code):
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
    assert proc.returncode == 0, f"{where}\n{proc.stdout}\n{proc.stderr}"
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
    """Every `fastinit SUBCOMMAND ...` in README.md and docs/, inline or in a bash block."""
    found = []
    for path in (README, *DOC_PAGES):
        found += re.findall(r"`(?:\.venv/bin/)?fastinit ((?:demo|bench|explain)\b[^`]*)`",
                            _read(path))
    for _, code in code_blocks("bash", [README, *DOC_PAGES]):
        found += re.findall(r"(?:\.venv/bin/)?fastinit ((?:demo|bench|explain)\b[^&\n]*)", code)
    return [command.strip() for command in found]


def test_quoted_commands_parse():
    commands = quoted_commands()
    assert len(commands) >= 6
    parser = cli.build_parser()
    for command in commands:
        args = parser.parse_args(shlex.split(command, comments=True))
        assert args.command == command.split()[0]


# Programs that .venv provides: a shell block runs them as .venv/bin/NAME, or after activating.
VENV_PROGRAMS = ("fastinit", "python", "pytest", "torchrun")


def unrunnable_lines(code: str) -> list[str]:
    """The lines of a shell block that call a .venv program by its bare name, not activated."""
    bad, activated = [], False
    for line in code.splitlines():
        for command in re.split(r"&&|\|\||;", line.split(" #")[0]):
            words = command.split()
            if words[:2] in (["source", ".venv/bin/activate"], [".", ".venv/bin/activate"]):
                activated = True
            elif words and words[0] in VENV_PROGRAMS and not activated:
                bad.append(line)
    return bad


def test_shell_commands_run_as_written():
    blocks = code_blocks("bash", [README, *DOC_PAGES])
    assert len(blocks) >= 8
    assert unrunnable_lines("fastinit demo\n") == ["fastinit demo"]  # the check can fail
    assert unrunnable_lines(". .venv/bin/activate\nfastinit demo\n") == []
    for where, code in blocks:
        assert unrunnable_lines(code) == [], where


def test_linked_files_exist():
    checked = 0
    for page in (README, *DOC_PAGES):
        text = _read(page)
        here = os.path.dirname(page)
        for path in re.findall(r"\]\(((?!https?:)[^)#]+)\)", text):
            assert os.path.exists(os.path.join(here, path)), f"{page}: {path}"
            checked += 1
        for path in re.findall(r"`((?:examples|scripts|docs|benchmarks|tests)/[\w./-]+)`", text):
            assert os.path.exists(os.path.join(REPO, path)), f"{page}: {path}"
            checked += 1
    assert checked >= 20


@pytest.mark.slow
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
