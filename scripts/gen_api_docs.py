"""Writes docs/api.md, the API reference, from the docstrings of every name in
``fastinit.__all__`` and every function of ``fastinit.spec``.

    .venv/bin/python scripts/gen_api_docs.py           # rewrite docs/api.md
    .venv/bin/python scripts/gen_api_docs.py --check   # exit status 1 if docs/api.md is stale

The output depends only on the source: names in the order of ``__all__`` (spec functions in
the order they are defined), signatures without annotations, no object addresses, so that
the same source gives the same file on any machine and torch release
(tests/test_api_docs.py compares it with the file).
"""
from __future__ import annotations

import argparse
import dataclasses
import inspect
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
API_MD = os.path.join(ROOT, "docs", "api.md")
NO_DOCSTRING = "*No docstring.*"

# Google-style sections: those whose entries are `name (type): text` become bullet lists.
ENTRY_SECTIONS = ("Args", "Arguments", "Raises")
TEXT_SECTIONS = ("Returns", "Yields", "Note", "Warning", "Example", "Examples")
SECTION = re.compile(r"^(%s)::?\s*$" % "|".join(ENTRY_SECTIONS + TEXT_SECTIONS))
ENTRY = re.compile(r"^(\*{0,2}[\w.]+)(\s*\([^)]*\))?:\s*(.*)$")
ROLE = re.compile(r":(?:func|class|meth|mod|attr|data|exc|math|obj):`~?([^`]+)`")
REPLACEMENT = re.compile(r"deprecated in favou?r of :func:`(fastinit\.\w+)`")
ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")


def inline(text: str) -> str:
    """reST inline markup as Markdown: ``code`` and :role:`x` become `code` and `x`."""
    return ROLE.sub(r"`\1`", text.replace("``", "`"))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _dedent(lines: list[str]) -> list[str]:
    depth = min((_indent(l) for l in lines if l.strip()), default=0)
    return [l[depth:] for l in lines]


def _code_block(lines: list[str]) -> list[str]:
    while lines and not lines[-1].strip():
        lines = lines[:-1]
    while lines and not lines[0].strip():
        lines = lines[1:]
    return ["```python", *_dedent(lines), "```", ""]


def docstring_markdown(doc: str | None) -> list[str]:
    """A Google-style docstring as Markdown lines: paragraphs as they are, `Args:` and
    `Raises:` as bullet lists, `>>>` examples and ``::`` blocks as Python code blocks."""
    if not doc or not doc.strip():
        return [NO_DOCSTRING, ""]
    lines = inspect.cleandoc(doc).splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        match = SECTION.match(line)
        if match:
            name = match.group(1)
            body = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                body.append(lines[i])
                i += 1
            out += [f"**{name}:**", ""]
            if name in ENTRY_SECTIONS:
                out += _entries(body)
            elif any(l.strip().startswith(">>>") for l in body) or name.startswith("Example"):
                out += _code_block(body)
            else:
                while body and not body[-1].strip():
                    body.pop()
                out += [inline(l) for l in _dedent(body)] + [""]
            continue
        if line.strip().startswith(">>>"):
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i])
                i += 1
            out += _code_block(block)
            continue
        if line.rstrip().endswith("::") and not SECTION.match(line):
            text = line.rstrip()[:-1]  # "Example::" -> "Example:"
            out += [inline(text), ""] if text.strip(": ") else []
            i += 1
            block = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith(" ")):
                block.append(lines[i])
                i += 1
            out += _code_block(block)
            continue
        out.append(inline(line))
        i += 1
    while out and not out[-1].strip():
        out.pop()
    return out + [""]


def _entries(body: list[str]) -> list[str]:
    """`name (type): text` lines, with deeper-indented continuations, as bullets."""
    body = [l for l in _dedent(body) if l.strip()]
    bullets: list[str] = []
    for line in body:
        match = ENTRY.match(line) if not line.startswith(" ") else None
        if match:
            name, kind, text = match.groups()
            bullets.append(f"- `{name}`{inline(kind or '')}: {inline(text)}".rstrip())
        elif bullets:
            bullets[-1] += " " + inline(line.strip())
        else:
            bullets.append(inline(line.strip()))
    return bullets + [""]


