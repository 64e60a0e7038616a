"""torch.nn modules built with torch.nn.init replaced by fastinit.

Every name of torch.nn.init.__all__ is monkeypatched to fastinit's function (wrapped in a spy),
in torch.nn.init and in every torch.nn module that imported it by name (activation.py and
transformer.py do ``from torch.nn.init import xavier_uniform_``). Then the standard layers are
constructed, each parameter is checked to have gone through the fastinit function torch
documents for it, and its values pass the KS test of that documented default init.
"""
from __future__ import annotations

import functools
import math
import sys

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import fastinit

P_MIN = 1e-4


@pytest.fixture
def dropin(monkeypatch):
    """Replace torch.nn.init by fastinit (undone after the test); returns the list of calls."""
    return patch_torch_init(monkeypatch)


def patch_torch_init(monkeypatch) -> list:
    """Patch every torch.nn.init function (and its by-name imports) to a spy calling fastinit's."""
    calls: list[tuple[str, torch.Tensor]] = []
    originals = {name: getattr(torch.nn.init, name) for name in torch.nn.init.__all__}
    spies = {}
    for name in torch.nn.init.__all__:
        target = getattr(fastinit, name)

        def spy(*args, __name=name, __target=target, **kwargs):
            tensor = args[0] if args else kwargs["tensor"]
            calls.append((__name, tensor))
            return __target(*args, **kwargs)

        spies[name] = functools.wraps(target)(spy)
        monkeypatch.setattr(torch.nn.init, name, spies[name])
    for module_name, module in list(sys.modules.items()):
        if not module_name.startswith("torch.nn") or module is torch.nn.init or module is None:
            continue
        for name, original in originals.items():
            if getattr(module, name, None) is original:
                monkeypatch.setattr(module, name, spies[name])
    return calls


def called_with(calls, tensor) -> list[str]:
    return [name for name, t in calls if t is tensor]


def ks_p(t: torch.Tensor, cdf) -> float:
    # asymptotic p-value: scipy's exact one costs ~70 ms per call for n <= 10k, and at the
    # 1e-4 level the two agree closely
    return float(stats.kstest(t.detach().double().flatten().numpy(), cdf, method="asymp").pvalue)


def check_uniform(t: torch.Tensor, bound: float, what: str):
    assert ks_p(t, stats.uniform(-bound, 2 * bound).cdf) > P_MIN, f"{what}: not U(+-{bound:.4g})"
    assert t.abs().max().item() <= bound * (1 + 1e-6)
    if t.numel() >= 20_000:  # power: a 5% wrong bound is rejected
        assert ks_p(t, stats.uniform(-bound * 1.05, 2.1 * bound).cdf) < P_MIN, what


def check_normal(t: torch.Tensor, std: float, what: str):
    assert t.numel() >= 20_000, f"{what}: too few samples to reject a 5% wrong std"
    assert ks_p(t, stats.norm(0.0, std).cdf) > P_MIN, f"{what}: not N(0, {std:.4g})"
    # std within 2.5% (5 standard errors at 20k samples): a 5% wrong std fails
    assert abs(t.double().std().item() / std - 1) < 0.025, f"{what}: std off"


def check_const(t: torch.Tensor, value: float, what: str):
    assert (t == value).all(), what


def assert_all_params_went_through_fastinit(module: nn.Module, calls, expected: dict[str, str]):
    """Every parameter was handed to a fastinit function; `expected` names it by parameter."""
    for name, p in module.named_parameters():
        used = called_with(calls, p)
        assert used, f"{name} was not initialised through fastinit"
        for pattern, fn_name in expected.items():
            if name.endswith(pattern):
                assert used[-1] == fn_name, f"{name}: {used} (expected {fn_name} last)"
                break
    assert fastinit.backend_info()["last_run"]["cpu"] in ("cpu", "reference")


# ----------------------------------------------------------------------------------------------


def test_monkeypatch_is_undone_after_use():
    import torch.nn.modules.activation as activation

    uniform, xavier = torch.nn.init.uniform_, activation.xavier_uniform_
    with pytest.MonkeyPatch.context() as mp:
        patch_torch_init(mp)
        assert torch.nn.init.uniform_.__wrapped__ is fastinit.uniform_
        assert activation.xavier_uniform_.__wrapped__ is fastinit.xavier_uniform_
    assert torch.nn.init.uniform_ is uniform and uniform.__module__ == "torch.nn.init"
    assert activation.xavier_uniform_ is xavier is torch.nn.init.xavier_uniform_


