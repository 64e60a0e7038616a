"""Hugging Face transformers models initialised by fastinit, from configs built here (offline).

What transformers 5 does (modeling_utils.py, initialization.py and the model files):
``post_init()`` -> ``init_weights()`` -> ``initialize_weights()`` applies the model's
``_init_weights`` to every module under ``guard_torch_init_functions`` (which puts guard wrappers
in place of torch.nn.init's functions), after the torch layer constructors ran their own
``reset_parameters``; on the meta device it is skipped. ``_init_weights`` calls copies of the
torch.nn.init functions captured at import (``initialization.TORCH_INIT_FUNCTIONS``), recomputes
rotary ``inv_freq`` and BERT's ``position_ids`` with ``init.copy_``, and zeroes an Embedding's
padding row after its ``normal_``.

Each model (Llama, Llama with tied embeddings, BERT, ViT, GPT-2, ResNet) is built two ways:

(a) inside ``fastinit.fused()``;
(b) under ``torch.device("meta")``, then ``fastinit.materialize(model, "cpu", seed=0)`` with the
    defaults (``init="auto"`` runs HF's own ``init_weights`` inside ``fused()``), after the heap
    has been poisoned with NaN so that an unwritten tensor cannot pass unseen.

and each way must give:

* every random parameter HF's intended distribution: its std (and a plain HF build's) within a
  tolerance a 5% error fails, for tensors of >= 16384 elements; the smaller ones pooled by
  intended std; constants exactly equal to a plain HF build's;
* buffers equal to a plain HF build's; a finite forward pass;
* torch's generator consumed only by fastinit's seed draws (counted): HF's init ran through
  fastinit. ViT's constructor draws ``cls_token`` with ``torch.randn`` itself: ``fused()``
  records that call as a fastinit normal fill (one seed draw) whose values HF's
  ``trunc_normal_`` then overwrites (the fill is dropped, so (a) writes it once); on meta the
  call allocates and draws nothing;
* every element written exactly once, counted per element (fastinit's executed fills, plus every
  other in-place torch write), except where HF writes an element twice itself: the padding row
  of an Embedding, normal then zero.
"""
from __future__ import annotations

import math
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

transformers = pytest.importorskip("transformers", reason="transformers is not installed "
                                   "(pip install -e .[test])")

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.overrides import TorchFunctionMode  # noqa: E402
from transformers import (BertConfig, BertModel, GPT2Config, GPT2LMHeadModel, LlamaConfig,  # noqa: E402
                          LlamaForCausalLM, ResNetConfig, ResNetModel, ViTConfig, ViTModel)
from transformers.pytorch_utils import Conv1D  # noqa: E402

import fastinit  # noqa: E402
from fastinit import backends, contract, spec  # noqa: E402
from fastinit.errors import InitValueError  # noqa: E402

INIT_RANGE = 0.02
MIN_NUMEL = 16384
# The std of n normal samples is off by 1/sqrt(2n) relative (0.55% at 16384): 2.5% passes the
# right distribution at > 4 sigma and fails a 5% error at > 4 sigma.
REL_TOL = 0.025


def llama(tie: bool = False) -> LlamaForCausalLM:
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=512, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=64,
        initializer_range=INIT_RANGE, pad_token_id=0, tie_word_embeddings=tie))


def bert() -> BertModel:
    return BertModel(BertConfig(
        vocab_size=512, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=256, max_position_embeddings=128, initializer_range=INIT_RANGE))


def vit() -> ViTModel:
    return ViTModel(ViTConfig(
        hidden_size=128, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
        image_size=64, patch_size=8, initializer_range=INIT_RANGE))


def gpt2() -> GPT2LMHeadModel:  # lm_head tied to wte
    return GPT2LMHeadModel(GPT2Config(
        vocab_size=512, n_positions=128, n_embd=128, n_layer=2, n_head=4,
        initializer_range=INIT_RANGE, bos_token_id=0, eos_token_id=0))


def resnet() -> ResNetModel:
    return ResNetModel(ResNetConfig(num_channels=3, embedding_size=64, hidden_sizes=[64, 128],
                                    depths=[1, 1], layer_type="basic"))


MODELS = {"llama": llama, "llama_tied": lambda: llama(tie=True), "bert": bert, "vit": vit,
          "gpt2": gpt2, "resnet": resnet}


