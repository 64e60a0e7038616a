"""One test per kind of error a call can raise: its type (fastinit's, and the type torch raises
for the same input), its message naming the bad value, and that nothing was written: a tensor
filled with a poison value keeps it, and the default generator is not advanced by an argument
error."""
from __future__ import annotations

import pytest
import torch

import fastinit
from fastinit.errors import (BackendUnavailableError, FastinitError, InitValueError,
                             NotATensorError, UnsafeTargetError, UnsupportedDtypeError,
                             UnsupportedLayoutError, ZeroStdError)

POISON = 7.0


def poisoned(*shape, dtype=torch.float32):
    return torch.full(shape, POISON, dtype=dtype)


def generator_state_kept(call):
    """Run `call` (which must raise) and return whether the default generator is unchanged."""
    before = torch.get_rng_state()
    with pytest.raises(FastinitError):
        call()
    return torch.equal(before, torch.get_rng_state())


def test_every_error_is_a_fastinit_error():
    for cls in (InitValueError, ZeroStdError, UnsupportedDtypeError, UnsupportedLayoutError,
                NotATensorError, BackendUnavailableError, UnsafeTargetError):
        assert issubclass(cls, FastinitError)


def test_argument_value_error():
    t = poisoned(4, 3)
    with pytest.raises(InitValueError, match=r"from=2 > to=1") as info:
        fastinit.uniform_(t, 2.0, 1.0)
    assert isinstance(info.value, RuntimeError) and isinstance(info.value, ValueError)
    assert torch.all(t == POISON)
    assert generator_state_kept(lambda: fastinit.uniform_(t, 2.0, 1.0))


def test_zero_std_error():
    t = poisoned(4, 3)
    with pytest.raises(ZeroStdError, match="std=0") as info:
        fastinit.trunc_normal_(t, 0.0, 0.0)
    assert isinstance(info.value, ZeroDivisionError)
    assert torch.all(t == POISON)


def test_unsupported_dtype_error():
    t = torch.full((4, 3), 7, dtype=torch.int64)
    with pytest.raises(UnsupportedDtypeError, match="'Long'") as info:
        fastinit.normal_(t)
    assert isinstance(info.value, (TypeError, NotImplementedError))
    assert torch.all(t == 7)


def test_not_a_tensor_error():
    values = [[POISON] * 3]
    with pytest.raises(NotATensorError, match="builtins.list") as info:
        fastinit.uniform_(values)
    assert isinstance(info.value, AttributeError)
    assert values == [[POISON] * 3]


def test_unsupported_layout_error():
    t = torch.full((4, 3), POISON).to_sparse()
    with pytest.raises(UnsupportedLayoutError, match="sparse"):
        fastinit.lecun_uniform_(t)
    assert torch.all(t.to_dense() == POISON)


@pytest.mark.parametrize("size", [0, 8], ids=["freed", "shrunk"])
def test_unsafe_target_storage(size):
    t = poisoned(4, 3)
    t.untyped_storage().resize_(size)
    phrase = "data is not allocated yet" if size == 0 else "out of bounds for storage"
    with pytest.raises(UnsafeTargetError, match=phrase) as info:
        fastinit.kaiming_uniform_(t)
    assert isinstance(info.value, RuntimeError)
    assert t.untyped_storage().nbytes() == size  # nothing reallocated
    if size:
        assert torch.all(torch.frombuffer(bytearray(bytes(t.untyped_storage())), dtype=torch.float32) == POISON)


def test_unsafe_target_overlap():
    base = poisoned(3)
    view = base.expand(4, 3)
    with pytest.raises(UnsafeTargetError, match="refers to a single memory location"):
        fastinit.normal_(view)
    assert torch.all(base == POISON)


def test_unsafe_target_inference_tensor():
    with torch.inference_mode():
        t = poisoned(4, 3)
    with pytest.raises(UnsafeTargetError, match="inference tensor"):
        fastinit.uniform_(t, seed=1)
    assert torch.all(t == POISON)


def test_seed_errors():
    t = poisoned(4, 3)
    with pytest.raises(TypeError, match="seed must be an int"):
        fastinit.uniform_(t, seed=1.5)
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\)"):
        fastinit.uniform_(t, seed=-1)
    assert torch.all(t == POISON)


def test_backend_unavailable_error():
    if fastinit.backend_info()["unavailable"].get("cuda") is None:
        pytest.skip("the cuda backend runs here")
    with pytest.raises(BackendUnavailableError, match="'cuda' cannot run here"):
        fastinit.set_backend("cuda")
    assert fastinit.get_backend() == "auto"
