"""Sharded init on real process groups (gloo, CPU): DTensor parameters with Shard(0), Shard(1),
Replicate and 2-D meshes, FSDP2 (fully_shard) models built on meta, tensor parallelism, and
FSDP2 + TP (_StridedShard). Each rank fills only its local shard; after gathering, every tensor
must equal the single-process init of the same model and seed.

The worker processes run this file as a script (torchrun-style env: RANK, WORLD_SIZE,
MASTER_ADDR, MASTER_PORT); one launch per world size (2 and 4) runs every case and records, per
rank and case, "ok" or the traceback, and rank 0 saves the gathered tensors. The tests assert on
those records and compare the tensors against references computed here, in a process without
torch.distributed. Every fastinit call in a worker runs under `no_collectives()`: the
torch.distributed collectives are patched to raise and a dispatch mode refuses any c10d op, so a
collective inside fastinit fails the case. Gathering (full_tensor) happens afterwards.

With the C++ cpu backend on both sides, normal and trunc_normal are bitwise equal too (same code,
same element indices), so every comparison against the cpu backend is bitwise; the contract's
tolerance is only used against the pure-PyTorch reference backend.
"""
from __future__ import annotations

import contextlib
import importlib
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import traceback

import pytest
import torch
from torch import nn

import fastinit
from fastinit import spec
from fastinit.llama import tiny_llama

SEED = 20240601
SENTINEL = 7.0
LAUNCH_TIMEOUT_S = 240   # per world size, all cases
PG_TIMEOUT_S = 30        # a rank stuck in a collective (another rank failed) gives up
WORLDS = (2, 4)


def _distributed_unavailable() -> str | None:
    if not torch.distributed.is_available():
        return "torch.distributed is not available in this torch build"
    if not torch.distributed.is_gloo_available():
        return "the gloo backend of torch.distributed is not available"
    try:
        importlib.import_module("torch.distributed.tensor")
    except ImportError as exc:
        return f"torch.distributed.tensor (DTensor) cannot be imported: {exc}"
    return None


# --------------------------------------------------------------------------------------------
# What is initialised: shared by the workers and the single-process references.
# --------------------------------------------------------------------------------------------

def _fills():
    """name -> (function filling a tensor, minimum ndim, dtypes)."""
    f32, more = (torch.float32,), (torch.float32, torch.bfloat16, torch.float64)

    def generator_normal(t):  # seed drawn from the default generator, identically on every rank
        torch.manual_seed(7)
        fastinit.normal_(t)

    return {
        "uniform": (lambda t: fastinit.uniform_(t, -2.0, 3.0, seed=SEED), 1, more),
        "normal": (lambda t: fastinit.normal_(t, 0.5, 2.0, seed=SEED), 1, more),
        "trunc_normal": (lambda t: fastinit.trunc_normal_(t, 0.0, 0.02, -0.04, 0.04, seed=SEED), 1, more),
        "constant": (lambda t: fastinit.constant_(t, 0.25), 1, f32),
        "zeros": (fastinit.zeros_, 1, f32),
        "ones": (fastinit.ones_, 1, (torch.bfloat16,)),
        "generator_normal": (generator_normal, 1, f32),
        "kaiming_uniform": (lambda t: fastinit.kaiming_uniform_(t, a=math.sqrt(5), seed=SEED), 2, f32),
        "kaiming_normal": (lambda t: fastinit.kaiming_normal_(t, mode="fan_out", seed=SEED), 2, f32),
        "xavier_uniform": (lambda t: fastinit.xavier_uniform_(t, seed=SEED), 2, f32),
        "xavier_normal": (lambda t: fastinit.xavier_normal_(t, gain=2.0, seed=SEED), 2, f32),
        "lecun_normal": (lambda t: fastinit.lecun_normal_(t, seed=SEED), 2, f32),
    }


SHAPES = [(13, 7), (5, 3), (6, 5, 3), (11,)]  # uneven for 2 and 4 ranks; (5, 3): some shards empty


def _strided(dim: int, split_factor: int):
    """_StridedShard (what FSDP2 puts on a dim TP also shards): its local indices need not be
    one block; None where this torch lacks it."""
    try:
        from torch.distributed.tensor.placement_types import _StridedShard
    except ImportError:
        return None
    return _StridedShard(dim, split_factor=split_factor)


def _placements(ndim: int, mesh_ndim: int):
    from torch.distributed.tensor import Replicate, Shard
    if mesh_ndim == 1:
        out = [(Shard(d),) for d in range(ndim)] + [(Replicate(),), (_strided(0, 2),)]
        if ndim >= 2:
            out.append((_strided(1, 3),))
        return [pl for pl in out if None not in pl]
    out = [(Shard(0), Shard(0)), (Shard(0), Replicate()), (Replicate(), Shard(0))]
    out += [pl for pl in [(_strided(0, 2), Shard(0))] if None not in pl]
    if ndim >= 2:
        out += [(Shard(0), Shard(1)), (Shard(1), Shard(0)), (Shard(1), Shard(1)), (Replicate(), Shard(1))]
    if ndim >= 3:
        out += [(Shard(2), Shard(0))]
    return out


def _key(*parts) -> str:
    return "|".join(str(p) for p in parts)


def _dropin_items(mesh_ndim: int):
    """(key, shape, dtype, placements, fill) of the drop-in case."""
    for name, (fill, min_ndim, dtypes) in _fills().items():
        for shape in SHAPES:
            if len(shape) < min_ndim or (len(shape) == 1 and name == "generator_normal"):
                continue
            for dtype in dtypes:
                if dtype != torch.float32 and shape != (13, 7):
                    continue
                for pl in _placements(len(shape), mesh_ndim):
                    yield _key(name, shape, dtype, pl), shape, dtype, pl, fill


def _dropin_reference(key: str) -> torch.Tensor:
    name, shape, dtype, _ = key.split("|")
    t = torch.full(eval(shape), float("nan"), dtype=getattr(torch, dtype.replace("torch.", "")))
    _fills()[name][0](t)
    return t


STRUCTURED = {  # name -> (fill, shape)
    "orthogonal": (lambda t: fastinit.orthogonal_(t, gain=1.5, seed=SEED), (13, 7)),
    "eye": (fastinit.eye_, (13, 7)),
    "sparse": (lambda t: fastinit.sparse_(t, 0.3, std=0.5, seed=SEED), (13, 7)),
    "dirac": (lambda t: fastinit.dirac_(t, groups=2), (6, 4, 3)),
}
STRUCTURED_SPECS = {"orthogonal": spec.orthogonal(gain=0.5), "eye": spec.eye()}