def intended_std(model: nn.Module, name: str) -> float:
    """The std HF's `_init_weights` gives the random parameter `name` (read from the model
    files, independently of fastinit)."""
    owner = model.get_submodule(name.rpartition(".")[0])
    if isinstance(model, ResNetModel) and isinstance(owner, nn.Conv2d):
        out, _, kh, kw = owner.weight.shape  # kaiming_normal_(mode="fan_out", relu)
        return math.sqrt(2.0 / (out * kh * kw))
    if isinstance(model, GPT2LMHeadModel) and name.endswith("c_proj.weight"):
        return INIT_RANGE / math.sqrt(2 * model.config.n_layer)
    # Linear, Embedding, Conv, GPT-2's Conv1D: normal; ViT's cls_token and position_embeddings:
    # trunc_normal(std=0.02, a=-2, b=2), i.e. a normal (the cut is at 100 sigma)
    assert isinstance(owner, (nn.Linear, nn.Embedding, nn.Conv2d, Conv1D)) or \
        name.startswith("embeddings."), name
    return INIT_RANGE


def plain_build(model_id: str) -> nn.Module:
    torch.manual_seed(0)
    return MODELS[model_id]()


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach() for k, v in list(model.named_parameters()) + list(model.named_buffers())}


def assert_like_hf(got: nn.Module, plain: nn.Module) -> int:
    """HF's intended distribution for every random parameter, HF's exact value for every
    constant and buffer. Returns the number of random parameters checked."""
    g, p = state(got), state(plain)
    assert g.keys() == p.keys()
    params = dict(got.named_parameters())
    pooled: dict[float, list[torch.Tensor]] = {}
    checked = 0
    for name, want in p.items():
        t = g[name]
        assert t.shape == want.shape and t.dtype == want.dtype, name
        if t.is_floating_point():
            assert torch.isfinite(t).all(), f"{name}: not written"
        flat = want.flatten()
        if name not in params or (flat == flat[0]).all():  # buffers and constants: exact
            assert torch.equal(t, want), f"{name}: {t.flatten()[:4]} != {want.flatten()[:4]}"
            continue
        std = intended_std(got, name)
        checked += 1
        if t.numel() < MIN_NUMEL:
            pooled.setdefault(std, []).append(t.flatten())
            continue
        s_got, s_plain = t.double().std().item(), want.double().std().item()
        assert abs(s_got / std - 1) < REL_TOL, f"{name}: std {s_got:.5g}, HF's is {std:.5g}"
        assert abs(s_plain / std - 1) < REL_TOL, f"{name}: the plain build's std {s_plain:.5g}"
        assert abs(t.double().mean().item()) < 5 * std / math.sqrt(t.numel()), f"{name}: mean"
    for std, parts in pooled.items():  # 5 sigma of the pooled estimate, at least REL_TOL
        flat = torch.cat(parts).double()
        tol = max(REL_TOL, 5 / math.sqrt(2 * flat.numel()))
        assert abs(flat.std().item() / std - 1) < tol, f"small tensors of std {std}"
    return checked


def run_forward(model: nn.Module) -> None:
    gen = torch.Generator().manual_seed(1)
    model.eval()  # BatchNorm's running statistics stay as initialised
    with torch.no_grad():
        if isinstance(model, (ViTModel, ResNetModel)):
            out = model(torch.randn(2, 3, 64, 64, generator=gen)).last_hidden_state
        else:
            out = model(torch.randint(1, 512, (2, 16), generator=gen))
            out = out.logits if hasattr(out, "logits") else out.last_hidden_state
    assert torch.isfinite(out).all()


# ----------------------------------------------------------------------------------------------
# instruments: seed draws, elements written, poisoned memory
# ----------------------------------------------------------------------------------------------


