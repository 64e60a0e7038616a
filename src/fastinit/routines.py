"""torch's and timm's init routines that `fused()` recognises by the code that runs them.

Some routines make a distribution through a chain of tensor operations (a truncated normal by
inverse CDF, ``sparse_``'s zeroed positions). Inside a block, the routine's first random fill of
its target is recognised by the function that issues it and becomes one fastinit call with the
routine's arguments, read from its frame; the routine's later operations on that target are
then part of that call (`follow_up`).
"""
from __future__ import annotations

import sys
from typing import Optional

import torch

# Routines by (module, function name): the fastinit function each one equals and the names of
# its arguments. Its target is its local `tensor`.
ROUTINES = {
    ("torch.nn.init", "_no_grad_trunc_normal_"): ("trunc_normal_", ("mean", "std", "a", "b", "generator")),
    ("torch.nn.init", "sparse_"): ("sparse_", ("sparsity", "std", "generator")),
    ("timm.layers.weight_init", "_trunc_normal_"): ("trunc_normal_", ("mean", "std", "a", "b")),
    ("timm.models.layers.weight_init", "_trunc_normal_"): ("trunc_normal_", ("mean", "std", "a", "b")),
}
# Routines whose QR runs on one thread, so that they equal fastinit's orthogonal_ bitwise.
ONE_THREAD_QR_ROUTINES = {("torch.nn.init", "orthogonal_"): "orthogonal_"}
# Callers of those routines that rescale the standard truncated normal (TF / JAX semantics):
# the whole caller is one fastinit call.
OUTER_ROUTINES = {
    ("timm.layers.weight_init", "trunc_normal_tf_"): ("trunc_normal_tf_", ("mean", "std", "a", "b")),
    ("timm.models.layers.weight_init", "trunc_normal_tf_"): ("trunc_normal_tf_", ("mean", "std", "a", "b")),
}

# Frames of torch's own function-mode plumbing between a call and the mode (a `torch.device`
# context inside the block, `handle_torch_function`).
_PLUMBING_MODULES = frozenset({"torch.overrides", "torch.utils._device"})

# A follow-up that stands for nothing: the operation is skipped and returns None.
SKIPPED = object()


def routine(frame, table):
    """The entry of `table` for the function running in `frame`, or None."""
    if frame is None:
        return None
    return table.get((frame.f_globals.get("__name__"), frame.f_code.co_name))


def caller_frame(depth: int = 2):
    """The frame of the code that called the intercepted operation (`depth` frames up from the
    caller of this function, past torch's plumbing)."""
    frame = sys._getframe(depth)
    while frame is not None and frame.f_globals.get("__name__") in _PLUMBING_MODULES:
        frame = frame.f_back
    return frame


def recognise(caller, t: torch.Tensor) -> Optional[tuple[str, dict, list]]:
    """If `caller` is a known routine whose target is `t`: the fastinit function's name, its
    arguments and the routine's frames (the routine's, and an outer routine's that rescales
    it); otherwise None."""
    found = routine(caller, ROUTINES)
    if found is None or caller.f_locals.get("tensor") is not t:
        return None
    frames = [caller]
    outer = caller.f_back
    outer_found = routine(outer, OUTER_ROUTINES)
    if outer_found is not None and outer.f_locals.get("tensor") is t:
        found, values = outer_found, outer.f_locals
        frames.append(outer)
    else:
        values = caller.f_locals
    name, arg_names = found
    return name, {arg: values[arg] for arg in arg_names}, frames


def follow_up(target: torch.Tensor, name: str, args):
    """A recognised routine's later operation `name(*args)`, already part of its recorded call:
    a result that stands for it without running it (`SKIPPED` for None), or None when this is
    not one."""
    first = args[0] if args else None
    if first is target and name in ("erfinv_", "mul_", "add_", "clamp_"):
        return target
    if first is target and name in ("lt", "gt"):  # rejection test: all within [a, b]
        return torch.zeros((), dtype=torch.bool, device=target.device)
    if first is target and name == "__setitem__":  # sparse_'s zeros: part of the call
        return SKIPPED
    if name == "copy_" and len(args) > 1 and args[1] is target:  # a scratch copy of it
        return first
    if name == "randperm":  # sparse_'s zero positions: drawn by the call already
        return torch.arange(args[0], device=target.device)
    return None
