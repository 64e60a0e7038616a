"""The device functions of the Triton fill: Philox, the fp32 and fp64 maths, rounding, stores.

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

"""
import triton
import triton.language as tl

from .contract_numbers import *  # noqa: F403  (generated from fastinit.contract_numbers)

INF = tl.constexpr(float("inf"))


@triton.jit
def philox4x32_10(c0, c1, c2, c3, k0, k1):
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
def u24(w):
    return (w >> 8).to(tl.int32).to(tl.float32) * U24_SCALE


@triton.jit
def u24m(w):
    # The midpoint map of philox.h: the odd 24-bit numerator (w >> 8) | 1, exact in fp32.
    return ((w >> 8) | 1).to(tl.int32).to(tl.float32) * U24_SCALE


@triton.jit
def u53(a, b):
    hi = (a >> 5).to(tl.int32).to(tl.float64)
    lo = (b >> 6).to(tl.int32).to(tl.float64)
    return (hi * 67108864.0 + lo) * U53_SCALE  # exact: < 2^53


@triton.jit
def fma32(a, b, c, EXACT_FMA: tl.constexpr):
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
def clamp(x, lo, hi):
    """clamp_to of fill.h: two selects (a NaN stays NaN, unlike fmin/fmax)."""
    x = tl.where(x < lo, lo, x)
    return tl.where(x > hi, hi, x)


@triton.jit
def log_f32_bits(bits, EXACT_FMA: tl.constexpr):
    """log_f32_bits of distributions.h: log of the positive normal fp32 number with bit
    pattern `bits` (uint32); x = m 2^e, m in [sqrt(.5), sqrt(2)), log(m) = 2 atanh(s) with
    s = (m - 1) / (m + 1) (an IEEE division), LOG_ATANH polynomial."""
    ix = (bits - LOG_SPLIT_BITS).to(tl.int32, bitcast=True)
    m = ((ix & 0x007FFFFF) + LOG_SPLIT_BITS).to(tl.float32, bitcast=True)
    fe = (ix >> 23).to(tl.float32)  # arithmetic shift: e may be negative
    s = tl.math.div_rn(m - 1.0, m + 1.0)
    t = s * s
    q = fma32(t, LOG_ATANH_0, LOG_ATANH_1, EXACT_FMA)
    q = fma32(q, t, LOG_ATANH_2, EXACT_FMA)
    log_m = fma32(s * t, q, s + s, EXACT_FMA)
    return fma32(fe, LN2, log_m, EXACT_FMA)


@triton.jit
def log_u24o(w, EXACT_FMA: tl.constexpr):
    """log(u24o(w)) (log_u24o of distributions.h): the bits of the integer (w >> 8) + 1 as
    fp32, with 24 taken off the exponent."""
    n_bits = ((w >> 8).to(tl.int32) + 1).to(tl.float32).to(tl.uint32, bitcast=True)
    return log_f32_bits(n_bits - (24 << 23), EXACT_FMA)


@triton.jit
def angle_sincos_f32(w, EXACT_FMA: tl.constexpr):
    """angle_sincos_f32 of distributions.h: sin and cos of (pi/2) (k + f), quadrant
    k = w >> 30, f = ((w >> 8) & (2^22 - 1)) 2^-22 - 1/2; y = (pi/2) f in [-pi/4, pi/4]."""
    n = ((w >> 8) & 0x003FFFFF).to(tl.int32).to(tl.float32)
    y = fma32(n, ANGLE_STEP, -QUARTER_PI, EXACT_FMA)
    z = y * y
    sp = fma32(z, SIN_0, SIN_1, EXACT_FMA)
    sp = fma32(sp, z, SIN_2, EXACT_FMA)
    sin_y = fma32(sp * z, y, y, EXACT_FMA)
    cp = fma32(z, COS_0, COS_1, EXACT_FMA)
    cp = fma32(cp, z, COS_2, EXACT_FMA)
    cos_y = fma32(cp * z, z, fma32(z, -0.5, 1.0, EXACT_FMA), EXACT_FMA)
    swap = (w & 0x40000000) != 0
    s0 = tl.where(swap, cos_y, sin_y)
    c0 = tl.where(swap, sin_y, cos_y)
    s = (s0.to(tl.uint32, bitcast=True) ^ (w & 0x80000000)).to(tl.float32, bitcast=True)
    c = (c0.to(tl.uint32, bitcast=True) ^ ((w ^ (w << 1)) & 0x80000000)).to(tl.float32,
                                                                          bitcast=True)
    return s, c


