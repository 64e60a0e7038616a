"""`with fastinit.fused():` -- recorded init calls run in one pass at exit, bitwise equal to the
same calls made one by one.

The one-by-one reference runs the same code with torch.nn.init replaced by fastinit's functions
(in torch.nn.init and in every torch.nn module that imported a function by name, as
activation.py and transformer.py do), from the same torch seed. Every comparison is bitwise,
and the torch generator must end in the same state (each call draws its seed when it is made).
"""
from __future__ import annotations

import contextlib
import importlib
import math
import sys

import pytest
import torch
from torch import nn

import fastinit
from fastinit.errors import InitValueError

fused_module = importlib.import_module("fastinit.fused")  # (fastinit.fused is the function)


def _init_names():
    return [name for name in torch.nn.init.__all__ if hasattr(fastinit, name)]


def _by_name_references():
    """(module, name, function) for every torch.nn.init function bound in a torch.nn module."""
    originals = {name: getattr(torch.nn.init, name) for name in torch.nn.init.__all__}
    out = []
    for module_name, module in list(sys.modules.items()):
        if module is None or not module_name.startswith("torch.nn"):
            continue
        for name, fn in originals.items():
            if getattr(module, name, None) is fn:
                out.append((module, name, fn))
    return out


BY_NAME = _by_name_references()  # taken at import, with torch's own functions in place


@contextlib.contextmanager
def patched_nn_init():
    """torch.nn.init -> fastinit, everywhere torch's layers look it up; undone on exit."""
    saved = [(module, name, getattr(module, name)) for module, name, _ in BY_NAME]
    try:
        for module, name, _ in BY_NAME:
            if hasattr(fastinit, name):
                setattr(module, name, getattr(fastinit, name))
        yield
    finally:
        for module, name, fn in saved:
            setattr(module, name, fn)


def assert_torch_init_is_torchs():
    for module, name, fn in BY_NAME:
        assert getattr(module, name) is fn, f"{module.__name__}.{name} not restored"
    assert fused_module.active_recorder() is None


def state(module: nn.Module) -> dict[str, torch.Tensor]:
    out = dict(module.named_parameters())
    out.update(dict(module.named_buffers()))
    return {k: v.detach().clone() for k, v in out.items()}


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        x, y = a[name], b[name]
        if x.is_floating_point():
            ints = {8: torch.int64, 4: torch.int32, 2: torch.int16}[x.element_size()]
            x, y = x.view(ints), y.view(ints)
        assert torch.equal(x, y), f"{name} differs"


def one_by_one_and_fused(fn, seed: int = 0):
    """fn() run one by one (patched torch.nn.init) and inside fused(); both results, the
    recorder, and a check that the generator ended in the same state."""
    torch.manual_seed(seed)
    with patched_nn_init():
        ref = fn()
    ref_rng = torch.get_rng_state()
    assert_torch_init_is_torchs()
    torch.manual_seed(seed)
    with fastinit.fused() as recorder:
        got = fn()  # (a module: its tensors are read after the block, once the fills ran)
    assert torch.equal(torch.get_rng_state(), ref_rng), "the calls drew a different number of seeds"
    assert_torch_init_is_torchs()
    if isinstance(got, nn.Module):
        ref, got = state(ref), state(got)
    return ref, got, recorder


# ----------------------------------------------------------------------------------------------
# weights_init with torch.nn.init calls
# ----------------------------------------------------------------------------------------------


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 32, 3)
        self.convt = nn.ConvTranspose2d(32, 16, 2)
        self.bn = nn.BatchNorm2d(16)
        self.emb = nn.Embedding(100, 24)
        self.lstm = nn.LSTM(24, 32)
        self.fc1 = nn.Linear(32, 64)
        self.fc2 = nn.Linear(64, 64)
        self.fc3 = nn.Linear(64, 10, bias=False)
        self.conv1d = nn.Conv1d(8, 8, 3)
        self.ln = nn.LayerNorm(64).to(torch.bfloat16)
        self.head = nn.Linear(64, 7).double()


