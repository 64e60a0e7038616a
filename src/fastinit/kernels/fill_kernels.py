"""The Triton fill kernel, specialised at compile time: one variant per (distribution, output
dtype, contiguous or strided path); the fp64 maths follow from the first two.

Memory. The kernel writes only through its tensor argument ``base_ptr``, the launch's first
tensor, typed by the output dtype: each descriptor row holds, in place of the C++ struct's data
address, the element offset of its local element 0 from that pointer (int64, negative for a
tensor below it in memory). A launch over one tensor so writes only inside the tensor it is
given, which is what a compiler sees; a launch over many keeps one pass. All launches go
through the op ``torch.ops.fastinit.triton_fill`` (kernels/fill.py, a
torch.library.triton_op, so torch.compile can trace the kernel through wrap_triton), which
checks every row against its own tensor (``check_table`` of launch_table.py) and rebases the
rows on the first tensor before it launches.

Work layout (apex multi_tensor_apply style). The host packs, per tensor, its FillDescriptor
(the C++ struct, read here as DESC_WORDS int64 words) and, per program, one row (tensor, chunk)
of the block map; both go to the device as one int64 tensor (one copy). Chunk c of a contiguous
tensor covers the Philox blocks [first // PB + c * CHUNK / PB, ... + CHUNK / PB) (PB elements
per block, 4 or 2) and writes those of their elements whose local index lies in [0, numel):
every element belongs to exactly one chunk, whatever ``first_index % PB`` is. A program walks its
chunk in tiles of TILE Philox blocks (4 * TILE or 2 * TILE contiguous elements), with 64-bit
scalar index math once per tile; inside a tile offsets are 32-bit and the 64-bit block counter is
carried by a 32-bit add and compare. A full tile of a 16-byte aligned tensor whose first_index is
a block boundary is stored unmasked with an alignment hint (16-byte vector stores on sm_90); partial
tiles and other tensors take the masked, still coalesced, store. A strided descriptor (any
other layout) is cut in its local row-major order: each element's memory offset and contract
index come from its multi-index, and it takes the value of its own Philox block.

Variants. ``fill_kernel``'s DIST, STRIDED and F64_MATH are constexprs: a variant holds one
distribution's maths and one path, so it stays small (no spills; scripts/gpu_static_report.py
compiles each ahead of time and reports its registers). A launch over a list of tensors runs
one kernel per variant present, each over its programs of the block map (kernels/launch_table.py);
every element is still written once, by one program.
"""
import triton
import triton.language as tl

from .contract_numbers import *  # noqa: F403  (generated from fastinit.contract_numbers)
from .fill_math import (box_muller_f32, box_muller_f64, element_counter, params_f32,
                        philox4x32_10, round_f32, store_tile, tile_words, trunc_normal_f32,
                        trunc_normal_f64, trunc_normal_is_wide, trunc_normal_wide_f32, u53,
                        uniform_f32)


