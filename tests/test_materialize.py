"""materialize on partly real models, under no_grad, from its seed alone, and through wrappers.

* Real tensors are kept (Hugging Face's `from_pretrained` semantics), and `reinit=True`
  initialises them as if they were on meta.
* The model's own init runs under `torch.no_grad()` (torchtitan's in-place rescale).
* Every draw comes from `seed`: a module's own reset_parameters, code drawing from torch's
  generator itself; the caller's generator is untouched and does not change the result.
* Stream names ignore torch's wrapper segments (`_orig_mod`, `_checkpoint_wrapped_module`,
  `_fsdp_wrapped_module`).
"""
from __future__ import annotations

import importlib
import math
from collections import OrderedDict

import pytest
import torch
from scipy import stats
from torch import nn

import fastinit
from fastinit.model.names import WRAPPER_SEGMENTS, stream_name

P_MIN = 1e-4


def _meta(factory):
    with torch.device("meta"):
        return factory()


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def _bits(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().clone()
    if t.is_floating_point():
        return t.view({8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()])
    return t


def _equal(a: dict, b: dict) -> list[str]:
    """The names whose tensors are bitwise equal in both."""
    assert a.keys() == b.keys()
    return [n for n in a if torch.equal(_bits(a[n]), _bits(b[n]))]


# ----------------------------------------------------------------------------------------------
# real tensors are kept
# ----------------------------------------------------------------------------------------------


class Mixed(nn.Module):
    """A module of its own type whose reset_parameters writes both of its tensors."""

    def __init__(self):
        super().__init__()
        self.alpha = nn.Parameter(torch.empty(32))
        self.beta = nn.Parameter(torch.empty(32))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.alpha)
        nn.init.normal_(self.beta)


def _partly_loaded():
    model = _meta(lambda: nn.Sequential(OrderedDict(
        a=nn.Linear(16, 16), b=nn.Linear(16, 16), mixed=Mixed(), norm=nn.BatchNorm1d(16))))
    model.a.weight = nn.Parameter(torch.full((16, 16), 0.25))  # loaded by the user
    model.mixed.beta = nn.Parameter(torch.full((32,), -1.5))
    model.norm.register_buffer("running_var", torch.full((16,), 3.0))
    return model


@pytest.mark.parametrize("init", ["auto", "reset_parameters", "callable"])
def test_materialize_keeps_real_tensors_and_reports_them(init):
    model = _partly_loaded()

    def init_all(m):  # a model init that writes every tensor it sees
        for p in m.parameters():
            nn.init.normal_(p)

    arg = init_all if init == "callable" else init
    result = fastinit.materialize(model, "cpu", seed=0, init=arg)
    assert sorted(result.kept) == ["a.weight", "mixed.beta", "norm.running_var"]
    assert (model.a.weight == 0.25).all() and (model.mixed.beta == -1.5).all()
    assert (model.norm.running_var == 3.0).all()
    assert model.a.weight.requires_grad and isinstance(model.a.weight, nn.Parameter)
    # the missing ones are written
    for name in ("a.bias", "b.weight", "b.bias", "mixed.alpha", "norm.weight"):
        t = dict(model.named_parameters())[name]
        assert torch.isfinite(t).all() and not t.is_meta, name
    assert (model.norm.running_mean == 0).all()
    if init != "callable":
        assert "a.weight" not in result.fused and "mixed" in result.not_fused


def test_materialize_reinit_initialises_real_parameters_too():
    model = _partly_loaded()
    result = fastinit.materialize(model, "cpu", seed=4, reinit=True)
    assert result.kept == ["norm.running_var"]  # buffers that hold values are kept either way
    assert "a.weight" in result.fused
    want = _meta(lambda: nn.Sequential(OrderedDict(
        a=nn.Linear(16, 16), b=nn.Linear(16, 16), mixed=Mixed(), norm=nn.BatchNorm1d(16))))
    fastinit.materialize(want, "cpu", seed=4)
    got, ref = _tensors(model), _tensors(want)
    assert sorted(set(ref) - set(_equal(got, ref))) == ["norm.running_var"]
    rows = {r.name: r.source for r in fastinit.explain(model, reinit=True)}
    assert rows["a.weight"] == "default" and rows["norm.running_var"] == "kept"
    assert {r.name: r.source for r in fastinit.explain(model)}["a.weight"] == "kept"


def test_materialize_of_a_fully_real_model_writes_nothing():
    model = nn.Linear(8, 8)
    before = {n: t.clone() for n, t in _tensors(model).items()}
    result = fastinit.materialize(model, "cpu", seed=0)
    assert result.fused == [] and sorted(result.kept) == ["bias", "weight"]
    assert _equal(_tensors(model), before) == ["weight", "bias"]


