"""Hugging Face transformers models built with fastinit, from local configs (no downloads).

What transformers 5.23 does (read in modeling_utils.py, initialization.py and the model files):

* ``post_init()`` -> ``init_weights()`` -> ``initialize_weights()`` applies the model's
  ``_init_weights`` to every module (under ``guard_torch_init_functions``), after the torch layer
  constructors already ran their own ``reset_parameters``. Under ``torch.device("meta")`` it is
  skipped. Its init functions (``transformers.initialization.*``) call
  ``TORCH_INIT_FUNCTIONS``, a dict of torch.nn.init functions captured when transformers is
  imported, so patching ``torch.nn.init`` (as ``fastinit.fused()`` does) does not reach them.
* ``LlamaForCausalLM`` uses ``PreTrainedModel._init_weights``: Linear weight
  ``normal_(0, initializer_range)``, bias zero; Embedding ``normal_(0, initializer_range)`` and a
  zero ``padding_idx`` row; ``LlamaRMSNorm`` (matched by class name) weight one; the rotary
  ``inv_freq`` / ``original_inv_freq`` buffers recomputed from the config.
* ``ResNetModel``: ``super()._init_weights`` then Conv2d ``kaiming_normal_(mode="fan_out",
  nonlinearity="relu")``; BatchNorm weight 1, bias 0, running_mean 0, running_var 1,
  num_batches_tracked 0.

The tests:

(a) built inside ``fastinit.fused()``: the torch layers' constructor inits are recorded by
    fastinit; HF's ``_init_weights`` then writes the same tensors through torch, and the
    flush-on-access rule must run the pending fills *before* those writes, so the model ends
    with HF's init (a fill that landed after them would leave Linear weights at
    U(+-1/sqrt(128)), std 0.051, instead of N(0, 0.02)). With ``TORCH_INIT_FUNCTIONS`` routed to
    fastinit (monkeypatched), every init call is fastinit's and recorded: the result must be
    bitwise equal to the same routing without fused().
(b) built on the meta device and materialised with ``fastinit.materialize(model, "cpu", seed=0,
    rules=...)``, with rules that reproduce HF's ``_init_weights`` above. The rotary buffers
    have no rule and the module no ``reset_parameters``: materialize reports them as untouched
    (with a warning) and HF's own ``_init_weights`` of that module restores them.

Either way each parameter's std must be within 5% of a torch-built copy's (the same
constructor without fastinit, seeded) and within 5% of the std HF's init implies, for every
parameter with >= 8192 elements (the config is chosen so that every random parameter has that
many: the std of 8192 samples is within ~1.1% of the truth at one sigma); constant parameters
(norm weights 1, biases 0, running stats) must equal the torch-built copy's exactly.
"""
from __future__ import annotations

import contextlib
import math
import os
import sys

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

transformers = pytest.importorskip("transformers", reason="transformers is not installed "
                                   "(pip install -e .[transformers])")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM, ResNetConfig, ResNetModel  # noqa: E402

import fastinit  # noqa: E402
from fastinit import spec  # noqa: E402

MIN_NUMEL = 8192
REL_TOL = 0.05
INIT_RANGE = 0.02


def llama_config(tie: bool = False) -> LlamaConfig:
    return LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                       initializer_range=INIT_RANGE, pad_token_id=0, tie_word_embeddings=tie)


def resnet_config() -> ResNetConfig:
    # every conv has >= 8192 weights: 7x7 3->64 (9408), 3x3 64->64, 3x3 64/128->128, 1x1 64->128
    return ResNetConfig(num_channels=3, embedding_size=64, hidden_sizes=[64, 128], depths=[1, 1],
                        layer_type="basic")


def llama_rules(config: LlamaConfig) -> dict:
    """PreTrainedModel._init_weights for Llama, as fastinit rules."""
    std = config.initializer_range
    return {
        nn.Linear: {"weight": spec.normal(0.0, std), "bias": spec.zeros()},
        nn.Embedding: {"weight": spec.normal(0.0, std)},  # padding row: zeroed by fastinit
        "*norm.weight": spec.ones(),  # LlamaRMSNorm (input/post_attention_layernorm, model.norm)
    }


RESNET_RULES = {  # ResNetPreTrainedModel._init_weights
    nn.Conv2d: {"weight": spec.kaiming_normal(mode="fan_out", nonlinearity="relu"),
                "bias": spec.zeros()},
    nn.BatchNorm2d: {"weight": spec.ones(), "bias": spec.zeros(), "running_mean": spec.zeros(),
                     "running_var": spec.ones(), "num_batches_tracked": spec.zeros()},
}


