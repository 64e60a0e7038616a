"""`explain`: what `materialize` writes to each tensor of a model, and why, as a table."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from .. import spec
from ..contract import describe_parameters, distribution_name, seeds_from
from ..fused import fused, submit
from ..plan import make_fill
from ..gains import _calculate_fan_in_and_fan_out
from .names import named_tensors
from .own_init import InitArg, select_model_init
from .recipes import EMPTY_FACTORIES, NotReplayable, Recipe
from .rules import Rules, collect, default_rules_for, user_rules


@dataclass
class ExplainRow:
    """One parameter or buffer in `explain()`: what `materialize` writes to it, and why."""

    name: str
    shape: tuple
    dtype: str
    distribution: str
    fan_in: Optional[int]
    fan_out: Optional[int]
    gain: Optional[float]
    parameters: str  # describe_parameters: "lo, hi", "mean=0, std=0.02", ...; or "-"
    source: str = ""  # "rule", "default", "model init", "constructor",
    #                   "default, then constructor", "<Module>.reset_parameters()", "kept"


class Explanation(list):
    """The rows of `explain()`: a list of ExplainRow that prints as a table."""

    def __str__(self) -> str:
        return format_explain(self)

    __repr__ = __str__


NOT_INITIALISED = "NOT INITIALISED"


def _describe(plan, sp: spec.Spec) -> tuple[str, str]:
    """(distribution, parameters) of a spec's plan, in the words of `describe_fill`."""
    if plan is None:
        return sp.kind, f"gain={sp.kwargs.get('gain', 1.0):g}" if sp.kind == "orthogonal" else "-"
    return distribution_name(plan[0]), describe_parameters(*plan)


def _recorded_write(description: str) -> tuple[str, str]:
    """("normal", "mean=0, std=0.02") from a dry run's record "normal(mean=0, std=0.02)" (the
    form of `describe_fill`, or an operation's name such as "copy_"); later partial writes
    follow the detail ("...; then constant(0) on part")."""
    last_full, then, partial = description.partition("; then ")
    kind, _, args = last_full.partition("(")
    detail = args[:-1] if args.endswith(")") else "-"
    return kind, detail + then + partial


def _dry_run_model_init(module: nn.Module, model_init, tensors: dict[str, torch.Tensor]
                        ) -> dict[str, str]:
    """{name: the last write of the model's own init} for each tensor it writes, found by a dry
    run: nothing is executed or allocated, and torch's generator is restored afterwards."""
    kept = [t for t in module.buffers() if not t.is_meta]
    with seeds_from(torch.Generator()), fused(dry_run=True) as recorder:
        model_init(kept)
    return {name: d for name, t in tensors.items() if (d := recorder.describe(t)) is not None}


def _dry_run_constructors(tensors: dict[str, torch.Tensor], defaults: dict
                          ) -> dict[str, tuple[str, Optional[str]]]:
    """The constructor init recorded under `meta_init()` that `materialize` replays, found by
    replaying it in a dry run, as materialize does: a recipe that starts from its layer's
    default (`defaults`: name -> TensorInit) gets that default's fill first. Returns
    {name: (its writes, as `Recorder.describe` gives them; the default's words, or None)}. A
    recipe that cannot be replayed is left out (`materialize` gives that tensor its layer's
    default)."""
    recipes = {n: r for n, t in tensors.items()
               if t.is_meta and (r := getattr(t, "_fastinit_recipe", None)) is not None
               and r.makes_values}
    out = {}
    if not recipes:
        return out
    with seeds_from(torch.Generator()), fused(dry_run=True) as recorder, torch.no_grad():
        for name, recipe in recipes.items():
            t, ti = tensors[name], defaults.get(name)
            default_words = None
            if recipe.default and ti is not None:
                plan = ti.spec.plan(t, name)
                if plan is not None:
                    submit([make_fill(t, plan[0], plan[1], 0)])
                    default_words = recorder.describe(t)
            try:
                recipe.replay(t)
            except NotReplayable:
                continue
            out[name] = (_recipe_words(recipe, recorder.describe(t)), default_words)
    return out


def _recipe_words(recipe: Recipe, recorded: Optional[str]) -> str:
    """A replayed recipe in words: the dry run's record of its writes, with the replay's own
    copy of the tensor it makes named by the op that makes it ("zeros", "arange", "mul"); the
    name of its last op where the dry run records no write (a structured init such as
    ``orthogonal_`` on meta)."""
    func = getattr(recipe.make[0], "__name__", "") if recipe.make is not None else ""
    made = "a given tensor" if recipe.value is not None else \
        func if func and func not in EMPTY_FACTORIES and not recipe.default else None
    if recorded is None:
        return getattr(recipe.steps[-1].func, "__name__", "an in-place op") if recipe.steps \
            else made or "-"
    if made is not None and recorded.startswith("copy_"):
        return made + recorded[len("copy_"):]
    return recorded


