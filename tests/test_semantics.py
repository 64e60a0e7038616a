"""fastinit behaves as torch.nn.init wherever PyTorch goes: fake and functional tensors,
torch.compile, ambient devices, layers with their own reset_parameters, complex tensors, freed
storage, negative and conjugate views, degenerate truncation intervals, other layouts, argument
types and the torch range claimed.

Probes that could crash the interpreter (fake tensors, freed storage) run in a subprocess.
"""
from __future__ import annotations

import math
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

import fastinit
from fastinit import sharding
from fastinit.backends import execute
from fastinit.contract import Distribution, normal_params
from fastinit.plan import make_fill
from test_torch_parity import ALL_CALLS, SEEDED

REPO = Path(__file__).resolve().parents[1]


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=300, cwd=REPO)


# ----------------------------------------------------------------------------------------------
# Fake and functional tensors
# ----------------------------------------------------------------------------------------------


def test_fake_tensors_are_untouched_no_ops_for_every_public_function():
    """Under FakeTensorMode every function validates, writes nothing, draws no seed."""
    proc = run_python(f"""
        import torch, fastinit
        from torch._subclasses.fake_tensor import FakeTensorMode
        from fastinit.backends import cpu, reference
        calls = {ALL_CALLS!r}
        seeded = {SEEDED!r}
        ran = []
        cpu.run = reference.run = lambda fills, *a: ran.append(len(fills))
        state = torch.get_rng_state()
        for name, (shape, args) in calls.items():
            for kwargs in ({{}}, {{"seed": 3}}) if name in seeded else ({{}},):
                with FakeTensorMode():
                    t = torch.empty(shape)
                    assert getattr(fastinit, name)(t, *args, **kwargs) is t
                    assert t.shape == shape
        with FakeTensorMode():  # validation still runs on fake tensors
            try:
                fastinit.normal_(torch.empty(3), std=-1.0)
                raise SystemExit("no error")
            except RuntimeError:
                pass
        assert ran == [], ran
        assert torch.equal(torch.get_rng_state(), state), "a seed was drawn"
        torch.manual_seed(4)
        with FakeTensorMode():  # whole-model init: no-op writes, a real seed as for meta
            model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
            seeds = [fastinit.reset_parameters(model).seed,
                     fastinit.init_module(model, {{"*": fastinit.spec.normal()}}).seed]
        torch.manual_seed(4)
        assert seeds == [int(torch.randint(0, 2**63 - 1, (1,))) for _ in range(2)], seeds
        assert ran == [], ran
        print("done")
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().endswith("done")


def test_functional_tensor_is_a_no_op_and_its_base_untouched():
    base = torch.full((4, 5), float("nan"))
    functional = torch._to_functional_tensor(base)
    state = torch.get_rng_state()
    fastinit.normal_(functional)
    fastinit.constant_(functional, 1.0)
    assert base.isnan().all()
    assert torch.equal(torch.get_rng_state(), state)


# ----------------------------------------------------------------------------------------------
# torch.compile and torch.library
# ----------------------------------------------------------------------------------------------


UNUSED_GENERATOR = torch.Generator()  # opaque objects must exist before compile

# Every public drop-in function as a compiled program calls it, keywords mixed with positional
# arguments: name -> (shape, call). Each call is traced as its custom op.
COMPILED_CALLS = {
    "uniform_": ((5, 7), lambda w: fastinit.uniform_(w, -1.0, 2.0, seed=2**64 - 1)),
    "normal_": ((5, 7), lambda w: fastinit.normal_(w, 0.5, 2.0, seed=3)),
    "trunc_normal_": ((5, 7), lambda w: fastinit.trunc_normal_(w, std=0.5, a=-0.75, seed=4)),
    "trunc_normal_tf_": ((5, 7), lambda w: fastinit.trunc_normal_tf_(w, 0.1, 0.02, b=1.5, seed=9)),
    "constant_": ((5, 7), lambda w: fastinit.constant_(w, 0.25)),
    "ones_": ((5, 7), fastinit.ones_),
    "zeros_": ((5, 7), fastinit.zeros_),
    "eye_": ((5, 7), fastinit.eye_),
    "dirac_": ((6, 3, 3, 3), lambda w: fastinit.dirac_(w, groups=2)),
    "xavier_uniform_": ((5, 7), lambda w: fastinit.xavier_uniform_(
        w, seed=7, generator=UNUSED_GENERATOR)),  # seed= wins
    "xavier_normal_": ((5, 7), lambda w: fastinit.xavier_normal_(w, 2.0, seed=8)),
    "kaiming_uniform_": ((5, 7), lambda w: fastinit.kaiming_uniform_(w, a=5**0.5, seed=5)),
    "kaiming_normal_": ((5, 7, 2), lambda w: fastinit.kaiming_normal_(
        w, mode="fan_out", nonlinearity="relu", seed=6)),
    "orthogonal_": ((5, 7), lambda w: fastinit.orthogonal_(w, gain=2.0, seed=10)),
    "sparse_": ((7, 5), lambda w: fastinit.sparse_(w, 0.5, std=0.1, seed=11)),
    "lecun_uniform_": ((5, 7), lambda w: fastinit.lecun_uniform_(w, seed=12)),
    "lecun_normal_": ((5, 7), lambda w: fastinit.lecun_normal_(w, UNUSED_GENERATOR, seed=13)),
    "variance_scaling_": ((5, 7), lambda w: fastinit.variance_scaling_(
        w, 2.0, mode="fan_avg", distribution="uniform", seed=14)),
}


def _poisoned_inputs(device="cpu"):
    return {name: torch.full(shape, float("nan"), device=device)
            for name, (shape, _) in COMPILED_CALLS.items()}


def _compiled_calls(ws):
    for name, (_, call) in COMPILED_CALLS.items():
        call(ws[name])
    return ws


def test_compiled_calls_cover_every_public_function():
    assert set(COMPILED_CALLS) == set(ALL_CALLS)


@pytest.mark.slow
def test_compile_fullgraph_equals_eager_bitwise_on_cpu_and_reference():
    torch._dynamo.reset()
    compiled_fn = torch.compile(_compiled_calls, fullgraph=True)  # inductor, CPU
    for backend, runs_on in (("auto", "cpu"), ("reference", "reference")):
        fastinit.set_backend(backend)  # the op runs the backend selected when it runs
        eager = _compiled_calls(_poisoned_inputs())
        compiled = compiled_fn(_poisoned_inputs())
        assert fastinit.backend_info()["last_run"]["cpu"] == runs_on
        for name in COMPILED_CALLS:
            assert not compiled[name].isnan().any(), (backend, name)
            assert torch.equal(eager[name], compiled[name]), (backend, name)


def _compile_and_run(call, tensor: torch.Tensor, fullgraph: bool) -> list:
    """Run `call(tensor)` compiled by a backend that records its graphs; return the graphs'
    operators."""
    graphs = []

    def recording_backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    torch._dynamo.reset()
    torch.compile(call, fullgraph=fullgraph, backend=recording_backend)(tensor)
    return [node.target for graph in graphs for node in graph.graph.nodes
            if node.op in ("call_function", "call_method")]


@pytest.mark.parametrize("name", list(COMPILED_CALLS))
def test_compiled_call_is_one_custom_op_without_graph_break(name):
    shape, call = COMPILED_CALLS[name]
    tensor = torch.full(shape, float("nan"))
    ops = _compile_and_run(call, tensor, fullgraph=True)  # a graph break would raise
    assert ops == [getattr(torch.ops.fastinit, name.rstrip("_")).default]
    assert not tensor.isnan().any()


@pytest.mark.parametrize("name", SEEDED)
def test_compiled_call_without_seed_breaks_the_graph_and_draws_as_eager(name):
    shape, args = ALL_CALLS[name]
    fn = getattr(fastinit, name)
    torch._dynamo.reset()
    with pytest.raises(torch._dynamo.exc.Unsupported, match="torch.compiler.disable"):
        torch.compile(lambda w: fn(w, *args), fullgraph=True, backend="eager")(torch.empty(shape))
    torch.manual_seed(11)
    compiled = torch.full(shape, float("nan"))
    ops = _compile_and_run(lambda w: fn(w, *args).mul(1), compiled, fullgraph=False)
    after_compiled = torch.get_rng_state()
    assert ops == ["mul"]  # the fill runs outside the graph
    torch.manual_seed(11)
    eager = fn(torch.full(shape, float("nan")), *args)
    assert not compiled.isnan().any() and torch.equal(compiled, eager)
    assert torch.equal(after_compiled, torch.get_rng_state())


def test_compiled_call_with_an_argument_no_op_takes_breaks_the_graph():
    torch._dynamo.reset()
    with pytest.raises(torch._dynamo.exc.Unsupported):  # a callable nonlinearity
        torch.compile(lambda w: fastinit.kaiming_normal_(w, nonlinearity=torch.relu, seed=1),
                      fullgraph=True, backend="eager")(torch.empty(3, 4))
    big = 2**60 + 1  # an int64 fill value a float would round
    compiled = torch.zeros(3, dtype=torch.int64)
    ops = _compile_and_run(lambda w: fastinit.constant_(w, big).mul(1), compiled, fullgraph=False)
    assert ops == ["mul"] and compiled.tolist() == [big] * 3


@pytest.mark.parametrize("call", [
    lambda w: fastinit.normal_(w, stdd=2.0, seed=1),
    lambda w: fastinit.normal_(w, 0.0, 1.0, None, 5, seed=1),
    lambda w: fastinit.uniform_(w, 0.0, a=1.0, seed=1),
    lambda w: fastinit.ones_(w, 2.0),
], ids=["unknown keyword", "too many positional", "twice", "ones_ with a value"])
def test_compiled_call_that_does_not_bind_raises_the_eager_type_error(call):
    eager_target = torch.full((3, 4), float("nan"))
    with pytest.raises(TypeError) as eager:
        call(eager_target)
    torch._dynamo.reset()
    compiled_target = torch.full((3, 4), float("nan"))
    with pytest.raises(TypeError) as compiled:  # a graph break: the call runs eagerly
        torch.compile(call, backend="eager")(compiled_target)
    assert str(compiled.value) == str(eager.value)
    assert eager_target.isnan().all() and compiled_target.isnan().all()


@pytest.mark.parametrize("name", list(ALL_CALLS))
def test_custom_op_passes_torch_opcheck(name):
    """torch's own checks of an op: the mutation its schema declares, its fake implementation,
    and AOT dispatch (dynamic shapes)."""
    shape, args = ALL_CALLS[name]
    op = getattr(torch.ops.fastinit, name.rstrip("_")).default
    results = torch.library.opcheck(
        op, (torch.full(shape, float("nan")), *args), {"seed": 3} if name in SEEDED else {},
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"))
    assert set(results.values()) == {"SUCCESS"}, results


@pytest.mark.parametrize("name", list(ALL_CALLS))
def test_custom_op_on_fake_tensor_writes_nothing(name):
    from torch._subclasses.fake_tensor import FakeTensorMode
    from fastinit.backends import cpu, reference

    shape, args = ALL_CALLS[name]
    op = getattr(torch.ops.fastinit, name.rstrip("_"))
    schema = op.default._schema
    assert schema.arguments[0].alias_info.is_write and schema.returns == []
    real = torch.full(shape, float("nan"))
    ran, state = [], torch.get_rng_state()
    runs = cpu.run, reference.run
    cpu.run = reference.run = lambda fills, *a: ran.append(len(fills))
    try:
        with FakeTensorMode() as mode:
            fake = mode.from_tensor(real)
            assert op(fake, *args, **({"seed": 3} if name in SEEDED else {})) is None
    finally:
        cpu.run, reference.run = runs
    assert fake.shape == shape and real.isnan().all()
    assert ran == [] and torch.equal(torch.get_rng_state(), state)


# (call on a view, base shape, base dtype): a negative or conjugate view reads the values a plain
# tensor gets, compiled as in eager (the ops' Negative and Conjugate kernels)
MATH_BIT_VIEW_CALLS = [
    (lambda w: fastinit.uniform_(w._neg_view(), 2.0, 3.0, seed=2), (6, 5), torch.float32),
    (lambda w: fastinit.uniform_(w._neg_view(), 2.0, 3.0, seed=2), (6, 5), torch.bfloat16),
    (lambda w: fastinit.orthogonal_(w._neg_view(), seed=3), (6, 5), torch.float32),
    (lambda w: fastinit.constant_(w._neg_view(), 0.5), (6, 5), torch.float32),
    (lambda z: fastinit.normal_(z.conj(), 1.0, 2.0, seed=4), (6, 5), torch.complex64),
    (lambda z: fastinit.uniform_(z.conj().imag, 2.0, 3.0, seed=5), (6, 5), torch.complex64),
]


@pytest.mark.parametrize("call, shape, dtype", MATH_BIT_VIEW_CALLS)
def test_compiled_negative_and_conjugate_views_equal_eager(call, shape, dtype):
    eager_base = torch.full(shape, float("nan"), dtype=dtype)
    call(eager_base)
    torch._dynamo.reset()
    compiled_base = torch.full(shape, float("nan"), dtype=dtype)
    view = torch.compile(call, fullgraph=True, backend="aot_eager")(compiled_base)
    assert not view.resolve_neg().resolve_conj().isnan().any()
    torch.testing.assert_close(compiled_base, eager_base, rtol=0, atol=0, equal_nan=True)


def test_custom_op_fills_negative_and_conjugate_views_as_the_function_does():
    neg = torch.full((6, 5), float("nan"))._neg_view()
    torch.ops.fastinit.trunc_normal(neg, 0.0, 1.0, -1.0, 1.5, seed=6)
    assert neg.is_neg() and torch.equal(neg, fastinit.trunc_normal_(
        torch.empty(6, 5), 0.0, 1.0, -1.0, 1.5, seed=6))
    conj = torch.full((6, 5), float("nan"), dtype=torch.complex128).conj()
    torch.ops.fastinit.uniform(conj, -1.0, 1.0, seed=7)
    assert conj.is_conj() and torch.equal(conj, fastinit.uniform_(
        torch.empty(6, 5, dtype=torch.complex128), -1.0, 1.0, seed=7))


# (call, shape, the error an eager call raises): under compile the same error, nothing written
COMPILED_ARGUMENT_ERRORS = [
    (lambda w: fastinit.orthogonal_(w, seed=1), (5,), ValueError),
    (lambda w: fastinit.dirac_(w, groups=4), (6, 3, 3, 3), ValueError),
    (lambda w: fastinit.variance_scaling_(w, 1.0, "fan_bad", seed=2), (6, 5), ValueError),
    (lambda w: fastinit.sparse_(w, 1.5, seed=2), (6, 5), fastinit.InitValueError),
    (lambda w: fastinit.trunc_normal_tf_(w, std=0.0, seed=2), (6, 5), fastinit.ZeroStdError),
    (lambda w: fastinit.eye_(w), (2, 3, 4), ValueError),
    (lambda w: fastinit.normal_(w.to(torch.int32), seed=2), (6, 5), fastinit.UnsupportedDtypeError),
]


@pytest.mark.parametrize("call, shape, error", COMPILED_ARGUMENT_ERRORS)
def test_compiled_argument_error_is_the_eager_error_and_writes_nothing(call, shape, error):
    eager_target = torch.full(shape, float("nan"))
    with pytest.raises(error) as eager:
        call(eager_target)
    torch._dynamo.reset()
    compiled_target = torch.full(shape, float("nan"))
    with pytest.raises(error) as compiled:
        torch.compile(call, fullgraph=True, backend="aot_eager")(compiled_target)
    assert type(compiled.value) is type(eager.value)
    assert str(compiled.value) == str(eager.value)
    assert eager_target.isnan().all() and compiled_target.isnan().all()


def test_compiled_bad_seed_names_the_eager_error():
    call = lambda w: fastinit.normal_(w, seed=-1)  # noqa: E731
    with pytest.raises(ValueError, match=r"seed must be in \[0, 2\*\*64\), got -1") as eager:
        call(torch.empty(3))
    torch._dynamo.reset()
    with pytest.raises(ValueError, match=r"seed must be in") as compiled:  # a graph break
        torch.compile(call, backend="eager")(torch.empty(3))
    assert str(compiled.value) == str(eager.value)
    torch._dynamo.reset()
    with pytest.raises(torch._dynamo.exc.Unsupported, match=r"seed must be in \[0, 2\*\*64\)"):
        torch.compile(call, fullgraph=True, backend="eager")(torch.empty(3))


# ----------------------------------------------------------------------------------------------
# Seed draws
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["normal_", "uniform_", "kaiming_uniform_", "orthogonal_"])
def test_ambient_meta_device_gives_the_values_without_it(name):
    shape, args = ALL_CALLS[name]
    torch.manual_seed(5)
    with torch.device("meta"):
        a = getattr(fastinit, name)(torch.empty(shape, device="cpu"), *args)
    torch.manual_seed(5)
    b = getattr(fastinit, name)(torch.empty(shape), *args)
    assert a.device.type == "cpu" and torch.equal(a, b)


def test_whole_model_seed_draw_ignores_ambient_device():
    model = nn.Linear(4, 3)
    torch.manual_seed(5)
    with torch.device("meta"):
        seed_a = fastinit.reset_parameters(model).seed
    torch.manual_seed(5)
    seed_b = fastinit.reset_parameters(model).seed
    assert seed_a == seed_b


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA generator (no GPU here)")
def test_cuda_generator_draws_are_distinct_across_threads():
    g = torch.Generator(device="cuda").manual_seed(1)
    seeds, lock = [], threading.Lock()

    def draw():
        for _ in range(200):
            s = fastinit.contract.draw_seed(g)
            with lock:
                seeds.append(s)

    threads = [threading.Thread(target=draw) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seeds)) == len(seeds) == 1600
    assert g.get_offset() == 4 * 1600


# ----------------------------------------------------------------------------------------------
# reset_parameters and layers with their own init
# ----------------------------------------------------------------------------------------------


class ZeroLinear(nn.Linear):
    def reset_parameters(self):
        nn.init.zeros_(self.weight)
        nn.init.zeros_(self.bias)


class PlainSubclass(nn.Linear):
    pass


def test_subclass_with_own_reset_parameters_keeps_its_init():
    model = nn.Sequential(ZeroLinear(8, 6), PlainSubclass(8, 6))
    for p in model.parameters():
        p.data.fill_(float("nan"))
    result = fastinit.reset_parameters(model, seed=0)
    assert torch.equal(model[0].weight, torch.zeros(6, 8)) and torch.equal(model[0].bias, torch.zeros(6))
    bound = 1 / math.sqrt(8)  # the plain subclass gets Linear's default rule
    assert 0.2 * bound < model[1].weight.abs().max() <= bound
    assert "0" in result.not_fused and "1" not in result.not_fused
    assert [r.distribution for r in fastinit.explain(model, reinit=True)][:2] == ["module's own init"] * 2


def test_zero_size_layers_warn_as_torch_and_do_not_divide_by_zero():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        layer = nn.Linear(0, 4)
        model = nn.Sequential(nn.Linear(0, 4), nn.Conv1d(0, 2, 3), nn.Linear(3, 0))
    with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op") as theirs:
        layer.reset_parameters()
    with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op") as ours:
        result = fastinit.reset_parameters(model, seed=1)
    assert len(ours) == 3 and len(theirs) == 1
    assert ours[0].filename == __file__
    assert torch.equal(model[0].bias, torch.zeros(4))  # bound 0, as torch's
    assert not result.untouched


# ----------------------------------------------------------------------------------------------
# Complex tensors
# ----------------------------------------------------------------------------------------------

COMPLEX_N = 200_000


def _parts(z):
    return z.real.double().reshape(-1).numpy(), z.imag.double().reshape(-1).numpy()


def _ks_p(a, b):
    return stats.ks_2samp(a, b).pvalue


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("name, args", [
    ("normal_", (0.5, 2.0)),
    ("uniform_", (-1.0, 3.0)),
    ("xavier_normal_", (1.5,)),
    ("xavier_uniform_", ()),
    ("kaiming_normal_", (0, "fan_in", "relu")),
    ("kaiming_uniform_", ()),
])
def test_complex_statistics_match_torch(name, args, dtype):
    """Real and imaginary parts: independent, each distributed as torch's (KS against torch's
    own samples, variance within 2%); a 5% error in the std fails (negative control)."""
    shape = (COMPLEX_N // 400, 400)
    ours = getattr(fastinit, name)(torch.empty(shape, dtype=dtype), *args, seed=12)
    theirs = getattr(torch.nn.init, name)(torch.empty(shape, dtype=dtype), *args,
                                         generator=torch.Generator().manual_seed(12))
    (ore, oim), (tre, tim) = _parts(ours), _parts(theirs)
    for mine, ref in ((ore, tre), (oim, tim)):
        assert _ks_p(mine, ref) > 1e-4
        assert abs(mine.var() / ref.var() - 1) < 0.02
        wrong = ref.mean() + (ref - ref.mean()) * 1.05
        assert _ks_p(mine, wrong) < 1e-4  # negative control: 5% off in std
    assert abs(np.corrcoef(ore, oim)[0, 1]) < 0.01
    if "uniform" in name:
        lo, hi = tre.min(), tre.max()
        span = hi - lo
        for part in (ore, oim):
            assert part.min() >= lo - 1e-3 * span and part.max() <= hi + 1e-3 * span


def test_complex_normal_part_variance_is_half():
    z = fastinit.normal_(torch.empty(COMPLEX_N, dtype=torch.complex64), 1.0, 2.0, seed=3)
    re, im = _parts(z)
    for part in (re, im):
        assert abs(part.mean() - 1.0) < 0.02
        assert abs(part.var() / 2.0 - 1) < 0.02   # std^2 / 2 = 2
        assert abs(part.var() / 4.0 - 1) > 0.2    # the untransformed std^2 would fail


def test_complex_values_are_the_contract_on_the_real_view():
    z = fastinit.normal_(torch.empty(6, 5, dtype=torch.complex64), 0.5, 2.0, seed=4)
    real = fastinit.normal_(torch.empty(6, 5, 2), 0.5, 2.0 / math.sqrt(2), seed=4)
    assert torch.equal(torch.view_as_real(z), real)
    z = fastinit.uniform_(torch.empty(6, 5, dtype=torch.complex128).t(), -1, 1, seed=4)
    real = fastinit.uniform_(torch.empty(5, 6, 2, dtype=torch.float64), -1, 1, seed=4)
    assert torch.equal(torch.view_as_real(z.contiguous()), real)


def test_complex_piece_at_a_first_index_gets_the_values_of_its_place():
    """A shard of a complex tensor (first_index in complex elements) gets the whole's values."""
    whole = fastinit.normal_(torch.empty(10, 3, dtype=torch.complex64), seed=7)
    piece = torch.full((4, 3), complex("nan+nanj"), dtype=torch.complex64)
    fill = make_fill(piece, Distribution.NORMAL, normal_params(0.0, 1.0 / math.sqrt(2)), 7,
                     first_index=2 * 3)
    execute([fill])
    assert torch.equal(piece, whole[2:6])


