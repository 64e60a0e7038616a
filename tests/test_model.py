"""Whole-model initialisation: reset_parameters, init_module, materialize, explain, the CLI.

Every test poisons the model first (NaN in every float tensor, a sentinel in integer buffers),
so a tensor the call failed to write shows up. Random tensors are checked with a one-sample
Kolmogorov-Smirnov test against the distribution the layer's torch ``reset_parameters``
implies (p > 1e-4), a two-sample KS test against the same layer built by torch itself, exact
bounds (uniform) and, for tensors large enough, a negative control (the same samples against a
5% wrong bound / std are rejected), so a wrong distribution fails. Constants and running
statistics are compared exactly with the torch-built layer.

Whole-model streams (docs/contract.md): seed S gives the tensor at fully qualified name N the contract
values of (S, stream = blake2b-64(N)), independent of order, of the other tensors and backend.
"""
from __future__ import annotations

import copy
import hashlib
import math
import os
import re
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
from scipy import stats
from torch import nn

import fastinit
from fastinit import spec
from fastinit.backends import execute
from fastinit.contract import Distribution
from fastinit.errors import InitValueError
from fastinit.llama import tiny_llama
from fastinit.plan import make_fill

P_MIN = 1e-4
WRONG = 1.05
N_POWER = 100_000  # from this many samples on, a 5% wrong bound / std must be rejected (the KS
# test rejects a normal with a 5% wrong std at p < 1e-4 in 36% of 20,000-sample draws, in all
# at 100,000)
SENTINEL = 12345
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------


