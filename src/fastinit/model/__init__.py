"""Whole-model init: PyTorch's default init of every standard layer (or user rules) for every
parameter and buffer of a module, in one fused pass per (device, dtype); `materialize` for a
model built on meta, `explain` for what it writes.

* `rules`: which spec each tensor gets (layer defaults, user rules);
* `executor`: the fused pass (`reset_parameters`, `init_module`);
* `own_init`, `hugging_face`: the model's own init;
* `construction`: building on meta (`meta_init`); `materialize`: allocating and initialising;
* `explain`: the table of what `materialize` writes.
"""
from .executor import InitResult, init_module, reset_parameters
from .explain import ExplainRow, Explanation, explain, format_explain
from .materialize import materialize
from .construction import meta_init

__all__ = ["InitResult", "init_module", "reset_parameters", "ExplainRow", "Explanation", "explain",
           "format_explain", "materialize", "meta_init"]
