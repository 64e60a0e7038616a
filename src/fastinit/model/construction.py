"""Building on meta: `meta_init()` builds a model with its parameters on the meta device and
its buffers real."""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

from torch import nn


_meta_init_state = threading.local()
_meta_init_lock = threading.Lock()
_meta_init_depth = 0  # threads inside meta_init(): register_parameter is wrapped while > 0
_register_parameter = nn.Module.register_parameter


def _register_parameter_on_meta(self: nn.Module, name: str, param) -> None:
    if getattr(_meta_init_state, "active", False) and param is not None and not param.is_meta:
        param = type(param)(param.detach().to("meta"), requires_grad=param.requires_grad)
    _register_parameter(self, name, param)


@contextlib.contextmanager
def meta_init() -> Iterator[None]:
    """Build a model with its parameters on the meta device and its buffers real.

    Inside the block, every parameter a module registers is moved to the meta device, while
    buffers stay where the constructor computed them (a rotary `inv_freq`, `position_ids`):
    `materialize` then keeps their constructor values and initialises the parameters. Only the
    calling thread is affected. Constructors still allocate each parameter on the CPU before it
    moves (untouched memory, freed at once).

    Example::

        with fastinit.meta_init():
            model = MyModel()
        fastinit.materialize(model, "cuda", seed=0)   # buffers: the constructor's values

    Returns:
        A context manager; a block nested in another joins it.
    """
    global _meta_init_depth
    if getattr(_meta_init_state, "active", False):
        yield
        return
    with _meta_init_lock:
        if _meta_init_depth == 0:
            nn.Module.register_parameter = _register_parameter_on_meta
        _meta_init_depth += 1
    _meta_init_state.active = True
    try:
        yield
    finally:
        _meta_init_state.active = False
        with _meta_init_lock:
            _meta_init_depth -= 1
            if _meta_init_depth == 0:
                nn.Module.register_parameter = _register_parameter