def tensors(module: nn.Module, persistent_only: bool = False) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by fully qualified name (tied ones once)."""
    out = dict(module.named_parameters())
    if persistent_only:
        out.update({k: v for k, v in module.state_dict().items() if k not in out and
                    any(k == n for n, _ in module.named_buffers())})
    else:
        out.update(dict(module.named_buffers()))
    return out


def poison(module: nn.Module) -> nn.Module:
    with torch.no_grad():
        for t in tensors(module).values():
            t.fill_(float("nan") if t.is_floating_point() else SENTINEL)
    return module


def bits(t: torch.Tensor) -> torch.Tensor:
    """The raw bit pattern (NaN == NaN), for 'unchanged' checks."""
    t = t.detach().clone()
    if t.is_floating_point():
        return t.view({8: torch.int64, 4: torch.int32, 2: torch.int16}[t.element_size()])
    return t


def snapshot(module: nn.Module) -> dict[str, torch.Tensor]:
    return {name: bits(t) for name, t in tensors(module).items()}


def assert_unchanged(module: nn.Module, before: dict[str, torch.Tensor]) -> None:
    after = snapshot(module)
    assert after.keys() == before.keys()
    for name in before:
        assert torch.equal(after[name], before[name]), f"{name} was written"


def assert_bitwise_equal(a: dict, b: dict, what: str = "") -> None:
    assert a.keys() == b.keys(), what
    for name in a:
        assert a[name].dtype == b[name].dtype, f"{what}{name}"
        assert torch.equal(bits(a[name]), bits(b[name])), f"{what}{name} differs"


def ks_p(x: torch.Tensor, cdf) -> float:
    values = x.detach().double().flatten().numpy()
    return float(stats.kstest(values, cdf, method="asymp").pvalue)


def ks2_p(x: torch.Tensor, y: torch.Tensor) -> float:
    return float(stats.ks_2samp(x.detach().double().flatten().numpy(),
                                y.detach().double().flatten().numpy(), method="asymp").pvalue)


def check_uniform(t: torch.Tensor, bound: float, what: str) -> None:
    assert torch.isfinite(t).all(), f"{what}: not written"
    assert t.abs().max().item() <= bound * (1 + 1e-6), f"{what}: outside +-{bound:.5g}"
    assert ks_p(t, stats.uniform(-bound, 2 * bound).cdf) > P_MIN, f"{what}: not U(+-{bound:.5g})"
    if t.numel() >= 2000:  # a bound 5% too wide shows in the maximum
        assert t.abs().max().item() >= bound / WRONG, f"{what}: narrower than +-{bound:.5g}"
    if t.numel() >= N_POWER:
        assert ks_p(t, stats.uniform(-bound * WRONG, 2 * bound * WRONG).cdf) < P_MIN, what


def check_normal(t: torch.Tensor, std: float, what: str, mean: float = 0.0) -> None:
    assert torch.isfinite(t).all(), f"{what}: not written"
    assert ks_p(t, stats.norm(mean, std).cdf) > P_MIN, f"{what}: not N({mean}, {std:.5g})"
    if t.numel() >= 100:  # unbounded: beyond the bound of a uniform of the same std
        assert (t - mean).abs().max().item() > math.sqrt(3) * std, f"{what}: not normal"
    if t.numel() >= N_POWER:
        assert ks_p(t, stats.norm(mean, std * WRONG).cdf) < P_MIN, what
        # std within 2.5% (11 standard errors at 100k samples): a 5% wrong std fails
        assert abs(t.double().std().item() / std - 1) < 0.025, f"{what}: std off"


def check_like_torch(ours: torch.Tensor, theirs: torch.Tensor, what: str) -> None:
    """Two-sample KS against the same tensor of the layer torch built."""
    assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, what
    assert ks2_p(ours, theirs) > P_MIN, f"{what}: differs from torch's own init"


# ----------------------------------------------------------------------------------------------
# reset_parameters: every standard layer against its torch default
# ----------------------------------------------------------------------------------------------


def U(bound):
    return ("uniform", bound)


def N(std):
    return ("normal", std)


def C(value):
    return ("const", value)


def _norm_stats():
    return {"weight": C(1.0), "bias": C(0.0), "running_mean": C(0.0), "running_var": C(1.0),
            "num_batches_tracked": C(0)}


def _rnn(hidden):
    return {"*": U(1 / math.sqrt(hidden))}


# id -> (constructor, {parameter or buffer name: expectation}); "*" = every tensor
LAYERS = {
    "Linear": (lambda: nn.Linear(32, 4096),
               {"weight": U(1 / math.sqrt(32)), "bias": U(1 / math.sqrt(32))}),
    "Bilinear": (lambda: nn.Bilinear(16, 24, 512),
                 {"weight": U(1 / 4), "bias": U(1 / 4)}),
    "Conv1d": (lambda: nn.Conv1d(8, 2048, 3),
               {"weight": U(1 / math.sqrt(24)), "bias": U(1 / math.sqrt(24))}),
    "Conv2d_groups": (lambda: nn.Conv2d(4, 1024, 3, groups=2),
                      {"weight": U(1 / math.sqrt(18)), "bias": U(1 / math.sqrt(18))}),
    "Conv3d": (lambda: nn.Conv3d(2, 512, 2),
               {"weight": U(1 / 4), "bias": U(1 / 4)}),
    # ConvTranspose weights are (in, out / groups, *k): fan_in = size(1) * receptive field
    "ConvTranspose1d": (lambda: nn.ConvTranspose1d(8, 2048, 3),
                        {"weight": U(1 / math.sqrt(2048 * 3)), "bias": U(1 / math.sqrt(2048 * 3))}),
    "ConvTranspose2d_groups": (lambda: nn.ConvTranspose2d(4, 1024, 3, groups=2),
                               {"weight": U(1 / math.sqrt(512 * 9)), "bias": U(1 / math.sqrt(512 * 9))}),
    "ConvTranspose3d": (lambda: nn.ConvTranspose3d(2, 512, 2),
                        {"weight": U(1 / math.sqrt(512 * 8)), "bias": U(1 / math.sqrt(512 * 8))}),
    "Embedding_padding": (lambda: nn.Embedding(1000, 32, padding_idx=3), {"weight": N(1.0)}),
    "EmbeddingBag_padding": (lambda: nn.EmbeddingBag(1000, 32, padding_idx=5), {"weight": N(1.0)}),
    "LayerNorm": (lambda: nn.LayerNorm(64), {"weight": C(1.0), "bias": C(0.0)}),
    "RMSNorm": (lambda: nn.RMSNorm(64), {"weight": C(1.0)}),
    "GroupNorm": (lambda: nn.GroupNorm(4, 64), {"weight": C(1.0), "bias": C(0.0)}),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(64), _norm_stats()),
    "InstanceNorm2d": (lambda: nn.InstanceNorm2d(64, affine=True, track_running_stats=True),
                       _norm_stats()),
    "MultiheadAttention": (lambda: nn.MultiheadAttention(256, 8),
                           {"in_proj_weight": U(math.sqrt(6 / (256 + 768))), "in_proj_bias": C(0.0),
                            "out_proj.weight": U(1 / 16), "out_proj.bias": C(0.0)}),
    # bias_k / bias_v (1, 1, E): xavier_normal with fan_in = fan_out = E
    "MultiheadAttention_bias_kv": (lambda: nn.MultiheadAttention(256, 8, add_bias_kv=True),
                                   {"in_proj_weight": U(math.sqrt(6 / (256 + 768))),
                                    "in_proj_bias": C(0.0), "out_proj.weight": U(1 / 16),
                                    "out_proj.bias": C(0.0), "bias_k": N(1 / 16), "bias_v": N(1 / 16)}),
    "MultiheadAttention_kdim_vdim": (lambda: nn.MultiheadAttention(256, 8, kdim=128, vdim=64),
                                     {"q_proj_weight": U(math.sqrt(6 / 512)),
                                      "k_proj_weight": U(math.sqrt(6 / 384)),
                                      "v_proj_weight": U(math.sqrt(6 / 320)),
                                      "in_proj_bias": C(0.0), "out_proj.weight": U(1 / 16),
                                      "out_proj.bias": C(0.0)}),
    "RNN": (lambda: nn.RNN(32, 256, num_layers=2), _rnn(256)),
    "LSTM_bidirectional_proj": (lambda: nn.LSTM(32, 256, bidirectional=True, proj_size=64), _rnn(256)),
    "GRU": (lambda: nn.GRU(32, 128, num_layers=2, batch_first=True), _rnn(128)),
    "LSTMCell": (lambda: nn.LSTMCell(32, 256), _rnn(256)),
    "GRUCell": (lambda: nn.GRUCell(32, 256), _rnn(256)),
    "RNNCell": (lambda: nn.RNNCell(32, 256), _rnn(256)),
    "PReLU": (lambda: nn.PReLU(64, init=0.1), {"weight": C(0.1)}),
}


@pytest.mark.parametrize("layer_id", list(LAYERS))
def test_reset_parameters_matches_torch_default(layer_id):
    make, expected = LAYERS[layer_id]
    torch.manual_seed(1)
    theirs = make()  # torch's own init
    ours = poison(make())
    result = fastinit.reset_parameters(ours, seed=2024)
    assert result.untouched == [] and result.not_fused == [] and result.structured == []
    ours_t, theirs_t = tensors(ours), tensors(theirs)
    assert sorted(result.fused) == sorted(ours_t)
    for name, t in ours_t.items():
        kind, value = expected.get(name, expected.get("*"))
        what = f"{layer_id}.{name}"
        if kind == "const":
            assert torch.equal(t, theirs_t[name]), what  # exactly torch's value and dtype
            assert (t == value).all(), what
            continue
        values = t.detach()
        padding_idx = getattr(ours, "padding_idx", None)
        if padding_idx is not None and name == "weight":
            assert (values[padding_idx] == 0).all(), f"{what}: padding row not zero"
            keep = torch.ones(values.size(0), dtype=torch.bool)
            keep[padding_idx] = False
            assert (values[keep] != 0).all()
            values, theirs_values = values[keep], theirs_t[name].detach()[keep]
        else:
            theirs_values = theirs_t[name].detach()
        check_like_torch(values, theirs_values, what)
        if values.numel() < N_POWER:  # too few to reject a 5% error: pool more seeds
            values = torch.cat([values.flatten()] + _more_samples(make, name, padding_idx,
                                                                  N_POWER - values.numel()))
        if kind == "uniform":
            check_uniform(values, value, what)
        else:
            check_normal(values, value, what)


def _more_samples(make, name: str, padding_idx, count: int) -> list[torch.Tensor]:
    """At least `count` more values of tensor `name` of the layer `make` builds, from
    reset_parameters with further seeds (the padding row left out)."""
    layer, out, seed = make(), [], 1
    while count > 0:
        fastinit.reset_parameters(layer, seed=seed)
        values = tensors(layer)[name].detach().clone()
        if padding_idx is not None and name == "weight":
            values = torch.cat([values[:padding_idx], values[padding_idx + 1:]])
        out.append(values.flatten())
        count, seed = count - values.numel(), seed + 1
    return out


def test_prelu_weight_is_exactly_the_init_value():
    m = poison(nn.PReLU(5, init=0.3))
    fastinit.reset_parameters(m, seed=0)
    assert torch.equal(m.weight.detach(), torch.full((5,), 0.3))


def test_norms_without_running_stats_or_affine():
    bn = poison(nn.BatchNorm1d(8, affine=False, track_running_stats=False))
    ln = poison(nn.LayerNorm(8, elementwise_affine=False))
    inst = poison(nn.InstanceNorm1d(8))
    for m in (bn, ln, inst):
        result = fastinit.reset_parameters(m, seed=0)
        assert result.fused == [] and result.untouched == []


def test_integer_buffer_and_bf16_parameters():
    m = poison(nn.Sequential(nn.Linear(64, 512), nn.BatchNorm1d(512)).to(torch.bfloat16))
    fastinit.reset_parameters(m, seed=3)
    assert m[1].num_batches_tracked.dtype == torch.int64 and m[1].num_batches_tracked.item() == 0
    assert (m[1].running_var == 1).all() and (m[1].running_mean == 0).all()
    w = m[0].weight.detach()
    assert w.dtype == torch.bfloat16 and torch.isfinite(w).all()
    assert w.abs().max().item() <= 1 / 8


# ----------------------------------------------------------------------------------------------
# modules fastinit has no rule for
# ----------------------------------------------------------------------------------------------


class Scale(nn.Module):
    """A layer type fastinit does not know, with its own reset_parameters."""

    def __init__(self, n):
        super().__init__()
        self.gamma = nn.Parameter(torch.empty(n))
        self.register_buffer("count", torch.empty((), dtype=torch.int64))
        self.reset_parameters()

    def reset_parameters(self):
        with torch.no_grad():
            self.gamma.fill_(3.0)
            self.count.zero_()


class NoReset(nn.Module):
    """Tensors and no reset_parameters."""

    def __init__(self):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(4))
        self.register_buffer("table", torch.zeros(3))


def test_unknown_module_with_reset_parameters_is_called_and_not_fused():
    model = poison(nn.Sequential(OrderedDict(fc=nn.Linear(8, 16), scale=Scale(16), raw=NoReset())))
    result = fastinit.reset_parameters(model, seed=0)
    assert result.not_fused == ["scale"]
    assert (model.scale.gamma == 3.0).all() and model.scale.count.item() == 0
    assert sorted(result.fused) == ["fc.bias", "fc.weight"]
    assert sorted(result.untouched) == ["raw.alpha", "raw.table"]
    assert torch.isnan(model.raw.alpha).all() and torch.isnan(model.raw.table).all()
    assert torch.isfinite(model.fc.weight).all()


def test_root_module_of_unknown_type_is_called():
    model = poison(Scale(4))
    result = fastinit.reset_parameters(model, seed=0)
    assert result.not_fused == ["Scale"] and result.untouched == []
    assert (model.gamma == 3.0).all()


# ----------------------------------------------------------------------------------------------
# tied weights
# ----------------------------------------------------------------------------------------------


class TinyLM(nn.Module):
    def __init__(self, tie: bool, head_first: bool):
        super().__init__()
        if head_first:
            self.lm_head = nn.Linear(32, 300, bias=False)
            self.embed = nn.Embedding(300, 32)
        else:
            self.embed = nn.Embedding(300, 32)
            self.lm_head = nn.Linear(32, 300, bias=False)
        self.norm = nn.LayerNorm(32)
        if tie:
            self.lm_head.weight = self.embed.weight


@pytest.mark.parametrize("head_first", [False, True], ids=["embed_first", "head_first"])
def test_tied_weights_initialised_once_under_first_name(head_first):
    tied = poison(TinyLM(tie=True, head_first=head_first))
    untied = poison(TinyLM(tie=False, head_first=head_first))
    result = fastinit.reset_parameters(tied, seed=11)
    fastinit.reset_parameters(untied, seed=11)
    first = "lm_head.weight" if head_first else "embed.weight"
    second = "embed.weight" if head_first else "lm_head.weight"
    assert first in result.fused and second not in result.fused
    assert result.fused.count(first) == 1
    assert tied.lm_head.weight is tied.embed.weight
    # the first name's spec and stream: as if the model were untied
    assert torch.equal(tied.embed.weight, tensors(untied)[first])
    w = tied.embed.weight.detach()
    if head_first:
        check_uniform(w, 1 / math.sqrt(32), "tied (Linear's init)")
    else:
        check_normal(w, 1.0, "tied (Embedding's init)")


# ----------------------------------------------------------------------------------------------
# determinism and streams
# ----------------------------------------------------------------------------------------------


def test_same_seed_twice_is_equal_and_different_seeds_differ():
    a, b, c = (poison(tiny_llama()) for _ in range(3))
    fastinit.reset_parameters(a, seed=5)
    fastinit.reset_parameters(b, seed=5)
    fastinit.reset_parameters(c, seed=6)
    assert_bitwise_equal(tensors(a), tensors(b))
    for name, t in a.named_parameters():
        if t.dim() >= 2:  # the random ones
            assert not torch.equal(t, tensors(c)[name]), name
            # and not the same values shuffled: elementwise mostly different
            assert (t != tensors(c)[name]).float().mean() > 0.99, name


def test_seed_none_draws_from_the_default_generator():
    a, b = poison(tiny_llama()), poison(tiny_llama())
    torch.manual_seed(42)
    ra = fastinit.reset_parameters(a)
    torch.manual_seed(42)
    rb = fastinit.reset_parameters(b)
    assert ra.seed == rb.seed
    assert_bitwise_equal(tensors(a), tensors(b))


def _stream(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "little")


def test_stream_is_blake2b_of_the_fully_qualified_name():
    model = poison(nn.Sequential(OrderedDict(enc=nn.Sequential(nn.Linear(16, 48)))))
    fastinit.reset_parameters(model, seed=77)
    for name, t in model.named_parameters():
        expected = torch.empty_like(t)
        bound = 1 / 4
        execute([make_fill(expected, Distribution.UNIFORM, [2 * bound, -bound], 77, _stream(name))])
        assert torch.equal(t.detach(), expected), name
    assert fastinit.stream_for_name("enc.0.weight") == _stream("enc.0.weight")


class Other(nn.Module):
    """A different container that holds the same Linear at the same fully qualified name `b`,
    registered after other tensors, with `a` missing."""

    def __init__(self):
        super().__init__()
        self.z = nn.Conv2d(3, 8, 3)
        self.extra = nn.Embedding(10, 4)
        self.b = nn.Linear(16, 32)


def test_values_do_not_depend_on_order_or_other_tensors():
    first = poison(nn.Sequential(OrderedDict(a=nn.Linear(8, 16), b=nn.Linear(16, 32))))
    second = poison(Other())
    fastinit.reset_parameters(first, seed=9)
    fastinit.reset_parameters(second, seed=9)
    assert torch.equal(first.b.weight, second.b.weight)
    assert torch.equal(first.b.bias, second.b.bias)
    # the Linear alone, named by prefix
    alone = poison(nn.Linear(16, 32))
    fastinit.reset_parameters(alone, seed=9, prefix="b")
    assert torch.equal(alone.weight, first.b.weight) and torch.equal(alone.bias, first.b.bias)
    # without the prefix it is another stream
    fastinit.reset_parameters(alone, seed=9)
    assert not torch.equal(alone.weight, first.b.weight)


def test_submodule_with_prefix_equals_whole_model():
    model = poison(tiny_llama())
    fastinit.reset_parameters(model, seed=123)
    sub = poison(copy.deepcopy(model.layers[1]))
    fastinit.reset_parameters(sub, seed=123, prefix="layers.1")
    assert_bitwise_equal(tensors(sub), tensors(model.layers[1]))
    # and init_module with rules, by prefix
    rules = {nn.Linear: {"weight": spec.normal(0, 0.02)}, "*norm.weight": spec.constant(0.5)}
    fastinit.init_module(model, rules, seed=4)
    fastinit.init_module(sub, rules, seed=4, prefix="layers.1")
    assert_bitwise_equal(tensors(sub), tensors(model.layers[1]))


def test_reference_backend_matches_cpu_backend():
    model = nn.Sequential(OrderedDict(emb=nn.Embedding(500, 64), fc=nn.Linear(64, 256),
                                      bn=nn.BatchNorm1d(256), rnn=nn.GRU(16, 32)))
    models = {}
    for backend in ("cpu", "reference"):
        fastinit.set_backend(backend)
        models[backend] = poison(copy.deepcopy(model))
        fastinit.reset_parameters(models[backend], seed=31)
        assert fastinit.backend_info()["last_run"]["cpu"] == backend
    cpu, ref = tensors(models["cpu"]), tensors(models["reference"])
    for name in cpu:
        if name == "emb.weight":  # normal: the contract's tolerance on z (std 1)
            assert torch.isfinite(ref[name]).all()
            torch.testing.assert_close(cpu[name], ref[name], rtol=0, atol=1e-5)
            assert not torch.equal(cpu[name], torch.zeros_like(cpu[name]))
        else:  # uniform and constant: bitwise
            assert torch.equal(bits(cpu[name]), bits(ref[name])), name


# ----------------------------------------------------------------------------------------------
# materialize
# ----------------------------------------------------------------------------------------------


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3)
        self.bn1 = nn.BatchNorm2d(64)
        self.conv2 = nn.Conv2d(64, 128, 3, bias=False)
        self.bn2 = nn.BatchNorm2d(128)
        self.emb = nn.Embedding(50, 16, padding_idx=0)
        self.attn = nn.MultiheadAttention(16, 2)
        self.fc = nn.Linear(128, 10)


def _meta(factory):
    with torch.device("meta"):
        return factory()


def _persistent(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v for k, v in module.state_dict(keep_vars=True).items()}


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("factory", [tiny_llama, ConvNet], ids=["tiny_llama", "convnet"])
def test_materialize_equals_reset_parameters_on_cpu(factory, dtype):
    meta = _meta(factory)
    assert all(t.is_meta for t in tensors(meta).values())
    result = fastinit.materialize(meta, "cpu", dtype, seed=17)
    assert result.untouched == []
    cpu = factory()
    if dtype is not None:
        cpu = cpu.to(dtype)
    poison(cpu)
    fastinit.reset_parameters(cpu, seed=17)
    got, want = _persistent(meta), _persistent(cpu)
    assert_bitwise_equal(got, want, "materialize vs reset_parameters: ")
    for t in tensors(meta).values():
        assert t.device.type == "cpu"
        if t.is_floating_point():
            assert t.dtype == (dtype or torch.float32)
            assert torch.isfinite(t).all()


@pytest.mark.parametrize("head_first", [False, True], ids=["embed_first", "head_first"])
def test_materialize_keeps_tied_weights_tied(head_first):
    """to_empty gives every module a new tensor; materialize must tie them again."""
    meta = _meta(lambda: TinyLM(tie=True, head_first=head_first))
    result = fastinit.materialize(meta, "cpu", seed=21)
    assert meta.lm_head.weight is meta.embed.weight
    assert len(result.fused) == 3 and result.untouched == []
    cpu = poison(TinyLM(tie=True, head_first=head_first))
    fastinit.reset_parameters(cpu, seed=21)
    assert_bitwise_equal(tensors(meta), tensors(cpu))
    # a module shared at two places stays shared too
    meta = _meta(lambda: nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8)))
    meta[1] = meta[0]
    fastinit.materialize(meta, "cpu", seed=0)
    assert meta[0] is meta[1] and meta[0].weight.device.type == "cpu"


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
def test_materialize_restores_rotary_buffers(dtype):
    meta = _meta(tiny_llama)
    result = fastinit.materialize(meta, "cpu", dtype, seed=0)
    assert result.not_fused == ["rotary"]
    built = tiny_llama()
    for name in ("cos", "sin"):
        got, want = getattr(meta.rotary, name), getattr(built.rotary, name)
        if dtype is not None:  # within one bf16 ulp (|values| <= 1) of the fp32 table
            assert got.dtype == dtype
            want = want.to(dtype)
        torch.testing.assert_close(got, want, rtol=0, atol=0 if dtype is None else 2**-8)
    if dtype is None:
        assert torch.equal(meta.rotary.cos, built.rotary.cos)
    # and the model runs
    out = meta(torch.randint(0, 256, (2, 8)))
    assert torch.isfinite(out).all()


LLAMA_RULES = {
    nn.Linear: {"weight": spec.normal(0, 0.02), "bias": spec.zeros()},
    nn.Embedding: {"weight": spec.trunc_normal(0, 0.02, -0.04, 0.04)},
    "*norm.weight": spec.ones(),
    "lm_head.weight": spec.xavier_uniform(),
}


def test_materialize_with_rules_equals_init_module_on_cpu():
    meta = _meta(tiny_llama)
    result = fastinit.materialize(meta, "cpu", seed=8, rules=LLAMA_RULES)
    cpu = tiny_llama()
    fastinit.init_module(cpu, LLAMA_RULES, seed=8)
    # every parameter is rule-covered; the rotary buffers are restored by their module
    assert result.untouched == []
    assert_bitwise_equal(tensors(meta), tensors(cpu))


def test_materialize_with_rules_convnet():
    rules = {nn.Conv2d: {"weight": spec.kaiming_normal(mode="fan_out", nonlinearity="relu"),
                         "bias": spec.zeros()},
             nn.BatchNorm2d: {"weight": spec.ones(), "bias": spec.zeros(),
                              "running_mean": spec.zeros(), "running_var": spec.ones(),
                              "num_batches_tracked": spec.zeros()},
             nn.Embedding: {"weight": spec.normal(0, 0.1)},
             nn.MultiheadAttention: {"in_proj_weight": spec.xavier_normal(),
                                     "in_proj_bias": spec.zeros()},
             nn.Linear: {"weight": spec.normal(0, 0.01), "bias": spec.zeros()},
             "fc.bias": spec.uniform(-0.1, 0.1)}
    meta = _meta(ConvNet)
    fastinit.materialize(meta, "cpu", seed=1, rules=rules)
    cpu = poison(ConvNet())
    fastinit.init_module(cpu, rules, seed=1)
    assert_bitwise_equal(_persistent(meta), _persistent(cpu))
    assert (meta.emb.weight[0] == 0).all()


def test_materialize_refuses_to_leave_tensors_uninitialised():
    meta = _meta(lambda: nn.Sequential(OrderedDict(fc=nn.Linear(4, 4), raw=NoReset())))
    with pytest.raises(InitValueError, match=r"\['raw\.alpha', 'raw\.table'\].*allow_uninitialized"):
        fastinit.materialize(meta, "cpu", seed=0)
    # a rule for them is enough
    meta = _meta(lambda: nn.Sequential(OrderedDict(fc=nn.Linear(4, 4), raw=NoReset())))
    result = fastinit.materialize(meta, "cpu", seed=0, rules={"raw.*": spec.constant(0.5)})
    assert result.untouched == [] and sorted(result.fused) == ["fc.bias", "fc.weight", "raw.alpha",
                                                               "raw.table"]
    assert (meta.raw.alpha == 0.5).all() and (meta.raw.table == 0.5).all()
    assert torch.isfinite(meta.fc.weight).all()
    # or the explicit opt-out, which warns
    meta = _meta(lambda: nn.Sequential(OrderedDict(fc=nn.Linear(4, 4), raw=NoReset())))
    with pytest.warns(UserWarning, match=r"raw\.alpha"):
        result = fastinit.materialize(meta, "cpu", seed=0, allow_uninitialized=True)
    assert sorted(result.untouched) == ["raw.alpha", "raw.table"]


class ConstructorBuffers(nn.Module):
    """A buffer computed in the constructor; no reset_parameters, no init method."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, 8, 2).float() / 8)))
        self.register_buffer("position_ids", torch.arange(16).expand(1, -1), persistent=False)


