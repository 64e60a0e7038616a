"""Sharded targets (DTensor, and so FSDP2 parameters): each rank fills only its local shard,
with the values of the global logical indices it owns. The values are a function of the global
index, so they equal the unsharded init for any placements, mesh and world size, uneven shards
included, and no collective is needed."""
from __future__ import annotations

import itertools
import math

import torch

from .errors import InitValueError

try:
    from torch.distributed.tensor import DTensor, Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
except ImportError:  # torch built without distributed
    DTensor = None


def is_dtensor(t) -> bool:
    return DTensor is not None and isinstance(t, DTensor)


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """The memory this rank writes: a DTensor's local shard, or the tensor itself."""
    return t.to_local() if is_dtensor(t) else t


def is_sharded(t) -> bool:
    return is_dtensor(t) and any(not isinstance(p, Replicate) for p in t.placements)


def check_placements(t, fn_name: str) -> None:
    if is_dtensor(t):
        bad = [p for p in t.placements if not isinstance(p, (Shard, Replicate))]
        if bad:
            raise InitValueError(f"{fn_name}: cannot initialise a DTensor with placements {bad}; "
                                 "only Shard and Replicate have a defined local content")


def check_unsharded(t, fn_name: str) -> None:
    """Structured inits need the whole matrix: refuse a sharded DTensor, never write wrong values."""
    if is_sharded(t):
        raise InitValueError(
            f"{fn_name}: the tensor is sharded ({list(t.placements)} on a mesh of "
            f"{t.device_mesh.size()} ranks) and {fn_name} needs the whole matrix; initialise it "
            "unsharded (or Replicate) and then distribute it")


def global_runs(t) -> list[tuple[torch.Tensor, int]]:
    """(contiguous piece of the local shard, global index of its first element) covering the
    local shard of DTensor `t`, in as few pieces as its placements allow."""
    local = t.to_local()
    if local.numel() == 0:
        return []
    local_shape, offset = compute_local_shape_and_global_offset(t.shape, t.device_mesh, t.placements)
    global_shape = tuple(t.shape)
    if tuple(local.shape) != tuple(local_shape):
        raise InitValueError(f"local shard of shape {tuple(local.shape)} does not match the "
                             f"expected {tuple(local_shape)} for placements {t.placements}")
    ndim = len(global_shape)
    k = ndim
    while k > 0 and local_shape[k - 1] == global_shape[k - 1]:
        k -= 1
    if k == 0:
        return [(local, 0)]
    global_strides = [math.prod(global_shape[d + 1:]) for d in range(ndim)]
    partial = k - 1  # last dimension the shard covers only partly; later ones fully
    runs = []
    for idx in itertools.product(*(range(n) for n in local_shape[:partial])):
        start = sum((offset[d] + i) * global_strides[d] for d, i in enumerate(idx))
        start += offset[partial] * global_strides[partial]
        runs.append((local[idx] if idx else local, start))
    return runs