# ----------------------------------------------------------------------------------------------
# the model's own init runs under no_grad
# ----------------------------------------------------------------------------------------------


class TitanRescale(nn.Module):
    """torchtitan's pattern: init_weights() rescales a weight in place."""

    def __init__(self):
        super().__init__()
        self.w = nn.Linear(256, 256)

    def init_weights(self):
        nn.init.normal_(self.w.weight, std=0.02)
        self.w.weight.mul_(0.5)
        nn.init.zeros_(self.w.bias)


def test_materialize_runs_the_models_init_under_no_grad():
    model = _meta(TitanRescale)
    result = fastinit.materialize(model, "cpu", seed=0)
    assert sorted(result.model_init) == ["w.bias", "w.weight"]
    assert model.w.weight.requires_grad and model.w.bias.requires_grad
    assert torch.is_grad_enabled()
    w = model.w.weight.detach().double().flatten().numpy()
    assert stats.kstest(w, stats.norm(0, 0.01).cdf).pvalue > P_MIN  # normal(0.02) * 0.5
    assert stats.kstest(w, stats.norm(0, 0.02).cdf).pvalue < P_MIN  # the rescale happened
    assert (model.w.bias == 0).all()


# ----------------------------------------------------------------------------------------------
# every draw comes from seed
# ----------------------------------------------------------------------------------------------


class OwnNormal(nn.Module):
    """A module whose own reset_parameters calls nn.init.normal_."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.empty(64, 64))
        self.reset_parameters()

    def reset_parameters(self):
        nn.init.normal_(self.table, std=0.5)


class Permutation(nn.Module):
    """A module whose reset_parameters draws from torch's generator itself (randperm)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("order", torch.empty(256, dtype=torch.int64))
        self.reset_parameters()

    def reset_parameters(self):
        with torch.no_grad():
            self.order.copy_(torch.randperm(256))


def _seeded_model():
    return _meta(lambda: nn.Sequential(OrderedDict(
        own=OwnNormal(), perm=Permutation(), lin=nn.Linear(32, 32))))