def hf_std(model: nn.Module, name: str) -> float:
    """The std HF's _init_weights gives the random parameter `name`."""
    owner = model.get_submodule(name.rsplit(".", 1)[0])
    if isinstance(owner, nn.Conv2d):
        out, _, kh, kw = owner.weight.shape
        return math.sqrt(2.0 / (out * kh * kw))
    assert isinstance(owner, (nn.Linear, nn.Embedding)), name
    return INIT_RANGE


MODELS = {
    "llama": lambda: LlamaForCausalLM(llama_config()),
    "llama_tied": lambda: LlamaForCausalLM(llama_config(tie=True)),
    "resnet": lambda: ResNetModel(resnet_config()),
}


# 7 Linear per decoder layer, embed_tokens and lm_head (one tensor when tied); 6 convolutions
RANDOM_PARAMS = {"llama": 16, "llama_tied": 15, "resnet": 6}


def torch_built(model_id: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return MODELS[model_id]()


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    out = dict(model.named_parameters())
    out.update(dict(model.named_buffers()))
    return {k: v.detach() for k, v in out.items()}


def assert_like_hf(got: nn.Module, ref: nn.Module) -> int:
    """Per-parameter std within 5% of the torch-built copy's and of HF's; constants exact.
    Returns the number of random parameters checked."""
    g, r = state(got), state(ref)
    assert g.keys() == r.keys()
    checked = 0
    for name, want in r.items():
        t = g[name]
        assert t.shape == want.shape and t.dtype == want.dtype, name
        if t.is_floating_point():
            assert torch.isfinite(t).all(), f"{name}: not written"
        flat = want.flatten()
        if (flat == flat[0]).all():  # a constant: norm weights, biases, running stats
            assert torch.equal(t, want), f"{name}: {t.flatten()[:4]} != {want.flatten()[:4]}"
            continue
        if name.endswith("inv_freq"):
            assert torch.equal(t, want), name
            continue
        assert t.numel() >= MIN_NUMEL, f"{name}: too small for the std check; enlarge the config"
        s_got, s_ref = t.double().std().item(), want.double().std().item()
        s_hf = hf_std(got, name)
        assert abs(s_got / s_ref - 1) < REL_TOL, f"{name}: std {s_got:.5g} vs torch-built {s_ref:.5g}"
        assert abs(s_got / s_hf - 1) < REL_TOL, f"{name}: std {s_got:.5g} vs HF's {s_hf:.5g}"
        assert abs(t.double().mean().item()) < 5 * s_hf / math.sqrt(t.numel()), f"{name}: mean"
        checked += 1
    if isinstance(got, LlamaForCausalLM):
        pad = got.config.pad_token_id
        assert (got.model.embed_tokens.weight[pad] == 0).all()
        assert (got.model.embed_tokens.weight[pad + 1] != 0).all()
        if got.config.tie_word_embeddings:
            assert got.lm_head.weight is got.model.embed_tokens.weight
    return checked


def run_forward(model: nn.Module) -> None:
    with torch.no_grad():
        if isinstance(model, LlamaForCausalLM):
            out = model(torch.randint(0, 512, (2, 16))).logits
        else:
            out = model(torch.randn(2, 3, 64, 64)).last_hidden_state
    assert torch.isfinite(out).all()


def assert_torch_init_is_torchs() -> None:
    import torch.nn.modules.activation as activation

    assert torch.nn.init.normal_.__module__ == "torch.nn.init"
    assert activation.xavier_uniform_.__module__ == "torch.nn.init"


@contextlib.contextmanager
def no_hf_init():
    from transformers.modeling_utils import PreTrainedModel

    original = PreTrainedModel.initialize_weights
    PreTrainedModel.initialize_weights = lambda self: None
    try:
        yield
    finally:
        PreTrainedModel.initialize_weights = original


@contextlib.contextmanager
def torch_nn_init_is_fastinits():
    """torch.nn.init -> fastinit in torch.nn.init and wherever a torch.nn module imported a
    function by name (what fused() patches), without fused(); undone on exit."""
    originals = {name: getattr(torch.nn.init, name) for name in torch.nn.init.__all__
                 if hasattr(fastinit, name)}
    saved = []
    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith("torch.nn"):
            continue
        for name, fn in originals.items():
            if getattr(module, "__dict__", {}).get(name) is fn:
                saved.append((module, name, fn))
    try:
        for module, name, _ in saved:
            setattr(module, name, getattr(fastinit, name))
        yield
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)


# ----------------------------------------------------------------------------------------------
# (a) built inside fastinit.fused()
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", list(MODELS))
def test_built_inside_fused_keeps_hf_init(model_id):
    ref = torch_built(model_id)
    torch.manual_seed(0)
    with fastinit.fused() as recorder:
        got = MODELS[model_id]()
    assert_torch_init_is_torchs()
    assert recorder.recorded > 0  # the torch layers' constructor inits went through fastinit
    assert assert_like_hf(got, ref) == RANDOM_PARAMS[model_id]
    run_forward(got)


