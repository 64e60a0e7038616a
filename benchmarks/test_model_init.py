"""Model-level init, fastinit against the torch way, in one run:

    .venv/bin/python -m pytest benchmarks/test_model_init.py --benchmark-only

* ResNet-50-shaped parameter set (161 tensors), built on meta each round, then
  `fastinit.materialize` against `to_empty` + every module's `reset_parameters`;
* the 1.3B Llama-shaped model of `fastinit demo`, the same way (FASTINIT_BENCH_LLAMA_PARAMS
  changes its size).
An untimed warm-up allocation of the same size runs first (the first touch of fresh memory can
pay for the system backing it)."""
import os

import pytest
import torch

import fastinit
from fastinit.llama import Llama, LlamaConfig

from model_shapes import resnet50_shaped

LLAMA_PARAMS = float(os.environ.get("FASTINIT_BENCH_LLAMA_PARAMS", 1.3e9))
MODELS = {
    "resnet50": resnet50_shaped,
    "llama": lambda: Llama(LlamaConfig.with_params(LLAMA_PARAMS)),
}


def on_meta(factory):
    with torch.device("meta"):
        return factory()


def torch_way(model):
    model.to_empty(device="cpu")
    for m in model.modules():
        if callable(getattr(m, "reset_parameters", None)):
            m.reset_parameters()


def fastinit_way(model):
    fastinit.materialize(model, "cpu", seed=0)


@pytest.mark.parametrize("impl", ["fastinit", "torch"])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_model_init(benchmark, model_name, impl):
    factory = MODELS[model_name]
    torch_way(on_meta(factory))  # warm-up, untimed
    fn = fastinit_way if impl == "fastinit" else torch_way
    benchmark.group = f"model {model_name} float32"
    numel = sum(p.numel() for p in on_meta(factory).parameters())
    benchmark.extra_info.update(impl=impl, numel=numel, dtype="float32")
    rounds = 3 if model_name == "llama" else 11
    benchmark.pedantic(fn, setup=lambda: ((on_meta(factory),), {}), rounds=rounds,
                       iterations=1, warmup_rounds=0)
