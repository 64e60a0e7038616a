"""Sharded targets (DTensor, and so FSDP2 parameters): each rank fills only its local shard,
with the values of the global logical indices it owns. The values are a function of the global
index, so they equal the unsharded init for any placements, mesh and world size, uneven shards
included, and no collective is needed."""
from __future__ import annotations

import sys

import numpy as np
import torch

from .errors import InitValueError, TorchVersionError

# torch.distributed.tensor takes about half a second to import, and a DTensor can only exist once
# it has been imported: its names are bound here on the first is_dtensor() call that finds it
# in sys.modules, never at import. Every other function below runs only after is_dtensor().
DTENSOR_MODULE = "torch.distributed.tensor"
DTensor = Replicate = Shard = _StridedShard = _dtensor_utils = None
_SHARD_TYPES: tuple = ()


def _bind_dtensor_names() -> bool:
    """Whether DTensors can exist in this process; binds the DTensor names when they can."""
    global DTensor, Replicate, Shard, _StridedShard, _SHARD_TYPES
    global _dtensor_utils
    if DTensor is not None:
        return True
    if sys.modules.get(DTENSOR_MODULE) is None:
        return False
    from torch.distributed.tensor import DTensor as dtensor_type, Replicate, Shard
    # private to torch (tested on 2.13 and 2.14): checked where used, see _private_helper
    from torch.distributed.tensor import _utils as _dtensor_utils
    try:  # FSDP2 over a tensor-parallel dim shards the same dim twice: (_StridedShard(0), Shard(0))
        from torch.distributed.tensor.placement_types import _StridedShard
    except ImportError:
        _StridedShard = None
    _SHARD_TYPES = tuple(c for c in (Shard, _StridedShard) if c is not None)
    DTensor = dtensor_type  # last: it marks the names as bound
    return True


# Tensor classes that are never a DTensor: answered without a look at torch.distributed.
_NOT_DTENSOR_TYPES = frozenset({torch.Tensor, torch.nn.Parameter})


def is_dtensor(t) -> bool:
    if type(t) in _NOT_DTENSOR_TYPES:
        return False
    return _bind_dtensor_names() and isinstance(t, DTensor)


def local_tensor(t: torch.Tensor) -> torch.Tensor:
    """The memory this rank writes: a DTensor's local shard, or the tensor itself."""
    if type(t) in _NOT_DTENSOR_TYPES:
        return t
    return t.to_local() if _bind_dtensor_names() and isinstance(t, DTensor) else t


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


def _private_helper(owner, name: str):
    """torch's private DTensor helper `name` of `owner`, or a clear error when this torch lacks it."""
    helper = getattr(owner, name, None)
    if helper is None:
        raise TorchVersionError(
            f"fastinit's sharded init uses torch's private DTensor helper {name}, which torch "
            f"{torch.__version__} does not have; fastinit supports torch 2.13 and 2.14")
    return helper


def global_indices(t) -> list:
    """Per dimension, the global indices the local shard of DTensor `t` holds along it: local
    element (i0, i1, ...) is global element (idx[0][i0], idx[1][i1], ...); a range per dim
    unless a _StridedShard splits it into runs (then a list)."""
    shape = tuple(t.shape)
    if not any(_StridedShard is not None and isinstance(p, _StridedShard) for p in t.placements):
        local_shape, offset = _private_helper(
            _dtensor_utils, "compute_local_shape_and_global_offset")(shape, t.device_mesh, t.placements)
        return [range(o, o + n) for o, n in zip(offset, local_shape)]
    # A _StridedShard's local indices are not one block: split each dimension's index range
    # exactly as DTensor splits the tensor (mesh dims left to right), no communication.
    coord = t.device_mesh.get_coordinate()
    idx = [torch.arange(n) for n in shape]
    for mesh_dim, p in enumerate(t.placements):
        if isinstance(p, _SHARD_TYPES):
            d = p.dim
            chunks, _ = _private_helper(p, "_split_tensor")(
                idx[d].view([1] * d + [-1]), t.device_mesh.size(mesh_dim), with_padding=False)
            idx[d] = chunks[coord[mesh_dim]].reshape(-1)
    return [i.tolist() for i in idx]


def local_index(t, dim: int, global_i: int):
    """The local position of global index `global_i` along `dim`, or None if this rank lacks it."""
    if not is_dtensor(t):
        return global_i
    idx = global_indices(t)[dim]
    return idx.index(global_i) if global_i in idx else None


def dim_pieces(idx) -> list[tuple[int, int, tuple]]:
    """How the global indices `idx` (a range or a list) a shard holds along one dim map onto
    it, in as few pieces as possible: (local start, global start, ((size, local step,
    global step), ...)).

    One run of consecutive indices is one piece of one sub-dim; runs of equal length at equal
    spacing (a _StridedShard) are one piece of two sub-dims (run, position in the run); other
    runs (uneven _StridedShard splits) are one piece each.
    """
    if isinstance(idx, range) and idx.step == 1:
        return [(0, idx.start, ((len(idx), 1, 1),))]
    values = np.asarray(idx, dtype=np.int64)
    starts = np.concatenate([[0], np.flatnonzero(np.diff(values) != 1) + 1])
    lengths = np.diff(np.concatenate([starts, [len(values)]]))
    firsts = values[starts]
    if len(starts) == 1:
        return [(0, int(firsts[0]), ((len(values), 1, 1),))]
    spacing = np.diff(firsts)
    if (lengths == lengths[0]).all() and (spacing == spacing[0]).all():
        return [(0, int(firsts[0]),
                 ((len(starts), int(lengths[0]), int(spacing[0])), (int(lengths[0]), 1, 1)))]
    return [(int(a), int(g), ((int(n), 1, 1),)) for a, g, n in zip(starts, firsts, lengths)]
