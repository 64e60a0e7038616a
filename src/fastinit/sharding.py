"""Sharded targets (DTensor, and so FSDP2 parameters): each rank fills only its local shard,
with the values of the global logical indices it owns. The values are a function of the global
index, so they equal the unsharded init for any placements, mesh and world size, uneven shards
included, and no collective is needed."""
from __future__ import annotations

import itertools
import math
import sys

import torch

from .errors import InitValueError

# torch.distributed.tensor takes about half a second to import, and a DTensor can only exist once
# it has been imported: its names are bound here on the first is_dtensor() call that finds it
# in sys.modules, never at import. Every other function below runs only after is_dtensor().
DTENSOR_MODULE = "torch.distributed.tensor"
DTensor = Replicate = Shard = _StridedShard = compute_local_shape_and_global_offset = None
_SHARD_TYPES: tuple = ()


def _bind_dtensor_names() -> bool:
    """Whether DTensors can exist in this process; binds the DTensor names when they can."""
    global DTensor, Replicate, Shard, _StridedShard, _SHARD_TYPES
    global compute_local_shape_and_global_offset
    if DTensor is not None:
        return True
    if sys.modules.get(DTENSOR_MODULE) is None:
        return False
    from torch.distributed.tensor import DTensor as dtensor_type, Replicate, Shard
    from torch.distributed.tensor._utils import compute_local_shape_and_global_offset
    try:  # FSDP2 over a tensor-parallel dim shards the same dim twice: (_StridedShard(0), Shard(0))
        from torch.distributed.tensor.placement_types import _StridedShard
    except ImportError:
        _StridedShard = None
    _SHARD_TYPES = tuple(c for c in (Shard, _StridedShard) if c is not None)
    DTensor = dtensor_type  # last: it marks the names as bound
    return True


def is_dtensor(t) -> bool:
    return _bind_dtensor_names() and isinstance(t, DTensor)


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """The memory this rank writes: a DTensor's local shard, or the tensor itself."""
    return t.to_local() if is_dtensor(t) else t


def is_sharded(t) -> bool:
    return is_dtensor(t) and any(not isinstance(p, Replicate) for p in t.placements)


def check_placements(t, fn_name: str) -> None:
    if is_dtensor(t):
        bad = [p for p in t.placements if not isinstance(p, (*_SHARD_TYPES, Replicate))]
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


def global_indices(t) -> list[list[int]]:
    """Per dimension, the global indices the local shard of DTensor `t` holds along it: local
    element (i0, i1, ...) is global element (idx[0][i0], idx[1][i1], ...)."""
    shape = tuple(t.shape)
    if not any(_StridedShard is not None and isinstance(p, _StridedShard) for p in t.placements):
        local_shape, offset = compute_local_shape_and_global_offset(shape, t.device_mesh, t.placements)
        return [list(range(o, o + n)) for o, n in zip(offset, local_shape)]
    # A _StridedShard's local indices are not one block: split each dimension's index range
    # exactly as DTensor splits the tensor (mesh dims left to right), no communication.
    coord = t.device_mesh.get_coordinate()
    idx = [torch.arange(n) for n in shape]
    for mesh_dim, p in enumerate(t.placements):
        if isinstance(p, _SHARD_TYPES):
            d = p.dim
            chunks, _ = p._split_tensor(idx[d].view([1] * d + [-1]), t.device_mesh.size(mesh_dim),
                                        with_padding=False)
            idx[d] = chunks[coord[mesh_dim]].reshape(-1)
    return [i.tolist() for i in idx]


def local_index(t, dim: int, global_i: int):
    """The local position of global index `global_i` along `dim`, or None if this rank lacks it."""
    if not is_dtensor(t):
        return global_i
    idx = global_indices(t)[dim]
    return idx.index(global_i) if global_i in idx else None


def global_runs(t) -> list[tuple[torch.Tensor, int]]:
    """(piece of the local shard, global index of its first element) covering the local shard of
    DTensor `t`, each piece a run of consecutive global indices, in as few pieces as its
    placements allow."""
    local = t.to_local()
    if local.numel() == 0:
        return []
    global_shape = tuple(t.shape)
    idx = global_indices(t)
    if tuple(local.shape) != tuple(len(i) for i in idx):
        raise InitValueError(f"local shard of shape {tuple(local.shape)} does not match the "
                             f"expected {tuple(len(i) for i in idx)} for placements {t.placements}")
    ndim = len(global_shape)
    k = ndim
    while k > 0 and idx[k - 1] == list(range(global_shape[k - 1])):
        k -= 1
    if k == 0:
        return [(local, 0)]
    global_strides = [math.prod(global_shape[d + 1:]) for d in range(ndim)]
    partial = k - 1  # last dimension the shard covers only partly; later ones fully
    ip = idx[partial]
    segments, s = [], 0  # (local start, local end) of each run of consecutive global indices
    for j in range(1, len(ip) + 1):
        if j == len(ip) or ip[j] != ip[j - 1] + 1:
            segments.append((s, j))
            s = j
    runs = []
    for pos in itertools.product(*(range(len(idx[d])) for d in range(partial))):
        start = sum(idx[d][i] * global_strides[d] for d, i in enumerate(pos))
        sub = local[pos] if pos else local
        for a, b in segments:
            runs.append((sub if (a, b) == (0, len(ip)) else sub[a:b],
                         start + ip[a] * global_strides[partial]))
    return runs