def weights_init(m):
    init = torch.nn.init
    if isinstance(m, nn.Conv2d):
        init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        init.zeros_(m.bias)
    elif isinstance(m, nn.ConvTranspose2d):
        init.xavier_normal_(m.weight, gain=init.calculate_gain("tanh"))
        init.uniform_(m.bias, -0.1, 0.1)
    elif isinstance(m, nn.BatchNorm2d):
        init.normal_(m.weight, 1.0, 0.02)
        init.constant_(m.bias, 0.0)
    elif isinstance(m, nn.Embedding):
        init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
    elif isinstance(m, nn.LSTM):
        for name, p in m.named_parameters():
            if "weight_hh" in name:
                init.orthogonal_(p)
            elif "weight" in name:
                init.xavier_uniform_(p)
            else:
                init.zeros_(p)
    elif isinstance(m, nn.Conv1d):
        init.dirac_(m.weight)
        init.ones_(m.bias)
    elif isinstance(m, nn.Linear):
        if m.out_features == 10:
            init.sparse_(m.weight, 0.2, std=0.05)
        elif m.out_features == 7:
            init.kaiming_uniform_(m.weight, a=math.sqrt(5))
            init.normal_(m.bias)
        elif m.in_features == m.out_features:
            init.eye_(m.weight)
            init.uniform_(m.bias, 0.0, 0.5)
        else:
            init.kaiming_uniform_(m.weight, nonlinearity="relu")
            init.uniform_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        init.normal_(m.weight, 1.0, 0.1)
        init.constant_(m.bias, -0.5)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape", [(128, 32), (30, 70)])
def test_torchs_orthogonal_inside_fused_equals_fastinits_at_any_thread_count(threads, shape):
    # torch's orthogonal_ runs its own QR inside the block: on one thread, as fastinit's does
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        torch.manual_seed(4)
        ref = fastinit.orthogonal_(torch.empty(shape), gain=1.5)
        torch.manual_seed(4)
        with fastinit.fused():
            got = torch.nn.init.orthogonal_(torch.empty(shape), gain=1.5)
        assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(previous)
    assert torch.equal(ref, got)


def test_model_apply_weights_init_is_bitwise_equal():
    torch.manual_seed(123)
    base = Net()

    def run():
        model = Net()
        model.load_state_dict(base.state_dict())
        model.apply(weights_init)
        return model

    ref, got, recorder = one_by_one_and_fused(run, seed=5)
    assert_bitwise_equal(ref, got)
    assert recorder.recorded >= 20
    # and the values are not what Net() had
    assert not torch.equal(got["fc1.weight"], base.fc1.weight)


def test_direct_fastinit_calls_are_bitwise_equal():
    shapes = [(64, 33), (7,), (5, 6, 3, 3), (1000,), (128, 64)]
    gen = torch.Generator().manual_seed(99)

    def run():
        ts = [torch.full(s, float("nan")) for s in shapes]
        half = torch.full((300, 17), float("nan"), dtype=torch.float16)
        gen.manual_seed(99)
        fastinit.uniform_(ts[0], -2.0, 3.0)
        fastinit.normal_(ts[1], 0.5, 2.0, generator=gen)
        fastinit.kaiming_normal_(ts[2], mode="fan_out", seed=7)
        fastinit.trunc_normal_(ts[3], 0.0, 1.0, -0.5, 2.5)
        fastinit.lecun_normal_(ts[4])
        fastinit.variance_scaling_(half, 2.0, "fan_avg", "uniform", generator=gen)
        fastinit.constant_(ts[0][:3], 1.5)  # part of a pending tensor, after it
        return {str(i): t for i, t in enumerate(ts + [half])}

    ref, got, _ = one_by_one_and_fused(run, seed=1)
    assert_bitwise_equal(ref, got)
    assert (got["0"][:3] == 1.5).all() and torch.isfinite(got["0"]).all()


