"""Sharded targets (DTensor, and so FSDP2 parameters): each rank fills only its local shard,
with the values of the global logical indices it owns. The values are a function of the global
index, so they equal the unsharded init for any placements, mesh and world size, uneven shards
included, and no collective is needed."""
from __future__ import annotations

import dataclasses
import sys
from typing import Optional

import numpy as np
import torch

from .errors import InitValueError, TorchVersionError

# torch.distributed.tensor takes about half a second to import, and a DTensor can only exist once
# it has been imported: its names are bound here on the first is_dtensor() call that finds it
# in sys.modules, never at import. Every other function below runs only after is_dtensor().
DTENSOR_MODULE = "torch.distributed.tensor"
DTensor = Partial = Replicate = Shard = _StridedShard = _dtensor_utils = None
_SHARD_TYPES: tuple = ()


def _bind_dtensor_names() -> bool:
    """Whether DTensors can exist in this process; binds the DTensor names when they can."""
    global DTensor, Partial, Replicate, Shard, _StridedShard, _SHARD_TYPES
    global _dtensor_utils
    if DTensor is not None:
        return True
    if sys.modules.get(DTENSOR_MODULE) is None:
        return False
    from torch.distributed.tensor import DTensor as dtensor_type, Partial, Replicate, Shard
    # private to torch (tested on 2.11 to 2.15): checked where used, see _private_helper
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
    """The memory this rank writes: a DTensor's local shard (of an `indexed` DTensor: the part
    of the indexed tensor's shard it holds), or the tensor itself."""
    if type(t) in _NOT_DTENSOR_TYPES or not is_dtensor(t):
        return t
    part = getattr(t, _INDEXED_PART, None)
    return t.to_local() if part is None else part[0]


def is_sharded(t) -> bool:
    return is_dtensor(t) and any(not isinstance(p, Replicate) for p in t.placements)


def check_placements(t, fn_name: str) -> None:
    if is_dtensor(t) and getattr(t, _INDEXED_PART, None) is None:
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
            f"{torch.__version__} does not have; fastinit supports torch 2.11 to 2.15")
    return helper


def global_indices(t) -> list:
    """Per dimension, the global indices the local shard of DTensor `t` holds along it: local
    element (i0, i1, ...) is global element (idx[0][i0], idx[1][i1], ...); a range per dim
    unless a _StridedShard splits it into runs (then a list)."""
    part = getattr(t, _INDEXED_PART, None)
    if part is not None:
        return part[1]
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


# -- basic indexing of a sharded DTensor, without a collective -------------------------------
# A DTensor made by `indexed()` carries, under this attribute, (the part of it this rank holds:
# a view of the indexed DTensor's local shard, or an empty tensor; the global indices of its
# local tensor along each dim; whether this rank holds its elements; its mirrors: views, of
# the same shape as the part, of DTensor memory that holds copies of the part's elements;
# whether its elements span several shards, see `spans_shards`):
# `local_tensor` and `global_indices` read them, so fastinit's fills write the indexed tensor's
# own memory, each rank its own part, and write its mirrors alike (`indexed_mirrors`).
_INDEXED_PART = "_fastinit_indexed_part"


def spans_shards(t) -> bool:
    """Whether `t` is an `indexed` DTensor whose elements span several shards (the same answer
    on every rank)."""
    if type(t) in _NOT_DTENSOR_TYPES:
        return False
    part = getattr(t, _INDEXED_PART, None)
    return part is not None and part[4]


def indexed_mirrors(t) -> tuple:
    """The mirrors of an `indexed` DTensor (see _INDEXED_PART): memory a fill of `t` writes
    besides its part, with the part's values at the part's global indices. Empty for any
    other tensor."""
    if type(t) in _NOT_DTENSOR_TYPES:
        return ()
    part = getattr(t, _INDEXED_PART, None)
    return () if part is None else part[3]


