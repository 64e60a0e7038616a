"""timm and torchvision models built inside `fused()`, with the real packages: every parameter
gets the distribution the package's own init intends, from fastinit, written once, and nothing
outside the block changes.

timm imports torchvision, and PyPI's torchvision needs a CUDA build of torch: these tests run in
the second test environment (`scripts/test_torch.sh 2.14.1`, torch 2.14.1 + torchvision 0.29.1 +
timm 1.0.31, which CI runs too) and skip elsewhere, saying why.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import fastinit

try:
    import timm
    import timm.layers.weight_init as timm_init
    import torchvision
    CLIENTS_IMPORT_ERROR = None
except Exception as e:  # ImportError, or torchvision's RuntimeError beside a CPU-only torch
    CLIENTS_IMPORT_ERROR = f"{type(e).__name__}: {e}"

pytestmark = pytest.mark.skipif(
    CLIENTS_IMPORT_ERROR is not None,
    reason=f"timm / torchvision do not import here ({CLIENTS_IMPORT_ERROR}); "
           "scripts/test_torch.sh 2.14.1 runs these tests with torch 2.14.1 + torchvision + timm")


def _build(make):
    """make() inside fused(), from seed 0: the model and the block's recorder."""
    torch.manual_seed(0)
    with fastinit.fused() as recorder:
        model = make()
    return model, recorder


def _module_functions(module) -> dict:
    return {k: v for k, v in vars(module).items() if callable(v)}


def _elements(model: nn.Module) -> int:
    return sum(t.numel() for t in model.parameters()) + sum(b.numel() for b in model.buffers())


def _assert_std(t: torch.Tensor, expected: float, name: str) -> None:
    # |relative error of a sample std| ~ 1/sqrt(2n): with n >= 40k elements 3% is > 8 sigma,
    # and a 5% error fails
    assert t.numel() >= 40_000, name
    got = t.float().std().item()
    assert abs(got / expected - 1) < 0.03, f"{name}: std {got:.5g}, expected {expected:.5g}"


def _fan(t: torch.Tensor, mode: str) -> int:
    fan_in, fan_out = torch.nn.init._calculate_fan_in_and_fan_out(t)
    return fan_in if mode == "fan_in" else fan_out


MODELS = {
    "timm_vit_small": lambda: timm.create_model("vit_small_patch16_224", pretrained=False),
    "timm_convnext_tiny": lambda: timm.create_model("convnext_tiny", pretrained=False),
    "timm_resnet50": lambda: timm.create_model("resnet50", pretrained=False),
    "timm_efficientnet_b0": lambda: timm.create_model("efficientnet_b0", pretrained=False),
    "torchvision_resnet50": lambda: torchvision.models.resnet50(),
    "torchvision_vit_b_16": lambda: torchvision.models.vit_b_16(),
    "torchvision_convnext_tiny": lambda: torchvision.models.convnext_tiny(),
}

# Parameters whose final values come from arithmetic on fastinit's values rather than a fill:
# layer scales made as `init_values * torch.ones(dim)`, and convnext's head scaled in place by
# head_init_scale after its init (that head is written twice).
COMPUTED = {
    "timm_convnext_tiny": lambda name: name.endswith(".gamma") or name.startswith("head.fc."),
    "torchvision_convnext_tiny": lambda name: name.endswith(".layer_scale"),
}
# Elements written twice: convnext's head, scaled in place after its init.
EXTRA_WRITES = {"timm_convnext_tiny": 1000 * 768 + 1000}


@pytest.mark.parametrize("name", list(MODELS))
def test_model_built_inside_fused_is_written_once_by_fastinit(name):
    torch_init = _module_functions(torch.nn.init)
    timm_functions = _module_functions(timm_init)
    model, recorder = _build(MODELS[name])
    assert _module_functions(torch.nn.init) == torch_init
    assert _module_functions(timm_init) == timm_functions
    written = recorder.elements_filled + recorder.elements_other
    assert written == _elements(model) + EXTRA_WRITES.get(name, 0)
    computed = COMPUTED.get(name, lambda _: False)
    for pname, p in model.named_parameters():
        assert recorder.by_fastinit(p) != computed(pname), f"{pname}: {recorder.describe(p)}"
        assert torch.isfinite(p).all(), pname


