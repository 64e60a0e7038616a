"""The registry of initialisers is the one list of them: every entry is a public drop-in
function with its torch counterpart (or a reason it has none), a whole-model spec (or a reason),
a custom op, and a case in the torch-parity tests; the readers of the table agree with it."""
from __future__ import annotations

import pytest
import torch

import fastinit
from fastinit import spec
from fastinit.contract import Distribution
from fastinit.registry import BY_SPEC_KIND, INITIALISERS, TORCH_INIT_FUNCTIONS
from test_torch_parity import ALL_CALLS

NAMES = sorted(INITIALISERS)


def test_every_public_initialiser_is_an_entry():
    public = {n for n in fastinit.__all__ if n.endswith("_") and callable(getattr(fastinit, n))}
    assert public == set(INITIALISERS)


@pytest.mark.parametrize("name", NAMES)
def test_entry_has_a_torch_counterpart_or_says_why_not(name):
    entry = INITIALISERS[name]
    assert entry.name == name
    if entry.torch_name is None:
        assert "fastinit-only" in entry.note
        assert not hasattr(torch.nn.init, name)
    else:
        assert TORCH_INIT_FUNCTIONS[entry.torch_name] is getattr(torch.nn.init, entry.torch_name)


def test_every_torch_initialiser_has_an_entry():
    torch_names = {n for n in torch.nn.init.__all__ if n.endswith("_")}
    assert torch_names == {e.torch_name for e in INITIALISERS.values() if e.torch_name}


@pytest.mark.parametrize("name", NAMES)
def test_entry_has_a_spec_or_says_why_not(name):
    entry = INITIALISERS[name]
    if entry.spec_kind is None:
        assert "spec" in entry.note
        return
    assert BY_SPEC_KIND[entry.spec_kind] is entry
    made = getattr(spec, entry.spec_kind)()  if entry.spec_kind != "constant" else spec.constant(0.5)
    assert made.kind == entry.spec_kind
    assert made.structured == entry.structured


@pytest.mark.parametrize("name", NAMES)
def test_entry_has_a_custom_op(name):
    op = getattr(torch.ops.fastinit, name.rstrip("_"))
    assert "Tensor(a!) tensor" in str(op.default._schema)


@pytest.mark.parametrize("name", NAMES)
def test_entry_has_a_parity_case(name):
    assert name in ALL_CALLS


@pytest.mark.parametrize("name", NAMES)
def test_planner_is_what_the_public_function_fills(name):
    """The entry's planner gives the distribution the public function writes: the same values
    as one fill of the contract with those parameters (checked on the random ones)."""
    entry = INITIALISERS[name]
    shape, args = ALL_CALLS[name]
    t = torch.empty(shape)
    plan = entry.plan(t, *args)
    if entry.structured:
        assert plan is None
        return
    dist, params = plan
    assert isinstance(dist, Distribution)
    if dist == Distribution.CONSTANT:
        got = getattr(fastinit, name)(torch.empty(shape), *args)
        assert torch.all(got == params[0])
        return
    got = getattr(fastinit, name)(torch.empty(shape), *args, seed=11)
    want = torch.empty(shape)
    fastinit.backends.execute([fastinit.plan.make_fill(want, dist, params, 11)])
    assert torch.equal(got, want)


def test_spec_gain_is_the_entry_rule():
    assert spec.kaiming_normal(nonlinearity="relu").gain() == pytest.approx(2 ** 0.5)
    assert spec.xavier_uniform(gain=3.0).gain() == 3.0
    assert spec.orthogonal(gain=0.5).gain() == 0.5
    assert spec.normal().gain() is None


def test_planner_error_is_torch_error():
    poisoned = torch.full((3, 4), 7.0)
    with pytest.raises(RuntimeError, match="from=2 > to=1"):
        INITIALISERS["uniform_"].plan(poisoned, 2.0, 1.0)
    assert torch.all(poisoned == 7.0)