def test_errors_are_raised_at_the_call_inside_the_block():
    w = torch.empty(4, 4)
    with fastinit.fused() as recorder:
        fastinit.normal_(w, seed=0)
        with pytest.raises(InitValueError):
            fastinit.uniform_(w, 2.0, 1.0)
        with pytest.raises(ValueError):
            torch.nn.init.xavier_uniform_(torch.empty(5))
        assert len(recorder.pending) == 1
    expected = fastinit.normal_(torch.empty(4, 4), seed=0)
    assert torch.equal(w, expected)


# ----------------------------------------------------------------------------------------------
# nothing is patched: torch.nn.init and torch.nn's modules keep torch's functions, also on errors
# ----------------------------------------------------------------------------------------------


def test_nothing_is_patched_inside_the_block():
    with fastinit.fused() as recorder:
        assert_torch_init_is_torchs_inside()
        assert fused_module.active_recorder() is recorder
    assert_torch_init_is_torchs()


def assert_torch_init_is_torchs_inside():
    for module, name, fn in BY_NAME:
        assert getattr(module, name) is fn, f"{module.__name__}.{name} was replaced"


def test_torch_nn_init_restored_when_the_block_raises():
    w = torch.empty(8, 8)
    with pytest.raises(RuntimeError, match="boom"):
        with fastinit.fused():
            torch.nn.init.normal_(w)
            nn.MultiheadAttention(8, 2)
            raise RuntimeError("boom")
    assert_torch_init_is_torchs()
    # a later block works as usual
    with fastinit.fused():
        fastinit.ones_(w)
    assert (w == 1).all()


def test_torch_nn_init_restored_when_a_call_fails():
    with pytest.raises(ValueError):
        with fastinit.fused():
            torch.nn.init.kaiming_uniform_(torch.empty(3, 3), mode="fan_avg")
    assert_torch_init_is_torchs()


# ----------------------------------------------------------------------------------------------
# module constructors inside the block
# ----------------------------------------------------------------------------------------------


CONSTRUCTORS = {
    "Linear": lambda: nn.Linear(64, 96),
    "Conv2d": lambda: nn.Conv2d(8, 16, 3),
    "Conv2d_channels_last": lambda: nn.Conv2d(8, 16, 3).to(memory_format=torch.channels_last),
    "Embedding_padding": lambda: nn.Embedding(50, 16, padding_idx=4),
    "MultiheadAttention": lambda: nn.MultiheadAttention(32, 4),
    "MultiheadAttention_bias_kv_kdim": lambda: nn.MultiheadAttention(32, 4, add_bias_kv=True, kdim=16,
                                                                     vdim=24),
    "LSTM": lambda: nn.LSTM(16, 32, num_layers=2, bidirectional=True),
    "TransformerEncoderLayer": lambda: nn.TransformerEncoderLayer(32, 4, 64),
    "Transformer": lambda: nn.Transformer(32, 4, 1, 1, 64, batch_first=True),
    "Sequential": lambda: nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                                        nn.Flatten(), nn.Linear(8, 4), nn.PReLU(), nn.GRUCell(4, 4)),
}


@pytest.mark.parametrize("ctor_id", list(CONSTRUCTORS))
def test_module_constructor_inside_fused_is_bitwise_equal(ctor_id):
    make = CONSTRUCTORS[ctor_id]
    ref, got, recorder = one_by_one_and_fused(make, seed=11)
    assert_bitwise_equal(ref, got)
    assert recorder.recorded > 0
    if ctor_id == "Embedding_padding":
        assert (got["weight"][4] == 0).all() and (got["weight"][3] != 0).all()


def test_multihead_attention_inside_fused_goes_through_fastinit():
    """MultiheadAttention calls xavier_uniform_ / constant_ / xavier_normal_ imported by name
    into torch.nn.modules.activation: those calls are recorded too, and out_proj.bias, set by
    its Linear and then zeroed, is written once."""
    with fastinit.fused() as recorder:
        mha = nn.MultiheadAttention(32, 4, add_bias_kv=True)
        pending = {id(p.tensor) for p in recorder.pending}
        # out_proj (a Linear): weight, bias; then in_proj_weight, in_proj_bias, out_proj.bias
        # again (which drops its first fill), bias_k, bias_v
        assert recorder.recorded == 7 and recorder.dropped == 1 and recorder.flushes == 0
    for name in ("out_proj.weight", "out_proj.bias", "in_proj_weight", "bias_k", "bias_v"):
        assert id(mha.get_parameter(name)) in pending, f"{name} was not recorded"
    assert (mha.out_proj.bias == 0).all() and (mha.in_proj_bias == 0).all()