def test_timm_vit_gets_timms_distributions():
    model, recorder = _build(MODELS["timm_vit_small"])
    assert recorder.describe(model.cls_token) == "normal(mean=0, std=1e-06)"
    assert recorder.describe(model.pos_embed) == "trunc_normal(mean=0, std=0.02, a=-2, b=2)"
    for name, m in model.named_modules():
        if isinstance(m, nn.Linear):
            assert recorder.describe(m.weight) == "trunc_normal(mean=0, std=0.02, a=-2, b=2)", name
            assert (m.bias == 0).all(), name
        elif isinstance(m, nn.LayerNorm):
            assert (m.weight == 1).all() and (m.bias == 0).all(), name
    _assert_std(model.blocks[0].mlp.fc1.weight, 0.02, "fc1")  # [-2, 2] is +-100 std: no visible cut
    _assert_std(model.pos_embed, 0.02, "pos_embed")


def test_timm_resnet_gets_kaiming_fan_out():
    model, recorder = _build(MODELS["timm_resnet50"])
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            std = math.sqrt(2.0 / _fan(m.weight, "fan_out"))
            assert recorder.describe(m.weight) == f"normal(mean=0, std={std:.6g})", name
        elif isinstance(m, nn.BatchNorm2d):
            assert (m.running_var == 1).all() and (m.running_mean == 0).all(), name
    _assert_std(model.layer4[0].conv2.weight, math.sqrt(2.0 / (512 * 9)), "layer4.0.conv2")


def test_timm_efficientnet_gets_goog_init():
    model, recorder = _build(MODELS["timm_efficientnet_b0"])
    w = model.blocks[6][0].conv_pw.weight  # a 1x1 conv: std sqrt(2 / fan_out)
    _assert_std(w, math.sqrt(2.0 / w.shape[0]), "conv_pw")
    bound = 1.0 / math.sqrt(model.classifier.weight.shape[0])
    assert recorder.describe(model.classifier.weight) == f"uniform({-bound:.6g}, {bound:.6g})"


def test_torchvision_vit_pos_embedding_goes_through_fastinit():
    model, recorder = _build(MODELS["torchvision_vit_b_16"])
    pos = model.encoder.pos_embedding
    assert recorder.describe(pos) == "normal(mean=0, std=0.02)"
    _assert_std(pos, 0.02, "pos_embedding")
    fan_in = model.conv_proj.weight[0].numel()
    _assert_std(model.conv_proj.weight, math.sqrt(1 / fan_in), "conv_proj")  # [-2, 2]: +-55 std


def test_timm_trunc_normal_tf_and_lecun_inside_fused_equal_fastinit():
    """timm's TF-style truncated normal (and lecun_normal_, which uses it) become one fastinit
    trunc_normal_tf_ fill: the same values as fastinit's, bitwise, from the same generator."""
    w = torch.empty(256, 128)
    torch.manual_seed(7)
    with fastinit.fused() as recorder:
        timm_init.trunc_normal_tf_(w, mean=0.1, std=0.05, a=-1.5, b=2.0)
        v = torch.empty(64, 32)
        timm_init.lecun_normal_(v)
    state = torch.get_rng_state()
    torch.manual_seed(7)
    ref_w = fastinit.trunc_normal_tf_(torch.empty(256, 128), mean=0.1, std=0.05, a=-1.5, b=2.0)
    ref_v = fastinit.trunc_normal_tf_(torch.empty(64, 32), std=math.sqrt(1 / 32) / 0.87962566103423978)
    assert torch.equal(state, torch.get_rng_state())
    assert torch.equal(w, ref_w) and torch.equal(v, ref_v)
    assert recorder.flushes == 1 and recorder.elements_other == 0  # one pass, at the block's end


def test_timm_vit_from_meta_gets_its_init_weights():
    """A timm model with an `init_weights` method: materialize runs it (init="auto")."""
    with torch.device("meta"):
        model = MODELS["timm_vit_small"]()
    result = fastinit.materialize(model, "cpu", seed=0)
    assert result.untouched == [] and len(result.model_init) == len(list(model.parameters()))
    _assert_std(model.blocks[0].mlp.fc1.weight, 0.02, "fc1")
    _assert_std(model.pos_embed, 0.02, "pos_embed")
    assert abs(model.cls_token.std().item() / 1e-6 - 1) < 0.2  # 384 values: std of std ~4%
    assert all((m.bias == 0).all() for m in model.modules() if isinstance(m, nn.Linear))