class Small(nn.Module):
    """Every kind of default rule a sharded model meets, with uneven dimensions."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(13, 6, padding_idx=11)   # the padding row sits on a later rank
        self.conv = nn.Conv1d(6, 5, 3)
        self.bn = nn.BatchNorm1d(5)
        self.proj = nn.Linear(6, 9)
        self.norm = nn.LayerNorm(9)
        self.attn = nn.MultiheadAttention(9, 3)
        self.head = nn.Linear(9, 13, bias=False)


SMALL_1D = {"emb.weight": 0, "conv.weight": 1, "conv.bias": 0, "proj.weight": 1, "norm.bias": 0,
            "attn.in_proj_weight": 0, "attn.out_proj.weight": 1, "head.weight": 0,
            "bn.weight": 0, "bn.running_mean": 0}  # the rest Replicate
SMALL_RULES = {
    nn.Linear: {"weight": spec.trunc_normal(std=0.02), "bias": spec.uniform(-0.1, 0.1)},
    nn.Embedding: {"weight": spec.normal(0.0, 0.02)},
    "conv.weight": spec.kaiming_normal(nonlinearity="relu"),
    "attn.in_proj_weight": spec.xavier_normal(),
    "norm.weight": spec.constant(0.5),
}


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.up = nn.Linear(10, 22)     # 22 rows: 11 per tp rank, then 6/5 per dp rank
        self.down = nn.Linear(22, 10)


def _encoder():
    return nn.Sequential(*(nn.TransformerEncoderLayer(10, 2, dim_feedforward=18, dropout=0.0)
                           for _ in range(2)))


TOKENS = (torch.arange(16).view(2, 8) * 37) % 256


def _all_tensors(model: nn.Module) -> dict:
    return dict(list(model.named_parameters()) + list(model.named_buffers()))


# --------------------------------------------------------------------------------------------
# Worker side
# --------------------------------------------------------------------------------------------

class Skip(Exception):
    """A case that cannot run here (e.g. FSDP2 missing); the test skips with this reason."""


_COLLECTIVES = ("all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_object",
                "broadcast", "broadcast_object_list", "reduce", "reduce_scatter",
                "reduce_scatter_tensor", "all_to_all", "all_to_all_single", "barrier",
                "monitored_barrier", "scatter", "scatter_object_list", "gather", "gather_object",
                "send", "recv", "isend", "irecv", "batch_isend_irecv")


@contextlib.contextmanager
def no_collectives():
    """Any collective inside the block raises: the Python API is patched, and a dispatch mode
    refuses the c10d ops DTensor's redistribution uses."""
    import torch.distributed as dist
    import torch.distributed.distributed_c10d as c10d
    from torch.utils._python_dispatch import TorchDispatchMode

    class Refuse(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.namespace in ("c10d", "_c10d_functional", "c10d_functional",
                                  "_c10d_functional_autograd"):
                raise AssertionError(f"collective {func} inside a fastinit call")
            return func(*args, **(kwargs or {}))

    def refuse(name):
        def f(*args, **kwargs):
            raise AssertionError(f"torch.distributed.{name} called inside a fastinit call")
        return f

    saved = [(mod, name, getattr(mod, name)) for mod in (dist, c10d) for name in _COLLECTIVES
             if hasattr(mod, name)]
    for mod, name, _ in saved:
        setattr(mod, name, refuse(name))
    try:
        with Refuse():
            yield
    finally:
        for mod, name, fn in saved:
            setattr(mod, name, fn)


def _gather(t) -> torch.Tensor:
    """The full tensor; with a Replicate placement, also check that every replica agrees."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor, Replicate
    if not isinstance(t, DTensor):
        full = t.detach().clone()
        replicated = True
    else:
        full = t.full_tensor().detach().clone()
        replicated = any(isinstance(p, Replicate) for p in t.placements)
    if replicated:
        replicas = [None] * dist.get_world_size()
        dist.all_gather_object(replicas, full)
        bad = [r for r, x in enumerate(replicas) if not torch.equal(x, full)]
        if bad:
            raise AssertionError(f"replicas on ranks {bad} differ from rank {dist.get_rank()}'s")
    return full


def _gather_model(model: nn.Module) -> dict:
    return {name: _gather(t) for name, t in _all_tensors(model).items()}


def _distribute(model: nn.Module, mesh, placement_of) -> nn.Module:
    """distribute_module with placements per fully qualified name (parameters and buffers)."""
    from torch.distributed.tensor import distribute_module, distribute_tensor

    def partition(mod_name, mod, mesh):
        for name, p in list(mod.named_parameters(recurse=False)):
            fq = f"{mod_name}.{name}" if mod_name else name
            mod.register_parameter(name, nn.Parameter(
                distribute_tensor(p.data, mesh, placement_of(fq, p)), requires_grad=p.requires_grad))
        for name, b in list(mod.named_buffers(recurse=False)):
            fq = f"{mod_name}.{name}" if mod_name else name
            mod.register_buffer(name, distribute_tensor(b, mesh, placement_of(fq, b)))

    return distribute_module(model, mesh, partition)


def _small_placements(mesh_ndim: int):
    from torch.distributed.tensor import Replicate, Shard

    def placement_of(fq, t):
        if mesh_ndim == 1:
            return [Shard(SMALL_1D[fq])] if fq in SMALL_1D else [Replicate()]
        if t.dim() >= 2:
            return [Shard(0), Shard(1)] if fq in SMALL_1D else [Shard(1), Shard(0)]
        return [Replicate(), Shard(0)] if t.dim() == 1 else [Replicate(), Replicate()]

    return placement_of


def case_guard(ctx):
    """The guard itself catches a gather and a barrier (else the other cases prove nothing)."""
    import torch.distributed as dist
    from torch.distributed.tensor import Shard, distribute_tensor
    d = distribute_tensor(torch.zeros(13, 7), ctx.mesh1, [Shard(0)])
    for what, fn in [("full_tensor", d.full_tensor), ("barrier", lambda: dist.barrier()),
                     ("all_reduce", lambda: dist.all_reduce(torch.ones(2)))]:
        try:
            with no_collectives():
                fn()
        except AssertionError as exc:
            assert "inside a fastinit call" in str(exc), exc
        else:
            raise AssertionError(f"no_collectives() let {what} through")


def _run_dropin(mesh, mesh_ndim):
    from torch.distributed.tensor import distribute_tensor
    out = {}
    for key, shape, dtype, pl, fill in _dropin_items(mesh_ndim):
        # src_data_rank=None: every rank splits its own copy (a scatter of an uneven
        # _StridedShard is not supported by DTensor)
        d = distribute_tensor(torch.full(shape, float("nan"), dtype=dtype), mesh, list(pl),
                              src_data_rank=None)
        with no_collectives():
            fill(d)
        out[key] = _gather(d)
    return out


def case_dropin(ctx):
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor
    out = _run_dropin(ctx.mesh1, 1)
    # A non-contiguous local shard still gets the values of its global indices.
    d = distribute_tensor(torch.zeros(13, 7), ctx.mesh1, [Shard(0)])
    local = torch.full(d.to_local().shape[::-1], float("nan")).t()
    assert not local.is_contiguous() or 1 in local.shape or 0 in local.shape
    nc = DTensor.from_local(local, ctx.mesh1, [Shard(0)], run_check=False,
                            shape=d.shape, stride=d.stride())
    with no_collectives():
        fastinit.normal_(nc, 0.5, 2.0, seed=SEED)
    out["noncontiguous"] = _gather(nc)
    return out


def case_dropin_2d(ctx):
    return _run_dropin(ctx.mesh2, 2)


def case_reference_backend(ctx):
    """The pure-PyTorch reference backend on the shards (compared within the contract tolerance)."""
    from torch.distributed.tensor import Shard, distribute_tensor
    out = {}
    fastinit.set_backend("reference")
    try:
        for name in ("uniform", "normal", "trunc_normal"):
            for dtype in (torch.float32, torch.bfloat16):
                for dim in (0, 1):
                    d = distribute_tensor(torch.full((13, 7), float("nan"), dtype=dtype),
                                          ctx.mesh1, [Shard(dim)])
                    with no_collectives():
                        _fills()[name][0](d)
                    out[_key(name, (13, 7), dtype, (Shard(dim),))] = _gather(d)
    finally:
        fastinit.set_backend("auto")
    return out


def _run_structured(mesh, sharded, replicated):
    from torch.distributed.tensor import distribute_tensor
    out = {}
    for pl in sharded:
        for name, (fill, shape) in STRUCTURED.items():
            d = distribute_tensor(torch.full(shape, SENTINEL), mesh, list(pl))
            try:
                with no_collectives():
                    fill(d)
            except fastinit.InitValueError as exc:
                assert "sharded" in str(exc) and f"{name}_" in str(exc), str(exc)
            else:
                raise AssertionError(f"{name}_ on a DTensor with {pl} did not raise InitValueError")
            assert (d.to_local() == SENTINEL).all(), f"{name}_ wrote into a refused shard ({pl})"
        # Whole-model rules: refused while planning, before anything is written.
        for name, sp in STRUCTURED_SPECS.items():
            lin = nn.Linear(7, 13)
            with torch.no_grad():
                lin.weight.fill_(SENTINEL)
                lin.bias.fill_(SENTINEL)
            lin.weight = nn.Parameter(distribute_tensor(lin.weight.data, mesh, list(pl)))
            try:
                with no_collectives():
                    fastinit.init_module(lin, {"weight": sp, "bias": spec.uniform()}, seed=SEED)
            except fastinit.InitValueError as exc:
                assert "sharded" in str(exc) and "weight" in str(exc), str(exc)
            else:
                raise AssertionError(f"init_module with {sp!r} on {pl} did not raise")
            assert (lin.weight.to_local() == SENTINEL).all() and (lin.bias == SENTINEL).all()
    for pl in replicated:
        for name, (fill, shape) in STRUCTURED.items():
            d = distribute_tensor(torch.full(shape, SENTINEL), mesh, list(pl))
            with no_collectives():
                fill(d)
            out[_key(name, pl)] = _gather(d)
        for name, sp in STRUCTURED_SPECS.items():
            lin = nn.Linear(7, 13)
            _distribute(lin, mesh, lambda fq, t: list(pl))
            with no_collectives():
                fastinit.init_module(lin, {"weight": sp, "bias": spec.uniform()}, seed=SEED)
            for pname, t in _all_tensors(lin).items():
                out[_key("rules", name, pname, pl)] = _gather(t)
    return out


def case_structured(ctx):
    from torch.distributed.tensor import Replicate, Shard
    return _run_structured(ctx.mesh1, [(Shard(0),), (Shard(1),)], [(Replicate(),)])


def case_structured_2d(ctx):
    from torch.distributed.tensor import Replicate, Shard
    return _run_structured(ctx.mesh2, [(Shard(0), Shard(1)), (Replicate(), Shard(1))],
                           [(Replicate(), Replicate())])


def _run_model_api(mesh, mesh_ndim):
    out = {}
    placement_of = _small_placements(mesh_ndim)
    # reset_parameters and init_module on a CPU-built model whose tensors were then distributed.
    model = _distribute(Small(), mesh, placement_of)
    with no_collectives():
        fastinit.reset_parameters(model, seed=SEED)
    out.update({_key("reset", n): t for n, t in _gather_model(model).items()})
    with no_collectives():
        fastinit.init_module(model, SMALL_RULES, seed=SEED + 1)
    out.update({_key("rules", n): t for n, t in _gather_model(model).items()})
    # materialize a model built on meta and distributed there.
    with torch.device("meta"):
        model = Small()
    _distribute(model, mesh, placement_of)
    with no_collectives():
        fastinit.materialize(model, device="cpu", seed=SEED + 2)
    out.update({_key("materialize", n): t for n, t in _gather_model(model).items()})
    return out


def case_model_api(ctx):
    return _run_model_api(ctx.mesh1, 1)


def case_model_api_2d(ctx):
    return _run_model_api(ctx.mesh2, 2)


def case_tensor_parallel(ctx):
    from torch.distributed.tensor import Replicate, Shard
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
    out = {}
    plan = {"up": ColwiseParallel(), "down": RowwiseParallel()}
    # A Linear sharded on dim 1 (row-wise TP), built on meta: materialize.
    with torch.device("meta"):
        lin = nn.Linear(10, 7)
    _distribute(lin, ctx.mesh1, lambda fq, t: [Shard(1)] if fq == "weight" else [Replicate()])
    assert lin.weight.placements == (Shard(1),)
    with no_collectives():
        fastinit.materialize(lin, device="cpu", seed=SEED)
    out.update({_key("linear", n): t for n, t in _gather_model(lin).items()})
    # Colwise (Shard(0)) + rowwise (Shard(1)) MLP: built on CPU, then reset_parameters / rules.
    mlp = parallelize_module(MLP(), ctx.mesh1, plan)
    assert mlp.down.weight.placements == (Shard(1),) and mlp.up.weight.placements == (Shard(0),)
    with no_collectives():
        fastinit.reset_parameters(mlp, seed=SEED)
    out.update({_key("mlp", n): t for n, t in _gather_model(mlp).items()})
    with no_collectives():
        fastinit.init_module(mlp, {nn.Linear: {"weight": spec.trunc_normal(std=0.02),
                                               "bias": spec.normal(0, 0.1)}}, seed=SEED + 1)
    out.update({_key("mlp_rules", n): t for n, t in _gather_model(mlp).items()})
    # The same MLP built on meta, parallelized, materialized.
    with torch.device("meta"):
        mlp = MLP()
    parallelize_module(mlp, ctx.mesh1, plan)
    with no_collectives():
        fastinit.materialize(mlp, device="cpu", seed=SEED)
    out.update({_key("mlp_meta", n): t for n, t in _gather_model(mlp).items()})
    return out


def _fully_shard():
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError as exc:
        raise Skip(f"FSDP2 (torch.distributed.fsdp.fully_shard) is not available: {exc}")
    return fully_shard


def _fsdp_llama(mesh):
    fully_shard = _fully_shard()
    with torch.device("meta"):
        model = tiny_llama()
    for layer in model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    placements = {p.placements for p in model.parameters()}
    out = {}
    with no_collectives():
        fastinit.materialize(model, device="cpu", seed=SEED)
    out.update({_key("materialize", n): t for n, t in _gather_model(model).items()})
    with no_collectives():
        fastinit.reset_parameters(model, seed=SEED + 1)
    out.update({_key("reset", n): t for n, t in _gather_model(model).items()})
    with no_collectives():
        fastinit.init_module(model, {nn.Linear: {"weight": spec.trunc_normal(std=0.02)},
                                     "embed_tokens.weight": spec.normal(0, 0.02),
                                     "*norm.weight": spec.constant(0.5)}, seed=SEED + 2)
    out.update({_key("rules", n): t for n, t in _gather_model(model).items()})
    with torch.no_grad():
        out["logits"] = model(TOKENS)  # FSDP2 all-gathers the initialised shards
    return out, placements


def case_fsdp2_llama(ctx):
    from torch.distributed.tensor import Shard
    out, placements = _fsdp_llama(ctx.mesh1)
    assert placements == {(Shard(0),)}, placements
    return out


def case_fsdp2_encoder(ctx):
    fully_shard = _fully_shard()
    with torch.device("meta"):
        model = _encoder()
    for layer in model:
        fully_shard(layer, mesh=ctx.mesh1)
    fully_shard(model, mesh=ctx.mesh1)
    with no_collectives():
        fastinit.materialize(model, device="cpu", seed=SEED)
    return _gather_model(model)


def case_hsdp(ctx):
    from torch.distributed.tensor import Replicate, Shard
    out, placements = _fsdp_llama(ctx.mesh2)
    assert placements == {(Replicate(), Shard(0))}, placements
    return out


def case_fsdp2_tp(ctx):
    """FSDP2 over the dp dim of a TP model: the dims TP shards become _StridedShard."""
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel, parallelize_module
    fully_shard = _fully_shard()
    mesh = ctx.mesh2
    out = {}
    with torch.device("meta"):
        mlp = MLP()
        llama = tiny_llama()
    parallelize_module(mlp, mesh["tp"], {"up": ColwiseParallel(), "down": RowwiseParallel()})
    fully_shard(mlp, mesh=mesh["dp"])
    layer_plan = {f"layers.{i}.{name}": style for i in range(len(llama.layers)) for name, style in [
        ("self_attn.q_proj", ColwiseParallel()), ("self_attn.k_proj", ColwiseParallel()),
        ("self_attn.v_proj", ColwiseParallel()), ("self_attn.o_proj", RowwiseParallel()),
        ("mlp.gate_proj", ColwiseParallel()), ("mlp.up_proj", ColwiseParallel()),
        ("mlp.down_proj", RowwiseParallel())]}
    parallelize_module(llama, mesh["tp"], layer_plan)
    for layer in llama.layers:
        fully_shard(layer, mesh=mesh["dp"])
    fully_shard(llama, mesh=mesh["dp"])
    kinds = {type(p).__name__ for m in (mlp, llama) for t in m.parameters() for p in t.placements}
    assert "_StridedShard" in kinds, kinds  # else this case tests nothing new
    with no_collectives():
        fastinit.materialize(mlp, device="cpu", seed=SEED)
        fastinit.materialize(llama, device="cpu", seed=SEED)
    out.update({_key("mlp", n): t for n, t in _gather_model(mlp).items()})
    out.update({_key("llama", n): t for n, t in _gather_model(llama).items()})
    return out


def _llama_tp_plan(llama):
    from torch.distributed.tensor.parallel import ColwiseParallel, RowwiseParallel
    return {f"layers.{i}.{name}": style() for i in range(len(llama.layers)) for name, style in [
        ("self_attn.q_proj", ColwiseParallel), ("self_attn.k_proj", ColwiseParallel),
        ("self_attn.v_proj", ColwiseParallel), ("self_attn.o_proj", RowwiseParallel),
        ("mlp.gate_proj", ColwiseParallel), ("mlp.up_proj", ColwiseParallel),
        ("mlp.down_proj", RowwiseParallel)]}


def case_tp_llama_descriptors(ctx):
    """Tensor parallel on a Llama-shaped model built on meta (q/k/v/gate/up Shard(0), o/down
    Shard(1), uneven for some widths): materialize sends the backend exactly one descriptor
    per local tensor it writes, whatever the sharded dim."""
    from torch.distributed.tensor import Shard
    from torch.distributed.tensor.parallel import parallelize_module

    from fastinit.backends import cpu
    from fastinit.sharding import local_tensor
    with torch.device("meta"):
        llama = tiny_llama()
    parallelize_module(llama, ctx.mesh1, _llama_tp_plan(llama))
    placements = {p.placements for p in llama.parameters() if hasattr(p, "placements")}
    assert (Shard(1),) in placements and (Shard(0),) in placements, placements
    descriptors = []  # (storage address, data address) of each descriptor the C++ backend ran
    real_run, real_fill_tensors, real_whole = cpu.run, cpu.fill_tensors, cpu.fill_whole_tensors

    def counting_run(fills, *args, **kwargs):
        descriptors.extend((f.tensor.untyped_storage().data_ptr(), f.tensor.data_ptr())
                           for f in fills)
        return real_run(fills, *args, **kwargs)

    def counting_fill_tensors(rows, *args, **kwargs):  # whole tensors planned natively
        descriptors.extend((row[1], row[0]) for row in rows)
        return real_fill_tensors(rows, *args, **kwargs)

    def counting_whole(rows):  # whole tensors read natively (fastinit._C_tensor)
        filled = real_whole(rows)
        if filled:
            descriptors.extend((row[0].untyped_storage().data_ptr(), row[0].data_ptr())
                               for row in rows)
        return filled

    cpu.run, cpu.fill_tensors, cpu.fill_whole_tensors = (counting_run, counting_fill_tensors,
                                                          counting_whole)
    try:
        with no_collectives():
            result = fastinit.materialize(llama, device="cpu", seed=SEED)
    finally:
        cpu.run, cpu.fill_tensors, cpu.fill_whole_tensors = (real_run, real_fill_tensors,
                                                              real_whole)
    # Every parameter is written (the rotary buffers are restored by their own module).
    local = [local_tensor(p) for p in llama.parameters() if local_tensor(p).numel()]
    assert result.not_fused == ["rotary"] and not result.untouched, result
    assert len(descriptors) == len(local), (len(descriptors), len(local))
    written = set(descriptors)
    assert written == {(t.untyped_storage().data_ptr(), t.data_ptr()) for t in local}
    sharded_dim1 = [n for n, p in llama.named_parameters()
                    if getattr(p, "placements", None) == (Shard(1),)]
    assert sharded_dim1, "no Shard(1) parameter: this case tests nothing"
    return {_key("llama", n): t for n, t in _gather_model(llama).items()}


# -- writes through indexing (a Hugging Face padding row) ---------------------------------------
PAD_ROWS = (11, 2, -1)   # 13 rows on 2 ranks: 7 + 6, so rows 2 and 11 lie on different ranks
INDEX_WRITES = {  # name -> write of row `i` of `w`, as init code does it
    "fastinit.zeros_": lambda w, i: fastinit.zeros_(w[i]),
    "zero_": lambda w, i: w[i].zero_(),
    "nn.init.zeros_": lambda w, i: torch.nn.init.zeros_(w[i]),
    "setitem": lambda w, i: w.__setitem__(i, 0.0),
    "data.zero_": lambda w, i: w.data[i].zero_(),
    "normal_ slice": lambda w, i: fastinit.normal_(w[i:i + 1] if i >= 0 else w[i:], 0.0, 3.0, seed=SEED),
    "ellipsis fill_": lambda w, i: w[i, ..., 1:4].fill_(-2.5),
    "chained zero_": lambda w, i: w[i][1:3].zero_(),
    # rows on both ranks for rows 11 and 12: each rank fills its own
    "setitem rows": lambda w, i: w.__setitem__(slice(max(0, i % 13 - 5), i % 13 + 1), 0.5),
    # slices whose rows span several ranks' shards: each rank fills its own rows
    "normal_ rows": lambda w, i: fastinit.normal_(w[i % 13 // 2:i % 13 // 2 + 7], 0.0, 3.0, seed=SEED),
    "uniform_ block": lambda w, i: fastinit.uniform_(w[i % 13 // 2:, 1:4], -1.0, 1.0, seed=SEED),
    "zero_ rows": lambda w, i: w[i % 13 // 2:i % 13 // 2 + 7].zero_(),
    "chained fill_ rows": lambda w, i: w[i % 13 // 2:][1:6].fill_(-1.5),
    "setitem in rows": lambda w, i: w[i % 13 // 2:i % 13 // 2 + 7].__setitem__((slice(1, 5), 2), 4.0),
}
HF_PAD_IDS = (3, 27)     # vocab 32 on 2 ranks: one padding row on each rank


def _index_write_reference(name: str, row: int) -> torch.Tensor:
    w = torch.empty(13, 6)
    fastinit.normal_(w, 0.0, 0.02, seed=SEED)
    INDEX_WRITES[name](w, row)
    return w


def case_index_writes(ctx):
    """Inside fused(), writes through w[i] (and a one-row slice) of a Shard(0) embedding weight
    write the rank that holds the row, with no collective; every rank's shard equals its rows
    of the unsharded result, read locally."""
    from torch.distributed.tensor import Shard, distribute_tensor
    from fastinit.sharding import global_indices
    out = {}
    for name, write in INDEX_WRITES.items():
        for row in PAD_ROWS:
            w = distribute_tensor(torch.full((13, 6), SENTINEL), ctx.mesh1, [Shard(0)])
            with no_collectives(), fastinit.fused():
                fastinit.normal_(w, 0.0, 0.02, seed=SEED)
                write(w, row)
            want = _index_write_reference(name, row)
            rows = list(global_indices(w)[0])
            if not torch.equal(w.to_local(), want[rows]):
                raise AssertionError(f"{name} row {row}: rank's shard (rows {rows}) differs from "
                                     "the unsharded result")
            out[_key(name, row)] = _gather(w)
    return out


def _spanning_slice_reference() -> dict:
    w = torch.full((13, 6), SENTINEL)
    x = w[1:12]
    fastinit.normal_(x, 0.0, 2.0, seed=SEED)
    x[2:9].zero_()
    return {"slice": x.clone(), "weight": w}


def case_spanning_slice(ctx):
    """Inside fused(), a slice of a Shard(0) weight whose rows span every rank: fills of it (and
    of a slice of it) write each rank's rows with no collective, reading the slice gives its
    values, and an in-place operation that is not a fill raises instead of losing its write."""
    from torch.distributed.tensor import Shard, distribute_tensor
    from fastinit.errors import InitValueError
    w = distribute_tensor(torch.full((13, 6), SENTINEL), ctx.mesh1, [Shard(0)])
    with fastinit.fused():
        with no_collectives():
            x = w[1:12]
            fastinit.normal_(x, 0.0, 2.0, seed=SEED)
            x[2:9].zero_()
        read = x.full_tensor()  # the slice's own values (a collective: outside the guard)
        with no_collectives():
            try:
                w[1:12].mul_(2.0)
            except InitValueError as exc:
                if "span several shards" not in str(exc):
                    raise
            else:
                raise AssertionError("mul_ of a slice spanning shards did not raise")
    return {"slice": read, "weight": _gather(w)}


def _hf_llama(pad_token_id: int):
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
    except ImportError as exc:
        raise Skip(f"transformers is not installed: {exc}")
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=32, hidden_size=16, intermediate_size=24, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=16,
        pad_token_id=pad_token_id, tie_word_embeddings=False))


def _fsdp_hf_llama(mesh, pad_token_id: int):
    fully_shard = _fully_shard()
    with torch.device("meta"):
        model = _hf_llama(pad_token_id)
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def case_hf_llama_pad(ctx):
    """A Hugging Face Llama with pad_token_id, FSDP2-sharded on meta, materialized: its own
    init zeroes `embed_tokens.weight[pad_token_id]` on the rank that holds the row."""
    from torch.distributed.tensor import Shard
    out = {}
    for pad in HF_PAD_IDS:
        model = _fsdp_hf_llama(ctx.mesh1, pad)
        emb = model.model.embed_tokens.weight
        assert emb.placements == (Shard(0),), emb.placements
        with no_collectives():
            fastinit.materialize(model, device="cpu", seed=SEED)
        out.update({_key(pad, n): t for n, t in _gather_model(model).items()})
    return out


ALONE_TIMEOUT_S = 60


def case_hf_llama_one_rank_alone(ctx):
    """Rank 0 materializes its FSDP2 shard of the Llama alone while rank 1 does nothing: no
    collective, so it finishes (a collective would wait for rank 1 until the deadline)."""
    import threading
    import torch.distributed as dist
    model = _fsdp_hf_llama(ctx.mesh1, HF_PAD_IDS[0])
    if dist.get_rank() != 0:
        return None
    done, failed = threading.Event(), []

    def run():
        try:
            fastinit.materialize(model, device="cpu", seed=SEED)
        except BaseException as exc:  # reported below, on the main thread
            failed.append(exc)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    if not done.wait(ALONE_TIMEOUT_S):
        raise AssertionError(f"materialize on one rank alone did not finish in {ALONE_TIMEOUT_S} s")
    if failed:
        raise failed[0]
    from fastinit.sharding import global_indices
    emb = model.model.embed_tokens.weight
    rows = list(global_indices(emb)[0])
    assert HF_PAD_IDS[0] in rows, rows  # this rank holds the padding row
    assert (emb.to_local()[rows.index(HF_PAD_IDS[0])] == 0).all()
    return {"embed_tokens.weight": emb.to_local().detach().clone(), "rows": torch.tensor(rows)}


CASES = {  # name -> (function, world sizes)
    "guard": (case_guard, WORLDS),
    "dropin": (case_dropin, WORLDS),
    "dropin_2d": (case_dropin_2d, (4,)),
    "reference_backend": (case_reference_backend, (2,)),
    "structured": (case_structured, WORLDS),
    "structured_2d": (case_structured_2d, (4,)),
    "model_api": (case_model_api, WORLDS),
    "model_api_2d": (case_model_api_2d, (4,)),
    "tensor_parallel": (case_tensor_parallel, WORLDS),
    "fsdp2_llama": (case_fsdp2_llama, WORLDS),
    "fsdp2_encoder": (case_fsdp2_encoder, WORLDS),
    "hsdp": (case_hsdp, (4,)),
    "fsdp2_tp": (case_fsdp2_tp, (4,)),
    "tp_llama_descriptors": (case_tp_llama_descriptors, (2,)),
    "index_writes": (case_index_writes, WORLDS),
    "spanning_slice": (case_spanning_slice, WORLDS),
    "hf_llama_pad": (case_hf_llama_pad, (2,)),
    "hf_llama_one_rank_alone": (case_hf_llama_one_rank_alone, (2,)),
}


class _Ctx:
    pass


def worker_main(outdir: str) -> None:
    import datetime
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    torch.set_num_threads(1)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    dist.init_process_group("gloo", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=PG_TIMEOUT_S))
    ctx = _Ctx()
    ctx.mesh1 = init_device_mesh("cpu", (world,))
    ctx.mesh2 = init_device_mesh("cpu", (2, 2), mesh_dim_names=("dp", "tp")) if world == 4 else None
    status_group = dist.new_group(backend="gloo")  # apart from the cases' own collectives
    results = {}
    path = os.path.join(outdir, f"result-{rank}.json")
    for name, (fn, worlds) in CASES.items():
        if world not in worlds:
            continue
        t0 = time.perf_counter()
        saved = None
        try:
            saved = fn(ctx)
            status = "ok"
        except Skip as exc:
            status = f"skip: {exc}"
        except BaseException:
            status = "error:\n" + traceback.format_exc()
        # Every rank learns every rank's status (and stays in step for the next case).
        statuses = [None] * world
        dist.all_gather_object(statuses, status, group=status_group)
        results[name] = {"status": status, "seconds": round(time.perf_counter() - t0, 2),
                         "peers_ok": all(s == "ok" for s in statuses)}
        if rank == 0 and saved is not None:
            torch.save(saved, os.path.join(outdir, f"{name}.pt"))
        with open(path + ".tmp", "w") as f:
            json.dump(results, f)
        os.replace(path + ".tmp", path)
    dist.barrier()
    dist.destroy_process_group()


# --------------------------------------------------------------------------------------------
# Test side
# --------------------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Launch:
    """One run of every case at one world size: statuses per rank, rank 0's tensors."""

    def __init__(self, world: int, outdir: str, results: list, log: str, error: str | None):
        self.world, self.outdir, self.results, self.log, self.error = world, outdir, results, log, error

    def check(self, case: str) -> dict:
        """Assert that every rank ran `case` without error; return rank 0's tensors."""
        statuses = []
        for rank, res in enumerate(self.results):
            if case not in res:
                pytest.fail(f"world {self.world} rank {rank}: case {case!r} never finished "
                            f"({self.error}; finished: {sorted(res)})\n{self.log[-6000:]}")
            statuses.append(res[case]["status"])
        skips = {s for s in statuses if s.startswith("skip: ")}
        if skips and all(s.startswith("skip: ") for s in statuses):
            pytest.skip(skips.pop()[len("skip: "):])
        errors = [f"rank {r}: {s}" for r, s in enumerate(statuses) if s != "ok"]
        assert not errors, f"world {self.world}, case {case!r}:\n" + "\n".join(errors)
        path = os.path.join(self.outdir, f"{case}.pt")
        return torch.load(path) if os.path.exists(path) else {}


_LAUNCHES: dict[int, Launch] = {}


def _launch(world: int, tmp_root: str) -> Launch:
    if world in _LAUNCHES:
        return _LAUNCHES[world]
    outdir = tempfile.mkdtemp(prefix=f"world{world}-", dir=tmp_root)
    port = _free_port()
    procs = []
    for rank in range(world):
        env = dict(os.environ, RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                   LOCAL_WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        log = open(os.path.join(outdir, f"log-{rank}.txt"), "w")
        procs.append((subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker", outdir],
                                       env=env, stdout=log, stderr=subprocess.STDOUT), log))
    deadline = time.monotonic() + LAUNCH_TIMEOUT_S
    error = None
    for p, log in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            error = f"timed out after {LAUNCH_TIMEOUT_S}s"
    for p, log in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
        log.close()
    codes = [p.returncode for p, _ in procs]
    if error is None and any(codes):
        error = f"worker exit codes {codes}"
    logs, results = [], []
    for rank in range(world):
        with open(os.path.join(outdir, f"log-{rank}.txt")) as f:
            logs.append(f"--- rank {rank} ---\n" + f.read()[-3000:])
        path = os.path.join(outdir, f"result-{rank}.json")
        results.append(json.load(open(path)) if os.path.exists(path) else {})
    _LAUNCHES[world] = Launch(world, outdir, results, "\n".join(logs), error)
    return _LAUNCHES[world]


@pytest.fixture(scope="module")
def launches(tmp_path_factory):
    reason = _distributed_unavailable()
    if reason:
        pytest.skip(reason)
    root = str(tmp_path_factory.mktemp("sharded"))
    yield lambda world: _launch(world, root)
    _LAUNCHES.clear()


per_world = pytest.mark.parametrize("world", WORLDS)


def _assert_same(got: dict, want: dict, what: str) -> None:
    assert sorted(got) == sorted(want), f"{what}: names differ"
    for name in want:
        g, w = got[name], want[name]
        assert g.dtype == w.dtype and g.shape == w.shape, f"{what} {name}: {g.dtype}{tuple(g.shape)}"
        if not torch.equal(g, w):
            diff = (g.double() - w.double()).abs().nan_to_num(float("inf")).max().item()
            raise AssertionError(f"{what} {name}: not bitwise equal to the unsharded init "
                                 f"(max |diff| {diff:.3g})")


def _reference_model(factory, call) -> dict:
    model = factory()
    call(model)
    return {n: t.detach().clone() for n, t in _all_tensors(model).items()}


@pytest.mark.slow
@per_world
def test_guard_catches_collectives(launches, world):
    launches(world).check("guard")


@per_world
def test_workers_exit_cleanly(launches, world):
    run = launches(world)
    assert run.error is None, f"world {world}: {run.error}\n{run.log[-6000:]}"


@per_world
def test_dropin_functions_match_unsharded(launches, world):
    got = launches(world).check("dropin")
    want = {key: _dropin_reference(key) for key, *_ in _dropin_items(1)}
    t = torch.full((13, 7), float("nan"))
    fastinit.normal_(t, 0.5, 2.0, seed=SEED)
    want["noncontiguous"] = t
    _assert_same(got, want, f"world {world}")


def test_dropin_functions_on_2d_mesh(launches):
    got = launches(4).check("dropin_2d")
    _assert_same(got, {key: _dropin_reference(key) for key, *_ in _dropin_items(2)}, "2x2 mesh")


def test_reference_backend_within_contract_tolerance(launches):
    """Sharded on the reference backend vs unsharded on the cpu backend: uniform and constant
    bitwise; normal and trunc_normal within the contract tolerance (4e-6 on z per backend)."""
    got = launches(2).check("reference_backend")
    assert got
    for key, g in got.items():
        w = _dropin_reference(key)
        name = key.split("|")[0]
        if name == "uniform":
            assert torch.equal(g, w), key
            continue
        std = {"normal": 2.0, "trunc_normal": 0.02}[name]
        tol = 8e-6 * std + 2 * torch.finfo(w.dtype).eps * w.double().abs()
        assert ((g.double() - w.double()).abs() <= tol).all(), key


@per_world
def test_structured_inits_refuse_shards_and_match_on_replicate(launches, world):
    got = launches(world).check("structured")
    _check_structured(got)


def test_structured_inits_on_2d_mesh(launches):
    _check_structured(launches(4).check("structured_2d"))


def _check_structured(got: dict) -> None:
    want = {}
    for key in got:
        parts = key.split("|")
        if parts[0] == "rules":
            _, name, pname, _ = parts
            lin = nn.Linear(7, 13)
            fastinit.init_module(lin, {"weight": STRUCTURED_SPECS[name], "bias": spec.uniform()},
                                 seed=SEED)
            want[key] = getattr(lin, pname).detach()
        else:
            fill, shape = STRUCTURED[parts[0]]
            t = torch.full(shape, SENTINEL)
            fill(t)
            want[key] = t
    assert len(got) == len(STRUCTURED) + 2 * len(STRUCTURED_SPECS)
    _assert_same(got, want, "Replicate")


def _prefixed(prefix: str, tensors: dict) -> dict:
    return {_key(prefix, n): t for n, t in tensors.items()}


def _small_reference() -> dict:
    want = _prefixed("reset", _reference_model(Small, lambda m: fastinit.reset_parameters(m, seed=SEED)))

    def reset_then_rules(m):
        fastinit.reset_parameters(m, seed=SEED)
        fastinit.init_module(m, SMALL_RULES, seed=SEED + 1)

    want.update(_prefixed("rules", _reference_model(Small, reset_then_rules)))
    want.update(_prefixed("materialize", _reference_model(
        Small, lambda m: fastinit.reset_parameters(m, seed=SEED + 2))))
    return want


@per_world
def test_model_api_on_dtensor_params(launches, world):
    """reset_parameters, init_module and materialize (from meta) on a model whose parameters and
    buffers are DTensors (Shard(0)/Shard(1)/Replicate, uneven, an Embedding padding row)."""
    _assert_same(launches(world).check("model_api"), _small_reference(), f"world {world}")


def test_model_api_on_2d_mesh(launches):
    _assert_same(launches(4).check("model_api_2d"), _small_reference(), "2x2 mesh")


@per_world
def test_tensor_parallel(launches, world):
    got = launches(world).check("tensor_parallel")
    lin = _reference_model(lambda: nn.Linear(10, 7), lambda m: fastinit.reset_parameters(m, seed=SEED))
    mlp = _reference_model(MLP, lambda m: fastinit.reset_parameters(m, seed=SEED))

    def rules(m):
        fastinit.reset_parameters(m, seed=SEED)
        fastinit.init_module(m, {nn.Linear: {"weight": spec.trunc_normal(std=0.02),
                                             "bias": spec.normal(0, 0.1)}}, seed=SEED + 1)

    want = {**_prefixed("linear", lin), **_prefixed("mlp", mlp), **_prefixed("mlp_meta", mlp),
            **_prefixed("mlp_rules", _reference_model(MLP, rules))}
    _assert_same(got, want, f"world {world}")


def _llama_reference() -> dict:
    def materialize(m):
        fastinit.reset_parameters(m, seed=SEED)

    want = _prefixed("materialize", _reference_model(tiny_llama, materialize))
    model = tiny_llama()
    fastinit.reset_parameters(model, seed=SEED + 1)
    want.update(_prefixed("reset", {n: t.detach().clone() for n, t in _all_tensors(model).items()}))
    fastinit.init_module(model, {nn.Linear: {"weight": spec.trunc_normal(std=0.02)},
                                 "embed_tokens.weight": spec.normal(0, 0.02),
                                 "*norm.weight": spec.constant(0.5)}, seed=SEED + 2)
    want.update(_prefixed("rules", {n: t.detach().clone() for n, t in _all_tensors(model).items()}))
    with torch.no_grad():
        want["logits"] = model(TOKENS)
    return want


def _check_llama(got: dict, what: str) -> None:
    want = _llama_reference()
    g, w = got.pop("logits"), want.pop("logits")
    torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5, msg=f"{what}: logits")
    _assert_same(got, want, what)