@pytest.fixture
def hf_init_through_fastinit(monkeypatch):
    """Route transformers' captured torch.nn.init functions to fastinit's."""
    from transformers import initialization

    for name in list(initialization.TORCH_INIT_FUNCTIONS):
        if hasattr(fastinit, name):
            monkeypatch.setitem(initialization.TORCH_INIT_FUNCTIONS, name, getattr(fastinit, name))


@pytest.mark.parametrize("model_id", list(MODELS))
def test_built_inside_fused_with_hf_init_through_fastinit(model_id, hf_init_through_fastinit):
    ref = torch_built(model_id)
    # one by one: every init call (torch layers' and HF's) goes to fastinit, not fused
    torch.manual_seed(0)
    with torch_nn_init_is_fastinits():
        one_by_one = MODELS[model_id]()
    rng_after = torch.get_rng_state()
    torch.manual_seed(0)
    with fastinit.fused() as recorder:
        got = MODELS[model_id]()
    assert torch.equal(torch.get_rng_state(), rng_after)
    # HF's _init_weights calls were recorded too, at least one per parameter on top of the
    # constructors' own
    torch.manual_seed(0)
    with fastinit.fused() as constructors_only:
        with no_hf_init():
            MODELS[model_id]()
    assert constructors_only.recorded > 0
    assert recorder.recorded >= constructors_only.recorded + len(list(got.parameters()))
    a, b = state(one_by_one), state(got)
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name}: fused differs from one by one"
    assert assert_like_hf(got, ref) == RANDOM_PARAMS[model_id]
    run_forward(got)


# ----------------------------------------------------------------------------------------------
# (b) built on the meta device, materialised with rules that reproduce HF's init
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("model_id", ["llama", "llama_tied"])
def test_llama_meta_materialize_with_hf_rules(model_id):
    ref = torch_built(model_id)
    with torch.device("meta"):
        model = MODELS[model_id]()
    assert all(p.is_meta for p in model.parameters())
    rotary = ["model.rotary_emb.inv_freq", "model.rotary_emb.original_inv_freq"]
    with pytest.warns(UserWarning, match="rotary_emb.inv_freq"):
        result = fastinit.materialize(model, "cpu", seed=0, rules=llama_rules(model.config))
    assert sorted(result.untouched) == rotary
    names = {n for n, _ in model.named_parameters()}
    assert sorted(result.fused) == sorted(names)
    # the rotary tables: no rule, no reset_parameters; HF's own init of that module restores them
    model._init_weights(model.model.rotary_emb)
    assert assert_like_hf(model, ref) == RANDOM_PARAMS[model_id]
    run_forward(model)
    # same seed, same weights
    with torch.device("meta"):
        again = MODELS[model_id]()
    with pytest.warns(UserWarning):
        fastinit.materialize(again, "cpu", seed=0, rules=llama_rules(again.config))
    for (name, p), (_, q) in zip(model.named_parameters(), again.named_parameters()):
        assert torch.equal(p, q), name


def test_resnet_meta_materialize_with_hf_rules():
    ref = torch_built("resnet")
    with torch.device("meta"):
        model = ResNetModel(resnet_config())
    result = fastinit.materialize(model, "cpu", seed=0, rules=RESNET_RULES)
    assert result.untouched == [] and result.not_fused == []
    assert assert_like_hf(model, ref) == RANDOM_PARAMS["resnet"]
    assert all(model.get_buffer(n).item() == 0 for n, _ in model.named_buffers()
               if n.endswith("num_batches_tracked"))
    run_forward(model)


def test_resnet_meta_materialize_default_init_is_torchs_not_hfs():
    """Without rules, materialize gives torch's layer defaults, not HF's _init_weights: the
    convolutions get kaiming_uniform(a=sqrt(5)) (std 1/sqrt(3 fan_in)), BatchNorm the same
    constants as HF. This is why the HF tests pass rules."""
    ref = torch_built("resnet")
    with torch.device("meta"):
        model = ResNetModel(resnet_config())
    result = fastinit.materialize(model, "cpu", seed=0)
    assert result.untouched == []
    for name, p in model.named_parameters():
        want = ref.get_parameter(name)
        if p.dim() == 4:
            fan_in = p[0].numel()
            assert abs(p.double().std().item() * math.sqrt(3 * fan_in) - 1) < REL_TOL, name
            assert abs(p.double().std().item() / hf_std(model, name) - 1) > 0.2, name
        else:
            assert torch.equal(p, want), name