def test_complex_trunc_normal_is_refused_as_torch():
    with pytest.raises(NotImplementedError):
        torch.nn.init.trunc_normal_(torch.empty(4, dtype=torch.complex64))
    with pytest.raises(NotImplementedError):
        fastinit.trunc_normal_(torch.empty(4, dtype=torch.complex64))


def test_complex_constant_and_model_init_like_torch():
    z = fastinit.constant_(torch.empty(3, dtype=torch.complex64), 0.5)
    assert torch.equal(z, torch.full((3,), 0.5 + 0j, dtype=torch.complex64))
    model = nn.Linear(64, 32, dtype=torch.complex64)
    fastinit.reset_parameters(model, seed=2)
    bound = 1 / math.sqrt(64)
    for part in (model.weight.real, model.weight.imag, model.bias.real, model.bias.imag):
        assert part.abs().max() <= bound and part.std() > 0.3 * bound


# ----------------------------------------------------------------------------------------------
# Freed and shrunk storage
# ----------------------------------------------------------------------------------------------


def test_freed_and_shrunk_storage_raise_for_every_function_without_crash():
    proc = run_python(f"""
        import torch, fastinit, warnings
        warnings.simplefilter("ignore")
        calls = {ALL_CALLS!r}
        for name, (shape, args) in calls.items():
            for size in (0, 8):  # freed (FSDP) and shrunk below the extent
                t = torch.empty(shape)
                t.untyped_storage().resize_(size)
                try:
                    getattr(fastinit, name)(t, *args)
                except RuntimeError as e:
                    phrase = "data is not allocated yet" if size == 0 else "out of bounds for storage"
                    assert phrase in str(e), (name, str(e))
                else:
                    raise SystemExit(name + ": no error")
        print("done")
    """)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "done"


