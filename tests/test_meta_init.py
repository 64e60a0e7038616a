"""Constructor-time init under `fastinit.meta_init()`, replayed by `materialize`.

A model built under `meta_init()` and materialised must have, tensor by tensor, the
distributions of the same model built plainly: constants exactly, random tensors by a two-sample
Kolmogorov-Smirnov test (p > 1e-4) and their mean and std within a few standard errors. The
negative controls (`to_empty` without init, and the same model built on plain meta, which gets
layer defaults and a warning) must fail the same checks.
"""
from __future__ import annotations

import math
import warnings

import pytest
import torch
from scipy import stats
from torch import nn

import fastinit

P_MIN = 1e-4
KS_SAMPLES = 200_000


def _tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def mismatch(got: torch.Tensor, ref: torch.Tensor) -> str | None:
    """Why `got` does not have `ref`'s distribution, or None when it has."""
    if got.shape != ref.shape or got.dtype != ref.dtype:
        return f"shape/dtype {tuple(got.shape)} {got.dtype} != {tuple(ref.shape)} {ref.dtype}"
    if not got.is_floating_point():
        return None if torch.equal(got, ref) else "integer values differ"
    x, y = got.detach().double().flatten(), ref.detach().double().flatten()
    if not torch.isfinite(x).all():
        return "not finite"
    if y.numel() == 1 or bool((y == y[0]).all()):
        return None if torch.equal(x, y) else f"constant {float(y[0])}: got other values"
    n = y.numel()
    sd = float(y.std())
    if abs(float(x.mean()) - float(y.mean())) > 6 * sd / math.sqrt(n) + 1e-12:
        return f"mean {float(x.mean()):.4g} != {float(y.mean()):.4g}"
    if abs(float(x.std()) / sd - 1) > max(0.05, 8 / math.sqrt(n)):
        return f"std {float(x.std()):.4g} != {sd:.4g}"
    step = max(1, n // KS_SAMPLES)  # the KS test on an evenly strided sample of big tensors
    if n >= 50 and stats.ks_2samp(x[::step].numpy(), y[::step].numpy()).pvalue < P_MIN:
        return "KS rejects"
    return None


def mismatches(got: nn.Module, ref: nn.Module) -> dict[str, str]:
    g, r = _tensors(got), _tensors(ref)
    assert g.keys() == r.keys()
    return {n: why for n in r if (why := mismatch(g[n], r[n])) is not None}


def built(factory, how: str, seed: int = 0) -> nn.Module:
    """`factory()` built plainly ("plain", torch's generator seeded `seed`), under meta_init and
    materialised ("meta_init"), on plain meta and materialised ("meta"), or on meta and
    allocated by to_empty without init, poisoned with NaN ("to_empty")."""
    torch.manual_seed(seed)
    if how == "plain":
        return factory()
    if how == "meta_init":
        with fastinit.meta_init():
            model = factory()
        fastinit.materialize(model, "cpu", seed=seed)
        return model
    with torch.device("meta"):
        model = factory()
    if how == "meta":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = fastinit.materialize(model, "cpu", seed=seed, allow_uninitialized=True)
        with torch.no_grad():  # uninitialised memory, made deterministic
            for name in result.untouched:
                t = _tensors(model)[name]
                t.fill_(float("nan") if t.is_floating_point() else 12345)
        return model
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for t in _tensors(model).values():
            t.fill_(float("nan") if t.is_floating_point() else 12345)
    return model


class ConstructorInit(nn.Module):
    """The constructor-time init patterns of torchvision, timm and ViT-like models."""

    def __init__(self):
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(1, 16, 64))
        self.cls = nn.Parameter(torch.empty(1, 1, 4096).normal_(std=0.02))  # vit_b_16
        self.layer_scale = nn.Parameter(torch.ones(64) * 1e-2)             # convnext
        self.steps = nn.Parameter(torch.arange(8).float())
        self.fc = nn.Linear(256, 256)
        self.proj = nn.Linear(256, 128)
        self.conv = nn.Conv2d(16, 32, 3)
        self.norm = nn.BatchNorm2d(32)
        self.emb = nn.Embedding(100, 64, padding_idx=0)
        self.rot = nn.Parameter(torch.empty(64, 64))
        self.register_buffer("inv_freq", 1.0 / (10000 ** (torch.arange(0, 64, 2).float() / 64)))
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                m.bias.data.zero_()
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 0.5)
        self.proj.weight.data.mul_(0.5)
        self.emb.weight.data[3].fill_(7.0)
        nn.init.orthogonal_(self.rot, gain=2.0)