def explain(module: nn.Module, rules: Optional[Rules] = None, prefix: str = "", *,
            init: InitArg = "auto", reinit: bool = False) -> Explanation:
    """What `materialize(module, init=init, rules=rules, reinit=reinit)` writes to each
    parameter and buffer.

    The model's own init, and the constructor init recorded under `fastinit.meta_init()`
    (which `materialize` replays), are found by a dry run inside `fastinit.fused(dry_run=True)`,
    which records the writes without executing them (build the model on meta: nothing is
    allocated), and leaves torch's generator as it was; rules and PyTorch's layer defaults are
    read from their specs. A tensor nothing writes is listed as ``NOT INITIALISED`` (`materialize` would
    raise).

    Args:
        module: the model, usually built on the meta device.
        rules: init_module rules, as for `materialize`.
        prefix: the module's name inside a larger model.
        init: ``"auto"``, ``"reset_parameters"`` or a callable taking the model.
        reinit: as for `materialize`: parameters that hold values are initialised, not kept.

    Returns:
        Explanation: a list with one ExplainRow per tensor (tied ones once); `print()` shows it
        as a table.

    Raises:
        InitValueError: a bad `init` or rule, as `materialize` would raise it.
    """
    model_init = select_model_init(module, init)
    tensors = named_tensors(module, prefix)
    by_model = {} if model_init is None else _dry_run_model_init(module, model_init, tensors)
    by_rule = {} if rules is None else \
        {ti.name: ti for ti in collect(module, prefix, user_rules(rules, module, prefix))[0]}
    defaults = collect(module, prefix, lambda mod, _: default_rules_for(mod))[0]
    by_default = {ti.name: ti for ti in defaults}
    by_constructor = _dry_run_constructors(tensors, by_default)
    rows = Explanation()
    for name, t in tensors.items():
        fans = _calculate_fan_in_and_fan_out(t) if t.dim() >= 2 else (None, None)
        head = (name, tuple(t.shape), str(t.dtype).replace("torch.", ""))
        kept = not t.is_meta and not (reinit and isinstance(t, nn.Parameter))  # holds values
        ti = None if kept else by_rule.get(name)
        written, default_words = by_constructor.get(name, (None, None)) \
            if name not in by_model else (None, None)
        # the constructor's writes build on the layer's default: the default's row, then them
        builds_on_default = default_words is not None and written.startswith(default_words + ";")
        if ti is None and name not in by_model and not kept and (
                written is None or builds_on_default):
            ti = by_default.get(name)
        if ti is not None:
            dist, detail = _describe(ti.spec.plan(t, name), ti.spec)
            label = f"{dist} ({ti.spec.kind})" if ti.spec.kind != dist else dist
            source = "rule" if name in by_rule else "default"
            if source == "default" and builds_on_default:
                detail += written[len(default_words):]
                source = "default, then constructor"
            rows.append(ExplainRow(*head, label, *fans, ti.spec.gain(), detail, source))
        elif name in by_model:
            kind, detail = _recorded_write(by_model[name])
            rows.append(ExplainRow(*head, kind, *fans, None, detail, "model init"))
        elif written is not None:
            kind, detail = _recorded_write(written)
            rows.append(ExplainRow(*head, kind, *fans, None, detail, "constructor"))
        elif kept:
            rows.append(ExplainRow(*head, "kept", *fans, None, "-", "kept"))
        else:
            owner = module.get_submodule(name[len(prefix) + 1 if prefix else 0:].rpartition(".")[0])
            if callable(getattr(owner, "reset_parameters", None)):
                rows.append(ExplainRow(*head, "module's own init", *fans, None, "-",
                                       f"{type(owner).__name__}.reset_parameters()"))
            else:
                rows.append(ExplainRow(*head, NOT_INITIALISED, *fans, None, "-", NOT_INITIALISED))
    return rows


def format_explain(rows: list[ExplainRow]) -> str:
    """The rows of `explain()` as an aligned text table."""
    header = ["name", "shape", "dtype", "distribution", "fan_in", "fan_out", "gain", "parameters",
              "source"]
    table = [header] + [[r.name, "x".join(map(str, r.shape)) or "scalar", r.dtype, r.distribution,
                         "" if r.fan_in is None else str(r.fan_in),
                         "" if r.fan_out is None else str(r.fan_out),
                         "" if r.gain is None else f"{r.gain:.6g}", r.parameters, r.source]
                        for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in table]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)