@pytest.mark.parametrize("position", [0, 1, 2])
def test_freed_storage_anywhere_in_a_model_writes_nothing(position):
    model = nn.Sequential(nn.Linear(6, 5), nn.Linear(5, 4), nn.Linear(4, 3))
    for p in model.parameters():
        p.data.fill_(float("nan"))
    model[position].weight.untyped_storage().resize_(0)
    with pytest.raises(RuntimeError, match="data is not allocated yet"):
        fastinit.reset_parameters(model, seed=0)
    for i, layer in enumerate(model):
        if i != position:
            assert layer.weight.isnan().all() and layer.bias.isnan().all()


# ----------------------------------------------------------------------------------------------
# Negative and conjugate views, degenerate truncation intervals
# ----------------------------------------------------------------------------------------------

NEG_CASES = [
    ("uniform_", (2.0, 3.0)),
    ("normal_", (0.5, 2.0)),
    ("trunc_normal_", (0.5, 2.0, -1.0, 3.0)),
    ("trunc_normal_", (0.0, 1.0, 4.0, 5.0)),
    ("constant_", (0.7,)),
    ("kaiming_uniform_", ()),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name, args", NEG_CASES)
def test_negative_views_get_the_values_of_plain_tensors(name, args, dtype):
    kwargs = {} if name == "constant_" else {"seed": 9}
    plain = getattr(fastinit, name)(torch.empty(40, 25, dtype=dtype), *args, **kwargs)
    neg = torch.full((40, 25), float("nan"), dtype=dtype)._neg_view()
    getattr(fastinit, name)(neg, *args, **kwargs)
    assert neg.is_neg() and torch.equal(neg, plain)
    z = torch.zeros(40, 25, dtype=torch.complex128 if dtype == torch.float64 else torch.complex64)
    imag = z.conj().imag
    if dtype == imag.dtype:
        getattr(fastinit, name)(imag, *args, **kwargs)
        assert torch.equal(imag, plain) and torch.equal(z.imag, -plain)


def test_negative_view_uniform_has_torchs_sign():
    ours = torch.zeros(1000)._neg_view()
    theirs = torch.zeros(1000)._neg_view()
    fastinit.uniform_(ours, 2, 3, seed=1)
    torch.nn.init.uniform_(theirs, 2, 3)
    for t in (ours, theirs):
        assert t.min() >= 2 and t.max() < 3
        assert t._neg_view().max() <= -2


@pytest.mark.parametrize("name, args", [("uniform_", (2.0, 3.0)), ("normal_", (0.5, 2.0))])
def test_conjugate_complex_views_get_the_values_of_plain_tensors(name, args):
    plain = getattr(fastinit, name)(torch.empty(30, 7, dtype=torch.complex64), *args, seed=5)
    base = torch.full((30, 7), complex("nan+nanj"), dtype=torch.complex64)
    conj = base.conj()
    getattr(fastinit, name)(conj, *args, seed=5)
    assert conj.is_conj() and torch.equal(conj.resolve_conj(), plain)
    assert torch.equal(base, plain.conj().resolve_conj())


@pytest.mark.parametrize("a, b", [(math.inf, math.inf), (-math.inf, -math.inf)])
def test_trunc_normal_infinite_interval_raises_as_torch(a, b):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="from is out of bounds for float") as theirs:
            torch.nn.init.trunc_normal_(torch.empty(5), a=a, b=b)
        t = torch.full((5,), float("nan"))
        with pytest.raises(RuntimeError, match="from is out of bounds for float"):
            fastinit.trunc_normal_(t, a=a, b=b, seed=1)
    assert theirs.type is RuntimeError and t.isnan().all()