def _index_items(index, ndim: int) -> Optional[list]:
    """A basic index as one int or slice per dim of the indexed tensor, with None for each new
    axis; None when it is not a basic index of at most `ndim` dims."""
    items = list(index) if isinstance(index, tuple) else [index]
    if not all(i is None or i is Ellipsis or isinstance(i, slice)
               or (isinstance(i, int) and not isinstance(i, bool)) for i in items):
        return None
    consuming = sum(1 for i in items if i is not None and i is not Ellipsis)
    ellipses = sum(1 for i in items if i is Ellipsis)
    if consuming > ndim or ellipses > 1:
        return None
    at = items.index(Ellipsis) if ellipses else len(items)
    items[at:at + ellipses] = [slice(None)] * (ndim - consuming)
    return items


@dataclasses.dataclass
class IndexPart:
    """How ``t[index]`` (a basic index of a sharded DTensor `t`) lies on this rank's shard.

    Attributes:
        shape: the shape of ``t[index]``.
        part: the elements of it this rank holds, a view of t's local shard; None if none.
        indices: the positions of `part` in ``t[index]``, per dim (as `global_indices`); all
            positions along a dim the index narrows to elements of other ranks.
        owns: this rank holds every element of ``t[index]`` along the dims the index narrows.
        out_dim: for each dim of `t`, its dim in ``t[index]`` (None where an int removed it).
        wanted: for each dim of `t` the index narrows, the global indices it keeps.
        local_items: the index of `part` in t's local tensor (`local_tensor`).
    """

    shape: tuple
    part: Optional[torch.Tensor]
    indices: list
    owns: bool
    out_dim: list
    wanted: dict
    local_items: tuple


