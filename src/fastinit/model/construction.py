"""Building on meta: `meta_init()` builds a model with its parameters on the meta device and
its buffers real."""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch
from torch import nn

from .recipes import ConstructorRecorder

_meta_init_state = threading.local()
_meta_init_lock = threading.Lock()
_meta_init_depth = 0  # threads inside meta_init(): register_parameter is wrapped while > 0
_register_parameter = nn.Module.register_parameter


def _register_parameter_on_meta(self: nn.Module, name: str, param) -> None:
    recorder = getattr(_meta_init_state, "recorder", None)
    if recorder is not None and param is not None:
        # the recorder's own steps (its recipe is adopted whole): not recorded ops
        with torch._C.DisableTorchFunction():
            recipe = recorder.recipe_of(param)
            if not param.is_meta:
                param = type(param)(param.detach().to("meta"), requires_grad=param.requires_grad)
            recorder.adopt(param, recipe)
    _register_parameter(self, name, param)


@contextlib.contextmanager
def meta_init() -> Iterator[None]:
    """Build a model with its parameters on the meta device and its buffers real.

    Inside the block, every parameter a module registers is moved to the meta device, while
    buffers stay where the constructor computed them (a rotary `inv_freq`, `position_ids`):
    `materialize` then keeps their constructor values and initialises the parameters. The
    init the constructors do is recorded: how each parameter was made (``torch.zeros``,
    ``torch.ones(d) * 1e-6``, ``torch.empty(...).normal_()``) and every in-place write to it or
    a view of it (``nn.init.*``, ``Tensor.normal_``, ``.data.zero_()``); `materialize`
    replays it, drawing from its seed, so the model gets the distributions its constructor
    gives (a standard layer's own default init is fastinit's default fill). Only the calling
    thread is affected; nothing is patched but `nn.Module.register_parameter`, while a block is
    open. Constructors still allocate each parameter on the CPU before it moves (untouched
    memory, freed at once).

    Example::

        with fastinit.meta_init():
            model = MyModel()   # e.g. self.pos = nn.Parameter(torch.zeros(1, 16, 64))
        fastinit.materialize(model, "cuda", seed=0)   # pos: zeros; buffers: their values

    Returns:
        A context manager; a block nested in another joins it.
    """
    global _meta_init_depth
    if getattr(_meta_init_state, "recorder", None) is not None:
        yield
        return
    with _meta_init_lock:
        if _meta_init_depth == 0:
            nn.Module.register_parameter = _register_parameter_on_meta
        _meta_init_depth += 1
    recorder = ConstructorRecorder()
    _meta_init_state.recorder = recorder
    try:
        with recorder:
            yield
    finally:
        _meta_init_state.recorder = None
        with _meta_init_lock:
            _meta_init_depth -= 1
            if _meta_init_depth == 0:
                nn.Module.register_parameter = _register_parameter