@per_world
def test_fsdp2_tiny_llama_from_meta(launches, world):
    """fully_shard (per layer and root) on a meta tiny_llama, then materialize; reset_parameters
    and init_module on the sharded params; a forward pass through FSDP2 sees the same weights."""
    _check_llama(launches(world).check("fsdp2_llama"), f"FSDP2 world {world}")


@per_world
def test_fsdp2_transformer_encoder_from_meta(launches, world):
    got = launches(world).check("fsdp2_encoder")
    want = _reference_model(_encoder, lambda m: fastinit.reset_parameters(m, seed=SEED))
    _assert_same(got, want, f"FSDP2 world {world}")


def test_hsdp_2d_mesh(launches):
    """fully_shard on a 2x2 mesh: placements (Replicate, Shard(0))."""
    _check_llama(launches(4).check("hsdp"), "HSDP 2x2")


def test_tensor_parallel_llama_one_descriptor_per_local_tensor(launches):
    got = launches(2).check("tp_llama_descriptors")
    want = _prefixed("llama", _reference_model(
        tiny_llama, lambda m: fastinit.reset_parameters(m, seed=SEED)))
    _assert_same(got, want, "TP Llama world 2")


def test_fsdp2_over_tensor_parallel(launches):
    """TP on the 'tp' dim, FSDP2 on 'dp': (_StridedShard(0), Shard(0)) and (Shard(0), Shard(1))."""
    got = launches(4).check("fsdp2_tp")
    want = {**_prefixed("mlp", _reference_model(MLP, lambda m: fastinit.reset_parameters(m, seed=SEED))),
            **_prefixed("llama", _reference_model(tiny_llama,
                                                  lambda m: fastinit.reset_parameters(m, seed=SEED)))}
    _assert_same(got, want, "FSDP2 + TP 2x2")