def signature(obj, qualified: str) -> str | None:
    """`qualified(args)` without annotations (they are strings or torch types whose text
    depends on the release), or None where Python gives no signature."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    params = [p.replace(annotation=inspect.Parameter.empty) for p in sig.parameters.values()]
    if inspect.isclass(obj) and params and params[0].name == "self":
        params = params[1:]
    text = str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty))
    return f"{qualified}{text}"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def _entry(qualified: str, obj) -> list[str]:
    out = [f"### `{qualified}`", ""]
    sig = signature(obj, qualified) if not (inspect.isclass(obj)
                                            and issubclass(obj, BaseException)) else None
    if sig and not inspect.ismodule(obj):
        out += ["```python", sig, "```", ""]
    if inspect.isclass(obj) and issubclass(obj, BaseException):
        bases = ", ".join(f"`{b.__name__}`" for b in obj.__bases__)
        out += [f"Derives from {bases}.", ""]
    doc = obj.__doc__ if (not inspect.isclass(obj) or "__doc__" in vars(obj)) else None
    if dataclasses.is_dataclass(obj) and doc and doc.startswith(f"{obj.__name__}("):
        doc = None  # the text dataclasses make up
    out += docstring_markdown(doc)
    if inspect.isclass(obj) and dataclasses.is_dataclass(obj):
        fields = ", ".join(f"`{f.name}`" for f in dataclasses.fields(obj))
        out += [f"Fields: {fields}.", ""]
    if inspect.isclass(obj) and not issubclass(obj, BaseException):
        members = []
        for name, member in vars(obj).items():
            if name.startswith("_") or not (inspect.isfunction(member)
                                            or isinstance(member, property)):
                continue
            summary = (inspect.getdoc(member) or "").split("\n\n")[0].replace("\n", " ")
            kind = "property" if isinstance(member, property) else "method"
            members.append(f"- {kind} `{name}`: {inline(summary) or NO_DOCSTRING}")
        out += members + [""] if members else []
    return out


def spec_functions(spec_module) -> list[str]:
    """The public functions of fastinit.spec: its __all__ where it has one, else the functions
    it defines, in the order it defines them."""
    names = getattr(spec_module, "__all__", None)
    if names is None:
        names = [name for name, obj in vars(spec_module).items()
                 if inspect.isfunction(obj) and not name.startswith("_")
                 and obj.__module__ == spec_module.__name__]
    return [name for name in names if inspect.isfunction(getattr(spec_module, name))]


def public_names(fastinit) -> dict[str, list[tuple[str, object]]]:
    """Section title -> (qualified name, object), in the order of ``fastinit.__all__``."""
    sections: dict[str, list[tuple[str, object]]] = {
        "Functions": [], "Classes": [], "Errors": [], "fastinit.spec": [],
        "Deprecated aliases": []}
    for name in fastinit.__all__:
        obj = getattr(fastinit, name)
        qualified = f"fastinit.{name}"
        if inspect.ismodule(obj):
            sections["fastinit.spec" if obj is fastinit.spec else "Functions"].append(
                (qualified, obj))
        elif inspect.isclass(obj):
            key = "Errors" if issubclass(obj, BaseException) else "Classes"
            sections[key].append((qualified, obj))
        elif REPLACEMENT.search(obj.__doc__ or ""):
            sections["Deprecated aliases"].append((qualified, obj))
        else:
            sections["Functions"].append((qualified, obj))
    sections["fastinit.spec"] += [(f"fastinit.spec.{name}", getattr(fastinit.spec, name))
                                  for name in spec_functions(fastinit.spec)]
    return sections


SECTION_INTROS = {
    "Functions": "The drop-in functions take torch.nn.init's arguments (plus `seed=`); the "
                 "whole-model functions, `fused()` and the backend functions follow them.",
    "Classes": "What the whole-model functions return.",
    "Errors": "fastinit's exception types; those raised for bad input also derive from the "
              "type torch.nn.init raises for the same input.",
    "fastinit.spec": "`from fastinit import spec`: the module's own description follows.",
    "Deprecated aliases": "torch.nn.init's deprecated names; each warns (`FutureWarning`) and "
                          "calls its replacement.",
}


def generate() -> str:
    """The text of docs/api.md for the fastinit that `import fastinit` finds."""
    import fastinit

    sections = public_names(fastinit)
    lines = [
        "# fastinit API reference",
        "",
        "Generated from the docstrings by `scripts/gen_api_docs.py`; do not edit it by hand. "
        "After changing a docstring or `fastinit.__all__`, run "
        "`.venv/bin/python scripts/gen_api_docs.py` (`tests/test_api_docs.py` fails while "
        "this file is stale).",
        "",
        "The values every random function writes are defined in "
        "[contract.md](contract.md).",
        "",
        "## Contents",
        "",
    ]
    for title, entries in sections.items():
        if not entries:
            continue
        lines.append(f"- [{title}](#{_anchor(title)})")
        names = ", ".join(f"[`{qualified.split('.')[-1]}`](#{_anchor(qualified)})"
                          for qualified, obj in entries if not inspect.ismodule(obj))
        lines += [f"  - {names}"] if names else []
    lines.append("")
    for title, entries in sections.items():
        if not entries:
            continue
        lines += [f"## {title}", "", SECTION_INTROS[title], ""]
        for qualified, obj in entries:
            if inspect.ismodule(obj):
                lines += docstring_markdown(obj.__doc__)
            elif title == "Deprecated aliases":
                replacement = REPLACEMENT.search(obj.__doc__).group(1)
                lines += [f"### `{qualified}`", "", f"Deprecated: calls `{replacement}`.", ""]
            else:
                lines += _entry(qualified, obj)
    text = "\n".join(lines).rstrip() + "\n"
    address = ADDRESS.search(text)
    if address:
        raise ValueError(f"an object address in the reference ({address.group(0)}): a default "
                         "without a stable repr; give it one")
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="do not write; exit with status 1 if docs/api.md is stale")
    args = parser.parse_args(argv)
    text = generate()
    current = ""
    if os.path.exists(API_MD):
        with open(API_MD, encoding="utf-8") as f:
            current = f.read()
    if args.check:
        if current != text:
            print(f"{API_MD} is stale: run python scripts/gen_api_docs.py", file=sys.stderr)
            return 1
        return 0
    if current != text:
        with open(API_MD, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"wrote {API_MD}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