def test_meta_device_constructors_inside_fused():
    with fastinit.fused() as recorder:
        with torch.device("meta"):
            m = nn.Sequential(nn.Linear(1024, 1024), nn.Embedding(10, 4, padding_idx=0))
    assert all(p.is_meta for p in m.parameters())
    assert recorder.pending == [] and recorder.flushes == 0


# ----------------------------------------------------------------------------------------------
# flush on access
# ----------------------------------------------------------------------------------------------


def _reference_normal(shape, seed=3):
    return fastinit.normal_(torch.empty(shape), seed=seed)


@pytest.mark.parametrize("access", [
    "mul_", "data_mul_", "sum", "clone", "index_item", "numpy", "add", "matmul", "copy_from",
    "view_made_before", "tolist", "eq",
])
def test_flush_on_access_inside_the_block(access):
    ref = _reference_normal((16, 8))
    out = {}
    with fastinit.fused() as recorder:
        w = torch.empty(16, 8)
        early_view = w[2:5]
        fastinit.normal_(w, seed=3)
        assert recorder.pending, "the fill should be pending"
        with torch.no_grad():
            if access == "mul_":
                w.mul_(2)
            elif access == "data_mul_":
                w.data.mul_(2)
            elif access == "sum":
                out["v"] = w.sum()
            elif access == "clone":
                out["v"] = w.clone()
            elif access == "index_item":
                out["v"] = w[3, 4].item()
            elif access == "numpy":
                out["v"] = w.numpy().copy()
            elif access == "add":
                out["v"] = torch.add(w, 1.0)
            elif access == "matmul":
                out["v"] = torch.ones(1, 16) @ w
            elif access == "copy_from":
                out["v"] = torch.empty(16, 8).copy_(w)
            elif access == "view_made_before":
                out["v"] = early_view.clone()
            elif access == "tolist":
                out["v"] = w.tolist()
            elif access == "eq":
                out["v"] = bool((w == 0).any())
        assert recorder.flushes == 1
    if access in ("mul_", "data_mul_"):
        assert torch.equal(w, ref * 2)
        return
    assert torch.equal(w, ref)
    expected = {
        "sum": ref.sum(), "clone": ref, "index_item": ref[3, 4].item(), "numpy": ref.numpy(),
        "add": ref + 1.0, "matmul": torch.ones(1, 16) @ ref, "copy_from": ref,
        "view_made_before": ref[2:5], "tolist": ref.tolist(), "eq": bool((ref == 0).any()),
    }[access]
    if isinstance(expected, torch.Tensor):
        assert torch.equal(out["v"], expected)
    elif access == "numpy":
        assert (out["v"] == expected).all()
    else:
        assert out["v"] == expected


def test_metadata_reads_do_not_flush():
    with fastinit.fused() as recorder:
        w = torch.empty(16, 8)
        fastinit.normal_(w, seed=3)
        _ = (w.shape, w.size(0), w.dim(), w.numel(), w.dtype, w.device, w.stride(), w.is_contiguous(),
             w.requires_grad, len(w))
        torch.nn.init._calculate_fan_in_and_fan_out(w)
        assert recorder.flushes == 0 and len(recorder.pending) == 1
    assert torch.equal(w, _reference_normal((16, 8)))