def _materialized(seed: int, torch_seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(torch_seed)
    model = _seeded_model()
    before = torch.get_rng_state()
    result = fastinit.materialize(model, "cpu", seed=seed)
    assert torch.equal(torch.get_rng_state(), before), "torch's generator was consumed"
    assert sorted(result.not_fused) == ["own", "perm"]
    return _tensors(model)


def test_materialize_draws_everything_from_its_seed():
    a = _materialized(seed=0, torch_seed=1)
    again = _materialized(seed=0, torch_seed=2)  # the caller's generator changes nothing
    assert _equal(a, again) == list(a)
    other = _materialized(seed=1, torch_seed=1)
    assert _equal(a, other) == []  # another seed changes every tensor, own resets included
    assert sorted(a["perm.order"].tolist()) == list(range(256))
    table = a["own.table"].detach().double().flatten().numpy()
    assert stats.kstest(table, stats.norm(0, 0.5).cdf).pvalue > P_MIN


# ----------------------------------------------------------------------------------------------
# wrapper segments do not change the streams
# ----------------------------------------------------------------------------------------------


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(24, 24)
        self.norm = nn.LayerNorm(24)
        self.emb = nn.Embedding(10, 24, padding_idx=0)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([Block() for _ in range(3)])
        self.head = nn.Linear(24, 5)


class FakeFSDP(nn.Module):
    """Holds its module as FSDP1 does (FSDP1 itself needs a process group)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self._fsdp_wrapped_module = module


def _wrapped():
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import checkpoint_wrapper

    net = Net()
    net.layers[0] = checkpoint_wrapper(net.layers[0])
    net.layers[1] = FakeFSDP(checkpoint_wrapper(net.layers[1]))
    return torch.compile(net)


def test_stream_name_drops_wrapper_segments():
    assert stream_name("_orig_mod.layers.0._checkpoint_wrapped_module.fc.weight") == \
        "layers.0.fc.weight"
    assert stream_name("layers.1._fsdp_wrapped_module.norm.bias") == "layers.1.norm.bias"
    assert stream_name("orig_mod.module.x") == "orig_mod.module.x"  # only torch's segments
    assert WRAPPER_SEGMENTS == {"_orig_mod", "_checkpoint_wrapped_module", "_fsdp_wrapped_module"}


def test_wrapped_model_gets_the_values_of_the_unwrapped_one():
    wrapped = _meta(_wrapped)
    names = [n for n, _ in wrapped.named_parameters()]
    assert any("_checkpoint_wrapped_module" in n for n in names)
    assert any("_fsdp_wrapped_module" in n for n in names)
    assert all(n.startswith("_orig_mod.") for n in names)
    plain = _meta(Net)
    fastinit.materialize(wrapped, "cpu", seed=7, init="reset_parameters")
    fastinit.materialize(plain, "cpu", seed=7, init="reset_parameters")
    got = {stream_name(n): t for n, t in _tensors(wrapped).items()}
    ref = _tensors(plain)
    assert _equal(got, ref) == list(ref)
    # reset_parameters and init_module follow the same rule
    again = _meta(_wrapped)
    fastinit.materialize(again, "cpu", seed=8, init="reset_parameters")
    fastinit.reset_parameters(plain, seed=8)
    got = {stream_name(n): t for n, t in _tensors(again).items()}
    assert _equal(got, _tensors(plain)) == list(ref)
    assert not math.isnan(float(plain.head.weight.sum()))


class _Mixed(nn.Module):
    """Tied parameters, a transposed (non-contiguous) parameter, a frozen one, a persistent and
    a non-persistent buffer, and an LSTM (whose own `_apply` flattens its weights)."""

    def __init__(self, lstm: bool):
        super().__init__()
        self.embed = nn.Embedding(10, 6)
        self.head = nn.Linear(6, 10, bias=False)
        self.head.weight = self.embed.weight
        self.proj = nn.Linear(6, 4)
        self.proj.weight = nn.Parameter(torch.empty(6, 4).t())
        self.frozen = nn.Parameter(torch.empty(3), requires_grad=False)
        self.norm = nn.BatchNorm1d(4)
        self.register_buffer("scratch", torch.empty(5), persistent=False)
        self.rnn = nn.LSTM(4, 4) if lstm else None


@pytest.mark.parametrize("lstm", [False, True])
def test_materialize_allocates_as_to_empty_does(lstm, monkeypatch):
    """materialize allocates a model that is all meta without `_apply` (unless a module has an
    `_apply` of its own, the LSTM): the same tensors, types, strides, flags, ties and values as
    when torch's `_apply` allocates it (torch.__future__'s overwrite setting forces that)."""
    def built():
        with torch.device("meta"):
            model = _Mixed(lstm)
        model.real = nn.Parameter(torch.ones(2))  # real tensors: kept, as they are
        model.register_buffer("table", torch.arange(4.0))
        return model

    materialize_module = importlib.import_module("fastinit.model.materialize")

    direct_allocations = []
    allocate_directly = materialize_module._allocate_directly
    monkeypatch.setattr(materialize_module, "_allocate_directly", lambda *args: (
        direct_allocations.append(allocate_directly(*args)) or direct_allocations[-1]))
    results = []
    for overwrite in (False, True):
        torch.__future__.set_overwrite_module_params_on_conversion(overwrite)
        try:
            model = built()
            real, table = model.real, model.table
            fastinit.materialize(model, "cpu", seed=5, init="reset_parameters",
                                 rules={"frozen": fastinit.spec.normal(),
                                        "scratch": fastinit.spec.ones()})
        finally:
            torch.__future__.set_overwrite_module_params_on_conversion(False)
        if not overwrite:  # (that future makes _apply replace every parameter)
            assert model.real is real and model.table is table
        assert torch.equal(model.real, torch.ones(2))
        assert torch.equal(model.table, torch.arange(4.0))
        results.append(model)
    assert direct_allocations == [not lstm, False]  # the second: torch's _apply
    direct, applied = results
    assert direct.head.weight is direct.embed.weight
    assert applied.head.weight is applied.embed.weight
    assert set(direct.state_dict()) == set(applied.state_dict())  # scratch not persistent
    a = dict(direct.named_parameters())
    b = dict(applied.named_parameters())
    assert list(a) == list(b)
    for name in a:
        assert type(a[name]) is type(b[name]) is nn.Parameter, name
        assert a[name].requires_grad == b[name].requires_grad, name
        assert a[name].stride() == b[name].stride(), name
        assert a[name].device.type == "cpu" and torch.equal(a[name], b[name]), name
    assert direct.proj.weight.stride() == (1, 4)  # the transposed layout kept
    assert not direct.frozen.requires_grad
    applied_buffers = dict(applied.named_buffers())
    for name, t in direct.named_buffers():
        assert type(t) is torch.Tensor and t.device.type == "cpu", name
        assert torch.equal(t, applied_buffers[name]), name


def test_materialize_keeps_a_real_parameter_of_a_module_without_init():
    """A real parameter held by a module that has no default and no reset_parameters of its own
    is kept, not reported as something nothing initialises (materialize raised for it)."""
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(2, 2)

    with torch.device("meta"):
        model = Holder()
    model.real = nn.Parameter(torch.full((3,), 7.0))
    real = model.real
    result = fastinit.materialize(model, "cpu", seed=1, init="reset_parameters")
    assert result.kept == ["real"] and result.untouched == []
    assert model.real is real and torch.equal(model.real, torch.full((3,), 7.0))
    assert not model.lin.weight.is_meta and torch.isfinite(model.lin.weight).all()
