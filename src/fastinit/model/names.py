"""The names of a model's tensors: fully qualified names, tied aliases, and the name a tensor's
stream is derived from."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn


_plain_attributes: dict[tuple[type, str], bool] = {}


def plain_attribute(cls: type, local: str) -> bool:
    """Whether attribute `local` of a module of class `cls` is found where Module.__getattr__
    looks (`_parameters`, `_buffers`): a name without dots that the class does not define."""
    key = (cls, local)
    plain = _plain_attributes.get(key)
    if plain is None:
        plain = _plain_attributes[key] = "." not in local and not hasattr(cls, local)
    return plain


def lookup(module: nn.Module, local: str):
    """The attribute `local` ("weight", "out_proj.bias") of `module`, or None."""
    if "." not in local and not hasattr(type(module), local) and local not in module.__dict__:
        t = module._parameters.get(local)  # where Module.__getattr__ looks first
        if t is None:
            t = module._buffers.get(local)
        if t is not None:
            return t
    obj = module
    for part in local.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


# nn.Module's own walks: a model that overrides one (FSDP1 renames its parameters) is walked
# through its own methods.
_MODULE_WALKS = (nn.Module.named_parameters, nn.Module.named_buffers, nn.Module.named_modules)
_NAMED_MODULES = nn.Module.named_modules


def _own_walks(module: nn.Module) -> bool:
    cls = type(module)
    return (cls.named_parameters, cls.named_buffers, cls.named_modules) == _MODULE_WALKS


def walk(module: nn.Module, prefix: str = "") -> list[tuple[str, nn.Module]]:
    """`module.named_modules(prefix=prefix)` as a list: every submodule once, by its first name,
    in the same order (one loop instead of a generator per module)."""
    out: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()
    stack = [(prefix, module)]
    while stack:
        name, mod = stack.pop()
        if id(mod) in seen:
            continue
        if type(mod).named_modules is not _NAMED_MODULES:  # a module with a walk of its own
            return list(module.named_modules(prefix=prefix))
        seen.add(id(mod))
        out.append((name, mod))
        children = [(f"{name}.{local}" if name else local, child)
                    for local, child in mod._modules.items() if child is not None]
        stack.extend(reversed(children))
    return out


def named_tensors(module: nn.Module, prefix: str = "",
                  modules: Optional[list[tuple[str, nn.Module]]] = None) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by its first fully qualified name (tied tensors once): the
    parameters as `named_parameters` lists them, then the buffers as `named_buffers` does.
    `modules`: `walk(module, prefix)`, when the caller has it."""
    if not _own_walks(module):
        return dict(list(module.named_parameters(prefix=prefix)) +
                    list(module.named_buffers(prefix=prefix)))
    # one walk, by id (a tensor's hash would go through any active torch function mode)
    params: dict[str, torch.Tensor] = {}
    buffers: dict[str, torch.Tensor] = {}
    seen_params: set[int] = set()
    seen_buffers: set[int] = set()
    for mod_name, mod in walk(module, prefix) if modules is None else modules:
        dot = mod_name + "." if mod_name else ""
        for local, t in mod._parameters.items():
            if t is not None and id(t) not in seen_params:
                seen_params.add(id(t))
                params[dot + local] = t
        for local, t in mod._buffers.items():
            if t is not None and id(t) not in seen_buffers:
                seen_buffers.add(id(t))
                buffers[dot + local] = t
    params.update(buffers)
    return params


def tied_aliases(module: nn.Module) -> list[tuple[nn.Module, str, str, str]]:
    """(owner module, "_parameters" or "_buffers", local name, first fully qualified name) of
    every later name of a tensor held under more than one name."""
    first: dict[int, str] = {}
    out = []
    for mod_name, mod in module.named_modules(remove_duplicate=False):
        for slot in ("_parameters", "_buffers"):
            for local, t in getattr(mod, slot).items():
                if t is None:
                    continue
                name = f"{mod_name}.{local}" if mod_name else local
                if id(t) not in first:
                    first[id(t)] = name
                elif first[id(t)] != name:
                    out.append((mod, slot, local, first[id(t)]))
    return out


# The attribute under which a torch wrapper holds the module it wraps: torch.compile's
# OptimizedModule, activation checkpointing's CheckpointWrapper, FSDP1's FullyShardedDataParallel.
WRAPPER_SEGMENTS = frozenset({"_orig_mod", "_checkpoint_wrapped_module", "_fsdp_wrapped_module"})


def stream_name(name: str) -> str:
    """The name a tensor's stream is derived from: its fully qualified name without the segments
    of torch's wrappers (`WRAPPER_SEGMENTS`), so that a wrapped model gets the values of the
    unwrapped one ("_orig_mod.layers.0._checkpoint_wrapped_module.w" -> "layers.0.w")."""
    if "_orig_mod" not in name and "_wrapped_module" not in name:
        return name  # no wrapper segment in it
    parts = name.split(".")
    kept = [p for p in parts if p not in WRAPPER_SEGMENTS]
    return name if len(kept) == len(parts) else ".".join(kept)
