"""timm models built plainly and inside `fastinit.fused()`, in one run (the second test
environment has timm: `.venv-torch2.14/bin/python -m pytest benchmarks/test_client_init.py
--benchmark-only`; skipped where timm does not import):

* timm vit_small_patch16_224 (22M parameters: timm's trunc_normal_ init);
* timm resnet50 (25.6M parameters: kaiming_normal_ fan_out convs).

Both arms construct the whole model (allocation included) from the same seed."""
import pytest
import torch

import fastinit

timm = pytest.importorskip("timm", reason="timm (and torchvision) do not import here")

MODELS = {"vit_small_patch16_224": "vit_small_patch16_224", "resnet50": "resnet50"}


def plain(name):
    return timm.create_model(name, pretrained=False)


def fused(name):
    with fastinit.fused():
        return timm.create_model(name, pretrained=False)


@pytest.mark.parametrize("impl", ["fastinit", "torch"])
@pytest.mark.parametrize("model_name", list(MODELS))
def test_timm_model_construction(benchmark, model_name, impl):
    torch.manual_seed(0)
    numel = sum(p.numel() for p in plain(model_name).parameters())  # also the warm-up
    fn = fused if impl == "fastinit" else plain
    benchmark.group = f"timm {model_name} float32"
    benchmark.extra_info.update(impl=impl, numel=numel, dtype="float32")
    benchmark.pedantic(fn, args=(model_name,), rounds=7, iterations=1, warmup_rounds=1)