def test_unrelated_ops_do_not_flush():
    with fastinit.fused() as recorder:
        w = torch.empty(16, 8)
        fastinit.normal_(w, seed=3)
        x = torch.arange(16.0).reshape(4, 4) @ torch.eye(4)
        y = torch.empty(16, 8).fill_(2.0)
        z = w.view(8, 16).detach().data  # aliases are tracked, not flushed
        assert recorder.flushes == 0
    assert torch.equal(x, torch.arange(16.0).reshape(4, 4)) and (y == 2).all()
    assert torch.equal(z.view(16, 8), _reference_normal((16, 8)))


def test_scale_after_init_inside_module_code():
    """The pattern `init then immediately rescale` (e.g. GPT-2's residual projections)."""
    def run():
        lin = nn.Linear(64, 64)
        torch.nn.init.normal_(lin.weight, std=0.02)
        with torch.no_grad():
            lin.weight.mul_(1 / math.sqrt(2 * 4))
            lin.bias.zero_()
        return lin

    ref, got, _ = one_by_one_and_fused(run, seed=2)
    assert_bitwise_equal(ref, got)
    assert (got["bias"] == 0).all()


# ----------------------------------------------------------------------------------------------
# the same tensor twice, nesting, number of flushes
# ----------------------------------------------------------------------------------------------


def test_tensor_initialised_twice_ends_with_the_second_init():
    with fastinit.fused():
        a = torch.empty(32, 32)
        b = torch.empty(32, 32)
        fastinit.normal_(a, seed=1)
        fastinit.uniform_(a, -1, 1, seed=2)
        fastinit.uniform_(b, -1, 1, seed=2)
        fastinit.constant_(b, 0.75)
    assert torch.equal(a, fastinit.uniform_(torch.empty(32, 32), -1, 1, seed=2))
    assert (b == 0.75).all()


def test_part_of_a_pending_tensor_initialised_after_it():
    with fastinit.fused():
        a = torch.empty(32, 32)
        fastinit.normal_(a, seed=1)
        fastinit.zeros_(a[5])
        fastinit.uniform_(a[:, 7], seed=4)
    ref = fastinit.normal_(torch.empty(32, 32), seed=1)
    ref[5] = 0
    fastinit.uniform_(ref[:, 7], seed=4)
    assert torch.equal(a, ref)


def test_nested_blocks_join_the_outer_one():
    a, b = torch.empty(64), torch.empty(64)
    with fastinit.fused() as outer:
        fastinit.normal_(a, seed=1)
        with fastinit.fused() as inner:
            assert inner is outer
            fastinit.normal_(b, seed=2)
        # the inner block's exit does not flush
        assert len(outer.pending) == 2 and outer.flushes == 0
    assert outer.flushes == 1
    assert torch.equal(a, fastinit.normal_(torch.empty(64), seed=1))
    assert torch.equal(b, fastinit.normal_(torch.empty(64), seed=2))
    assert_torch_init_is_torchs()


def test_nested_block_raising_restores_everything():
    with pytest.raises(KeyError):
        with fastinit.fused():
            with fastinit.fused():
                raise KeyError("x")
    assert_torch_init_is_torchs()


def test_apply_with_only_init_calls_flushes_once():
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(64, 64), nn.LayerNorm(64)) for _ in range(8)],
                          nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8))

    def init(m):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.constant_(m.bias, 0.0)

    with fastinit.fused() as recorder:
        model.apply(init)
        assert recorder.flushes == 0
    assert recorder.flushes == 1
    assert recorder.recorded == 2 * 9 + 2 * 9


def test_constructing_a_model_flushes_rarely():
    """A model built inside the block: its layers' inits are recorded and run in one pass
    (Embedding's zero padding row is a second phase of it)."""
    with fastinit.fused() as recorder:
        model = nn.Sequential(*[nn.Linear(32, 32) for _ in range(10)], nn.LayerNorm(32),
                              nn.LSTM(32, 32))
    assert recorder.flushes == 1
    assert recorder.recorded == 2 * 10 + 2 + 4
    with fastinit.fused() as recorder:
        model = nn.Sequential(nn.Linear(32, 32), nn.Embedding(10, 32, padding_idx=0),
                              nn.Linear(32, 32))
    assert recorder.flushes == 1
    assert (model[1].weight[0] == 0).all()