def test_linear_values_are_exactly_fastinits(dropin):
    """Not just the distribution: the module's values are fastinit's for the same draws."""
    torch.manual_seed(0)
    layer = nn.Linear(300, 700)
    torch.manual_seed(0)
    w = fastinit.kaiming_uniform_(torch.empty(700, 300), a=math.sqrt(5))
    b = fastinit.uniform_(torch.empty(700), -1 / math.sqrt(300), 1 / math.sqrt(300))
    assert torch.equal(layer.weight.detach(), w)
    assert torch.equal(layer.bias.detach(), b)
    # ... and not torch's own values for the same seed
    torch.manual_seed(0)
    w_torch = torch.empty(700, 300).uniform_(-1 / math.sqrt(300), 1 / math.sqrt(300))
    assert not torch.equal(w, w_torch)
    assert [n for n, _ in dropin] == ["kaiming_uniform_", "uniform_"]


@pytest.mark.parametrize("in_f, out_f", [(300, 700), (1000, 40), (64, 2048)], ids=str)
def test_linear(dropin, in_f, out_f):
    layer = nn.Linear(in_f, out_f)
    assert_all_params_went_through_fastinit(layer, dropin, {"weight": "kaiming_uniform_", "bias": "uniform_"})
    bound = 1 / math.sqrt(in_f)  # kaiming_uniform_(a=sqrt(5)) == U(+-1/sqrt(fan_in))
    check_uniform(layer.weight, bound, "Linear.weight")
    check_uniform(layer.bias, bound, "Linear.bias")
    assert layer.weight.requires_grad and layer.weight.grad_fn is None


CONV_CASES = [
    ("conv1d", lambda: nn.Conv1d(64, 128, 5), 64 * 5),
    ("conv2d", lambda: nn.Conv2d(48, 64, 3), 48 * 9),
    ("conv2d_groups", lambda: nn.Conv2d(64, 128, (3, 3), groups=4), 16 * 9),
    ("conv2d_rect", lambda: nn.Conv2d(20, 256, (1, 7)), 20 * 7),
    ("conv3d", lambda: nn.Conv3d(16, 64, 3), 16 * 27),
    ("conv_transpose2d", lambda: nn.ConvTranspose2d(96, 32, 3), 32 * 9),  # fan_in from weight dim 1
    ("conv_transpose1d", lambda: nn.ConvTranspose1d(512, 64, 4), 64 * 4),
]


@pytest.mark.parametrize("make, fan_in", [pytest.param(m, f, id=i) for i, m, f in CONV_CASES])
def test_conv(dropin, make, fan_in):
    conv = make()
    assert_all_params_went_through_fastinit(conv, dropin, {"weight": "kaiming_uniform_", "bias": "uniform_"})
    bound = 1 / math.sqrt(fan_in)
    check_uniform(conv.weight, bound, "weight")
    check_uniform(conv.bias, bound, "bias")


def test_conv_channels_last_module(dropin):
    conv = nn.Conv2d(48, 64, 3).to(memory_format=torch.channels_last)
    conv.reset_parameters()  # the non-contiguous path of _ConvNd.reset_parameters
    check_uniform(conv.weight, 1 / math.sqrt(48 * 9), "weight")


@pytest.mark.parametrize("padding_idx", [None, 3])
def test_embedding(dropin, padding_idx):
    emb = nn.Embedding(1000, 64, padding_idx=padding_idx)
    assert_all_params_went_through_fastinit(emb, dropin, {"weight": "normal_"})
    w = emb.weight.detach()
    if padding_idx is not None:
        assert (w[padding_idx] == 0).all()
        w = torch.cat([w[:padding_idx], w[padding_idx + 1 :]])
    check_normal(w, 1.0, "Embedding.weight")
    assert ks_p(w, stats.norm(0.0, 1.05).cdf) < P_MIN


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_lstm(dropin, bidirectional):
    hidden = 128
    lstm = nn.LSTM(input_size=96, hidden_size=hidden, num_layers=2, bidirectional=bidirectional)
    assert_all_params_went_through_fastinit(lstm, dropin, {"": "uniform_"})
    bound = 1 / math.sqrt(hidden)
    for name, p in lstm.named_parameters():
        check_uniform(p, bound, f"LSTM.{name}")
    pooled = torch.cat([p.detach().flatten() for p in lstm.parameters()])
    check_uniform(pooled, bound, "LSTM all parameters")
    # the flat weights used by the fused kernel are the initialised tensors
    out, _ = lstm(torch.zeros(3, 2, 96))
    assert torch.isfinite(out).all()


