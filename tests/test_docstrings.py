"""Every public name of fastinit is documented, in torch.nn.init's style: a summary line, an
``Args:`` entry for every parameter, ``Returns:`` (or ``Yields:``) unless the function returns
None, and ``Raises:`` naming real exception types for every function that checks its input.
``seed=`` and ``generator=`` are explained once, in :func:`fastinit.uniform_`, and the other
drop-in functions refer to it. The deprecated aliases point at their replacement."""
from __future__ import annotations

import builtins
import inspect
import re

import pytest
import torch

import fastinit

SECTION = re.compile(r"^\s*(Args|Arguments|Returns|Yields|Raises|Examples?|Note|Warning)::?\s*$")
# Functions with parameters that cannot fail on any argument they are documented to take.
NEVER_RAISE = {"stream_for_name", "ones_", "zeros_"}


def _public(kind):
    return [name for name in fastinit.__all__ if kind(getattr(fastinit, name))]


FUNCTIONS = _public(inspect.isfunction)
DEPRECATED = [n for n in FUNCTIONS if "deprecated" in (getattr(fastinit, n).__doc__ or "")]
DOCUMENTED = [n for n in FUNCTIONS if n not in DEPRECATED]


def sections(doc: str) -> dict[str, list[str]]:
    """Google-style sections of a docstring: name -> its lines (dedented by the section)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in inspect.cleandoc(doc).splitlines():
        match = SECTION.match(line)
        if match and not line.startswith(" "):
            current = match.group(1)
            out[current] = []
        elif current is not None:
            if line and not line.startswith(" "):
                current = None  # a paragraph after the section ends it
            else:
                out[current].append(line)
    return out


def _entries(lines: list[str]) -> dict[str, str]:
    """`name (type): text` entries of a section (first indentation level) -> their text."""
    entries: dict[str, str] = {}
    indent = min((len(l) - len(l.lstrip()) for l in lines if l.strip()), default=0)
    key = None
    for line in lines:
        if not line.strip():
            continue
        if len(line) - len(line.lstrip()) == indent:
            match = re.match(r"\s*(\*{0,2}[\w.]+)(?: \([^)]*\))?:\s*(.*)", line)
            if match is None:
                key = None
                continue
            key = match.group(1).lstrip("*")
            entries[key] = match.group(2)
        elif key is not None:
            entries[key] += " " + line.strip()
    return entries


def test_sections_parser_finds_missing_entries():
    """The checks below can fail: the parser sees a missing parameter and a missing section."""
    doc = '''Summary.

    Args:
        tensor: an n-dimensional `torch.Tensor`
        gain (float): an optional
            scaling factor

    Raises:
        ValueError: bad gain.
    '''
    parsed = sections(doc)
    assert set(parsed) == {"Args", "Raises"}
    assert _entries(parsed["Args"]) == {"tensor": "an n-dimensional `torch.Tensor`",
                                        "gain": "an optional scaling factor"}
    assert "generator" not in _entries(parsed["Args"])
    assert _entries(parsed["Raises"]) == {"ValueError": "bad gain."}


def test_every_public_name_is_covered():
    assert len(DOCUMENTED) >= 25 and len(DEPRECATED) == 11
    assert {"uniform_", "calculate_gain", "reset_parameters", "materialize", "explain",
            "fused", "set_backend", "stream_for_name"} <= set(DOCUMENTED)


@pytest.mark.parametrize("name", DOCUMENTED)
def test_function_docstring(name):
    fn = getattr(fastinit, name)
    doc = fn.__doc__
    assert doc and inspect.cleandoc(doc).splitlines()[0].strip(), f"{name}: no summary line"
    parsed = sections(doc)
    signature = inspect.signature(fn)
    params = [p for p in signature.parameters if p not in ("self", "cls")]
    if params:
        assert "Args" in parsed, f"{name}: no Args section"
        documented = _entries(parsed["Args"])
        missing = [p for p in params if p not in documented]
        assert not missing, f"{name}: Args does not describe {missing}"
        assert all(text.strip() for text in documented.values()), f"{name}: an empty Args entry"
    returns_none = signature.return_annotation in (None, "None")
    if not returns_none:
        assert "Returns" in parsed or "Yields" in parsed, f"{name}: no Returns section"
    if params and name not in NEVER_RAISE:
        assert "Raises" in parsed, f"{name}: no Raises section"
        raised = _entries(parsed["Raises"])
        assert raised, f"{name}: an empty Raises section"
        for exc in raised:
            cls = getattr(fastinit, exc, None) or getattr(builtins, exc, None)
            assert isinstance(cls, type) and issubclass(cls, BaseException), \
                f"{name}: Raises names {exc!r}, not an exception type"


def test_seed_and_generator_are_explained_once():
    """uniform_ explains both; every other drop-in function with them refers to it."""
    full = _entries(sections(fastinit.uniform_.__doc__)["Args"])
    assert "seed" in full and "generator" in full
    assert "default" in full["generator"].lower() and "2**64" in full["seed"]
    referring = [n for n in DOCUMENTED if n != "uniform_"
                 and {"seed", "generator"} <= set(inspect.signature(getattr(fastinit, n)).parameters)]
    assert len(referring) >= 11
    for name in referring:
        args = _entries(sections(getattr(fastinit, name).__doc__)["Args"])
        for param in ("seed", "generator"):
            assert "uniform_" in args[param], f"{name}: {param} does not refer to uniform_"
            assert len(args[param]) < len(full[param]), f"{name}: {param} repeats the explanation"


@pytest.mark.parametrize("name", DEPRECATED)
def test_deprecated_alias_points_at_its_replacement(name):
    doc = getattr(fastinit, name).__doc__
    assert f"fastinit.{name}_" in doc
    with pytest.warns(FutureWarning, match=f"fastinit.{name}_"):
        try:
            getattr(fastinit, name)(torch.empty(3, 4, 5))
        except (TypeError, ValueError):
            pass  # sparse needs its sparsity, dirac's shape: only the warning matters here


@pytest.mark.parametrize("name", _public(inspect.isclass) + _public(inspect.ismodule))
def test_class_and_module_docstrings(name):
    doc = getattr(fastinit, name).__doc__
    assert doc and doc.strip() and not doc.startswith(("Exception(", "Initialize self")), name