class SeedDraws:
    """Counts fastinit's seed draws from the generator they use by default (torch's default
    generator, or the one `materialize` gives its model's init), in Python or in a fill's
    native record inside fused(), and checks that nothing else
    consumed it: before each draw (and at `check()`) its state must equal a shadow generator's,
    seeded alike and advanced by the same draws."""

    def __init__(self, monkeypatch, seed: int):
        self.count = 0
        self.shadow = torch.Generator().manual_seed(seed)
        original = contract.draw_seed

        def counted(generator):
            if generator is None:
                self.check(getattr(contract._seed_source, "generator", None))
                self.count += 1
                torch.randint(0, 2**63 - 1, (1,), generator=self.shadow)
            return original(generator)

        for module in list(vars(fastinit).values()) + [fastinit.nn_init]:
            if getattr(module, "draw_seed", None) is original:
                monkeypatch.setattr(module, "draw_seed", counted)
        record = backends._tensor_record  # a fill recorded by fused() draws its seed natively

        def counted_record(tensor, seed, generator):
            source = getattr(contract._seed_source, "generator", None)
            default = seed is None and generator is source
            if default:
                self.check(source)
            found = record(tensor, seed, generator)
            if default and found is not None:
                self.count += 1
                torch.randint(0, 2**63 - 1, (1,), generator=self.shadow)
            return found

        if record is not None:
            monkeypatch.setattr(backends, "_tensor_record", counted_record)

    def check(self, source=None) -> None:
        state = (source or torch.default_generator).get_state()
        assert torch.equal(state, self.shadow.get_state()), \
            f"the generator was consumed by something else than fastinit (after {self.count} draws)"