def test_materialize_keeps_constructor_buffers_built_under_meta_init():
    with pytest.raises(InitValueError, match=r"\['inv_freq', 'position_ids'\]"):
        fastinit.materialize(_meta(ConstructorBuffers), "cpu", seed=0)
    with fastinit.meta_init():
        model = ConstructorBuffers()
        assert model.proj.weight.is_meta and not model.inv_freq.is_meta
    assert nn.Module.register_parameter is fastinit.model.construction._register_parameter  # restored on exit
    assert nn.Linear(2, 2).weight.device.type == "cpu"
    want = ConstructorBuffers()
    result = fastinit.materialize(model, "cpu", torch.float64, seed=3)
    assert result.kept == ["inv_freq", "position_ids"] and result.untouched == []
    assert sorted(result.fused) == ["proj.bias", "proj.weight"]
    assert model.inv_freq.dtype == torch.float64
    assert torch.equal(model.inv_freq, want.inv_freq.double())
    assert torch.equal(model.position_ids, want.position_ids)
    assert torch.isfinite(model.proj.weight).all() and isinstance(model.proj.weight, nn.Parameter)
    rows = {r.name: r for r in fastinit.explain(model, reinit=True)}
    assert rows["inv_freq"].source == "kept" and rows["proj.weight"].source == "default"


