"""Hugging Face Llama (~220M parameters: hidden 1024, 12 layers, vocab 32000, intermediate
2816), every way of initialising it, arms interleaved in each round, medians of one run:

    .venv/bin/python -m pytest benchmarks/test_hf_init.py --benchmark-only

* plain: `LlamaForCausalLM(cfg)` (torch's layer inits, then HF's `_init_weights`);
* fused: the same inside `fastinit.fused()`;
* hf_meta: built on meta (untimed), then HF's own path: `to_empty` + `init_weights()`;
* materialize: built on meta (untimed), then `fastinit.materialize(model, "cpu", seed=0)`;
* floor: built on meta (untimed), then `to_empty` + one `fill_` of every parameter.

Each arm frees its model (untimed) before the next, so they all get the same memory; an untimed
floor round comes first. FASTINIT_BENCH_HF_ROUNDS sets the rounds (default 5). Skipped where
transformers is not installed. Not part of CI's pass/fail (testpaths = tests)."""
from __future__ import annotations

import gc
import os
import statistics
import time

import pytest
import torch

import fastinit

transformers = pytest.importorskip("transformers")
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

ROUNDS = int(os.environ.get("FASTINIT_BENCH_HF_ROUNDS", 5))


def config() -> LlamaConfig:
    return LlamaConfig(vocab_size=32000, hidden_size=1024, intermediate_size=2816,
                       num_hidden_layers=12, num_attention_heads=16, num_key_value_heads=16,
                       max_position_embeddings=2048)


def on_meta() -> LlamaForCausalLM:
    with torch.device("meta"):
        return LlamaForCausalLM(config())


def plain(_):
    return LlamaForCausalLM(config())


def fused(_):
    with fastinit.fused():
        return LlamaForCausalLM(config())


def hf_meta(model):
    model.to_empty(device="cpu")
    model.init_weights()
    return model


def materialize(model):
    fastinit.materialize(model, "cpu", seed=0)
    return model


def floor(model):
    model.to_empty(device="cpu")
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(1.0)
    return model


ARMS = {"plain": (plain, False), "fused": (fused, False), "hf_meta": (hf_meta, True),
        "materialize": (materialize, True), "floor": (floor, True)}


def one_round(times: dict) -> None:
    for name, (fn, needs_meta) in ARMS.items():
        model = on_meta() if needs_meta else None
        gc.collect()
        t0 = time.perf_counter()
        model = fn(model)
        times[name].append(time.perf_counter() - t0)
        del model
        gc.collect()


def test_hf_llama_220m(benchmark, capsys):
    numel = sum(p.numel() for p in on_meta().parameters())
    floor(on_meta())  # warm-up, untimed
    gc.collect()
    times = {name: [] for name in ARMS}
    benchmark.group = "HF Llama 220M float32"
    benchmark.pedantic(one_round, args=(times,), rounds=ROUNDS, iterations=1, warmup_rounds=0)
    med = {name: statistics.median(ts) for name, ts in times.items()}
    ratios = {"fused vs plain": med["plain"] / med["fused"],
              "materialize vs hf_meta": med["hf_meta"] / med["materialize"],
              "materialize / floor": med["materialize"] / med["floor"]}
    benchmark.extra_info.update(impl="interleaved", numel=numel, rounds=ROUNDS,
                                torch=torch.__version__, transformers=transformers.__version__,
                                medians_s=med, ratios=ratios,
                                all_s={k: [round(t, 4) for t in v] for k, v in times.items()})
    with capsys.disabled():
        print(f"\nHF Llama {numel / 1e6:.0f}M parameters, float32, {ROUNDS} interleaved rounds, "
              f"torch {torch.__version__}, transformers {transformers.__version__}")
        for name, ts in times.items():
            print(f"  {name:<12} median {med[name]:.3f} s  (min {min(ts):.3f}, max {max(ts):.3f})")
        for name, r in ratios.items():
            print(f"  {name:<24} {r:.2f}")