def index_part(t, index) -> Optional[IndexPart]:
    """The `IndexPart` of ``t[index]``, or None where `index` is not a basic index with every
    int in range and every slice step positive (torch then decides, and raises for a bad one),
    or a narrowed dim's shard is not one run of indices (an uneven _StridedShard)."""
    shape = tuple(t.shape)
    items = _index_items(index, len(shape))
    if items is None:
        return None
    held = global_indices(t)
    local_items, out_shape, indices, out_dim, wanted = [], [], [], [], {}
    owns = getattr(t, _INDEXED_PART, (None, None, True))[2]  # an indexed DTensor held elsewhere
    d = 0
    for item in items:
        if item is None:
            local_items.append(None)
            out_shape.append(1)
            indices.append(range(1))
            continue
        n, g = shape[d], held[d]
        if isinstance(item, int):
            if not -n <= item < n:
                return None
            k = item % n
            pos = _position(g, k)
            owns = owns and pos is not None
            local_items.append(0 if pos is None else pos)
            out_dim.append(None)
            wanted[d] = range(k, k + 1)
        else:
            start, stop, step = item.indices(n)
            if step <= 0:
                return None
            keep = range(start, stop, step)
            out_dim.append(len(out_shape))
            out_shape.append(len(keep))
            if len(keep) == n:  # the whole dim, sharded as it is
                local_items.append(slice(None))
                indices.append(g)
            else:
                if not isinstance(g, range):
                    return None
                wanted[d] = keep
                lo = max(0, -(-(g.start - start) // step))
                hi = min(len(keep), -(-(g.stop - start) // step))
                if hi <= lo:  # held by other ranks (as a whole, in an `indexed` DTensor)
                    owns = False
                    local_items.append(slice(0, 0))
                    indices.append(range(len(keep)))
                else:
                    local_items.append(slice(keep[lo] - g.start, keep[hi - 1] - g.start + 1, step))
                    indices.append(range(lo, hi))
        d += 1
    part = None
    if owns:
        with torch._C.DisableTorchFunction():  # a view of the local shard, not a DTensor op
            part = local_tensor(t)[tuple(local_items)]
        if part.numel() == 0:
            part = None
    return IndexPart(tuple(out_shape), part, indices, owns, out_dim, wanted, tuple(local_items))


def _position(g, k: int) -> Optional[int]:
    """The local position of global index `k` among the indices `g` a shard holds, or None."""
    if isinstance(g, range):
        return k - g.start if g.start <= k < g.stop else None
    return g.index(k) if k in g else None


def _one_rank_holds(t, mesh_dim: int, keep: range) -> bool:
    """Whether one shard along `mesh_dim` (t's Shard placement there) holds all of `keep`, for
    every coordinate of the other mesh dims: torch.chunk's split, as DTensor's Shard."""
    p = t.placements[mesh_dim]
    if type(p) is not Shard or sum(isinstance(q, _SHARD_TYPES) and q.dim == p.dim
                                   for q in t.placements) > 1:
        return False
    if len(keep) == 0:
        return True
    sizes = [len(c) for c in torch.arange(t.shape[p.dim]).chunk(t.device_mesh.size(mesh_dim))]
    bounds = np.cumsum([0] + sizes)
    chunk = int(np.searchsorted(bounds, keep[0], side="right")) - 1
    return keep[-1] < bounds[chunk + 1]


def indexed(t, index):
    """``t[index]`` for a sharded DTensor `t` and a basic index that narrows a sharded dim,
    made without a collective: a DTensor that is Partial (sum) over the mesh dims whose sharded
    dim the index narrows, and keeps t's other placements. Where one rank holds every element
    the index keeps along a sharded dim, its local tensor is, on that rank, a view of t's shard
    and the other ranks hold -0.0, so reading it sums to the values exactly. Where the kept
    elements span several shards, each rank's local tensor is its own memory holding -0.0 but
    at the positions of the elements its shard holds; fastinit's fills of it write t's shards,
    each rank its part, and those positions of the local tensor alike (its mirror), so reading
    it sums to the values too. Such a slice holds a copy: a later write of t through another
    tensor does not show in it, and an in-place operation on it that is not a fill raises
    inside fused() (the interceptor), as its write could reach no shard.

    Returns None (index as torch does) where the index narrows no sharded dim, or for an index
    `index_part` maps not."""
    ip = index_part(t, index)
    if ip is None:
        return None
    # every rank decides alike, from t's placements and shape, whether the elements kept span
    # several shards (a slice of an indexed DTensor that spans does, conservatively)
    placements, spans = [], spans_shards(t)
    for mesh_dim, p in enumerate(t.placements):
        if not isinstance(p, _SHARD_TYPES):
            placements.append(p)
        elif p.dim not in ip.wanted:
            new_dim = ip.out_dim[p.dim]
            placements.append(Shard(new_dim) if type(p) is Shard else
                              _StridedShard(new_dim, split_factor=p.split_factor))
        else:
            placements.append(Partial())
            spans = spans or not (len(ip.wanted[p.dim]) == 1
                                  or _one_rank_holds(t, mesh_dim, ip.wanted[p.dim]))
    if not any(isinstance(p, Partial) for p in placements):
        return None
    narrowed = {ip.out_dim[d] for d in ip.wanted if ip.out_dim[d] is not None}
    # this rank holds some of the elements kept along a narrowed dim, others hold the rest
    partly = ip.part is not None and any(len(ip.indices[d]) != ip.shape[d] for d in narrowed)
    # the mirrors of an indexed DTensor's part hold these elements too
    mirrors = [m[ip.local_items] for m in indexed_mirrors(t)] if ip.part is not None else []
    if ip.owns and ip.part is not None and not partly:
        local = ip.part
    else:
        local = torch.full(tuple(n if d in narrowed else len(i)
                                 for d, (n, i) in enumerate(zip(ip.shape, ip.indices))),
                           -0.0 if t.dtype.is_floating_point or t.dtype.is_complex else 0,
                           dtype=t.dtype, device=t.to_local().device)
        if ip.part is not None:  # the part's positions in this rank's local tensor
            mirrors.append(local[tuple(slice(i.start, i.stop) if d in narrowed else slice(None)
                                       for d, i in enumerate(ip.indices))])
    result = DTensor.from_local(local, t.device_mesh, placements, run_check=False,
                                shape=torch.Size(ip.shape),
                                stride=torch.empty(ip.shape, device="meta").stride())
    part = ip.part if ip.part is not None else local.new_empty((0,))
    setattr(result, _INDEXED_PART, (part, ip.indices, ip.owns, tuple(mirrors), spans))
    return result