def test_meta_init_affects_only_its_thread():
    import threading

    inside, outside = threading.Event(), threading.Event()
    devices = {}

    def other_thread():
        inside.wait(10)
        devices["other"] = nn.Linear(2, 2).weight.device.type
        outside.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    with fastinit.meta_init():
        inside.set()
        outside.wait(10)
        devices["this"] = nn.Linear(2, 2).weight.device.type
    thread.join()
    assert devices == {"other": "cpu", "this": "meta"}


# ----------------------------------------------------------------------------------------------
# init_module
# ----------------------------------------------------------------------------------------------


def _convnet_rules():
    return {
        nn.Conv2d: {"weight": spec.kaiming_normal(mode="fan_out", nonlinearity="relu"),
                    "bias": spec.zeros()},
        nn.BatchNorm2d: {"weight": spec.constant(0.5), "bias": spec.zeros(),
                         "running_var": spec.constant(2.0)},
        "fc.weight": spec.normal(0, 0.01),
        "*.bias": spec.constant(0.125),
    }


def test_init_module_type_and_name_rules():
    model = poison(ConvNet())
    result = fastinit.init_module(model, _convnet_rules(), seed=3)
    # kaiming_normal fan_out relu: std = sqrt(2 / (out * k * k))
    check_normal(model.conv1.weight, math.sqrt(2 / (64 * 9)), "conv1.weight")
    check_normal(model.conv2.weight, math.sqrt(2 / (128 * 9)), "conv2.weight")
    check_normal(model.fc.weight, 0.01, "fc.weight")
    # a name rule wins over a type rule
    assert (model.conv1.bias == 0.125).all() and (model.bn1.bias == 0.125).all()
    assert (model.fc.bias == 0.125).all()
    assert (model.bn1.weight == 0.5).all() and (model.bn2.running_var == 2.0).all()
    # conv2 has no bias: fine. Tensors no rule covers are left as they were, and reported
    # ("*.bias" matches attn.out_proj.bias, not attn.in_proj_bias)
    assert model.conv2.bias is None
    untouched = {"bn1.running_mean", "bn1.num_batches_tracked", "bn2.running_mean",
                 "bn2.num_batches_tracked", "emb.weight", "attn.in_proj_weight", "attn.in_proj_bias",
                 "attn.out_proj.weight"}
    assert set(result.untouched) == untouched
    for name, t in tensors(model).items():
        if name in untouched:
            assert torch.equal(bits(t), bits(torch.full_like(t, float("nan") if t.is_floating_point()
                                                            else SENTINEL))), name
        else:
            assert name in result.fused, name
    assert result.not_fused == []  # init_module never calls a module's own reset


