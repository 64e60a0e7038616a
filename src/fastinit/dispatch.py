"""The drop-in call path below every public initialiser: the ``drop_in`` decorator (an eager
call, or one custom op under ``torch.compile``), the hand-off of the layouts fastinit does not
fill to torch.nn.init, the seed of a call, and the submission of a random fill.

Each random function validates its input completely (its registry planner), then draws its
seed (``seed=`` or one draw from ``generator`` / the default CPU generator, whatever the
tensor's device), then fills the tensor through the selected backend under the random-number
contract, stream 0.
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Callable, Literal, NamedTuple, get_args, get_origin, get_type_hints

import torch
from torch import Tensor

from .contract import Distribution, U64_MASK, check_generator, check_seed, draw_seed
from .errors import NotATensorError, UnsupportedLayoutError
from . import backends
from .fused import active_recorder, records_meta, run_now, submit
from .plan import PLAIN_TENSOR_TYPES, check_storage, has_real_storage, make_fill
from .registry import INITIALISERS, TORCH_INIT_FUNCTIONS


def _torch_fills_layout(tensor: Tensor) -> bool:
    """True for the tensors torch.nn.init fills and fastinit leaves to it: sparse, nested,
    mkldnn and quantized tensors (fastinit writes strided dense memory only)."""
    with torch._C.DisableTorchFunction():  # fastinit's own look at the metadata
        return (tensor.layout != torch.strided or tensor.is_nested or tensor.is_mkldnn
                or tensor.is_quantized)


def _delegate_to_torch(fn_name: str, tensor: Tensor, args: tuple, kwargs: dict) -> Tensor:
    torch_fn = TORCH_INIT_FUNCTIONS.get(fn_name)
    if torch_fn is None:
        raise UnsupportedLayoutError(
            f"{fn_name}: cannot fill a tensor of layout {tensor.layout}"
            f"{' (nested)' if tensor.is_nested else ''}{' (quantized)' if tensor.is_quantized else ''}; "
            "fastinit fills strided dense tensors, and torch.nn.init has no such function")
    seed = kwargs.pop("seed", None)
    bound = inspect.signature(torch_fn).bind(tensor, *args, **kwargs)
    if seed is not None:  # torch's generator, seeded with `seed`, in place of a draw
        generator = torch.Generator(device=tensor.device)
        bound.arguments["generator"] = generator.manual_seed(check_seed(seed))
    return torch_fn(*bound.args, **bound.kwargs)


class _TracedOp(NamedTuple):
    """The custom op a drop-in function is traced as under torch.compile."""
    op: Callable
    arguments: tuple  # (name, schema type, default) of the op's arguments after the tensor
    random: bool  # it takes a `seed` (the op's keyword) or draws one from a generator
    parameters: tuple  # the names of the function's parameters after the tensor
    positional: int  # how many of them can be passed positionally


_TRACED_OPS: dict = {}  # the drop-in function's name -> its _TracedOp
_SCHEMA_TYPES = {float: "float", int: "int", str: "str"}


def _op_arguments(fn: Callable, parameters: list) -> tuple:
    """(name, schema type, default) of `fn`'s `parameters` less `generator` and `seed`, the
    types read from the annotations (a Literal is its values' type)."""
    hints = get_type_hints(fn)
    arguments = []
    for param in parameters:
        if param.name in ("generator", "seed"):
            continue
        hint = hints[param.name]
        if get_origin(hint) is Literal:
            hint = type(get_args(hint)[0])
        arguments.append((param.name, _SCHEMA_TYPES[hint], param.default))
    return tuple(arguments)


def _schema_default(kind: str, default) -> str:
    if default is inspect.Parameter.empty:
        return ""
    if kind == "str":
        return f'="{default}"'
    return f"={float(default)!r}" if kind == "float" else f"={default}"


def _fits_schema(value, kind: str) -> bool:
    """`value` passes as the op's `kind` argument unchanged: no bool, no int past 64 bits, and
    as a float only an int the float holds exactly."""
    if isinstance(value, bool):
        return False
    if kind == "str":
        return isinstance(value, str)
    if isinstance(value, int):
        return -(1 << 63) <= value < (1 << 63) and (kind == "int" or float(value) == value)
    return kind == "float" and isinstance(value, float)


def _write_nothing(tensor, *args, **seed) -> None:
    """The ops' fake implementation: a fake tensor has no memory to write. (The real call
    validates the arguments when it runs, so a compiled call raises an eager call's errors.)"""


# The ops' kernels for negative and conjugate views (kept alive: a registration lasts as long as
# its library).
_MATH_BIT_KERNELS = torch.library.Library("fastinit", "IMPL")


def _through_plain_tensor(op: Callable) -> Callable:
    """`op`'s kernel for a negative or conjugate view (the Negative and Conjugate dispatch keys):
    the op fills a plain tensor, which torch copies into the view, so the view reads the values
    a plain tensor gets. (torch's fallback for those keys needs an op that returns its tensor.)"""

    def kernel(tensor, *args, **kwargs):
        plain = torch.empty(tensor.shape, dtype=tensor.dtype, device=tensor.device)
        op(plain, *args, **kwargs)
        with torch.no_grad():
            tensor.copy_(plain)

    return kernel


def _register_traced_op(fn: Callable) -> None:
    """fastinit::<name>: a custom op that mutates its tensor and runs the call eagerly (see
    _eager_call); its fake implementation writes nothing, and a negative or conjugate view is
    filled through a plain tensor. The op takes `fn`'s leading arguments (all but `generator`
    and `seed`), with their defaults, positionally as arg0, arg1, ... (torch reserves some names,
    such as `mode`), and a random function's seed as the keyword `seed`."""
    name = INITIALISERS[fn.__name__].name  # a drop-in function is a registered initialiser
    parameters = list(inspect.signature(fn).parameters.values())[1:]  # after the tensor
    names = tuple(p.name for p in parameters)
    arguments = _op_arguments(fn, parameters)
    if names[:len(arguments)] != tuple(a for a, _, _ in arguments):  # see _traced_call
        raise TypeError(f"{name}: `generator` and `seed` must follow its other parameters, got "
                        f"{names}")
    random = "seed" in names
    schema = "".join(f", {kind} arg{i}{_schema_default(kind, default)}"
                     for i, (_, kind, default) in enumerate(arguments))
    schema = f"(Tensor(a!) tensor{schema}{', *, int seed' if random else ''}) -> ()"

    def run(tensor, *args, **seed):
        if random:  # the op's int is signed 64-bit; the seed is unsigned 64-bit
            seed["seed"] &= U64_MASK
        _eager_call(fn, tensor, args, seed)

    op_name = name.rstrip("_")
    op = torch.library.custom_op(f"fastinit::{op_name}", run, mutates_args=("tensor",),
                                 schema=schema)
    op.register_fake(_write_nothing)
    for math_bit in ("Negative", "Conjugate"):
        _MATH_BIT_KERNELS.impl(op_name, _through_plain_tensor(op), math_bit)
    positional = sum(p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD for p in parameters)
    _TRACED_OPS[name] = _TracedOp(op, arguments, random, names, positional)


def _traced_call(fn: Callable, tensor: Tensor, args: tuple, kwargs: dict) -> Tensor:
    """A drop-in call met by torch.compile: its custom op when the call's arguments bind to the
    function's parameters, are plain numbers / strings and, for a random function, include a
    `seed=`; otherwise eager, outside the graph (a graph break), so that a draw from the
    generator, or an error, happens exactly as it would without compile."""
    traced = _TRACED_OPS[fn.__name__]
    values = [args[i] if i < len(args) else kwargs.get(arg, default)
              for i, (arg, _, default) in enumerate(traced.arguments)]
    seed = kwargs.get("seed")
    binds = len(args) <= traced.positional and all(  # else eager raises Python's TypeError
        k in traced.parameters and k not in traced.parameters[:len(args)] for k in kwargs)
    traceable = binds and all(_fits_schema(v, kind)
                              for v, (_, kind, _) in zip(values, traced.arguments))
    if not traceable or (traced.random and seed is None):
        # (torch.compiler.disable here, not as a decorator: it imports torch._dynamo, which
        # is loaded anyway while compiling but would cost `import fastinit` a second)
        return torch.compiler.disable(_eager_call)(fn, tensor, args, kwargs)
    seed_kwargs = {}
    if traced.random:
        seed = check_seed(seed)
        seed_kwargs["seed"] = seed - (1 << 64) if seed >= (1 << 63) else seed
    traced.op(tensor, *values, **seed_kwargs)
    return tensor


def _eager_call(fn: Callable, tensor: Tensor, args: tuple, kwargs: dict) -> Tensor:
    """A drop-in call run eagerly: refuses a non-tensor as torch does, hands the layouts it does
    not fill to torch.nn.init, then runs `fn`, which checks its arguments before the tensor's
    storage (a freed or shrunk storage: torch's error, nothing written)."""
    if type(tensor) in PLAIN_TENSOR_TYPES:  # the common case: one look at the metadata
        with torch._C.DisableTorchFunction():
            if tensor.layout == torch.strided and not (tensor.is_nested or tensor.is_quantized):
                return fn(tensor, *args, **kwargs)
    elif not isinstance(tensor, Tensor):
        raise NotATensorError(
            f"{fn.__name__}: expected a torch.Tensor, got {type(tensor).__module__}."
            f"{type(tensor).__qualname__} (not a tensor)")
    if _torch_fills_layout(tensor):
        return _delegate_to_torch(fn.__name__, tensor, args, kwargs)
    return fn(tensor, *args, **kwargs)


def drop_in(fn: Callable) -> Callable:
    """The public form of a drop-in function: eager (see _eager_call), and under torch.compile
    one custom op (see _traced_call)."""

    @functools.wraps(fn)
    def drop_in(tensor, *args, **kwargs):
        if torch.compiler.is_compiling():
            return _traced_call(fn, tensor, args, kwargs)
        return _eager_call(fn, tensor, args, kwargs)

    _register_traced_op(fn)
    return drop_in


def resolve_seed(generator, seed) -> int:
    """`seed`, else one draw from `generator` (callers have checked its type)."""
    return draw_seed(generator) if seed is None else seed


def writes_nothing(tensor: Tensor) -> bool:
    """A tensor without memory (meta, fake, functional), unless a dry-run fused() block records
    fills of meta tensors."""
    return not has_real_storage(tensor) and not (tensor.is_meta and records_meta())


def check_target_storage(tensor: Tensor) -> None:
    """A tensor with memory: torch's error unless its storage is allocated and holds it all
    (see plan.check_storage); a tensor without memory has nothing to check."""
    if has_real_storage(tensor):
        check_storage(tensor)


def fill_random(tensor, dist, params, generator, seed) -> Tensor:
    """Fill `tensor` with a validated random fill (stream 0): its storage checked, then its seed
    (`seed`, else one draw from `generator`), then the fill, run now or recorded by an active
    fused() block. A whole plain CPU tensor takes one native call: its fill outside a block
    (backends.fill_whole_natively), its record inside one (Recorder.record_whole); a tensor
    without memory, or an empty one, draws nothing."""
    if generator is not None:
        check_generator(generator)
    if seed is not None:
        seed = check_seed(seed)
    if type(tensor) in PLAIN_TENSOR_TYPES:  # the common case: one look at the metadata
        recorder = active_recorder()
        if recorder is None:
            if backends.fill_whole_natively(tensor, dist, params, seed, generator=generator):
                return tensor
        elif recorder.record_whole(tensor, dist, params, seed, generator):
            return tensor
        with torch._C.DisableTorchFunction():  # (writes_nothing, for a plain tensor)
            if tensor.numel() == 0 or (not records_meta() if tensor.is_meta
                                       else torch._is_functional_tensor(tensor)):
                return tensor
            negative = tensor.is_neg()
    else:
        if writes_nothing(tensor):
            return tensor
        with torch._C.DisableTorchFunction():  # fastinit's own look at the metadata
            if tensor.numel() == 0:
                return tensor
            negative = tensor.is_neg()
    check_target_storage(tensor)
    seed = resolve_seed(generator, seed)
    negated_half_open = negative and dist == Distribution.UNIFORM and math.isfinite(params[2])
    if negated_half_open:
        # a half-open fp16 / bf16 uniform has no exactly negated parameters (docs/contract.md):
        # a plain tensor gets the values, and torch copies them into the negative view
        with torch._C.DisableTorchFunction():
            plain = torch.empty(tensor.shape, dtype=tensor.dtype, device=tensor.device)
        run_now([make_fill(plain, dist, params, seed)], tensor, "uniform (negative view)")
        with torch.no_grad(), torch._C.DisableTorchFunction():
            tensor.copy_(plain)
        return tensor
    submit([make_fill(tensor, dist, params, seed)])
    return tensor