@triton.jit
def giles_w(p, EXACT_FMA: tl.constexpr):
    """giles_w of distributions.h: w = -log(4p(1 - p)), +inf where 4p(1 - p) is 0."""
    x = (4.0 * p) * (1.0 - p)
    return tl.where(x == 0.0, INF, -log_f32_bits(x.to(tl.uint32, bitcast=True), EXACT_FMA))


@triton.jit
def normal_quantile_f32(p, EXACT_FMA: tl.constexpr):
    """normal_quantile_f32 of distributions.h: sqrt2 erfinv(2p - 1), Giles, w from p."""
    x = fma32(p, 2.0, -1.0, EXACT_FMA)
    w = giles_w(p, EXACT_FMA)
    wc = w - GILES_CENTRAL_SHIFT
    pc = fma32(wc, GILES_CENTRAL_0, GILES_CENTRAL_1, EXACT_FMA)
    pc = fma32(pc, wc, GILES_CENTRAL_2, EXACT_FMA)
    pc = fma32(pc, wc, GILES_CENTRAL_3, EXACT_FMA)
    pc = fma32(pc, wc, GILES_CENTRAL_4, EXACT_FMA)
    pc = fma32(pc, wc, GILES_CENTRAL_5, EXACT_FMA)
    pc = fma32(pc, wc, GILES_CENTRAL_6, EXACT_FMA)
    pc = fma32(pc, wc, GILES_CENTRAL_7, EXACT_FMA)
    pc = fma32(pc, wc, GILES_CENTRAL_8, EXACT_FMA)
    wt = tl.sqrt_rn(w) - GILES_TAIL_SHIFT
    pt = fma32(wt, GILES_TAIL_0, GILES_TAIL_1, EXACT_FMA)
    pt = fma32(pt, wt, GILES_TAIL_2, EXACT_FMA)
    pt = fma32(pt, wt, GILES_TAIL_3, EXACT_FMA)
    pt = fma32(pt, wt, GILES_TAIL_4, EXACT_FMA)
    pt = fma32(pt, wt, GILES_TAIL_5, EXACT_FMA)
    pt = fma32(pt, wt, GILES_TAIL_6, EXACT_FMA)
    pt = fma32(pt, wt, GILES_TAIL_7, EXACT_FMA)
    pt = fma32(pt, wt, GILES_TAIL_8, EXACT_FMA)
    poly = tl.where(w < GILES_SPLIT, pc, pt)
    return SQRT2 * (poly * x)


@triton.jit
def normal_quantile_f64(p):
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
    tail = tl.where(tl.where(q < 0.0, p, 1.0 - p) <= 0.0, INF, tail)
    tail = tl.where(q < 0.0, -tail, tail)
    return tl.where(tl.abs(q) <= 0.425, central, tail)


@triton.jit
def box_muller_f64(w0, w1, w2, w3):
    """(r cos theta, r sin theta) of one Philox block in fp64 math (element_value_f64)."""
    r = tl.sqrt(-2.0 * tl.log(u53(w0, w1) + U53_SCALE))
    theta = TWO_PI_F64 * u53(w2, w3)
    return r * tl.cos(theta), r * tl.sin(theta)


@triton.jit
def trunc_normal_f64(u, p0, p1, p2, p3, p4, p5, p6, p7):
    """The fp64-math truncated normal of a u53 uniform (element_value_f64)."""
    z = clamp(normal_quantile_f64(u * p3 + p2), p4, p5)
    return clamp(z * p1 + p0, p6, p7)


@triton.jit
def element_counter(block):
    """Counter words (c0, c1) of per-element Philox blocks (int64)."""
    return block.to(tl.uint32), (block >> 32).to(tl.uint32)


@triton.jit
def block_counter(block, TILE: tl.constexpr):
    """Counter words (c0, c1) of the TILE Philox blocks block, block + 1, ... (block int64)."""
    lo = block.to(tl.uint32)
    hi = (block >> 32).to(tl.uint32)
    c0 = lo + tl.arange(0, TILE).to(tl.uint32)
    c1 = hi + (c0 < lo).to(tl.uint32)
    return c0, c1


@triton.jit
def tile_words(first_block, s0, s1, k0, k1, TILE: tl.constexpr, HIGH_BIT: tl.constexpr = 0):
    """Philox words of the TILE blocks first_block + [0, TILE) of stream (s0, s1); with
    HIGH_BIT = SECOND_DRAW_BIT, of their second draws (the bit set in the block-high word)."""
    c0, c1 = block_counter(first_block, TILE)
    c1 = c1 | HIGH_BIT
    c2 = tl.full([TILE], 0, tl.uint32) + s0
    c3 = tl.full([TILE], 0, tl.uint32) + s1
    return philox4x32_10(c0, c1, c2, c3, k0, k1)