@triton.jit
def fill_chunk_f32_math(out_ptr, aligned16, numel, first, chunk, k0, k1, s0, s1,
                         p0, p1, p2, p3, p4, p5, p6, p7,
                         OUT_DTYPE: tl.constexpr, CHUNK, TILE: tl.constexpr,
                         DIST: tl.constexpr, EXACT_FMA: tl.constexpr):
    """Chunk `chunk` of one tensor, fp32-math distributions (4 elements per Philox block)."""
    base_block = first // 4 + chunk * (CHUNK // 4)
    base_local = chunk * CHUNK - first % 4  # local index of word 0 of base_block
    aligned = aligned16 & (first % 4 == 0)
    n_tiles = tl.cdiv(tl.minimum(numel - base_local, CHUNK), 4 * TILE)
    q0, q1, q2, q3, q4, q5, q6, q7 = params_f32(p0, p1, p2, p3, p4, p5, p6, p7)
    for i in range(n_tiles):
        if DIST == CONSTANT:
            vals = tl.full([4 * TILE], 0.0, tl.float32) + q0
        else:
            w0, w1, w2, w3 = tile_words(base_block + i * TILE, s0, s1, k0, k1, TILE)
            wa = tl.interleave(w0, w2)  # even words of pairs (0, 1) and (2, 3)
            wb = tl.interleave(w1, w3)  # odd words
            if DIST == NORMAL:
                xc, xs = box_muller_f32(wa, wb, q0, q1, EXACT_FMA)
                vals = tl.interleave(xc, xs)
            else:
                w = tl.interleave(wa, wb)  # words 0, 1, 2, 3 of each block, in element order
                if DIST == UNIFORM:
                    vals = uniform_f32(w, q0, q1, q2, EXACT_FMA)
                elif trunc_normal_is_wide(q4, q5):
                    zc, zs = box_muller_f32(wa, wb, 0.0, 1.0, EXACT_FMA)
                    vals, inside = trunc_normal_wide_f32(tl.interleave(zc, zs), q0, q1, q4, q5,
                                                          q6, q7, EXACT_FMA)
                    if tl.min(inside.to(tl.int32), axis=0) == 0:  # rare tiles
                        v0, v1, v2, v3 = tile_words(base_block + i * TILE, s0, s1, k0, k1, TILE,
                                                     SECOND_DRAW_BIT)
                        second = tl.interleave(tl.interleave(v0, v2), tl.interleave(v1, v3))
                        vals = tl.where(inside, vals, trunc_normal_f32(
                            second, q0, q1, q2, q3, q4, q5, q6, q7, EXACT_FMA))
                else:  # TRUNC_NORMAL
                    vals = trunc_normal_f32(w, q0, q1, q2, q3, q4, q5, q6, q7, EXACT_FMA)
        store_tile(out_ptr, base_local + i * (4 * TILE), numel, round_f32(vals, OUT_DTYPE),
                    aligned, 4 * TILE)