class WriteCounts(TorchFunctionMode):
    """Per element, how many times it was written: fastinit's executed fills (counted in
    backends.execute and execute_whole) and every in-place torch operation (this mode, entered before `fused()`
    so it sees what fused() lets through; fills fused() records never reach it)."""

    def __init__(self, monkeypatch):
        super().__init__()
        self.counts: dict[int, torch.Tensor] = {}
        self.busy = False
        original, original_native = backends.execute, backends.fill_whole_natively
        original_whole = backends.execute_whole
        executing = []

        def counted(run, tensors, argument, *args, **kwargs):
            if not executing:  # (execute_whole may run its rows through execute)
                for t in tensors:
                    self.add(t)
            executing.append(True)
            try:
                return run(argument, *args, **kwargs)
            finally:
                executing.pop()

        def execute(fills, *args, **kwargs):
            return counted(original, [f.tensor for f in fills], fills, *args, **kwargs)

        def execute_whole(rows):  # a fused pass of whole tensors
            return counted(original_whole, [row[0] for row in rows], rows)

        def fill_whole_natively(tensor, *args, **kwargs):  # a drop-in call's one native call
            filled = original_native(tensor, *args, **kwargs)
            if filled and not executing:
                self.add(tensor)
            return filled

        monkeypatch.setattr(backends, "execute", execute)
        monkeypatch.setattr(backends, "execute_whole", execute_whole)
        monkeypatch.setattr(backends, "fill_whole_natively", fill_whole_natively)

    def add(self, t: torch.Tensor) -> None:
        if t.is_meta or t.numel() == 0:
            return
        storage = t.untyped_storage()
        key = storage.data_ptr()
        n = storage.nbytes() // t.element_size()
        if key not in self.counts or self.counts[key].numel() < n:
            old = self.counts.get(key)
            self.counts[key] = torch.zeros(n, dtype=torch.int32)
            if old is not None:
                self.counts[key][:old.numel()] = old
        self.busy = True  # the counting below is not a write to count
        try:
            torch.as_strided(self.counts[key], t.shape, t.stride(), t.storage_offset()).add_(1)
        finally:
            self.busy = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.busy:
            return func(*args, **kwargs)
        name = getattr(func, "__name__", "")
        target = kwargs.get("out")
        if target is None and args and isinstance(args[0], torch.Tensor) and (
                name == "__setitem__" or (name.endswith("_") and not name.startswith("_")
                                          and name != "requires_grad_")):
            target = args[0]
        result = func(*args, **kwargs)
        if isinstance(target, torch.Tensor):
            self.add(target.detach() if name == "__setitem__" else target)
        return result

    def of(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        counts = self.counts.get(storage.data_ptr(), torch.zeros(0, dtype=torch.int32))
        if counts.numel() < storage.nbytes() // t.element_size():
            return torch.zeros(t.shape, dtype=torch.int32)
        return torch.as_strided(counts, t.shape, t.stride(), t.storage_offset()).clone()


# fastinit fills floating-point tensors; an integer buffer (num_batches_tracked, position_ids) is
# written by torch as often as the init code writes it: ResNet's _init_weights zeroes
# num_batches_tracked twice (through super()._init_weights and its own BatchNorm branch), and
# inside fused() the BatchNorm constructor has zeroed it once already.
INTEGER_BUFFERS = "written at least once"


def assert_written_once(model: nn.Module, writes: WriteCounts) -> int:
    """Every element of every parameter and buffer written exactly once, except the padding row
    of an Embedding, which HF's init writes twice (normal_, then zeros_ on the row). Returns the
    number of elements checked."""
    total = 0
    for name, t in state(model).items():
        got = writes.of(t)
        total += t.numel()
        if not t.is_floating_point():  # see INTEGER_BUFFERS
            assert (got >= 1).all(), f"{name}: not written"
            continue
        want = torch.ones(t.shape, dtype=torch.int32)
        owner = model.get_submodule(name.rpartition(".")[0])
        if isinstance(owner, nn.Embedding) and owner.padding_idx is not None:
            want[owner.padding_idx] += 1
        assert torch.equal(got, want), (f"{name}: written {got.min().item()}..{got.max().item()} "
                                        f"times ({(got != want).sum().item()} elements wrong)")
    return total


def poison_allocations(monkeypatch) -> None:
    """Every floating tensor `torch.empty` or `torch.empty_like` makes from here on (materialize
    allocates the meta model's tensors with them) starts as NaN, so an element nothing writes
    shows as NaN whatever the allocator hands out. The NaN fill runs with function modes off:
    it is not a write the counts below see."""
    def poisoned(original):
        def allocate(*args, **kwargs):
            out = original(*args, **kwargs)
            if out.is_floating_point() and not out.is_meta:
                with torch._C.DisableTorchFunction():
                    out.fill_(float("nan"))
            return out
        return allocate

    monkeypatch.setattr(torch, "empty_like", poisoned(torch.empty_like))
    monkeypatch.setattr(torch, "empty", poisoned(torch.empty))


def test_poisoned_allocations_show_unwritten_tensors(monkeypatch):
    """The negative control of the poisoning: a tensor materialize leaves unwritten is NaN."""
    class Holder(nn.Module):
        def __init__(self):
            super().__init__()
            self.free = nn.Parameter(torch.empty(64))  # no rule, no reset, no init: unwritten

    with torch.device("meta"):
        model = Holder()
    poison_allocations(monkeypatch)
    with pytest.warns(UserWarning, match="uninitialised"):
        fastinit.materialize(model, "cpu", seed=0, allow_uninitialized=True)
    assert torch.isnan(model.free).all()


# ----------------------------------------------------------------------------------------------
# (a) built inside fused(), (b) built on meta and materialised with the defaults
# ----------------------------------------------------------------------------------------------


def build_inside_fused(model_id: str, monkeypatch):
    torch.manual_seed(0)
    draws = SeedDraws(monkeypatch, 0)
    with WriteCounts(monkeypatch) as writes, fastinit.fused() as recorder:
        model = MODELS[model_id]()
    draws.check()
    return model, draws, writes, recorder


def build_on_meta_and_materialize(model_id: str, monkeypatch):
    with torch.device("meta"):
        model = MODELS[model_id]()
    assert all(t.is_meta for t in state(model).values())
    torch.manual_seed(1234)
    before = torch.get_rng_state()
    poison_allocations(monkeypatch)
    draws = SeedDraws(monkeypatch, 0)  # materialize's init draws from a generator seeded 0
    with WriteCounts(monkeypatch) as writes:
        result = fastinit.materialize(model, "cpu", seed=0)
    assert torch.equal(torch.get_rng_state(), before)  # the caller's generator: untouched
    return model, draws, writes, result


@pytest.mark.parametrize("model_id", list(MODELS))
def test_built_inside_fused(model_id, monkeypatch):
    plain = plain_build(model_id)
    model, draws, writes, recorder = build_inside_fused(model_id, monkeypatch)
    assert recorder.recorded > 0 and draws.count > 0
    assert assert_like_hf(model, plain) > 0
    assert assert_written_once(model, writes) == sum(t.numel() for t in state(model).values())
    run_forward(model)


@pytest.mark.parametrize("model_id", list(MODELS))
def test_meta_then_materialize(model_id, monkeypatch):
    plain = plain_build(model_id)
    model, draws, writes, result = build_on_meta_and_materialize(model_id, monkeypatch)
    assert draws.count > 0  # HF's init drew its seeds through fastinit
    assert result.untouched == [] and result.kept == []
    # HF's own init wrote every tensor: fastinit's layer defaults had nothing left to do
    assert sorted(result.model_init) == sorted(state(model)) and result.fused == []
    assert assert_like_hf(model, plain) > 0
    assert_written_once(model, writes)
    if model_id in ("llama_tied", "gpt2"):
        assert model.lm_head.weight is model.get_input_embeddings().weight
    run_forward(model)
    # same seed, same weights
    monkeypatch.undo()
    with torch.device("meta"):
        again = MODELS[model_id]()
    fastinit.materialize(again, "cpu", seed=0)
    for name, t in state(again).items():
        assert torch.equal(t, state(model)[name]), name


def test_checks_fail_on_torch_default_init():
    """Negative control: the torch layer defaults (init="reset_parameters") are not HF's
    distribution, and the check says so."""
    plain = plain_build("llama")
    with torch.device("meta"):
        model = llama()
    with pytest.raises(InitValueError, match="rotary_emb.inv_freq"):  # nothing writes them
        fastinit.materialize(model, "cpu", seed=0, init="reset_parameters")
    with torch.device("meta"):
        model = llama()
    fastinit.materialize(model, "cpu", seed=0, init="reset_parameters",
                         rules={"*rotary_emb*": spec.zeros(), "*norm.weight": spec.ones()})
    with pytest.raises(AssertionError, match="std"):
        assert_like_hf(model, plain)


def test_materialize_rules_win_over_hf_init():
    with torch.device("meta"):
        model = llama()
    result = fastinit.materialize(model, "cpu", seed=0, rules={"lm_head.weight": spec.zeros(),
                                                               nn.Embedding: {"weight": spec.ones()}})
    assert (model.lm_head.weight == 0).all()
    embed = model.model.embed_tokens.weight
    assert (embed[1:] == 1).all() and (embed[0] == 0).all()  # fastinit zeroes the padding row
    assert sorted(result.fused) == ["lm_head.weight", "model.embed_tokens.weight"]
    std = model.model.layers[0].mlp.up_proj.weight.double().std().item()
    assert abs(std / INIT_RANGE - 1) < REL_TOL


def test_materialize_init_callable_and_reset_parameters():
    calls = []

    def my_init(m):
        calls.append(m)
        for p in m.parameters():
            nn.init.normal_(p, std=0.5)
        m.model.rotary_emb.inv_freq.fill_(1.0)
        m.model.rotary_emb.original_inv_freq.fill_(1.0)

    with torch.device("meta"):
        model = llama()
    result = fastinit.materialize(model, "cpu", seed=0, init=my_init)
    assert calls == [model] and result.untouched == [] and result.fused == []
    assert abs(model.lm_head.weight.std().item() / 0.5 - 1) < REL_TOL
    with pytest.raises(InitValueError, match="init must be"):
        fastinit.materialize(model, "cpu", init="hf")


class Gate(nn.Module):
    """A custom module: a parameter, no rule, no reset_parameters, no init method."""

    def __init__(self, dim: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))


