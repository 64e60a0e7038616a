"""The names of a model's tensors: fully qualified names, tied aliases, and the name a tensor's
stream is derived from."""
from __future__ import annotations

import torch
from torch import nn


def lookup(module: nn.Module, local: str):
    obj = module
    for part in local.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def named_tensors(module: nn.Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every parameter and buffer by its first fully qualified name (tied tensors once)."""
    return dict(list(module.named_parameters(prefix=prefix)) + list(module.named_buffers(prefix=prefix)))


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
    parts = name.split(".")
    kept = [p for p in parts if p not in WRAPPER_SEGMENTS]
    return name if len(kept) == len(parts) else ".".join(kept)