def test_meta_init_replays_constructor_init():
    ref = built(ConstructorInit, "plain")
    got = built(ConstructorInit, "meta_init")
    assert mismatches(got, ref) == {}
    assert (got.pos == 0).all() and (got.layer_scale == 1e-2).all() and (got.emb.weight[0] == 0).all()
    assert torch.equal(got.steps, torch.arange(8).float())
    assert (got.emb.weight[3] == 7).all() and (got.norm.weight == 0.5).all()
    rot = got.rot.detach().double()
    assert torch.allclose(rot @ rot.T, 4 * torch.eye(64, dtype=torch.float64), atol=1e-4)
    assert got.fc.weight.requires_grad and isinstance(got.fc.weight, nn.Parameter)


def test_meta_init_replay_reports_and_draws_from_the_seed():
    with fastinit.meta_init():
        model = ConstructorInit()
    before = torch.get_rng_state()
    result = fastinit.materialize(model, "cpu", seed=3)
    assert torch.equal(torch.get_rng_state(), before)
    # the layers' own defaults are fastinit's default fills; everything else is replayed
    assert result.fused == ["norm.bias"]
    assert sorted(result.replayed) == sorted(
        ["pos", "cls", "layer_scale", "steps", "rot", "fc.weight", "fc.bias", "proj.weight",
         "proj.bias", "conv.weight", "conv.bias", "norm.weight", "emb.weight"])
    # buffers computed in the constructor keep their values
    assert sorted(result.kept) == ["inv_freq", "norm.num_batches_tracked", "norm.running_mean",
                                   "norm.running_var"]
    again = built(ConstructorInit, "meta_init", seed=3)
    other = built(ConstructorInit, "meta_init", seed=4)
    a, b, c = _tensors(model), _tensors(again), _tensors(other)
    assert all(torch.equal(a[n], b[n]) for n in a)
    for name in ("cls", "fc.weight", "conv.weight", "rot", "emb.weight"):
        assert not torch.equal(a[name], c[name]), name


def test_explain_shows_the_replayed_constructor_init():
    """explain() of a model built under meta_init() says what materialize writes: the
    constructor's init, replayed; a layer default only where materialize gives one."""
    with fastinit.meta_init():
        model = ConstructorInit()
    rows = {r.name: r for r in fastinit.explain(model)}
    result = fastinit.materialize(model, "cpu", seed=0)
    replayed = {n for n, r in rows.items() if "constructor" in r.source}
    assert replayed == set(result.replayed)
    assert {n for n, r in rows.items() if r.source == "default"} == set(result.fused)
    assert {n for n, r in rows.items() if r.source == "kept"} == set(result.kept)
    expected = {  # name: (distribution, parameters, source)
        "cls": ("normal", "mean=0, std=0.02", "constructor"),
        "fc.weight": ("trunc_normal", "mean=0, std=0.02, a=-2, b=2", "constructor"),
        "fc.bias": ("constant", "0", "constructor"),
        "norm.weight": ("constant", "0.5", "constructor"),
        "pos": ("zeros", "-", "constructor"),
        "rot": ("orthogonal_", "-", "constructor"),
        "emb.weight": ("normal", "mean=0, std=1; then constant(7) on part",
                       "default, then constructor"),
        "norm.bias": ("constant", "0", "default"),
    }
    assert {n: (rows[n].distribution, rows[n].parameters, rows[n].source)
            for n in expected} == expected
    # a layer default scaled in the constructor: the default, then the constructor's op
    with fastinit.meta_init():
        scaled = nn.Linear(8, 8)
        scaled.weight.data.mul_(0.5)
    row = fastinit.explain(scaled)[0]
    assert (row.distribution, row.parameters, row.source) == (
        "uniform (kaiming_uniform)", "-0.353553, 0.353553; then mul_", "default, then constructor")
    fastinit.materialize(scaled, "cpu", seed=0)
    assert 0.1 < scaled.weight.abs().max().item() <= 0.5 * 0.353553
    # the values agree with the rows
    assert abs(model.cls.std().item() - 0.02) < 0.002 and (model.norm.weight == 0.5).all()
    assert (model.emb.weight[3] == 7).all() and abs(model.emb.weight[4:].std().item() - 1) < 0.1


def test_explain_of_a_plain_meta_model_shows_layer_defaults():
    """Negative control: built on plain meta, nothing is recorded, and explain() and
    materialize() both give the layer defaults."""
    with torch.device("meta"):
        model = ConstructorInit()
    rows = {r.name: r for r in fastinit.explain(model)}
    assert rows["fc.weight"].source == "default"
    assert rows["fc.weight"].distribution == "uniform (kaiming_uniform)"
    assert not any("constructor" in r.source for r in rows.values())