def test_materialize_names_a_custom_tensor_nothing_initialises():
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(8, 8), Gate(8))
    with pytest.raises(InitValueError, match=r"\['1\.scale'\]"):
        fastinit.materialize(model, "cpu", seed=0)
    # an HF model whose _init_weights does not know the module either
    with torch.device("meta"):
        model = llama()
        model.model.gate = Gate(128)
    with pytest.raises(InitValueError, match=r"\['model\.gate\.scale'\]"):
        fastinit.materialize(model, "cpu", seed=0)
    with torch.device("meta"):  # the failed call allocated the model: its tensors are real now
        model = llama()
        model.model.gate = Gate(128)
    rows = {r.name: r for r in fastinit.explain(model)}
    assert rows["model.gate.scale"].source == "NOT INITIALISED"


def test_explain_hf_llama():
    with torch.device("meta"):
        model = llama()
    rng = torch.get_rng_state()
    rows = fastinit.explain(model)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(t.is_meta for t in state(model).values())  # nothing allocated
    by_name = {r.name: r for r in rows}
    assert set(by_name) == set(state(model))
    for name, r in by_name.items():
        if name.endswith(("proj.weight", "lm_head.weight", "embed_tokens.weight")):
            assert r.distribution == "normal" and r.source == "model init", r
            assert r.parameters.startswith("mean=0, std=0.02"), r
        elif name.endswith("norm.weight"):
            assert (r.distribution, r.parameters) == ("constant", "1"), r
        else:
            assert name.endswith("inv_freq") and r.distribution == "copy_", r
    assert "then constant(0) on part" in by_name["model.embed_tokens.weight"].parameters
    table = str(rows)
    assert table.splitlines()[0].split()[:4] == ["name", "shape", "dtype", "distribution"]
    assert "model.layers.1.mlp.down_proj.weight" in table and repr(rows) == table


