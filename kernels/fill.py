"""The fused fill in Triton: one launch writes a whole list of tensors of one dtype.

Maths (docs/contract.md; the C++ twin is csrc/fastinit/fill.h; every constant and
coefficient comes from kernels/contract_numbers.py, generated from fastinit.contract_numbers):

- Philox4x32-10 with counter (block lo, block hi, stream lo, stream hi) and key (seed lo,
  seed hi); the 32x32 -> 64 products are ``tl.umulhi`` plus a wrapping 32-bit multiply, and
  all four words of every call are used.
- fp32, fp16, bf16 outputs: element j of a tensor is word t = j % 4 of Philox block j // 4,
  math in fp32, one round-to-nearest-even into the output dtype at the store.
  uniform: x = fma(u24(w), scale, shift). normal: Box-Muller on the word pairs (0, 1) and
  (2, 3), r = sqrt(-2 log u24o(w_a)), the angle theta = (pi/2) (k + f) from w_b (quadrant k
  its top two bits, f from the next 22), cos for even t, sin for odd t,
  x = fma(r std, cos or sin, mean). trunc_normal: p = fma(u24m(w), dP, Pa),
  z = sqrt2 erfinv(2p - 1) (Giles, log term w = -log(4 p (1 - p))), clamped to [alpha, beta],
  x = fma(z, s std, mean), clamped to [a, b] rounded inward. constant: the host-rounded value.
  log, sin/cos and the quantile are the exact fp32 functions of distributions.h
  (log_f32_bits, angle_sincos_f32, normal_quantile_f32) with the same explicit fmas and IEEE
  division, so the numbers match the C++ backends, not only the contract's tolerance.
- fp64 outputs, and TRUNC_NORMAL_FP64 for any dtype: element j is value t = j % 2 of block
  j // 2, math in fp64: u53 words, Box-Muller with libm-quality log/cos/sin, Wichura's AS241
  quantile. For fp32/fp16/bf16 outputs the fp64 value is rounded to fp32, then to the dtype.

Rounding. Uniform must be bitwise identical to the reference, i.e. an fp32 fma with a single
rounding. ``tl.fma`` is ``fma.rn.f32`` on the GPU, and under TRITON_INTERPRET=1 Triton 3.9
evaluates it with a real C fma (``_interpreter.fma_fp32``, checked: fused on inputs where a
multiply-then-add differs); older interpreters computed ``x * y + z`` in numpy, rounding twice.
``interpreter_fma_is_fused()`` probes this once per process, and where it is not fused every
fma (the uniform value, the trunc_normal probability, the polynomials of log, sincos and the
quantile, the final scaling) takes the constexpr path EXACT_FMA of ``_fma32``: the product of
two fp32 values is exact in fp64, the fp64 sum is corrected to round-to-odd from its exact error
(TwoSum; no product involved, so contraction cannot change it), and a round-to-odd fp64 value
rounds to fp32 correctly (53 >= 24 + 2 bits), the method of the reference backend's
``fma_f32``. So Triton 3.8's interpreter, whose double rounding moved normal values by up to 8
ulp, gives the C++ bits too; compiled kernels and fused interpreters keep ``tl.fma``. fp64 math
rounds products and sums separately (u53 * scale + shift), as fill.h and the reference do, so
fp64 uniform is bitwise equal on every backend too. trunc_normal elements whose p falls below
Giles' fitted range (p < 2^-24, kGilesMinP of fill.h) take the fp64 quantile, rounded to fp32.
Each kernel is launched with ``enable_fp_fusion=False`` so the compiler does not contract a
separate multiply and add into an fma (the C++ build uses -ffp-contract=off / --fmad=false);
fp32 square roots and divisions are ``sqrt_rn`` and ``div_rn`` (Triton's ``sqrt`` and ``/``
are approximate on the GPU). fp32 -> bf16 is rounded in integer ops (the interpreter's cast does
not round to nearest even).

Memory. The kernel writes only through its tensor argument ``base_ptr``, the launch's first
tensor, typed by the output dtype: each descriptor row holds, in place of the C++ struct's data
address, the element offset of its local element 0 from that pointer (int64, negative for a
tensor below it in memory). A launch over one tensor so writes only inside the tensor it is
given, which is what a compiler sees; a launch over many keeps one pass. All launches go
through the op ``torch.ops.fastinit.triton_fill`` (``triton_fill`` below, a
torch.library.triton_op, so torch.compile can trace the kernel through wrap_triton), which
checks every row against its own tensor (``check_table``) and rebases the rows on the first
tensor before it launches.

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
"""
from __future__ import annotations

import contextlib
import functools
import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
import triton
import triton.language as tl

from torch._subclasses.functional_tensor import FunctionalTensor

from fastinit.contract import DTYPE_CODES, Distribution, elements_per_block
from fastinit.plan import has_real_storage, pack_descriptors

from .contract_numbers import *  # noqa: F403  (generated from fastinit.contract_numbers)

_INF = tl.constexpr(float("inf"))

OUT_DTYPES = {
    torch.float32: tl.float32,
    torch.float16: tl.float16,
    torch.bfloat16: tl.bfloat16,
    torch.float64: tl.float64,
}


# ---------------------------------------------------------------------------------------------
# Launch constants: the one place they are chosen.

@dataclass(frozen=True)
class LaunchConfig:
    """How a fill is cut into programs.

    chunk: elements per program (a power of two, multiple of 4 * tile_blocks); None picks it
      per launch from the total size (``chunk_for``): big enough to amortise a program's setup,
      small enough to give every SM several programs.
    tile_blocks: Philox blocks per loop iteration of a program (4 * tile_blocks fp32-math
      elements); with num_warps = 4, one Philox call and 4 outputs per thread per iteration.
      Compiled for sm_90 this takes 80 registers, no spills (6 programs, 24 warps per SM);
      256 blocks per iteration needs 114 (or 92 over 8 warps): fewer resident warps.
    num_warps: 4, a memory-bound fill needs occupancy, not a wide block.
    max_programs: programs per launch; the block map is split over several launches above it.
      2^31 - 1 is CUDA's grid.x limit; tests set it small to exercise the split.
    """

    chunk: int | None = None
    tile_blocks: int = 128
    num_warps: int = 4
    max_programs: int = 2**31 - 1
    min_chunk: int = TRITON_MIN_CHUNK_ELEMENTS  # noqa: F405
    max_chunk: int = MAX_CHUNK_ELEMENTS  # noqa: F405
    programs_per_sm: int = 8


DEFAULT_CONFIG = LaunchConfig()


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 1