def test_gru_and_rnn(dropin):
    for module in (nn.GRU(64, 200), nn.RNN(64, 200), nn.LSTMCell(64, 200)):
        pooled = torch.cat([p.detach().flatten() for p in module.parameters()])
        check_uniform(pooled, 1 / math.sqrt(200), type(module).__name__)
        for p in module.parameters():
            assert called_with(dropin, p) == ["uniform_"]


def _check_mha(mha: nn.MultiheadAttention, prefix: str, calls):
    e = mha.embed_dim
    if mha._qkv_same_embed_dim:
        w = mha.in_proj_weight  # (3E, E): fan_in E, fan_out 3E
        assert called_with(calls, w)[-1] == "xavier_uniform_"
        check_uniform(w, math.sqrt(6.0 / (e + 3 * e)), f"{prefix}in_proj_weight")
    else:
        for name, kdim in (("q", e), ("k", mha.kdim), ("v", mha.vdim)):
            w = getattr(mha, f"{name}_proj_weight")  # (E, kdim)
            assert called_with(calls, w)[-1] == "xavier_uniform_"
            check_uniform(w, math.sqrt(6.0 / (e + kdim)), f"{prefix}{name}_proj_weight")
    if mha.in_proj_bias is not None:
        assert called_with(calls, mha.in_proj_bias)[-1] == "constant_"
        check_const(mha.in_proj_bias, 0.0, f"{prefix}in_proj_bias")
        assert called_with(calls, mha.out_proj.bias)[-1] == "constant_"
        check_const(mha.out_proj.bias, 0.0, f"{prefix}out_proj.bias")
    # out_proj is a Linear: kaiming_uniform_(a=sqrt(5)) == U(+-1/sqrt(E))
    assert called_with(calls, mha.out_proj.weight)[-1] == "kaiming_uniform_"
    check_uniform(mha.out_proj.weight, 1 / math.sqrt(e), f"{prefix}out_proj.weight")
    if mha.bias_k is not None:
        for b in (mha.bias_k, mha.bias_v):  # (1, 1, E): fan_in = fan_out = E
            assert called_with(calls, b)[-1] == "xavier_normal_"
        # E values each: pool the biases of more such layers to test the std to 5%
        more = [nn.MultiheadAttention(e, mha.num_heads, add_bias_kv=True)
                for _ in range(-(-20_000 // (2 * e)))]
        pooled = torch.cat([b.detach().flatten() for m in [mha] + more for b in (m.bias_k, m.bias_v)])
        check_normal(pooled, math.sqrt(2.0 / (2 * e)), f"{prefix}bias_kv")


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="default"),
        pytest.param({"kdim": 128, "vdim": 64}, id="kdim_vdim"),
        pytest.param({"add_bias_kv": True}, id="bias_kv"),
        pytest.param({"bias": False}, id="no_bias"),
    ],
)
def test_multihead_attention(dropin, kwargs):
    mha = nn.MultiheadAttention(256, 8, **kwargs)
    assert_all_params_went_through_fastinit(mha, dropin, {})
    _check_mha(mha, "", dropin)


def _check_linear(linear: nn.Linear, prefix: str, calls):
    bound = 1 / math.sqrt(linear.in_features)
    assert called_with(calls, linear.weight)[-1] == "kaiming_uniform_"
    check_uniform(linear.weight, bound, f"{prefix}weight")
    check_uniform(linear.bias, bound, f"{prefix}bias")


def _check_norm(norm: nn.LayerNorm, prefix: str, calls):
    assert called_with(calls, norm.weight)[-1] == "ones_"
    assert called_with(calls, norm.bias)[-1] == "zeros_"
    check_const(norm.weight, 1.0, f"{prefix}weight")
    check_const(norm.bias, 0.0, f"{prefix}bias")