def test_init_module_pattern_rule_spec_kinds():
    model = poison(nn.Sequential(OrderedDict(a=nn.Linear(256, 256), b=nn.Linear(256, 256),
                                             c=nn.Linear(256, 300), d=nn.Conv1d(16, 16, 3))))
    rules = {"a.weight": spec.orthogonal(gain=2.0), "b.weight": spec.eye(),
             "c.weight": spec.lecun_normal(), "d.weight": spec.dirac(), "*.bias": spec.zeros()}
    result = fastinit.init_module(model, rules, seed=0)
    assert sorted(result.structured) == ["a.weight", "b.weight", "d.weight"]
    a = model.a.weight.detach().double()
    torch.testing.assert_close(a @ a.T, 4 * torch.eye(256, dtype=torch.float64), atol=1e-4, rtol=0)
    assert torch.equal(model.b.weight.detach(), torch.eye(256))
    std = 1 / math.sqrt(256)
    w = model.c.weight.detach()
    assert w.abs().max() <= 2 * std / 0.87962566103423978 * (1 + 1e-6)
    assert abs(w.std().item() / std - 1) < 0.02
    assert model.d.weight[:, :, 1].equal(torch.eye(16)) and (model.d.weight[:, :, [0, 2]] == 0).all()
    assert all((m.bias == 0).all() for m in model)