def chunk_for(total_elements: int, device: torch.device, config: LaunchConfig) -> int:
    """Elements per program: about programs_per_sm programs per SM, within [min, max] chunk."""
    if config.chunk is not None:
        chunk = config.chunk
    else:
        target = max(1, total_elements // (config.programs_per_sm * _sm_count(device)))
        chunk = 1 << max(0, (target - 1).bit_length())
        chunk = min(max(chunk, config.min_chunk), config.max_chunk)
    check_chunk(chunk, config.tile_blocks)
    return chunk


def check_chunk(chunk: int, tile_blocks: int) -> None:
    """Raise ValueError unless `chunk` is a power of two and a multiple of 4 * tile_blocks."""
    tile = 4 * tile_blocks
    if tile_blocks <= 0 or chunk <= 0 or chunk % tile or chunk & (chunk - 1):
        raise ValueError(
            f"chunk must be a power of two and a multiple of 4 * tile_blocks = {tile}, "
            f"got {chunk}"
        )


# ---------------------------------------------------------------------------------------------
# Device functions.

@triton.jit
def _philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Ten Philox rounds on uint32 counters (c0..c3) with key (k0, k1); returns the 4 words."""
    for _ in tl.static_range(10):
        hi0 = tl.umulhi(c0, PHILOX_M0)
        lo0 = tl.mul(c0, PHILOX_M0, sanitize_overflow=False)
        hi1 = tl.umulhi(c2, PHILOX_M1)
        lo1 = tl.mul(c2, PHILOX_M1, sanitize_overflow=False)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = tl.add(k0, PHILOX_W0, sanitize_overflow=False)
        k1 = tl.add(k1, PHILOX_W1, sanitize_overflow=False)
    return c0, c1, c2, c3


@triton.jit
def _u24(w):
    return (w >> 8).to(tl.int32).to(tl.float32) * U24_SCALE


@triton.jit
def _u24m(w):
    # The midpoint map of philox.h: the odd 24-bit numerator (w >> 8) | 1, exact in fp32.
    return ((w >> 8) | 1).to(tl.int32).to(tl.float32) * U24_SCALE


@triton.jit
def _u53(a, b):
    hi = (a >> 5).to(tl.int32).to(tl.float64)
    lo = (b >> 6).to(tl.int32).to(tl.float64)
    return (hi * 67108864.0 + lo) * U53_SCALE  # exact: < 2^53


@triton.jit
def _fma32(a, b, c, EXACT_FMA: tl.constexpr):
    """fp32 fma with one rounding; EXACT_FMA: via fp64 and round-to-odd (module docstring)."""
    if EXACT_FMA:
        p = tl.cast(a, tl.float32).to(tl.float64) * tl.cast(b, tl.float32).to(tl.float64)
        cc = tl.cast(c, tl.float32).to(tl.float64)  # the product above is exact: 24 x 24 bits
        s = p + cc
        bb = s - p
        err = (p - (s - bb)) + (cc - bb)
        bits = s.to(tl.int64, bitcast=True)
        inexact_even = (err != 0.0) & ((bits & 1) == 0)
        away = (err > 0.0) == (s > 0.0)
        bits = tl.where(inexact_even, tl.where(away, bits + 1, bits - 1), bits)
        return bits.to(tl.float64, bitcast=True).to(tl.float32)
    else:
        return tl.fma(a, b, c)


@triton.jit
def _clamp(x, lo, hi):
    """clamp_to of fill.h: two selects (a NaN stays NaN, unlike fmin/fmax)."""
    x = tl.where(x < lo, lo, x)
    return tl.where(x > hi, hi, x)


@triton.jit
def _log_f32_bits(bits, EXACT_FMA: tl.constexpr):
    """log_f32_bits of distributions.h: log of the positive normal fp32 number with bit
    pattern `bits` (uint32); x = m 2^e, m in [sqrt(.5), sqrt(2)), log(m) = 2 atanh(s) with
    s = (m - 1) / (m + 1) (an IEEE division), LOG_ATANH polynomial."""
    ix = (bits - LOG_SPLIT_BITS).to(tl.int32, bitcast=True)
    m = ((ix & 0x007FFFFF) + LOG_SPLIT_BITS).to(tl.float32, bitcast=True)
    fe = (ix >> 23).to(tl.float32)  # arithmetic shift: e may be negative
    s = tl.math.div_rn(m - 1.0, m + 1.0)
    t = s * s
    q = _fma32(t, LOG_ATANH_0, LOG_ATANH_1, EXACT_FMA)
    q = _fma32(q, t, LOG_ATANH_2, EXACT_FMA)
    log_m = _fma32(s * t, q, s + s, EXACT_FMA)
    return _fma32(fe, LN2, log_m, EXACT_FMA)


@triton.jit
def _log_u24o(w, EXACT_FMA: tl.constexpr):
    """log(u24o(w)) (log_u24o of distributions.h): the bits of the integer (w >> 8) + 1 as
    fp32, with 24 taken off the exponent."""
    n_bits = ((w >> 8).to(tl.int32) + 1).to(tl.float32).to(tl.uint32, bitcast=True)
    return _log_f32_bits(n_bits - (24 << 23), EXACT_FMA)


@triton.jit
def _angle_sincos_f32(w, EXACT_FMA: tl.constexpr):
    """angle_sincos_f32 of distributions.h: sin and cos of (pi/2) (k + f), quadrant
    k = w >> 30, f = ((w >> 8) & (2^22 - 1)) 2^-22 - 1/2; y = (pi/2) f in [-pi/4, pi/4]."""
    n = ((w >> 8) & 0x003FFFFF).to(tl.int32).to(tl.float32)
    y = _fma32(n, ANGLE_STEP, -QUARTER_PI, EXACT_FMA)
    z = y * y
    sp = _fma32(z, SIN_0, SIN_1, EXACT_FMA)
    sp = _fma32(sp, z, SIN_2, EXACT_FMA)
    sin_y = _fma32(sp * z, y, y, EXACT_FMA)
    cp = _fma32(z, COS_0, COS_1, EXACT_FMA)
    cp = _fma32(cp, z, COS_2, EXACT_FMA)
    cos_y = _fma32(cp * z, z, _fma32(z, -0.5, 1.0, EXACT_FMA), EXACT_FMA)
    swap = (w & 0x40000000) != 0
    s0 = tl.where(swap, cos_y, sin_y)
    c0 = tl.where(swap, sin_y, cos_y)
    s = (s0.to(tl.uint32, bitcast=True) ^ (w & 0x80000000)).to(tl.float32, bitcast=True)
    c = (c0.to(tl.uint32, bitcast=True) ^ ((w ^ (w << 1)) & 0x80000000)).to(tl.float32,
                                                                          bitcast=True)
    return s, c


@triton.jit
def _giles_w(p, EXACT_FMA: tl.constexpr):
    """giles_w of distributions.h: w = -log(4p(1 - p)), +inf where 4p(1 - p) is 0."""
    x = (4.0 * p) * (1.0 - p)
    return tl.where(x == 0.0, _INF, -_log_f32_bits(x.to(tl.uint32, bitcast=True), EXACT_FMA))


@triton.jit
def _normal_quantile_f32(p, EXACT_FMA: tl.constexpr):
    """normal_quantile_f32 of distributions.h: sqrt2 erfinv(2p - 1), Giles, w from p."""
    x = _fma32(p, 2.0, -1.0, EXACT_FMA)
    w = _giles_w(p, EXACT_FMA)
    wc = w - GILES_CENTRAL_SHIFT
    pc = _fma32(wc, GILES_CENTRAL_0, GILES_CENTRAL_1, EXACT_FMA)
    pc = _fma32(pc, wc, GILES_CENTRAL_2, EXACT_FMA)
    pc = _fma32(pc, wc, GILES_CENTRAL_3, EXACT_FMA)
    pc = _fma32(pc, wc, GILES_CENTRAL_4, EXACT_FMA)
    pc = _fma32(pc, wc, GILES_CENTRAL_5, EXACT_FMA)
    pc = _fma32(pc, wc, GILES_CENTRAL_6, EXACT_FMA)
    pc = _fma32(pc, wc, GILES_CENTRAL_7, EXACT_FMA)
    pc = _fma32(pc, wc, GILES_CENTRAL_8, EXACT_FMA)
    wt = tl.sqrt_rn(w) - GILES_TAIL_SHIFT
    pt = _fma32(wt, GILES_TAIL_0, GILES_TAIL_1, EXACT_FMA)
    pt = _fma32(pt, wt, GILES_TAIL_2, EXACT_FMA)
    pt = _fma32(pt, wt, GILES_TAIL_3, EXACT_FMA)
    pt = _fma32(pt, wt, GILES_TAIL_4, EXACT_FMA)
    pt = _fma32(pt, wt, GILES_TAIL_5, EXACT_FMA)
    pt = _fma32(pt, wt, GILES_TAIL_6, EXACT_FMA)
    pt = _fma32(pt, wt, GILES_TAIL_7, EXACT_FMA)
    pt = _fma32(pt, wt, GILES_TAIL_8, EXACT_FMA)
    poly = tl.where(w < GILES_SPLIT, pc, pt)
    return SQRT2 * (poly * x)


@triton.jit
def _normal_quantile_f64(p):
    """normal_quantile_f64 of distributions.h: Wichura's AS241 (PPND16), branch-free."""
    q = p - 0.5
    r = 0.180625 - q * q
    num = (((((((AS241_CENTRAL_NUM_0 * r + AS241_CENTRAL_NUM_1) * r + AS241_CENTRAL_NUM_2) * r + AS241_CENTRAL_NUM_3) * r + AS241_CENTRAL_NUM_4) * r + AS241_CENTRAL_NUM_5) * r + AS241_CENTRAL_NUM_6) * r + AS241_CENTRAL_NUM_7)
    den = (((((((AS241_CENTRAL_DEN_0 * r + AS241_CENTRAL_DEN_1) * r + AS241_CENTRAL_DEN_2) * r + AS241_CENTRAL_DEN_3) * r + AS241_CENTRAL_DEN_4) * r + AS241_CENTRAL_DEN_5) * r + AS241_CENTRAL_DEN_6) * r + AS241_CENTRAL_DEN_7)
    central = q * num / den

    t = tl.where(q < 0.0, p, 1.0 - p)
    t = tl.sqrt(-tl.log(t))  # t == 0 gives inf here and NaN below, replaced by +-inf
    a = t - 1.6
    num_a = (((((((AS241_NEAR_NUM_0 * a + AS241_NEAR_NUM_1) * a + AS241_NEAR_NUM_2) * a + AS241_NEAR_NUM_3) * a + AS241_NEAR_NUM_4) * a + AS241_NEAR_NUM_5) * a + AS241_NEAR_NUM_6) * a + AS241_NEAR_NUM_7)
    den_a = (((((((AS241_NEAR_DEN_0 * a + AS241_NEAR_DEN_1) * a + AS241_NEAR_DEN_2) * a + AS241_NEAR_DEN_3) * a + AS241_NEAR_DEN_4) * a + AS241_NEAR_DEN_5) * a + AS241_NEAR_DEN_6) * a + AS241_NEAR_DEN_7)
    b = t - 5.0
    num_b = (((((((AS241_FAR_NUM_0 * b + AS241_FAR_NUM_1) * b + AS241_FAR_NUM_2) * b + AS241_FAR_NUM_3) * b + AS241_FAR_NUM_4) * b + AS241_FAR_NUM_5) * b + AS241_FAR_NUM_6) * b + AS241_FAR_NUM_7)
    den_b = (((((((AS241_FAR_DEN_0 * b + AS241_FAR_DEN_1) * b + AS241_FAR_DEN_2) * b + AS241_FAR_DEN_3) * b + AS241_FAR_DEN_4) * b + AS241_FAR_DEN_5) * b + AS241_FAR_DEN_6) * b + AS241_FAR_DEN_7)
    tail = tl.where(t <= 5.0, num_a / den_a, num_b / den_b)
    tail = tl.where(tl.where(q < 0.0, p, 1.0 - p) <= 0.0, _INF, tail)
    tail = tl.where(q < 0.0, -tail, tail)
    return tl.where(tl.abs(q) <= 0.425, central, tail)


@triton.jit
def _box_muller_f64(w0, w1, w2, w3):
    """(r cos theta, r sin theta) of one Philox block in fp64 math (element_value_f64)."""
    r = tl.sqrt(-2.0 * tl.log(_u53(w0, w1) + U53_SCALE))
    theta = TWO_PI_F64 * _u53(w2, w3)
    return r * tl.cos(theta), r * tl.sin(theta)


@triton.jit
def _trunc_normal_f64(u, p0, p1, p2, p3, p4, p5, p6, p7):
    """The fp64-math truncated normal of a u53 uniform (element_value_f64)."""
    z = _clamp(_normal_quantile_f64(u * p3 + p2), p4, p5)
    return _clamp(z * p1 + p0, p6, p7)


@triton.jit
def _element_counter(block):
    """Counter words (c0, c1) of per-element Philox blocks (int64)."""
    return block.to(tl.uint32), (block >> 32).to(tl.uint32)


@triton.jit
def _block_counter(block, TILE: tl.constexpr):
    """Counter words (c0, c1) of the TILE Philox blocks block, block + 1, ... (block int64)."""
    lo = block.to(tl.uint32)
    hi = (block >> 32).to(tl.uint32)
    c0 = lo + tl.arange(0, TILE).to(tl.uint32)
    c1 = hi + (c0 < lo).to(tl.uint32)
    return c0, c1


@triton.jit
def _tile_words(first_block, s0, s1, k0, k1, TILE: tl.constexpr, HIGH_BIT: tl.constexpr = 0):
    """Philox words of the TILE blocks first_block + [0, TILE) of stream (s0, s1); with
    HIGH_BIT = SECOND_DRAW_BIT, of their second draws (the bit set in the block-high word)."""
    c0, c1 = _block_counter(first_block, TILE)
    c1 = c1 | HIGH_BIT
    c2 = tl.full([TILE], 0, tl.uint32) + s0
    c3 = tl.full([TILE], 0, tl.uint32) + s1
    return _philox4x32_10(c0, c1, c2, c3, k0, k1)


@triton.jit
def _to_bf16_rne(x):
    """fp32 -> bf16, round to nearest even, in integer ops (bf16_bits_rne of distributions.h).

    Written out because the interpreter's fp32 -> bf16 cast rounds ties away and can drop the
    carry into the exponent; on the GPU this equals cvt.rn.bf16.f32. NaN never reaches it.
    """
    u = x.to(tl.uint32, bitcast=True)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def _round_f32(x, OUT_DTYPE: tl.constexpr):
    """fp32 values into the output dtype, one round-to-nearest-even."""
    if OUT_DTYPE == tl.bfloat16:
        return _to_bf16_rne(x)
    else:
        return x.to(OUT_DTYPE)


@triton.jit
def _store_tile(out_ptr, tile_local, numel, vals, aligned, N: tl.constexpr):
    """Store N values for local indices tile_local + [0, N), those inside [0, numel) only.

    `aligned`: the tensor starts 16-byte aligned and at a Philox block boundary, so every
    tile starts 16-byte aligned (N and CHUNK elements are multiples of 16 bytes); a full
    tile of such a tensor takes the unmasked store with the alignment hint, which the
    compiler turns into 16-byte vector stores. Any other tile: the masked store.
    """
    offs = tl.arange(0, N)
    start = out_ptr + tile_local
    if aligned & (tile_local + N <= numel):
        tl.store(tl.multiple_of(start, 16) + offs, vals)
    else:
        lo = tl.maximum(-tile_local, 0).to(tl.int32)
        hi = tl.minimum(numel - tile_local, N).to(tl.int32)
        tl.store(start + offs, vals, mask=(offs >= lo) & (offs < hi))


@triton.jit
def _box_muller_f32(wa, wb, mean, std, EXACT_FMA: tl.constexpr):
    """The (cos, sin) values of the word pairs (wa, wb): normal_pair_f32 of fill.h,
    r = sqrt(-2 log u24o(wa)), x = fma(r std, cos or sin of the angle of wb, mean)."""
    r_std = tl.sqrt_rn(-2.0 * _log_u24o(wa, EXACT_FMA)) * std
    s, c = _angle_sincos_f32(wb, EXACT_FMA)
    return _fma32(r_std, c, mean, EXACT_FMA), _fma32(r_std, s, mean, EXACT_FMA)


@triton.jit
def _uniform_f32(w, scale, shift, limit, EXACT_FMA: tl.constexpr):
    """uniform_value_f32 of fill.h: a value at or above `limit` (one that a 16-bit dtype
    rounds to b or above) maps to the lower bound."""
    x = _fma32(_u24(w), scale, shift, EXACT_FMA)
    return tl.where(x >= limit, shift, x)


@triton.jit
def _trunc_normal_from_z(z, q0, q1, q4, q5, q6, q7, EXACT_FMA: tl.constexpr):
    """trunc_normal_from_z of fill.h: z clamped to [alpha, beta], scaled, clamped to [a, b]."""
    z = _clamp(z, q4, q5)
    return _clamp(_fma32(z, q1, q0, EXACT_FMA), q6, q7)


@triton.jit
def _trunc_normal_f32(w, q0, q1, q2, q3, q4, q5, q6, q7, EXACT_FMA: tl.constexpr):
    """trunc_normal_value_f32 of fill.h on words w."""
    p = _fma32(_u24m(w), q3, q2, EXACT_FMA)
    z = _normal_quantile_f32(p, EXACT_FMA)
    if tl.min(p, axis=0) < GILES_MIN_P:  # rare tiles: below Giles' range
        z = tl.where(p < GILES_MIN_P, _normal_quantile_f64(p.to(tl.float64)).to(tl.float32), z)
    return _trunc_normal_from_z(z, q0, q1, q4, q5, q6, q7, EXACT_FMA)


@triton.jit
def _trunc_normal_is_wide(q4, q5):
    """trunc_normal_is_wide of fill.h: alpha <= -4 and beta >= 4."""
    return (q4 <= -TRUNC_NORMAL_WIDE_BOUND) & (q5 >= TRUNC_NORMAL_WIDE_BOUND)


@triton.jit
def _trunc_normal_wide_f32(z, q0, q1, q4, q5, q6, q7, EXACT_FMA: tl.constexpr):
    """The first part of trunc_normal_wide_block_f32 of fill.h: the values of the standard
    Box-Muller values z, and whether each z lies in [alpha, beta]; the caller gives an element
    outside the quantile value of its second-draw word."""
    inside = (z >= q4) & (z <= q5)
    return _trunc_normal_from_z(z, q0, q1, q4, q5, q6, q7, EXACT_FMA), inside


@triton.jit
def _params_f32(p0, p1, p2, p3, p4, p5, p6, p7):
    """The descriptor's fp64 parameters rounded to fp32 (params_f32 of fill.h)."""
    return (p0.to(tl.float32), p1.to(tl.float32), p2.to(tl.float32), p3.to(tl.float32),
            p4.to(tl.float32), p5.to(tl.float32), p6.to(tl.float32), p7.to(tl.float32))


@triton.jit
def _fill_chunk_f32_math(out_ptr, aligned16, numel, first, chunk, k0, k1, s0, s1, dist,
                         p0, p1, p2, p3, p4, p5, p6, p7,
                         OUT_DTYPE: tl.constexpr, CHUNK, TILE: tl.constexpr,
                         EXACT_FMA: tl.constexpr):
    """Chunk `chunk` of one tensor, fp32-math distributions (4 elements per Philox block)."""
    base_block = first // 4 + chunk * (CHUNK // 4)
    base_local = chunk * CHUNK - first % 4  # local index of word 0 of base_block
    aligned = aligned16 & (first % 4 == 0)
    n_tiles = tl.cdiv(tl.minimum(numel - base_local, CHUNK), 4 * TILE)
    q0, q1, q2, q3, q4, q5, q6, q7 = _params_f32(p0, p1, p2, p3, p4, p5, p6, p7)
    for i in range(n_tiles):
        if dist == CONSTANT:
            vals = tl.full([4 * TILE], 0.0, tl.float32) + q0
        else:
            w0, w1, w2, w3 = _tile_words(base_block + i * TILE, s0, s1, k0, k1, TILE)
            wa = tl.interleave(w0, w2)  # even words of pairs (0, 1) and (2, 3)
            wb = tl.interleave(w1, w3)  # odd words
            if dist == NORMAL:
                xc, xs = _box_muller_f32(wa, wb, q0, q1, EXACT_FMA)
                vals = tl.interleave(xc, xs)
            else:
                w = tl.interleave(wa, wb)  # words 0, 1, 2, 3 of each block, in element order
                if dist == UNIFORM:
                    vals = _uniform_f32(w, q0, q1, q2, EXACT_FMA)
                elif _trunc_normal_is_wide(q4, q5):
                    zc, zs = _box_muller_f32(wa, wb, 0.0, 1.0, EXACT_FMA)
                    vals, inside = _trunc_normal_wide_f32(tl.interleave(zc, zs), q0, q1, q4, q5,
                                                          q6, q7, EXACT_FMA)
                    if tl.min(inside.to(tl.int32), axis=0) == 0:  # rare tiles
                        v0, v1, v2, v3 = _tile_words(base_block + i * TILE, s0, s1, k0, k1, TILE,
                                                     SECOND_DRAW_BIT)
                        second = tl.interleave(tl.interleave(v0, v2), tl.interleave(v1, v3))
                        vals = tl.where(inside, vals, _trunc_normal_f32(
                            second, q0, q1, q2, q3, q4, q5, q6, q7, EXACT_FMA))
                else:  # TRUNC_NORMAL
                    vals = _trunc_normal_f32(w, q0, q1, q2, q3, q4, q5, q6, q7, EXACT_FMA)
        _store_tile(out_ptr, base_local + i * (4 * TILE), numel, _round_f32(vals, OUT_DTYPE),
                    aligned, 4 * TILE)


@triton.jit
def _fill_chunk_strided(row, out_ptr, numel, first, chunk, k0, k1, s0, s1, dist,
                        p0, p1, p2, p3, p4, p5, p6, p7,
                        OUT_DTYPE: tl.constexpr, F64_MATH: tl.constexpr, CHUNK,
                        N: tl.constexpr, EXACT_FMA: tl.constexpr):
    """Chunk `chunk` of a strided descriptor: its local elements [chunk * CHUNK, ... + CHUNK)
    in row-major order, N per step, each written at its strided address with the value of
    its contract index (one Philox block per element)."""
    for i in range(tl.cdiv(tl.minimum(numel - chunk * CHUNK, CHUNK), N)):
        local = chunk * CHUNK + i * N + tl.arange(0, N).to(tl.int64)
        mask = local < numel
        rest = local
        offset = tl.zeros([N], tl.int64)
        index = tl.zeros([N], tl.int64) + first
        for k in tl.static_range(MAX_DIMS - 1, -1, -1):
            size = tl.load(row + DESC_SIZE + k)
            pos = rest % size
            rest = rest // size
            offset += pos * tl.load(row + DESC_STRIDE + k)
            index += pos * tl.load(row + DESC_GLOBAL_STRIDE + k)
        if F64_MATH:
            c0, c1 = _element_counter(index // 2)
            w0, w1, w2, w3 = _philox4x32_10(c0, c1, tl.zeros([N], tl.uint32) + s0,
                                            tl.zeros([N], tl.uint32) + s1, k0, k1)
            second = (index % 2) == 1
            if dist == CONSTANT:
                vals = tl.full([N], 0.0, tl.float64) + p0
            elif dist == NORMAL:
                zc, zs = _box_muller_f64(w0, w1, w2, w3)
                vals = tl.where(second, zs, zc) * p1 + p0
            else:
                u = _u53(tl.where(second, w2, w0), tl.where(second, w3, w1))
                if dist == UNIFORM:
                    vals = u * p0 + p1
                else:  # TRUNC_NORMAL, TRUNC_NORMAL_FP64
                    vals = _trunc_normal_f64(u, p0, p1, p2, p3, p4, p5, p6, p7)
            if OUT_DTYPE != tl.float64:
                vals = vals.to(tl.float32)
        else:
            c0, c1 = _element_counter(index // 4)
            w0, w1, w2, w3 = _philox4x32_10(c0, c1, tl.zeros([N], tl.uint32) + s0,
                                            tl.zeros([N], tl.uint32) + s1, k0, k1)
            t = index % 4
            q0, q1, q2, q3, q4, q5, q6, q7 = _params_f32(p0, p1, p2, p3, p4, p5, p6, p7)
            if dist == CONSTANT:
                vals = tl.full([N], 0.0, tl.float32) + q0
            elif dist == NORMAL:
                xc, xs = _box_muller_f32(tl.where(t < 2, w0, w2), tl.where(t < 2, w1, w3),
                                         q0, q1, EXACT_FMA)
                vals = tl.where((t % 2) == 0, xc, xs)
            else:
                w = tl.where(t == 0, w0, tl.where(t == 1, w1, tl.where(t == 2, w2, w3)))
                if dist == UNIFORM:
                    vals = _uniform_f32(w, q0, q1, q2, EXACT_FMA)
                elif _trunc_normal_is_wide(q4, q5):
                    xc, xs = _box_muller_f32(tl.where(t < 2, w0, w2), tl.where(t < 2, w1, w3),
                                             0.0, 1.0, EXACT_FMA)
                    vals, inside = _trunc_normal_wide_f32(tl.where((t % 2) == 0, xc, xs), q0,
                                                          q1, q4, q5, q6, q7, EXACT_FMA)
                    if tl.min(inside.to(tl.int32), axis=0) == 0:  # rare steps
                        v0, v1, v2, v3 = _philox4x32_10(
                            c0, c1 | SECOND_DRAW_BIT, tl.zeros([N], tl.uint32) + s0,
                            tl.zeros([N], tl.uint32) + s1, k0, k1)
                        second = tl.where(t == 0, v0, tl.where(t == 1, v1,
                                                               tl.where(t == 2, v2, v3)))
                        vals = tl.where(inside, vals, _trunc_normal_f32(
                            second, q0, q1, q2, q3, q4, q5, q6, q7, EXACT_FMA))
                else:  # TRUNC_NORMAL
                    vals = _trunc_normal_f32(w, q0, q1, q2, q3, q4, q5, q6, q7, EXACT_FMA)
        if OUT_DTYPE == tl.float64:
            tl.store(out_ptr + offset, vals, mask=mask)
        else:
            tl.store(out_ptr + offset, _round_f32(vals, OUT_DTYPE), mask=mask)


@triton.jit
def _fill_chunk_f64_math(out_ptr, aligned16, numel, first, chunk, k0, k1, s0, s1, dist,
                         p0, p1, p2, p3, p4, p5, p6, p7,
                         OUT_DTYPE: tl.constexpr, CHUNK, TILE: tl.constexpr):
    """Chunk `chunk` of one tensor, fp64 math (2 elements per Philox block)."""
    base_block = first // 2 + chunk * (CHUNK // 2)
    base_local = chunk * CHUNK - first % 2
    aligned = aligned16 & (first % 2 == 0)
    n_tiles = tl.cdiv(tl.minimum(numel - base_local, CHUNK), 2 * TILE)
    for i in range(n_tiles):
        if dist == CONSTANT:
            vals = tl.full([2 * TILE], 0.0, tl.float64) + p0
        else:
            w0, w1, w2, w3 = _tile_words(base_block + i * TILE, s0, s1, k0, k1, TILE)
            if dist == NORMAL:
                zc, zs = _box_muller_f64(w0, w1, w2, w3)
                vals = tl.interleave(zc, zs) * p1 + p0
            else:
                u = tl.interleave(_u53(w0, w1), _u53(w2, w3))
                if dist == UNIFORM:
                    vals = u * p0 + p1
                else:  # TRUNC_NORMAL, TRUNC_NORMAL_FP64
                    vals = _trunc_normal_f64(u, p0, p1, p2, p3, p4, p5, p6, p7)
        if OUT_DTYPE == tl.float64:
            _store_tile(out_ptr, base_local + i * (2 * TILE), numel, vals, aligned, 2 * TILE)
        else:  # the contract's rounding path: fp32 first, then the dtype
            _store_tile(out_ptr, base_local + i * (2 * TILE), numel,
                        _round_f32(vals.to(tl.float32), OUT_DTYPE), aligned, 2 * TILE)


@triton.jit
def _fill_kernel(base_ptr, table_ptr, map_ptr, CHUNK, TILE: tl.constexpr,
                 EXACT_FMA: tl.constexpr):
    """Program pid fills chunk map[pid, 1] of descriptor row map[pid, 0] of table; each row's
    elements lie at its element offset from base_ptr (the launch's first tensor), whose dtype
    is the output dtype."""
    OUT_DTYPE: tl.constexpr = base_ptr.dtype.element_ty
    pid = tl.program_id(0).to(tl.int64)
    tensor = tl.load(map_ptr + 2 * pid)
    chunk = tl.load(map_ptr + 2 * pid + 1)
    row = table_ptr + tensor * DESC_WORDS
    out_ptr = base_ptr + tl.load(row + DESC_BASE_OFFSET)
    aligned16 = (out_ptr.to(tl.int64) % 16) == 0
    numel = tl.load(row + DESC_NUMEL)
    first = tl.load(row + DESC_FIRST_INDEX)
    seed = tl.load(row + DESC_SEED)
    stream = tl.load(row + DESC_STREAM)
    k0 = (seed & 0xFFFFFFFF).to(tl.uint32)
    k1 = ((seed >> 32) & 0xFFFFFFFF).to(tl.uint32)
    s0 = (stream & 0xFFFFFFFF).to(tl.uint32)
    s1 = ((stream >> 32) & 0xFFFFFFFF).to(tl.uint32)
    dist = (tl.load(row + DESC_DIST) & 0xFFFFFFFF).to(tl.int32)  # dtype: high half
    p0 = tl.load(row + DESC_PARAM + 0).to(tl.float64, bitcast=True)
    p1 = tl.load(row + DESC_PARAM + 1).to(tl.float64, bitcast=True)
    p2 = tl.load(row + DESC_PARAM + 2).to(tl.float64, bitcast=True)
    p3 = tl.load(row + DESC_PARAM + 3).to(tl.float64, bitcast=True)
    p4 = tl.load(row + DESC_PARAM + 4).to(tl.float64, bitcast=True)
    p5 = tl.load(row + DESC_PARAM + 5).to(tl.float64, bitcast=True)
    p6 = tl.load(row + DESC_PARAM + 6).to(tl.float64, bitcast=True)
    p7 = tl.load(row + DESC_PARAM + 7).to(tl.float64, bitcast=True)
    contiguous = ((tl.load(row + DESC_NDIM) & 0xFFFFFFFF) == 1) & (tl.load(row + DESC_STRIDE) == 1) \
        & (tl.load(row + DESC_GLOBAL_STRIDE) == 1)
    f64_math = OUT_DTYPE == tl.float64
    if not contiguous:
        if f64_math:
            _fill_chunk_strided(row, out_ptr, numel, first, chunk, k0, k1, s0, s1, dist,
                                p0, p1, p2, p3, p4, p5, p6, p7, OUT_DTYPE, True, CHUNK,
                                2 * TILE, EXACT_FMA)
        elif dist == TRUNC_NORMAL_FP64:
            _fill_chunk_strided(row, out_ptr, numel, first, chunk, k0, k1, s0, s1, dist,
                                p0, p1, p2, p3, p4, p5, p6, p7, OUT_DTYPE, True, CHUNK,
                                2 * TILE, EXACT_FMA)
        else:
            _fill_chunk_strided(row, out_ptr, numel, first, chunk, k0, k1, s0, s1, dist,
                                p0, p1, p2, p3, p4, p5, p6, p7, OUT_DTYPE, False, CHUNK,
                                4 * TILE, EXACT_FMA)
    elif f64_math:
        _fill_chunk_f64_math(out_ptr, aligned16, numel, first, chunk, k0, k1, s0, s1, dist,
                             p0, p1, p2, p3, p4, p5, p6, p7, OUT_DTYPE, CHUNK, TILE)
    elif dist == TRUNC_NORMAL_FP64:
        _fill_chunk_f64_math(out_ptr, aligned16, numel, first, chunk, k0, k1, s0, s1, dist,
                             p0, p1, p2, p3, p4, p5, p6, p7, OUT_DTYPE, CHUNK, TILE)
    else:
        _fill_chunk_f32_math(out_ptr, aligned16, numel, first, chunk, k0, k1, s0, s1, dist,
                             p0, p1, p2, p3, p4, p5, p6, p7, OUT_DTYPE, CHUNK, TILE,
                             EXACT_FMA)


# ---------------------------------------------------------------------------------------------
# Host side.

def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"


@triton.jit
def _fma_probe_kernel(x_ptr, out_ptr):
    a = tl.load(x_ptr)
    c = tl.load(x_ptr + 1)
    tl.store(out_ptr, tl.fma(a, a, c))


@functools.lru_cache(maxsize=None)
def interpreter_fma_is_fused() -> bool:
    """Whether this Triton's interpreter evaluates tl.fma(a, b, c) with a single rounding.

    a = 1 + 2^-12, c = -(1 + 2^-11): a * a = 1 + 2^-11 + 2^-24 exactly, so a fused fma gives
    2^-24 and a multiply then add (the product ties to 1 + 2^-11) gives 0.
    """
    a, c = 1.0 + 2.0**-12, -(1.0 + 2.0**-11)
    x = torch.tensor([a, c], dtype=torch.float32)
    out = torch.zeros(1, dtype=torch.float32)
    _fma_probe_kernel[(1,)](x, out)
    return float(out[0]) == 2.0**-24


def _exact_fma_path(device: torch.device) -> bool:
    return interpreting() and not interpreter_fma_is_fused()


def _chunks(fill, chunk: int) -> int:
    """Programs of one fill: a contiguous one is cut in contract-index space (chunk c covers
    the Philox blocks of [first // PB + c * CHUNK / PB, ...)), a strided one in its local
    row-major order."""
    layout = fill.resolved_layout()
    numel = layout.numel
    if numel == 0:
        return 0
    if not layout.is_contiguous():
        return -(-numel // chunk)
    per_block = elements_per_block(fill.dist, fill.tensor.dtype)
    return -(-(fill.first_index % per_block + numel) // chunk)


def descriptor_rows(fills: Sequence) -> np.ndarray:
    """The int64 descriptor rows (n, DESC_WORDS) of `fills`: each fill's packed descriptor with
    its data word replaced by the element offset of the fill's local element 0 from its own
    tensor's first element (the layout's offset). The rows hold no address, so they can be
    built for tensors that have none yet (a compiler's); ``triton_fill`` rebases them on the
    launch's first tensor."""
    desc = np.frombuffer(pack_descriptors(fills), dtype=np.int64).reshape(len(fills), -1).copy()
    addresses = desc[:, DESC_BASE_OFFSET.value]  # packed: data_ptr + offset * element size
    desc[:, DESC_BASE_OFFSET.value] = [(int(a) - f.tensor.data_ptr()) // f.tensor.element_size()
                                       for a, f in zip(addresses, fills)]
    return desc


def build_block_map(fills: Sequence, chunk: int) -> np.ndarray:
    """The block map (programs, 2), int64: one (descriptor row, chunk) pair per program."""
    counts = np.array([_chunks(f, chunk) for f in fills], dtype=np.int64)
    block_map = np.empty((int(counts.sum()), 2), dtype=np.int64)
    block_map[:, 0] = np.repeat(np.arange(len(fills), dtype=np.int64), counts)
    starts = np.cumsum(counts) - counts
    block_map[:, 1] = np.arange(len(block_map), dtype=np.int64) - np.repeat(starts, counts)
    return block_map


_DIST_CODES = range(int(min(Distribution)), int(max(Distribution)) + 1)  # as the C++ check


def _check_row(i: int, row: list, t: torch.Tensor, device, dtype, dtype_code: int,
               esize: int) -> None:
    """check_table on descriptor row i (Python ints) over tensor t."""
    size_at, stride_at = DESC_SIZE.value, DESC_STRIDE.value
    global_at = DESC_GLOBAL_STRIDE.value
    where = f"descriptor {i}: "
    dist_word, ndim = row[DESC_DIST.value], row[DESC_NDIM.value] & 0xFFFFFFFF
    dist, code = dist_word & 0xFFFFFFFF, (dist_word >> 32) & 0xFFFFFFFF  # int32 pairs:
    dist, code, ndim = (x - (x >> 31 << 32) for x in (dist, code, ndim))  # low half first
    if dist not in _DIST_CODES:
        raise ValueError(f"{where}dist: unknown distribution code {dist}")
    if t.device != device or t.dtype != dtype or code != dtype_code:
        raise ValueError(f"{where}dtype: code {code} for a {t.dtype} tensor on {t.device}; "
                         f"one launch writes {dtype} (code {dtype_code}) on {device}")
    numel, first = row[DESC_NUMEL.value], row[DESC_FIRST_INDEX.value]
    if numel < 0 or first < 0:
        raise ValueError(f"{where}numel {numel} and first_index {first} must be >= 0")
    if not 1 <= ndim <= MAX_DIMS.value:
        raise ValueError(f"{where}ndim: {ndim} is outside [1, {MAX_DIMS.value}]")
    sizes = row[size_at:size_at + ndim]
    strides = row[stride_at:stride_at + ndim]
    global_strides = row[global_at:global_at + ndim]
    if min(sizes + strides + global_strides) < 0:
        raise ValueError(f"{where}sizes {sizes}, strides {strides} and global strides "
                         f"{global_strides} must be >= 0")
    if math.prod(sizes) != numel:
        raise ValueError(f"{where}numel: {numel} differs from the product of its sizes, "
                         f"{math.prod(sizes)}")
    if not numel:
        return
    storage = t.untyped_storage()
    address = t.data_ptr()
    if address == 0 or storage.data_ptr() == 0:
        raise ValueError(f"{where}data: null address for {numel} elements "
                         f"(a tensor without storage)")
    if address % esize:
        raise ValueError(f"{where}data: address {address} is not aligned to the "
                         f"{esize}-byte elements of its dtype")
    span = 1 + sum((k - 1) * st for k, st in zip(t.shape, t.stride())) if t.numel() else 0
    room = storage.nbytes() // esize - t.storage_offset()
    if span > room:
        raise ValueError(f"{where}data: a tensor spanning {span} elements does not fit the "
                         f"{room} elements of its storage from its storage offset")
    offset = row[DESC_BASE_OFFSET.value]
    last = offset + sum((k - 1) * st for k, st in zip(sizes, strides))
    if offset < 0 or last >= span:
        raise ValueError(
            f"{where}data: elements [{offset}, {last}] from the tensor's first element lie "
            f"outside the tensor, elements [0, {span - 1}]")


def check_table(targets: Sequence[torch.Tensor], table: np.ndarray) -> None:
    """Refuse, before any launch, a table that would make the kernel write outside its tensors.

    The checks of the C++ modules (csrc/descriptor_check.h) on each descriptor row, plus the
    bounds that an element offset allows checking: row i, over targets[i], has a known
    distribution code and the dtype code of the targets' one dtype, numel >= 0, first_index >= 0,
    ndim in [1, MAX_DIMS], sizes and strides >= 0 with numel their sizes' product; for numel > 0
    its tensor has allocated storage at an address aligned for its dtype and holding the
    tensor's span (its first to its last element), and every element the row reaches lies
    inside that span. Every block map row names a descriptor row and a chunk >= 0.

    Args:
        targets: the tensors of the launch, one per descriptor row, on one device, one dtype.
        table: the int64 table of ``triton_fill``: the descriptor rows, then the block map.

    Raises:
        ValueError: naming the first bad row and its bad field.
    """
    n = len(targets)
    if not n:
        raise ValueError("a Triton launch needs at least one tensor")
    words = DESC_WORDS.value
    if table.ndim != 1 or table.size < n * words or (table.size - n * words) % 2:
        raise ValueError(f"table of {table.size} int64 words is not {n} descriptor rows of "
                         f"{words} words and a block map of (descriptor, chunk) pairs")
    device, dtype = targets[0].device, targets[0].dtype
    dtype_code = int(DTYPE_CODES[dtype])
    esize = targets[0].element_size()
    rows = table[:n * words].reshape(n, words).tolist()
    with torch._C.DisableTorchFunction():  # looks at tensors' storage, not at their memory
        for i, (row, t) in enumerate(zip(rows, targets)):
            _check_row(i, row, t, device, dtype, dtype_code, esize)
    block_map = table[n * words:].reshape(-1, 2)
    bad = (block_map[:, 0] < 0) | (block_map[:, 0] >= n) | (block_map[:, 1] < 0)
    if bad.any():
        program = int(np.argmax(bad))
        raise ValueError(f"block map row {program}: {block_map[program].tolist()} is not a "
                         f"(descriptor in [0, {n}), chunk >= 0) pair")


def _check_decomposable(targets: Sequence[torch.Tensor]) -> None:
    """Raise unless a compiler's decomposition of ``triton_fill`` (functional tensors) can trace
    a launch that writes what the op says it writes."""
    if len(targets) != 1:
        raise ValueError(
            f"fastinit::triton_fill traced with {len(targets)} tensors: a compiler sees only "
            "the kernel's tensor argument (the first), and the other tensors' offsets from it "
            "are addresses known only at run time; trace one call per tensor")
    if interpreting():
        raise RuntimeError(
            "fastinit::triton_fill cannot be decomposed under TRITON_INTERPRET=1: "
            "torch.library.wrap_triton hands back the interpreted kernel, which cannot run on "
            "the compiler's tensors. Compile with a backend that keeps custom ops whole "
            "(backend='eager'), or run compiled Triton on a GPU")


@torch.library.triton_op("fastinit::triton_fill", mutates_args=("targets",))
def triton_fill(targets: list[torch.Tensor], table: torch.Tensor, chunk: int, tile_blocks: int,
                num_warps: int, max_programs: int, exact_fma: bool) -> None:
    """Fill targets[i] as descriptor row i of `table` says: the one launch path of the kernel.

    A torch.library.triton_op, so torch.compile sees the kernel (through wrap_triton) and the
    tensor it writes. The kernel's base pointer is targets[0]; before the launch each row's
    element offset from its own tensor becomes one from targets[0] (the tensors' address
    difference), so a launch over many tensors stays one pass, and a launch over one tensor
    writes only through its tensor argument. On fake or meta tensors (the op's fake
    implementation) it writes nothing. Decomposed by a compiler (functional tensors) the table
    is not read on the host (no validation, no rebasing), so such a call takes exactly one
    tensor, and it needs compiled Triton (a GPU).

    Args:
        targets: the tensors written, one per descriptor row (repeats allowed), on one device
          and of one dtype (the output dtype).
        table: int64, on the CPU: len(targets) descriptor rows of DESC_WORDS words (the layout
          of contract_numbers.py, the data word an element offset from that row's tensor),
          then the block map, one (row, chunk) pair per program.
        chunk: elements per program (``chunk_for``).
        tile_blocks: Philox blocks per loop iteration of a program.
        num_warps: warps per program.
        max_programs: programs per launch; more launches above it.
        exact_fma: the fp64 round-to-odd fma (``interpreter_fma_is_fused``).

    Raises:
        ValueError: a bad table (not contiguous 1-d int64 on the CPU), table row or block map
          row (``check_table``), chunk or max_programs; a decomposed call over more than one
          tensor.
        RuntimeError: decomposed by a compiler under TRITON_INTERPRET=1.
    """
    words = DESC_WORDS.value
    base = targets[0]
    if table.dtype != torch.int64 or table.device.type != "cpu" or table.dim() != 1 \
            or not table.is_contiguous():
        raise ValueError(f"table must be a contiguous 1-d int64 CPU tensor, got {table.dtype} "
                         f"of shape {tuple(table.shape)} on {table.device}")
    if max_programs < 1:
        raise ValueError(f"max_programs must be >= 1, got {max_programs}")
    if isinstance(base, FunctionalTensor):  # a compiler decomposes the op: trace the launch
        _check_decomposable(targets)
    elif not has_real_storage(base):  # the fake implementation (fake or meta tensors)
        return
    else:
        check_chunk(chunk, tile_blocks)
        host = table.numpy()
        check_table(targets, host)
        if len(targets) > 1:  # offsets from each row's tensor -> offsets from targets[0]
            deltas = [(t.data_ptr() - base.data_ptr()) // base.element_size() for t in targets]
            host = host.copy()
            host[:len(targets) * words].reshape(len(targets), words)[:, DESC_BASE_OFFSET.value] \
                += deltas
            table = torch.from_numpy(host)
        if base.device.type == "cuda":  # pinned, so the copy does not wait for the host
            table = table.pin_memory().to(base.device, non_blocking=True)
    table = table.to(base.device)
    map_all = table[len(targets) * words:]
    programs = map_all.numel() // 2
    # enable_fp_fusion=False reaches the kernel in eager; Inductor compiles a decomposed op's
    # kernel with options of its own, without it in torch 2.13 (codegen/wrapper.py), which
    # tests/test_triton_op.py::test_inductor_compiles_the_kernel_bitwise checks on a GPU.
    kernel = torch.library.wrap_triton(_fill_kernel)
    with torch.cuda.device(base.device) if base.device.type == "cuda" else contextlib.nullcontext():
        for start in range(0, programs, max_programs):
            kernel[(min(max_programs, programs - start),)](
                base, table, map_all[2 * start:], chunk, TILE=tile_blocks, EXACT_FMA=exact_fma,
                num_warps=num_warps, enable_fp_fusion=False,
            )


def check_fills(fills: Sequence) -> np.ndarray:
    """Refuse fills one launch cannot take, before anything is written; return their
    descriptor rows.

    Args:
        fills: the non-empty fills of one launch (fastinit.plan.Fill), in order.

    Returns:
        ``descriptor_rows(fills)``.

    Raises:
        TypeError: a dtype the kernel does not write.
        ValueError: a bad descriptor (``check_table``), naming its index and field, or a
          tensor without memory (fake, functional, meta).
    """
    dtype = fills[0].tensor.dtype
    if dtype not in OUT_DTYPES:
        raise TypeError(f"the Triton fill writes {list(OUT_DTYPES)}, got {dtype}")
    desc = descriptor_rows(fills)
    targets = [f.tensor for f in fills]
    without_memory = [i for i, t in enumerate(targets) if not has_real_storage(t)]
    if without_memory:  # they must not reach the op, whose dispatch would take them for tracing
        check_table(targets, desc.reshape(-1))
        raise ValueError(f"descriptor {without_memory[0]}: data: a tensor without memory "
                         f"(fake, functional or meta)")
    return desc


def fill(fills: Sequence, config: LaunchConfig = DEFAULT_CONFIG) -> int:
    """Fill every tensor of `fills` (one device, one dtype) through ``triton_fill``, which
    validates every descriptor first: one launch for the list, more only when the block map
    exceeds config.max_programs.

    Args:
        fills: fastinit.plan.Fill objects (empty tensors are skipped).
        config: how the work is cut into programs.

    Returns:
        The number of kernel launches.

    Raises:
        TypeError, ValueError: as ``check_fills`` and ``check_table``, before anything is
          written.
    """
    fills = [f for f in fills if f.tensor.numel()]
    if not fills:
        return 0
    desc = check_fills(fills)
    device = fills[0].tensor.device
    chunk = chunk_for(int(desc[:, DESC_NUMEL.value].sum()), device, config)
    block_map = build_block_map(fills, chunk)
    table = torch.from_numpy(np.concatenate([desc.reshape(-1), block_map.reshape(-1)]))
    torch.ops.fastinit.triton_fill([f.tensor for f in fills], table, chunk, config.tile_blocks,
                                   config.num_warps, config.max_programs,
                                   _exact_fma_path(device))
    return -(-len(block_map) // config.max_programs)