def test_demo_hf(capsys):
    from fastinit.cli import main

    assert main(["demo", "--model", "hf", "--params", "4e7"]) == 0
    out = capsys.readouterr().out
    assert "Hugging Face LlamaForCausalLM: 2 layers, hidden 512" in out
    for arm in ("fastinit.materialize (meta)", "inside fastinit.fused()",
                "HF meta path (to_empty + init_weights)", "HF plain build"):
        assert arm in out
    worst = float(out.split("worst relative deviation ")[1].split()[0])
    assert worst < 0.01 and out.rstrip().endswith("norms and rotary tables exact: True"), out


def test_seed_draw_check_catches_other_consumers(monkeypatch):
    """Negative control of SeedDraws: a draw from torch's generator that is not fastinit's."""
    torch.manual_seed(0)
    draws = SeedDraws(monkeypatch, 0)
    with fastinit.fused():
        nn.init.normal_(torch.empty(8))
        torch.randperm(5)  # not a fill fastinit records
        with pytest.raises(AssertionError, match="after 1 draws"):
            nn.init.normal_(torch.empty(8))


def test_explain_hf_vit_trunc_normal_on_meta():
    with torch.device("meta"):
        model = vit()
    rows = {r.name: r for r in fastinit.explain(model)}
    for name in ("embeddings.cls_token", "embeddings.position_embeddings"):
        assert (rows[name].distribution, rows[name].source) == ("trunc_normal", "model init"), rows[name]
        assert rows[name].parameters == "mean=0, std=0.02, a=-2, b=2", rows[name]


MASKED_LM_BIASES = {"roberta": "lm_head.bias", "bert": "cls.predictions.bias",
                    "deberta_v2": "cls.predictions.bias"}


def masked_lm(kind: str) -> nn.Module:
    """A tiny masked-LM whose output bias transformers ties and pads (`_adjust_bias` moves it
    to new memory after its zero init)."""
    from transformers import (BertForMaskedLM, DebertaV2Config, DebertaV2ForMaskedLM,
                              RobertaConfig, RobertaForMaskedLM)
    kw = dict(vocab_size=99, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
              intermediate_size=37, max_position_embeddings=64)
    return {"roberta": lambda: RobertaForMaskedLM(RobertaConfig(**kw)),
            "bert": lambda: BertForMaskedLM(BertConfig(**kw)),
            "deberta_v2": lambda: DebertaV2ForMaskedLM(DebertaV2Config(**kw))}[kind]()


@pytest.mark.parametrize("kind", sorted(MASKED_LM_BIASES))
def test_masked_lm_tied_output_bias_stays_zero(kind):
    name = MASKED_LM_BIASES[kind]
    for call in range(3):
        torch.manual_seed(call)
        with fastinit.fused():
            built = masked_lm(kind)
        with torch.device("meta"):
            model = masked_lm(kind)
        fastinit.materialize(model, "cpu", seed=call)
        for got in (dict(built.named_parameters())[name], dict(model.named_parameters())[name]):
            assert got.abs().max() == 0, f"{kind} call {call}: {name} is not zero"
        tensors = dict(model.named_parameters(remove_duplicate=False))
        weight = tensors[name.replace("bias", "decoder.weight")]
        assert weight.std() > 0  # negative control: the head's weight is initialised