@pytest.mark.parametrize("rules, exc, match", [
    pytest.param({nn.Conv2d: {"weight": spec.kaiming_uniform()},
                  nn.Linear: {"weight": spec.kaiming_uniform(), "bias": spec.xavier_uniform()}},
                 ValueError, r"cannot initialise '[a-z_.]*bias'.*2 dimensions", id="xavier_on_1d_bias"),
    pytest.param({nn.Conv2d: {"weight": spec.kaiming_uniform()}, "nomatch.*": spec.normal()},
                 InitValueError, "nomatch", id="pattern_matches_nothing"),
    pytest.param({nn.Linear: {"weight": spec.normal()},
                  nn.Conv2d: {"weight": spec.kaiming_normal(mode="fan_avg")}},
                 ValueError, "fan_avg", id="bad_kaiming_mode"),
    pytest.param({nn.Conv2d: {"weight": spec.zeros()}, nn.Linear: {"gamma": spec.zeros()}},
                 InitValueError, "gamma", id="name_the_layer_lacks"),
    pytest.param({nn.Linear: {"weight": spec.normal(0, -1.0)}, "conv1.weight": spec.ones()},
                 ValueError, "std", id="negative_std"),
    pytest.param({nn.Linear: spec.zeros()}, InitValueError, "Linear", id="type_rule_not_a_mapping"),
    pytest.param({3: spec.zeros()}, InitValueError, "keys", id="bad_key"),
    pytest.param({"fc.weight": "normal"}, InitValueError, "spec", id="not_a_spec"),
])
def test_init_module_errors_write_nothing(rules, exc, match):
    model = poison(ConvNet())
    before = snapshot(model)
    with pytest.raises(exc, match=match):
        fastinit.init_module(model, rules, seed=0)
    assert_unchanged(model, before)
    meta = _meta(ConvNet)
    with pytest.raises(exc, match=match):
        fastinit.materialize(meta, "cpu", seed=0, rules=rules)


def _bad_buffer(kind: str) -> torch.Tensor:
    """A (4, 5) target each check of the planners or of backends.execute refuses."""
    if kind == "integer":
        return torch.full((4, 5), SENTINEL)
    if kind == "expanded":
        return torch.full((4, 1), float("nan")).expand(4, 5)
    if kind == "inference":
        with torch.inference_mode():
            return torch.full((4, 5), float("nan"))
    if kind == "one_dim":
        return torch.full((20,), float("nan"))
    t = torch.full((4, 5), float("nan"))
    t.untyped_storage().resize_(0 if kind == "freed" else 8)
    return t


