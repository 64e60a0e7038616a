"""The model's own init that `materialize` and `explain` run: a Hugging Face model's
`init_weights()`, a root `init_weights()` / `init_states()` method, or a callable."""
from __future__ import annotations

from typing import Callable, Optional, Union

from torch import nn

from ..errors import InitValueError
from .hugging_face import hugging_face_init, is_hugging_face_model

# The model's own init method, by name (torchtitan's Transformer.init_weights(), init_states()).
OWN_INIT_METHODS = ("init_weights", "init_states")
InitArg = Union[str, Callable[[nn.Module], object]]


def select_model_init(module: nn.Module, init: InitArg) -> Optional[Callable[[list], object]]:
    """The model's own init that `init` selects, called with the kept buffers; None for
    fastinit's reset_parameters rules alone."""
    if callable(init):
        return lambda kept: init(module)
    if init == "reset_parameters":
        return None
    if init != "auto":
        raise InitValueError(f"init must be 'auto', 'reset_parameters' or a callable taking the "
                             f"model, got {init!r}")
    if is_hugging_face_model(module):
        return lambda kept: hugging_face_init(module, kept)
    for name in OWN_INIT_METHODS:
        method = getattr(module, name, None)
        if callable(method):
            return lambda kept: method()
    return None
