"""The whole-model pass's native call: whole plain CPU tensors planned once per (spec, shape,
dtype) and filled in one call give the bytes of the general path (fills recorded by a `fused()`
block, run by `backends.execute`), and a bad tensor stops the pass before anything is written."""
from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import fastinit
from fastinit.errors import UnsafeTargetError
from fastinit.model.names import walk
from fastinit.model.rules import default_rules_for


class Scaled(nn.Module):
    """A module of no standard layer type: its own reset_parameters runs after the pass."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.zeros(3, 5))
        self.register_buffer("offset", torch.zeros(4))

    def reset_parameters(self):
        nn.init.normal_(self.scale)
        self.offset.fill_(2.0)


def mixed_model(device="cpu") -> nn.Module:
    torch.manual_seed(0)
    with torch.device(device):
        model = nn.Sequential(
            nn.Linear(16, 8), nn.Linear(32, 8), nn.Conv2d(3, 4, 3), nn.Embedding(10, 6, padding_idx=2),
            nn.LayerNorm(8), nn.BatchNorm1d(5), Scaled(), nn.Linear(7, 7, bias=False),
            nn.MultiheadAttention(8, 2), nn.LSTM(4, 6), nn.PReLU(), nn.Linear(4, 4).double(),
            nn.Linear(4, 4).half(), nn.Linear(16, 8))
    model[-1].weight = model[0].weight  # tied: written once, under its first name
    return model


def transpose_weight(model: nn.Module) -> None:
    """A non-contiguous parameter (the general path's)."""
    model[1].weight = nn.Parameter(torch.zeros(32, 8).t())


def tensor_bytes(model: nn.Module, own_reset: bool = True) -> dict:
    """Every tensor's values; without `own_reset`, less Scaled's (its own reset_parameters draws
    torch's values outside a `fused()` block and fastinit's inside one)."""
    return {n: t.detach().clone() for n, t in
            list(model.named_parameters()) + list(model.named_buffers())
            if own_reset or not n.startswith("6.")}


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name].reshape(-1).view(torch.uint8),
                           b[name].reshape(-1).view(torch.uint8)), name


@pytest.mark.parametrize("transposed", [False, True])
def test_reset_parameters_native_call_gives_the_general_paths_bytes(transposed):
    dense, general = mixed_model(), mixed_model()
    if transposed:
        transpose_weight(dense)
        transpose_weight(general)
    result = fastinit.reset_parameters(dense, seed=11)
    with fastinit.fused():  # inside a block of the caller's: every fill recorded, the general path
        expected = fastinit.reset_parameters(general, seed=11)
    assert_same(tensor_bytes(dense, own_reset=False), tensor_bytes(general, own_reset=False))
    assert result.fused == expected.fused and result.not_fused == expected.not_fused == ["6"]
    assert dense[3].weight[2].eq(0).all() and dense[6].offset.eq(2).all()
    assert not dense[0].weight.eq(0).all()
    # the plans of the pass are per shape: Linear(32, 8)'s bias bound is 1/sqrt(32)
    assert dense[1].bias.abs().max() <= 32 ** -0.5 < dense[0].bias.abs().max()


def test_init_module_native_call_gives_the_general_paths_bytes():
    rules = {nn.Linear: {"weight": fastinit.spec.trunc_normal(0.0, 0.02),
                         "bias": fastinit.spec.uniform(-0.5, 0.5)},
             "2.weight": fastinit.spec.kaiming_normal(mode="fan_out")}
    dense, general = mixed_model(), mixed_model()
    fastinit.init_module(dense, rules, seed=3)
    with fastinit.fused():
        fastinit.init_module(general, rules, seed=3)
    assert_same(tensor_bytes(dense), tensor_bytes(general))


def test_materialize_own_block_gives_the_bytes_of_a_callers_block():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense, general = mixed_model("meta"), mixed_model("meta")
        result = fastinit.materialize(dense, "cpu", seed=5)
        with fastinit.fused():
            expected = fastinit.materialize(general, "cpu", seed=5)
    assert_same(tensor_bytes(dense), tensor_bytes(general))
    assert result.fused == expected.fused and result.not_fused == expected.not_fused


def test_bad_storage_raises_and_nothing_is_written():
    model = nn.Sequential(nn.Linear(16, 16), nn.LayerNorm(16), nn.Linear(16, 4))
    with torch.no_grad():
        for t in model.parameters():
            t.fill_(7.0)
    model[2].weight.untyped_storage().resize_(0)  # freed, as FSDP frees a shard's memory
    with pytest.raises(UnsafeTargetError, match="not allocated"):
        fastinit.reset_parameters(model, seed=0)
    for name, t in model.named_parameters():
        if name != "2.weight":
            assert t.eq(7.0).all(), name


def test_version_counters_are_bumped():
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    before = [t._version for t in model.parameters()]
    fastinit.reset_parameters(model, seed=0)
    assert all(t._version > v for t, v in zip(model.parameters(), before))


def test_default_rules_are_shared_only_between_modules_of_equal_inputs():
    a, b, c = nn.Linear(16, 8), nn.Linear(16, 8, device="meta"), nn.Linear(32, 8)
    assert default_rules_for(a) is default_rules_for(b)
    assert default_rules_for(a)["bias"].kwargs != default_rules_for(c)["bias"].kwargs
    assert "bias" not in default_rules_for(nn.Linear(16, 8, bias=False))


def test_walk_is_named_modules():
    shared = nn.Linear(2, 2)
    model = nn.Sequential(nn.Sequential(shared, nn.ReLU()), shared,
                          nn.ModuleDict({"x": nn.Linear(2, 2), "y": None}))
    assert [(n, id(m)) for n, m in walk(model, "root")] == \
        [(n, id(m)) for n, m in model.named_modules(prefix="root")]