@triton.jit
def fill_chunk_strided(row, out_ptr, numel, first, chunk, k0, k1, s0, s1,
                        p0, p1, p2, p3, p4, p5, p6, p7,
                        OUT_DTYPE: tl.constexpr, F64_MATH: tl.constexpr, CHUNK,
                        N: tl.constexpr, DIST: tl.constexpr, EXACT_FMA: tl.constexpr):
    """Chunk `chunk` of a strided descriptor: its local elements [chunk * CHUNK, ... + CHUNK)
    in row-major order, N per step, each written at its strided address with the value of
    its contract index (one Philox block per element)."""
    ndim = (tl.load(row + DESC_NDIM) & 0xFFFFFFFF).to(tl.int32)
    for i in range(tl.cdiv(tl.minimum(numel - chunk * CHUNK, CHUNK), N)):
        local = chunk * CHUNK + i * N + tl.arange(0, N).to(tl.int64)
        mask = local < numel
        rest = local
        offset = tl.zeros([N], tl.int64)
        index = tl.zeros([N], tl.int64) + first
        for k in tl.static_range(MAX_DIMS - 1, -1, -1):
            if k < ndim:  # one 64-bit division per dim the row has
                size = tl.load(row + DESC_SIZE + k)
                outer = rest // size
                pos = rest - outer * size
                rest = outer
                offset += pos * tl.load(row + DESC_STRIDE + k)
                index += pos * tl.load(row + DESC_GLOBAL_STRIDE + k)
        if F64_MATH:
            c0, c1 = element_counter(index // 2)
            w0, w1, w2, w3 = philox4x32_10(c0, c1, tl.zeros([N], tl.uint32) + s0,
                                            tl.zeros([N], tl.uint32) + s1, k0, k1)
            second = (index % 2) == 1
            if DIST == CONSTANT:
                vals = tl.full([N], 0.0, tl.float64) + p0
            elif DIST == NORMAL:
                zc, zs = box_muller_f64(w0, w1, w2, w3)
                vals = tl.where(second, zs, zc) * p1 + p0
            else:
                u = u53(tl.where(second, w2, w0), tl.where(second, w3, w1))
                if DIST == UNIFORM:
                    vals = u * p0 + p1
                else:  # TRUNC_NORMAL, TRUNC_NORMAL_FP64
                    vals = trunc_normal_f64(u, p0, p1, p2, p3, p4, p5, p6, p7)
            if OUT_DTYPE != tl.float64:
                vals = vals.to(tl.float32)
        else:
            c0, c1 = element_counter(index // 4)
            w0, w1, w2, w3 = philox4x32_10(c0, c1, tl.zeros([N], tl.uint32) + s0,
                                            tl.zeros([N], tl.uint32) + s1, k0, k1)
            t = index % 4
            q0, q1, q2, q3, q4, q5, q6, q7 = params_f32(p0, p1, p2, p3, p4, p5, p6, p7)
            if DIST == CONSTANT:
                vals = tl.full([N], 0.0, tl.float32) + q0
            elif DIST == NORMAL:
                xc, xs = box_muller_f32(tl.where(t < 2, w0, w2), tl.where(t < 2, w1, w3),
                                         q0, q1, EXACT_FMA)
                vals = tl.where((t % 2) == 0, xc, xs)
            else:
                w = tl.where(t == 0, w0, tl.where(t == 1, w1, tl.where(t == 2, w2, w3)))
                if DIST == UNIFORM:
                    vals = uniform_f32(w, q0, q1, q2, EXACT_FMA)
                elif trunc_normal_is_wide(q4, q5):
                    xc, xs = box_muller_f32(tl.where(t < 2, w0, w2), tl.where(t < 2, w1, w3),
                                             0.0, 1.0, EXACT_FMA)
                    vals, inside = trunc_normal_wide_f32(tl.where((t % 2) == 0, xc, xs), q0,
                                                          q1, q4, q5, q6, q7, EXACT_FMA)
                    if tl.min(inside.to(tl.int32), axis=0) == 0:  # rare steps
                        v0, v1, v2, v3 = philox4x32_10(
                            c0, c1 | SECOND_DRAW_BIT, tl.zeros([N], tl.uint32) + s0,
                            tl.zeros([N], tl.uint32) + s1, k0, k1)
                        second = tl.where(t == 0, v0, tl.where(t == 1, v1,
                                                               tl.where(t == 2, v2, v3)))
                        vals = tl.where(inside, vals, trunc_normal_f32(
                            second, q0, q1, q2, q3, q4, q5, q6, q7, EXACT_FMA))
                else:  # TRUNC_NORMAL
                    vals = trunc_normal_f32(w, q0, q1, q2, q3, q4, q5, q6, q7, EXACT_FMA)
        if OUT_DTYPE == tl.float64:
            tl.store(out_ptr + offset, vals, mask=mask)
        else:
            tl.store(out_ptr + offset, round_f32(vals, OUT_DTYPE), mask=mask)


@triton.jit
def fill_chunk_f64_math(out_ptr, aligned16, numel, first, chunk, k0, k1, s0, s1,
                         p0, p1, p2, p3, p4, p5, p6, p7,
                         OUT_DTYPE: tl.constexpr, CHUNK, TILE: tl.constexpr,
                         DIST: tl.constexpr):
    """Chunk `chunk` of one tensor, fp64 math (2 elements per Philox block)."""
    base_block = first // 2 + chunk * (CHUNK // 2)
    base_local = chunk * CHUNK - first % 2
    aligned = aligned16 & (first % 2 == 0)
    n_tiles = tl.cdiv(tl.minimum(numel - base_local, CHUNK), 2 * TILE)
    for i in range(n_tiles):
        if DIST == CONSTANT:
            vals = tl.full([2 * TILE], 0.0, tl.float64) + p0
        else:
            w0, w1, w2, w3 = tile_words(base_block + i * TILE, s0, s1, k0, k1, TILE)
            if DIST == NORMAL:
                zc, zs = box_muller_f64(w0, w1, w2, w3)
                vals = tl.interleave(zc, zs) * p1 + p0
            else:
                u = tl.interleave(u53(w0, w1), u53(w2, w3))
                if DIST == UNIFORM:
                    vals = u * p0 + p1
                else:  # TRUNC_NORMAL, TRUNC_NORMAL_FP64
                    vals = trunc_normal_f64(u, p0, p1, p2, p3, p4, p5, p6, p7)
        if OUT_DTYPE == tl.float64:
            store_tile(out_ptr, base_local + i * (2 * TILE), numel, vals, aligned, 2 * TILE)
        else:  # the contract's rounding path: fp32 first, then the dtype
            store_tile(out_ptr, base_local + i * (2 * TILE), numel,
                        round_f32(vals.to(tl.float32), OUT_DTYPE), aligned, 2 * TILE)


@triton.jit
def fill_kernel(base_ptr, table_ptr, map_ptr, CHUNK, TILE: tl.constexpr, DIST: tl.constexpr,
                STRIDED: tl.constexpr, F64_MATH: tl.constexpr, EXACT_FMA: tl.constexpr):
    """Program pid fills chunk map[pid, 1] of descriptor row map[pid, 0] of table; each row's
    elements lie at its element offset from base_ptr (the launch's first tensor), whose dtype
    is the output dtype. Every row a program reaches has distribution DIST and is strided
    (STRIDED) or contiguous as the variant says (``check_groups`` of kernels/launch_table.py);
    F64_MATH: fp64 outputs, or TRUNC_NORMAL_FP64 for any dtype."""
    OUT_DTYPE: tl.constexpr = base_ptr.dtype.element_ty
    pid = tl.program_id(0).to(tl.int64)
    tensor = tl.load(map_ptr + 2 * pid)
    chunk = tl.load(map_ptr + 2 * pid + 1)
    row = table_ptr + tensor * DESC_WORDS
    out_ptr = base_ptr + tl.load(row + DESC_BASE_OFFSET)
    numel = tl.load(row + DESC_NUMEL)
    first = tl.load(row + DESC_FIRST_INDEX)
    seed = tl.load(row + DESC_SEED)
    stream = tl.load(row + DESC_STREAM)
    k0 = (seed & 0xFFFFFFFF).to(tl.uint32)
    k1 = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
    s0 = (stream & 0xFFFFFFFF).to(tl.uint32)
    s1 = ((stream >> 32) & 0xFFFFFFFF).to(tl.uint32)
    p0 = tl.load(row + DESC_PARAM + 0).to(tl.float64, bitcast=True)
    p1 = tl.load(row + DESC_PARAM + 1).to(tl.float64, bitcast=True)
    p2 = tl.load(row + DESC_PARAM + 2).to(tl.float64, bitcast=True)
    p3 = tl.load(row + DESC_PARAM + 3).to(tl.float64, bitcast=True)
    p4 = tl.load(row + DESC_PARAM + 4).to(tl.float64, bitcast=True)
    p5 = tl.load(row + DESC_PARAM + 5).to(tl.float64, bitcast=True)
    p6 = tl.load(row + DESC_PARAM + 6).to(tl.float64, bitcast=True)
    p7 = tl.load(row + DESC_PARAM + 7).to(tl.float64, bitcast=True)
    if STRIDED:
        if F64_MATH:
            fill_chunk_strided(row, out_ptr, numel, first, chunk, k0, k1, s0, s1,
                               p0, p1, p2, p3, p4, p5, p6, p7, OUT_DTYPE, True, CHUNK,
                               TILE, DIST, EXACT_FMA)
        else:
            fill_chunk_strided(row, out_ptr, numel, first, chunk, k0, k1, s0, s1,
                               p0, p1, p2, p3, p4, p5, p6, p7, OUT_DTYPE, False, CHUNK,
                               TILE, DIST, EXACT_FMA)
    else:
        aligned16 = (out_ptr.to(tl.int64) % 16) == 0
        if F64_MATH:
            fill_chunk_f64_math(out_ptr, aligned16, numel, first, chunk, k0, k1, s0, s1,
                                p0, p1, p2, p3, p4, p5, p6, p7, OUT_DTYPE, CHUNK, TILE, DIST)
        else:
            # trunc_normal's quantile and its wide interval's Box-Muller and second draws hold
            # more live values: half the elements per thread and iteration (same values)
            fill_chunk_f32_math(out_ptr, aligned16, numel, first, chunk, k0, k1, s0, s1,
                                p0, p1, p2, p3, p4, p5, p6, p7, OUT_DTYPE, CHUNK,
                                TILE // 2 if DIST == TRUNC_NORMAL else TILE, DIST, EXACT_FMA)