@per_world
def test_index_writes_write_the_shard_that_holds_the_row(launches, world):
    """fastinit.zeros_(w[i]), w[i].zero_(), nn.init.zeros_(w[i]), w[i] = 0, w.data[i].zero_()
    and a one-row slice, inside fused() on a Shard(0) weight: bitwise the unsharded result,
    whichever rank holds the row (each rank also compared its own shard, in the worker)."""
    got = launches(world).check("index_writes")
    want = {_key(name, row): _index_write_reference(name, row)
            for name in INDEX_WRITES for row in PAD_ROWS}
    _assert_same(got, want, f"world {world}")
    for row in PAD_ROWS:
        assert (got[_key("zero_", row)][row] == 0).all()


@per_world
def test_slice_spanning_shards_is_written_and_read_without_collectives(launches, world):
    """A slice whose rows lie on every rank, filled inside fused(): each rank writes its rows,
    the slice reads its values, the weight equals the unsharded result bitwise; a non-fill
    in-place operation on it raises (checked in the worker)."""
    got = launches(world).check("spanning_slice")
    _assert_same(got, _spanning_slice_reference(), f"world {world}")


def _hf_llama_reference(pad: int) -> dict:
    with torch.device("meta"):
        model = _hf_llama(pad)
    fastinit.materialize(model, device="cpu", seed=SEED)
    return {n: t.detach().clone() for n, t in _all_tensors(model).items()}