def test_trunc_normal_whole_real_line_works_as_torch():
    t = fastinit.trunc_normal_(torch.empty(10_000), a=-math.inf, b=math.inf, seed=1)
    assert t.isfinite().all() and 0.95 < t.std() < 1.05


@pytest.mark.parametrize("dtype, a, b", [
    (torch.float32, 0.1, 0.1),
    (torch.float32, 0.1, 0.1 + 1e-10),
    (torch.float16, 0.1, 0.1),
    (torch.bfloat16, -0.3, -0.3 + 1e-5),
    (torch.float64, 0.1, 0.1),
    (torch.float32, 1.0, 1.0),
])
def test_trunc_normal_interval_without_interior_gives_the_nearest_value(dtype, a, b):
    """Each interval is far narrower than the dtype's spacing there, so the value nearest to it
    is the rounded midpoint (itself, when the interval is one representable point)."""
    t = fastinit.trunc_normal_(torch.full((64,), float("nan"), dtype=dtype), a=a, b=b, seed=3)
    expected = torch.tensor((a + b) / 2, dtype=torch.float64).to(dtype)
    assert torch.equal(t, expected.expand(64))
    if a == b:
        theirs = torch.nn.init.trunc_normal_(torch.empty(8, dtype=dtype), a=a, b=b)
        assert torch.equal(t[:8], theirs)