class _Buffers(nn.Module):
    def __init__(self, bad_kind: str, bad_position: int):
        super().__init__()
        for i in range(3):
            self.register_buffer(f"t{i}", _bad_buffer(bad_kind) if i == bad_position
                                 else torch.full((4, 5), float("nan")))


@pytest.mark.parametrize("position", [0, 1, 2], ids=["first", "middle", "last"])
@pytest.mark.parametrize("kind, rule, exc, match", [
    ("integer", spec.normal(), TypeError, "not implemented for 'Long'"),
    ("expanded", spec.normal(), InitValueError, "more than one element"),
    ("inference", spec.uniform(), RuntimeError, "inference tensor"),
    ("freed", spec.trunc_normal(), RuntimeError, "data is not allocated yet"),
    ("shrunk", spec.zeros(), RuntimeError, "out of bounds for storage"),
    ("one_dim", spec.xavier_uniform(), ValueError, "fewer than 2 dimensions"),
])
def test_a_bad_tensor_anywhere_in_a_call_writes_nothing(kind, rule, exc, match, position):
    """Every check of the planners and of backends.execute covers every tensor of a call."""
    module = _Buffers(kind, position)
    with pytest.raises(exc, match=match):
        fastinit.init_module(module, {"t*": rule}, seed=0)
    for i in range(3):
        if i != position:
            assert getattr(module, f"t{i}").isnan().all(), f"t{i} was written"


def test_init_module_inside_fused_block_equals_outside():
    a, b = poison(ConvNet()), poison(ConvNet())
    fastinit.init_module(a, _convnet_rules(), seed=5)
    with fastinit.fused():
        fastinit.init_module(b, _convnet_rules(), seed=5)
    assert_bitwise_equal(tensors(a), tensors(b))


# ----------------------------------------------------------------------------------------------
# explain and the command line
# ----------------------------------------------------------------------------------------------


def _bounds(detail: str) -> tuple[float, float]:
    lo, hi = detail.split(",")  # a uniform's "lo, hi"
    return float(lo), float(hi)


TINY_LLAMA_EXPECTED = {
    # name: (fan_in, fan_out, bound)  -- Linear(in -> out): weight (out, in), U(+-1/sqrt(in))
    "layers.0.self_attn.q_proj.weight": (64, 64, 1 / 8),
    "layers.1.mlp.gate_proj.weight": (64, 172, 1 / 8),
    "layers.0.mlp.up_proj.weight": (64, 172, 1 / 8),
    "layers.1.mlp.down_proj.weight": (172, 64, 1 / math.sqrt(172)),
    "lm_head.weight": (64, 256, 1 / 8),
}


def test_explain_tiny_llama_rows():
    model = _meta(tiny_llama)
    rows = {r.name: r for r in fastinit.explain(model)}
    assert set(rows) == set(tensors(model))
    for name, (fan_in, fan_out, bound) in TINY_LLAMA_EXPECTED.items():
        r = rows[name]
        assert (r.fan_in, r.fan_out) == (fan_in, fan_out), name
        assert r.gain == pytest.approx(math.sqrt(1 / 3)), name  # leaky_relu, a = sqrt(5)
        lo, hi = _bounds(r.parameters)
        assert lo == pytest.approx(-bound, rel=1e-5) and hi == pytest.approx(bound, rel=1e-5), name
        assert r.distribution == "uniform (kaiming_uniform)"
        assert r.shape == tuple(dict(model.named_parameters())[name].shape)
    emb = rows["embed_tokens.weight"]
    assert emb.distribution == "normal" and emb.parameters == "mean=0, std=1"
    assert rows["norm.weight"].distribution == "constant" and rows["norm.weight"].parameters == "1"
    assert rows["rotary.cos"].distribution == "module's own init"
    assert rows["rotary.cos"].source == "RotaryEmbedding.reset_parameters()"
    assert rows["norm.weight"].source == "default"
    # a built model's buffers already hold their values: materialize keeps them
    assert {r.name: r.source for r in fastinit.explain(tiny_llama())}["rotary.cos"] == "kept"
    # what explain says is what reset_parameters does
    cpu = poison(tiny_llama())
    fastinit.reset_parameters(cpu, seed=0)
    for name, (fan_in, fan_out, bound) in TINY_LLAMA_EXPECTED.items():
        check_uniform(dict(cpu.named_parameters())[name].detach(), bound, name)


def test_explain_with_rules():
    rows = {r.name: r for r in fastinit.explain(_meta(tiny_llama), rules=LLAMA_RULES)}
    assert rows["layers.0.mlp.down_proj.weight"].parameters == "mean=0, std=0.02"
    lm = rows["lm_head.weight"]
    assert lm.distribution == "uniform (xavier_uniform)" and lm.gain == 1.0
    bound = math.sqrt(6 / (64 + 256))
    assert _bounds(lm.parameters) == pytest.approx((-bound, bound), rel=1e-5)
    assert rows["embed_tokens.weight"].distribution.startswith("trunc_normal")
    assert rows["rotary.sin"].distribution == "module's own init"
    assert rows["lm_head.weight"].source == "rule"


def _run_cli(*args, timeout=180) -> str:
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "fastinit", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_cli_explain_prints_rows():
    out = _run_cli("explain", "fastinit.llama:tiny_llama")
    lines = {line.split()[0]: line.split() for line in out.splitlines()[2:] if line.strip()}
    assert set(lines) == set(tensors(_meta(tiny_llama)))
    for name, (fan_in, fan_out, bound) in TINY_LLAMA_EXPECTED.items():
        cells = lines[name]
        # name shape dtype uniform (kaiming_uniform) fan_in fan_out gain lo, hi source
        assert cells[2] == "float32" and cells[3] == "uniform", cells
        assert (int(cells[5]), int(cells[6])) == (fan_in, fan_out), cells
        assert float(cells[7]) == pytest.approx(math.sqrt(1 / 3), rel=1e-5)
        m = re.match(r"([-0-9.e]+), ([-0-9.e]+) ", " ".join(cells[8:]))
        assert float(m.group(1)) == pytest.approx(-bound, rel=1e-5), cells
        assert float(m.group(2)) == pytest.approx(bound, rel=1e-5), cells
    assert "mean=0, std=1" in " ".join(lines["embed_tokens.weight"])