def test_hf_llama_padding_row_under_fsdp2(launches):
    """HF Llama (pad_token_id on either rank), FSDP2 on meta, materialize: bitwise the unsharded
    materialize, and the padding row is zero."""
    pytest.importorskip("transformers")
    got = launches(2).check("hf_llama_pad")
    want = {}
    for pad in HF_PAD_IDS:
        want.update(_prefixed(pad, _hf_llama_reference(pad)))
        emb = got[_key(pad, "model.embed_tokens.weight")]
        assert (emb[pad] == 0).all() and (emb != 0).sum() > emb.numel() // 2, pad
    _assert_same(got, want, "HF Llama FSDP2 world 2")


def test_hf_llama_one_rank_materializes_alone(launches):
    """One rank materializes its shard while the other does nothing: it finishes, with its
    rows of the unsharded init and the padding row zero."""
    pytest.importorskip("transformers")
    got = launches(2).check("hf_llama_one_rank_alone")
    want = _hf_llama_reference(HF_PAD_IDS[0])["model.embed_tokens.weight"]
    assert torch.equal(got["embed_tokens.weight"], want[got["rows"]])


def test_world_sizes_agree(launches):
    """The gathered tensors of 2 and 4 ranks are identical, case by case."""
    two, four = launches(2), launches(4)
    for case in ("dropin", "structured", "model_api", "tensor_parallel", "fsdp2_llama",
                 "fsdp2_encoder"):
        a, b = two.check(case), four.check(case)
        assert sorted(a) == sorted(b), case
        for name in a:
            assert torch.equal(a[name], b[name]), f"{case} {name}: 2 ranks != 4 ranks"


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    worker_main(sys.argv[2])