# ----------------------------------------------------------------------------------------------
# Layouts fastinit does not fill, argument types
# ----------------------------------------------------------------------------------------------

LAYOUTS = {
    "sparse_coo": lambda: torch.eye(4).to_sparse(),
    "sparse_csr": lambda: torch.eye(4).to_sparse_csr(),
    "nested_strided": lambda: torch.nested.nested_tensor([torch.zeros(2, 3), torch.zeros(3, 3)]),
    "nested_jagged": lambda: torch.nested.nested_tensor([torch.zeros(2, 3), torch.zeros(3, 3)],
                                                        layout=torch.jagged),
    "mkldnn": lambda: torch.zeros(4, 4).to_mkldnn(),
    "quantized": lambda: torch.quantize_per_tensor(torch.zeros(4, 4), 0.1, 0, torch.quint8),
}
TORCH_FUNCTIONS = [n for n in ALL_CALLS if n in torch.nn.init.__all__]


def _outcome(fn, tensor, args, kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            out = fn(tensor, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the outcome is the exception type
            return type(exc)
    return out


def _dense(t):
    if t.is_nested:
        return torch.cat([x.reshape(-1) for x in t.unbind()])
    if t.is_quantized:
        return t.dequantize()
    return t.to_dense()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", TORCH_FUNCTIONS)
def test_other_layouts_have_torchs_outcome(layout, name):
    _, args = ALL_CALLS[name]
    args = args[:1] if name == "dirac_" else args
    if name in ("xavier_uniform_", "kaiming_uniform_", "kaiming_normal_", "xavier_normal_"):
        args = ()
    theirs = _outcome(getattr(torch.nn.init, name), LAYOUTS[layout](), args, {})
    ours = _outcome(getattr(fastinit, name), LAYOUTS[layout](), args, {})
    if isinstance(theirs, type):
        assert ours is theirs
        return
    assert isinstance(ours, torch.Tensor) and ours.layout == theirs.layout
    if name in ("constant_", "ones_", "zeros_", "eye_"):
        assert torch.equal(_dense(ours), _dense(theirs))
    elif name in SEEDED:  # seed= becomes torch's generator seeded with it
        again = getattr(fastinit, name)(LAYOUTS[layout](), *args, seed=4)
        assert torch.equal(_dense(again), _dense(getattr(fastinit, name)(LAYOUTS[layout](), *args, seed=4)))


def test_fastinit_only_functions_refuse_other_layouts():
    with pytest.raises(NotImplementedError, match="layout"):
        fastinit.lecun_normal_(torch.eye(4).to_sparse())


@pytest.mark.parametrize("kwargs", [{"mean": "0"}, {"std": "1"}, {"generator": 5},
                                    {"generator": type("G", (), {"device": torch.device("cpu")})()}])
def test_bad_argument_types_raise_type_error_as_torch(kwargs):
    with pytest.raises(TypeError):
        torch.nn.init.normal_(torch.empty(3), **kwargs)
    t = torch.full((3,), float("nan"))
    with pytest.raises(TypeError):
        fastinit.normal_(t, **kwargs)
    assert t.isnan().all()


@pytest.mark.parametrize("name", ["uniform_", "kaiming_uniform_", "orthogonal_", "sparse_"])
def test_generator_of_wrong_type_raises_type_error(name):
    shape, args = ALL_CALLS[name]
    with pytest.raises(TypeError, match="must be torch.Generator, not int"):
        getattr(fastinit, name)(torch.empty(shape), *args, generator=5)


def test_number_like_arguments_accepted_as_torch():
    for mean in (np.float32(1.0), torch.tensor(1.0), True, 1):
        torch.nn.init.normal_(torch.empty(3), mean=mean)
        fastinit.normal_(torch.empty(3), mean=mean, seed=1)


@pytest.mark.parametrize("name", list(ALL_CALLS))
def test_numpy_array_is_not_a_tensor(name):
    _, args = ALL_CALLS[name]
    with pytest.raises(AttributeError):
        getattr(torch.nn.init, name, fastinit.lecun_normal_)(np.zeros((6, 5, 3, 3), np.float32), *args)
    with pytest.raises(TypeError, match="not a tensor") as ours:
        getattr(fastinit, name)(np.zeros((6, 5, 3, 3), np.float32), *args)
    assert isinstance(ours.value, AttributeError)  # caught as torch's error too


# ----------------------------------------------------------------------------------------------
# Torch range
# ----------------------------------------------------------------------------------------------


def test_installed_torch_is_in_the_claimed_range():
    text = (REPO / "pyproject.toml").read_text()
    claim = next(line for line in text.splitlines() if line.startswith("dependencies"))
    assert '"torch>=2.11,<2.16"' in claim
    major, minor = (int(x) for x in torch.__version__.split(".")[:2])
    assert (2, 11) <= (major, minor) < (2, 16)


def test_missing_private_dtensor_helper_raises_a_clear_error():
    with pytest.raises(RuntimeError, match="private DTensor helper _split_tensor.*2.11 to 2.15"):
        sharding._private_helper(object(), "_split_tensor")
    from torch.distributed.tensor import _utils  # this torch has the helper the sharding uses

    assert sharding._private_helper(_utils, "compute_local_shape_and_global_offset")


# ----------------------------------------------------------------------------------------------
# The same on the GPU backends
# ----------------------------------------------------------------------------------------------


@pytest.fixture(params=["cuda", "triton"])
def gpu_backend(request):
    """Each GPU backend selected in turn (skips without a GPU or the backend)."""
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device (no GPU here)")
    try:
        fastinit.set_backend(request.param)
    except fastinit.BackendUnavailableError as exc:
        pytest.skip(str(exc))
    yield request.param
    fastinit.set_backend("auto")


def test_gpu_compile_fullgraph_equals_eager_and_cpu_bitwise(gpu_backend):
    torch._dynamo.reset()
    compiled = torch.compile(_compiled_calls, fullgraph=True)(_poisoned_inputs("cuda"))
    eager = _compiled_calls(_poisoned_inputs("cuda"))
    fastinit.set_backend("auto")
    on_cpu = _compiled_calls(_poisoned_inputs())
    for name in COMPILED_CALLS:
        assert not compiled[name].isnan().any(), name
        assert torch.equal(compiled[name], eager[name]), name
        if name != "orthogonal_":  # a QR on the device: close to the CPU's, not bitwise
            assert torch.equal(compiled[name].cpu(), on_cpu[name]), name


def test_gpu_views_complex_and_compile_match_cpu(gpu_backend):
    cpu_plain = fastinit.uniform_(torch.empty(40, 25), 2.0, 3.0, seed=9)
    neg = torch.full((40, 25), float("nan"), device="cuda")._neg_view()
    fastinit.uniform_(neg, 2.0, 3.0, seed=9)
    assert torch.equal(neg.cpu(), cpu_plain)
    z = fastinit.uniform_(torch.empty(30, 7, dtype=torch.complex64, device="cuda"), -1, 1, seed=5)
    assert torch.equal(z.cpu(), fastinit.uniform_(torch.empty(30, 7, dtype=torch.complex64), -1, 1, seed=5))
    torch._dynamo.reset()
    compiled = torch.compile(lambda w: fastinit.uniform_(w, -1.0, 1.0, seed=3), fullgraph=True)
    out = compiled(torch.full((64, 64), float("nan"), device="cuda"))
    assert torch.equal(out, fastinit.uniform_(torch.empty(64, 64, device="cuda"), -1.0, 1.0, seed=3))
    t = torch.empty(64, device="cuda")
    t.untyped_storage().resize_(0)
    with pytest.raises(RuntimeError, match="data is not allocated yet"):
        fastinit.normal_(t, seed=1)