def test_cli_explain_rejects_bad_target():
    env = dict(os.environ, PYTHONPATH=os.path.join(REPO, "src"))
    proc = subprocess.run([sys.executable, "-m", "fastinit", "explain", "fastinit.llama"],
                          capture_output=True, text=True, timeout=120, cwd=REPO, env=env)
    assert proc.returncode != 0 and "PACKAGE.MODULE:FACTORY" in proc.stderr


@pytest.mark.slow
def test_demo_runs_end_to_end():
    out = _run_cli("demo", "--params", "2e7", "--device", "cpu", timeout=300)
    speedup = re.search(r"^speedup: ([0-9.]+)x", out, re.M)
    fast_s = re.search(r"^fastinit.materialize: median ([0-9.]+) s over", out, re.M)
    torch_s = re.search(r"^torch way \(to_empty \+ reset_parameters\): ([0-9.]+) s", out, re.M)
    assert speedup and fast_s and torch_s, out
    # the headline is the ratio of the torch way's time to fastinit's median (each to 1 ms)
    fast, slow = float(fast_s.group(1)), float(torch_s.group(1))
    assert fast > 0 and slow > 0, out
    low, high = slow / (fast + 0.0005) - 0.05, (slow + 0.0005) / max(fast - 0.0005, 1e-9) + 0.05
    assert low <= float(speedup.group(1)) <= high, out
    check = re.search(r"^std check over (\d+) random parameters: worst relative deviation ([0-9.e+-]+)",
                      out, re.M)
    assert check, out
    assert int(check.group(1)) >= 5
    assert float(check.group(2)) < 0.01, out
    assert "fastinit.materialize:" in out and "torch way" in out


# ----------------------------------------------------------------------------------------------
# materialize with the model's own init (init="auto"): the torchtitan pattern
# ----------------------------------------------------------------------------------------------


class TitanStyle(nn.Module):
    """torchtitan's pattern: a rotary buffer computed by init_weights(), which also initialises
    every layer (trunc_normal weights, ones for the norm)."""

    def __init__(self, method: str = "init_weights"):
        super().__init__()
        self.embed = nn.Embedding(512, 64)
        self.proj = nn.Linear(64, 256, bias=False)
        self.norm = nn.RMSNorm(64)
        self.register_buffer("freqs", torch.empty(32), persistent=False)
        setattr(self, method, self._init)

    def _init(self):
        with torch.no_grad():
            self.freqs.copy_(1.0 / (10000 ** (torch.arange(0, 64, 2).float() / 64)))
        nn.init.trunc_normal_(self.embed.weight, std=0.02)
        nn.init.trunc_normal_(self.proj.weight, std=0.02, a=-0.04, b=0.04)
        nn.init.ones_(self.norm.weight)


@pytest.mark.parametrize("method", ["init_weights", "init_states"])
def test_materialize_runs_the_models_own_init(method):
    meta = _meta(lambda: TitanStyle(method))
    torch.manual_seed(5)
    before = torch.get_rng_state()
    result = fastinit.materialize(meta, "cpu", seed=3)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's generator is not consumed
    assert sorted(result.model_init) == ["embed.weight", "freqs", "norm.weight", "proj.weight"]
    assert result.fused == [] and result.untouched == []
    assert torch.equal(meta.freqs, 1.0 / (10000 ** (torch.arange(0, 64, 2).float() / 64)))
    check_normal(meta.embed.weight.detach(), 0.02, "embed.weight")  # a = -2, b = 2: a normal
    assert meta.proj.weight.abs().max() <= 0.04 and meta.proj.weight.std() > 0.01
    assert (meta.norm.weight == 1).all()
    # same seed, same values; init="reset_parameters" gives torch's layer defaults instead
    again = _meta(lambda: TitanStyle(method))
    fastinit.materialize(again, "cpu", seed=3)
    assert_bitwise_equal(tensors(meta), tensors(again))
    defaults = _meta(lambda: TitanStyle(method))
    with pytest.raises(InitValueError, match=r"\['freqs'\]"):  # nothing computes it then
        fastinit.materialize(defaults, "cpu", seed=3, init="reset_parameters")
    rows = {r.name: r for r in fastinit.explain(_meta(lambda: TitanStyle(method)))}
    assert rows["freqs"].source == "model init" and rows["freqs"].distribution == "copy_"
    assert (rows["proj.weight"].distribution, rows["proj.weight"].source) == \
        ("trunc_normal", "model init")
    assert rows["proj.weight"].parameters == "mean=0, std=0.02, a=-0.04, b=0.04"
    assert (rows["norm.weight"].distribution, rows["norm.weight"].source) == ("constant", "model init")
    rows = {r.name: r for r in fastinit.explain(_meta(lambda: TitanStyle(method)),
                                                 init="reset_parameters")}
    assert rows["proj.weight"].source == "default" and rows["freqs"].source == "NOT INITIALISED"


def test_materialize_init_that_replaces_or_forgets_tensors():
    def replace(m):  # a new parameter made inside the init: its values are the init's
        TitanStyle._init(m)
        m.proj.weight = nn.Parameter(torch.full((256, 64), 0.5))

    meta = _meta(TitanStyle)
    result = fastinit.materialize(meta, "cpu", seed=0, init=replace)
    assert (meta.proj.weight == 0.5).all() and "proj.weight" in result.model_init
    meta = _meta(TitanStyle)
    with pytest.raises(InitValueError, match=r"left \['proj.weight'\] on the meta device"):
        fastinit.materialize(meta, "cpu", seed=0, init=lambda m: setattr(
            m.proj, "weight", nn.Parameter(torch.empty(256, 64, device="meta"))))


def test_materialize_seed_none_draws_one_seed():
    torch.manual_seed(11)
    meta = _meta(TitanStyle)
    result = fastinit.materialize(meta, "cpu")
    torch.manual_seed(11)
    assert result.seed == int(torch.randint(0, 2**63 - 1, (1,)))
    again = _meta(TitanStyle)
    fastinit.materialize(again, "cpu", seed=result.seed)
    assert_bitwise_equal(tensors(meta), tensors(again))