def test_transformer_encoder_layer(dropin):
    layer = nn.TransformerEncoderLayer(d_model=256, nhead=8, dim_feedforward=512)
    assert_all_params_went_through_fastinit(layer, dropin, {})
    _check_mha(layer.self_attn, "self_attn.", dropin)
    _check_linear(layer.linear1, "linear1.", dropin)
    _check_linear(layer.linear2, "linear2.", dropin)
    _check_norm(layer.norm1, "norm1.", dropin)
    _check_norm(layer.norm2, "norm2.", dropin)
    out = layer(torch.randn(5, 2, 256))
    assert torch.isfinite(out).all()


def test_transformer_decoder_layer(dropin):
    layer = nn.TransformerDecoderLayer(d_model=256, nhead=8, dim_feedforward=512)
    assert_all_params_went_through_fastinit(layer, dropin, {})
    _check_mha(layer.self_attn, "self_attn.", dropin)
    _check_mha(layer.multihead_attn, "multihead_attn.", dropin)
    _check_linear(layer.linear1, "linear1.", dropin)
    _check_linear(layer.linear2, "linear2.", dropin)
    for i in (1, 2, 3):
        _check_norm(getattr(layer, f"norm{i}"), f"norm{i}.", dropin)
    out = layer(torch.randn(5, 2, 256), torch.randn(7, 2, 256))
    assert torch.isfinite(out).all()


def test_transformer_resets_matrices_with_xavier(dropin):
    """nn.Transformer re-initialises every matrix with xavier_uniform_ (imported by name in
    transformer.py): the patch must reach it too."""
    model = nn.Transformer(
        d_model=128, nhead=4, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=256,
        batch_first=True,
    )
    # (the layers are deep copies of a prototype, so only the re-initialised matrices are the
    # very tensors fastinit saw; the copied biases keep the prototype's zeros / uniform values)
    matrices = [(name, p) for name, p in model.named_parameters() if p.dim() > 1]
    assert len(matrices) >= 10
    for name, p in matrices:
        assert called_with(dropin, p) == ["xavier_uniform_"], name
        fan_out, fan_in = p.shape
        check_uniform(p, math.sqrt(6.0 / (fan_in + fan_out)), name)
    for name, p in model.named_parameters():
        if name.endswith("in_proj_bias") or name.endswith("out_proj.bias"):
            check_const(p, 0.0, name)


def test_layer_norm_and_batch_norm(dropin):
    ln = nn.LayerNorm(64)
    bn = nn.BatchNorm2d(32)
    for norm in (ln, bn):
        check_const(norm.weight, 1.0, "weight")
        check_const(norm.bias, 0.0, "bias")
        assert called_with(dropin, norm.weight) == ["ones_"]
        assert called_with(dropin, norm.bias) == ["zeros_"]


def test_module_init_is_reproducible_under_manual_seed(dropin):
    def build():
        torch.manual_seed(1234)
        return nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128)

    a, b = build(), build()
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(pa, pb), name


def test_meta_device_modules_stay_meta(dropin):
    with torch.device("meta"):
        layer = nn.TransformerEncoderLayer(d_model=64, nhead=4, dim_feedforward=128)
        lstm = nn.LSTM(16, 32)
        emb = nn.Embedding(100, 16, padding_idx=0)
    for module in (layer, lstm, emb):
        assert all(p.is_meta for p in module.parameters())
        assert_all_params_went_through_fastinit(module, dropin, {})  # and were no-ops


def test_module_bf16_parameters(dropin):
    torch.set_default_dtype(torch.float32)
    layer = nn.Linear(512, 256, dtype=torch.bfloat16)
    w = layer.weight.detach().double().numpy().ravel()
    bound = 1 / math.sqrt(512)
    assert np.abs(w).max() <= bound * (1 + 2**-8)
    assert abs(w.std() - bound / math.sqrt(3)) < 0.02 * bound / math.sqrt(3)


@pytest.mark.parametrize("scale", [1 / 1.05, 1.05])
def test_check_normal_rejects_a_5_percent_wrong_std(scale):
    """Negative control for check_normal: normal samples with a std 5% off fail it."""
    samples = torch.randn(20_000, generator=torch.Generator().manual_seed(1)) * scale
    check_normal(samples / scale, 1.0, "control")  # the right std passes
    with pytest.raises(AssertionError):
        check_normal(samples, 1.0, "control")