@triton.jit
def to_bf16_rne(x):
    """fp32 -> bf16, round to nearest even, in integer ops (bf16_bits_rne of distributions.h).

    Written out because the interpreter's fp32 -> bf16 cast rounds ties away and can drop the
    carry into the exponent; on the GPU this equals cvt.rn.bf16.f32. NaN never reaches it.
    """
    u = x.to(tl.uint32, bitcast=True)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def round_f32(x, OUT_DTYPE: tl.constexpr):
    """fp32 values into the output dtype, one round-to-nearest-even."""
    if OUT_DTYPE == tl.bfloat16:
        return to_bf16_rne(x)
    else:
        return x.to(OUT_DTYPE)


@triton.jit
def store_tile(out_ptr, tile_local, numel, vals, aligned, N: tl.constexpr):
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
def box_muller_f32(wa, wb, mean, std, EXACT_FMA: tl.constexpr):
    """The (cos, sin) values of the word pairs (wa, wb): normal_pair_f32 of fill.h,
    r = sqrt(-2 log u24o(wa)), x = fma(r std, cos or sin of the angle of wb, mean)."""
    r_std = tl.sqrt_rn(-2.0 * log_u24o(wa, EXACT_FMA)) * std
    s, c = angle_sincos_f32(wb, EXACT_FMA)
    return fma32(r_std, c, mean, EXACT_FMA), fma32(r_std, s, mean, EXACT_FMA)


@triton.jit
def uniform_f32(w, scale, shift, limit, EXACT_FMA: tl.constexpr):
    """uniform_value_f32 of fill.h: a value at or above `limit` (one that a 16-bit dtype
    rounds to b or above) maps to the lower bound."""
    x = fma32(u24(w), scale, shift, EXACT_FMA)
    return tl.where(x >= limit, shift, x)


@triton.jit
def trunc_normal_from_z(z, q0, q1, q4, q5, q6, q7, EXACT_FMA: tl.constexpr):
    """trunc_normal_from_z of fill.h: z clamped to [alpha, beta], scaled, clamped to [a, b]."""
    z = clamp(z, q4, q5)
    return clamp(fma32(z, q1, q0, EXACT_FMA), q6, q7)


@triton.jit
def trunc_normal_f32(w, q0, q1, q2, q3, q4, q5, q6, q7, EXACT_FMA: tl.constexpr):
    """trunc_normal_value_f32 of fill.h on words w."""
    p = fma32(u24m(w), q3, q2, EXACT_FMA)
    z = normal_quantile_f32(p, EXACT_FMA)
    if tl.min(p, axis=0) < GILES_MIN_P:  # rare tiles: below Giles' range
        z = tl.where(p < GILES_MIN_P, normal_quantile_f64(p.to(tl.float64)).to(tl.float32), z)
    return trunc_normal_from_z(z, q0, q1, q4, q5, q6, q7, EXACT_FMA)


@triton.jit
def trunc_normal_is_wide(q4, q5):
    """trunc_normal_is_wide of fill.h: alpha <= -4 and beta >= 4."""
    return (q4 <= -TRUNC_NORMAL_WIDE_BOUND) & (q5 >= TRUNC_NORMAL_WIDE_BOUND)


@triton.jit
def trunc_normal_wide_f32(z, q0, q1, q4, q5, q6, q7, EXACT_FMA: tl.constexpr):
    """The first part of trunc_normal_wide_block_f32 of fill.h: the values of the standard
    Box-Muller values z, and whether each z lies in [alpha, beta]; the caller gives an element
    outside the quantile value of its second-draw word."""
    inside = (z >= q4) & (z <= q5)
    return trunc_normal_from_z(z, q0, q1, q4, q5, q6, q7, EXACT_FMA), inside


@triton.jit
def params_f32(p0, p1, p2, p3, p4, p5, p6, p7):
    """The descriptor's fp64 parameters rounded to fp32 (params_f32 of fill.h)."""
    return (p0.to(tl.float32), p1.to(tl.float32), p2.to(tl.float32), p3.to(tl.float32),
            p4.to(tl.float32), p5.to(tl.float32), p6.to(tl.float32), p7.to(tl.float32))
