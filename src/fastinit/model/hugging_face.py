"""Hugging Face models: their own init (`PreTrainedModel.init_weights`) on fresh tensors."""
from __future__ import annotations

import torch
from torch import nn


def is_hugging_face_model(module: nn.Module) -> bool:
    return any(cls.__name__ == "PreTrainedModel" and cls.__module__.startswith("transformers.")
               for cls in type(module).__mro__)


def hugging_face_init(model: nn.Module, kept: list[torch.Tensor]) -> None:
    """`PreTrainedModel.init_weights()` on fresh tensors: every module's `_init_weights` (which
    also recomputes rotary and position buffers), then `tie_weights`. As in a model built on a
    real device, a tied parameter (`lm_head.weight`) is initialised as its source alone (the
    target is set aside on meta, where init writes nothing) and tied again by `tie_weights`.
    The model's `_is_hf_initialized` flags from an earlier build are cleared, and kept buffers
    are flagged, so that HF's init leaves them alone as it does loaded weights."""
    for m in model.modules():
        m.__dict__.pop("_is_hf_initialized", None)
    for t in kept:
        t._is_hf_initialized = True
    for target in getattr(model, "all_tied_weights_keys", None) or {}:
        owner_name, _, local = target.rpartition(".")
        owner = model.get_submodule(owner_name)
        tied = getattr(owner, local)
        setattr(owner, local, nn.Parameter(torch.empty_like(tied, device="meta"),
                                           requires_grad=tied.requires_grad))
    model.init_weights()