def test_negative_controls_fail_the_same_checks():
    ref = built(ConstructorInit, "plain")
    empty = mismatches(built(ConstructorInit, "to_empty"), ref)
    assert set(empty) == set(_tensors(ref))
    defaults = mismatches(built(ConstructorInit, "meta"), ref)
    assert {"fc.weight", "proj.weight", "conv.weight", "cls", "layer_scale", "emb.weight",
            "norm.weight", "rot", "steps"} <= set(defaults)


def test_plain_meta_warns_naming_the_tensors_left_at_layer_defaults():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(8, 8), nn.Conv2d(2, 2, 1))
    with pytest.warns(UserWarning, match=r"\['0\.weight', '0\.bias', '1\.weight', '1\.bias'\] "
                                         r"get their layers' default init.*meta_init"):
        fastinit.materialize(model, "cpu", seed=0)
    with warnings.catch_warnings():  # asked for: no warning
        warnings.simplefilter("error")
        with torch.device("meta"):
            model = nn.Sequential(nn.Linear(8, 8))
        fastinit.materialize(model, "cpu", seed=0, init="reset_parameters")
        with fastinit.meta_init():  # recorded: no warning
            model = ConstructorInit()
        fastinit.materialize(model, "cpu", seed=0)


def test_meta_init_records_nothing_outside_the_block():
    with fastinit.meta_init():
        inside = nn.Linear(4, 4)
    outside = nn.Linear(4, 4)
    assert getattr(inside.weight, "_fastinit_recipe", None) is not None
    assert getattr(outside.weight, "_fastinit_recipe", None) is None
    assert not outside.weight.is_meta


def test_hf_clip_logit_scale_is_replayed():
    transformers = pytest.importorskip("transformers")
    config = transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, vocab_size=100, max_position_embeddings=16),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=2, image_size=16, patch_size=8),
        projection_dim=16)
    ref = built(lambda: transformers.CLIPModel(config), "plain")
    got = built(lambda: transformers.CLIPModel(config), "meta_init")
    assert float(got.logit_scale) == float(ref.logit_scale) == pytest.approx(2.6592)
    assert mismatches(got, ref) == {}


def _torchvision(name):
    models = pytest.importorskip("torchvision.models")
    return lambda: getattr(models, name)()


def _timm(name):
    timm = pytest.importorskip("timm")
    return lambda: timm.create_model(name, pretrained=False)


@pytest.mark.slow
@pytest.mark.parametrize("library, name", [
    ("torchvision", "resnet50"), ("torchvision", "convnext_tiny"), ("torchvision", "vit_b_16"),
    ("torchvision", "efficientnet_b0"), ("torchvision", "densenet121"), ("torchvision", "swin_t"),
    ("timm", "resnet50"), ("timm", "efficientnet_b0"),
])
def test_client_models_from_meta_init_have_their_constructor_distributions(library, name):
    factory = (_torchvision if library == "torchvision" else _timm)(name)
    ref = built(factory, "plain")
    assert mismatches(built(factory, "meta_init"), ref) == {}
    assert mismatches(built(factory, "to_empty"), ref)  # the negative control fails
    if (library, name) != ("timm", "resnet50"):
        # plain meta loses the constructor's init; timm's ResNet does its init in an
        # init_weights() method, which materialize runs, so it has the same distributions
        assert mismatches(built(factory, "meta"), ref)


class BadStd(nn.Module):
    def __init__(self, std):
        super().__init__()
        self.w = nn.Parameter(torch.empty(4, 4))
        self.w.data.normal_(0.0, std)


class RandomFills(nn.Module):
    """Random fills of parameters in the constructor, in every form the recorder skips on meta."""

    def __init__(self):
        super().__init__()
        self.a = nn.Parameter(torch.empty(8, 8))
        self.b = nn.Parameter(torch.empty(8, 8, dtype=torch.float64))
        self.c = nn.Parameter(torch.empty(16))
        self.d = nn.Parameter(torch.empty(3, 5))
        self.a.data.normal_(0.5, 0.25)
        nn.init.normal_(self.b, std=3.0)
        self.c.data.uniform_(-2, 7)
        nn.init.uniform_(self.d, a=1.0, b=1.0)


def test_random_fills_on_meta_are_checked_and_replayed():
    """A constructor's normal_ / uniform_ on meta is not run (torch computes it on meta through
    a slow decomposition) but still checked at the call, and materialize replays it."""
    got = built(RandomFills, "meta_init")
    ref = built(RandomFills, "plain")
    assert mismatches(got, ref) == {}
    assert (got.d == 1.0).all() and (-2 <= got.c).all() and (got.c < 7).all()
    with pytest.raises(RuntimeError, match="std"):
        with fastinit.meta_init():
            BadStd(-1.0)
    with pytest.raises(RuntimeError, match="std"):
        BadStd(-1.0)  # the same error as without meta_init
