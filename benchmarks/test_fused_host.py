"""Host overhead of `fastinit.fused()`: building inside the block against plain construction, the
arms interleaved round by round in one run (medians in extra_info["median_s"]):

    .venv/bin/python -m pytest benchmarks/test_fused_host.py --benchmark-only -s

* 1000 ``nn.Linear(16, 16)``;
* a fused pass of 2000 ``fastinit.normal_`` calls on 16-element tensors (host time per tensor);
* N ``nn.BatchNorm2d(64)`` for N = 250, 1000, 4000 (growth must be linear);
* torchvision / timm CNNs, where installed;
* a Qwen2-MoE-shaped Hugging Face model (hidden 32, 64 experts, 4 layers).
"""

import pytest
import torch
from torch import nn

import fastinit
from interleave import interleaved

# A full garbage collection (100-300 ms on a heap of torch's size) lands in whichever arm
# crosses the collector's threshold: medians over 7 rounds keep one such round from deciding.
ROUNDS = 7


def timed(benchmark, arms: dict, rounds: int = ROUNDS) -> dict:
    """`interleaved`, one call per arm and round, its medians printed."""
    medians = interleaved(benchmark, arms, 1, rounds, 1, numel=0)
    print(f"\n{benchmark.name}: " + ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in medians.items()))
    return medians


def inside_fused(build):
    def run():
        with fastinit.fused():
            build()
    return run


def linears():
    return [nn.Linear(16, 16) for _ in range(1000)]


def test_1000_linears(benchmark):
    m = timed(benchmark, {"plain": linears, "fused": inside_fused(linears)})
    benchmark.extra_info["fused_over_plain"] = m["fused"] / m["plain"]


def test_host_time_per_tensor(benchmark):
    tensors = [torch.empty(16) for _ in range(2000)]

    def fused_pass():
        with fastinit.fused():
            for t in tensors:
                fastinit.normal_(t)

    m = timed(benchmark, {"fused": fused_pass})
    benchmark.extra_info["us_per_tensor"] = m["fused"] / len(tensors) * 1e6


@pytest.mark.parametrize("n", [250, 1000, 4000])
def test_batchnorms(benchmark, n):
    def build():
        return [nn.BatchNorm2d(64) for _ in range(n)]

    m = timed(benchmark, {"plain": build, "fused": inside_fused(build)}, rounds=3 if n == 4000 else ROUNDS)
    benchmark.extra_info["fused_over_plain"] = m["fused"] / m["plain"]


CNNS = [("torchvision", "densenet121"), ("torchvision", "regnet_y_400mf"),
        ("torchvision", "efficientnet_b0"), ("torchvision", "mobilenet_v3_large"),
        ("torchvision", "resnet50"), ("timm", "resnet50"), ("timm", "efficientnet_b0"),
        ("timm", "efficientnetv2_rw_t"), ("timm", "regnety_016"), ("timm", "mobilenetv3_large_100")]


@pytest.mark.parametrize("library,name", CNNS)
def test_cnn(benchmark, library, name):
    if library == "torchvision":
        models = pytest.importorskip("torchvision.models")
        build = lambda: getattr(models, name)()  # noqa: E731
    else:
        timm = pytest.importorskip("timm")
        build = lambda: timm.create_model(name)  # noqa: E731
    m = timed(benchmark, {"plain": build, "fused": inside_fused(build)})
    benchmark.extra_info["plain_over_fused"] = m["plain"] / m["fused"]


def test_qwen2_moe_shaped(benchmark):
    transformers = pytest.importorskip("transformers")
    config = transformers.Qwen2MoeConfig(
        vocab_size=128, hidden_size=32, intermediate_size=64, moe_intermediate_size=16,
        shared_expert_intermediate_size=32, num_experts=64, num_experts_per_tok=4,
        num_hidden_layers=4, num_attention_heads=2, num_key_value_heads=1)

    def build():
        return transformers.Qwen2MoeForCausalLM(config)

    m = timed(benchmark, {"plain": build, "fused": inside_fused(build)})
    benchmark.extra_info["plain_over_fused"] = m["plain"] / m["fused"]
