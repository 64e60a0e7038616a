"""`fastinit demo --model hf`: a Hugging Face `LlamaForCausalLM` of about `params` parameters
(~1.3B by default; transformers must be installed), initialised four ways, each timed once:
built on meta then `fastinit.materialize`, built inside `fastinit.fused()`, HF's own meta path
(`to_empty` + `init_weights()`) and a plain build (`LlamaForCausalLM(config)`); then the std of
every random weight against HF's `initializer_range` and the norms and rotary tables against
HF's values."""
from __future__ import annotations

import gc

import torch

from .demo import _timed
from .fused import fused
from .model import materialize

CPU = torch.device("cpu")


def hf_llama_config(params: float):
    """A Llama config of about `params` parameters (vocab 32000, intermediate 2.75 x hidden)."""
    from transformers import LlamaConfig

    hidden = 2048 if params >= 5e8 else 512
    intermediate = 64 * round(2.75 * hidden / 64)
    vocab = 32000
    per_layer = 4 * hidden * hidden + 3 * hidden * intermediate
    layers = max(1, round((params - 2 * vocab * hidden) / per_layer))
    return LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                       num_hidden_layers=layers, num_attention_heads=hidden // 128,
                       num_key_value_heads=hidden // 128, max_position_embeddings=2048)


def _timed_on_cpu(fn):
    gc.collect()  # each phase gets the memory the previous one freed
    return _timed(fn, CPU)


def _check(model, config) -> tuple[float, bool]:
    """(worst relative std deviation of the random weights from initializer_range, whether the
    norm weights are ones and the rotary tables HF's)."""
    want = config.initializer_range
    worst = 0.0
    exact = True
    for name, p in model.named_parameters():
        flat = p.detach().reshape(-1)
        if name.endswith("norm.weight"):
            exact &= bool((flat == 1).all())
            continue
        sample = flat[:: max(1, flat.numel() // 1_000_000)].double()
        worst = max(worst, abs(sample.std().item() / want - 1))
    rotary = model.model.rotary_emb
    exact &= torch.equal(rotary.inv_freq, type(rotary)(config).inv_freq)  # built on the CPU
    return worst, exact


def run_hf_demo(params: float = 1.3e9, seed: int = 0) -> dict:
    from transformers import LlamaForCausalLM

    config = hf_llama_config(params)
    with torch.device("meta"):
        numel = sum(p.numel() for p in LlamaForCausalLM(config).parameters())
    print(f"Hugging Face LlamaForCausalLM: {config.num_hidden_layers} layers, hidden "
          f"{config.hidden_size}, {numel / 1e9:.3f}B parameters, float32, cpu")

    def on_meta():
        with torch.device("meta"):
            return LlamaForCausalLM(config)

    def hf_meta_path(model):
        model.to_empty(device="cpu")
        model.init_weights()

    def in_fused():
        with fused():
            return LlamaForCausalLM(config)

    # Untimed: first-call costs (HF's one-time setup) and the first touch of this much memory;
    # every timed phase then starts from the same state.
    materialize(on_meta(), "cpu", seed=seed)
    times = {}
    model = on_meta()
    _, times["fastinit.materialize (meta)"] = _timed_on_cpu(
        lambda: materialize(model, "cpu", seed=seed))
    worst, exact = _check(model, config)
    del model
    model, times["inside fastinit.fused()"] = _timed_on_cpu(in_fused)
    worst_fused, exact_fused = _check(model, config)
    del model
    model = on_meta()
    _, times["HF meta path (to_empty + init_weights)"] = _timed_on_cpu(lambda: hf_meta_path(model))
    del model
    model, times["HF plain build"] = _timed_on_cpu(lambda: LlamaForCausalLM(config))
    del model
    gc.collect()
    for name, seconds in times.items():
        print(f"  {name:<40} {seconds:7.3f} s")
    materialize_s, fused_s, hf_meta_s, plain_s = times.values()
    print(f"speedup: materialize {hf_meta_s / materialize_s:.1f}x HF's meta path; fused() "
          f"{plain_s / fused_s:.1f}x the plain build")
    print(f"std check (initializer_range {config.initializer_range}): worst relative deviation "
          f"{worst:.2e} materialize, {worst_fused:.2e} fused(); norms and rotary tables exact: "
          f"{exact and exact_fused}")
    return {"seconds": times, "worst_std_deviation": max(worst, worst_fused),
            "exact": exact and exact_fused}
