"""The `reference` backend: the random-number contract (docs/contract.md) in plain NumPy integer and
float64 arithmetic. It is the executable specification the other backends are tested against;
it is slow and meant for tests, small tensors and devices no other backend serves.

Where the contract asks for an fp32 fma (uniform, the trunc_normal probability) the result is
computed exactly: the fp32 product is exact in fp64, the sum is carried as an fp64 value plus
its exact error (TwoSum) and rounded to odd, and a round-to-odd fp64 value rounds to fp32
correctly. Transcendentals (log, cos, sin, the normal quantile) are evaluated in fp64; the
contract's tolerance covers the device's fp32 versions.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

from .. import contract_numbers, normal_tail
from ..contract import (
    PHILOX_M0,
    PHILOX_M1,
    PHILOX_W0,
    PHILOX_W1,
    Distribution,
    elements_per_block,
)
from ..plan import Fill

NAME = "reference"
IMPORT_ERROR = None
MASK32 = np.uint64(0xFFFFFFFF)
ANGLE_STEP_F32 = contract_numbers.f32(contract_numbers.F32["ANGLE_STEP"])
QUARTER_PI_F32 = contract_numbers.f32(contract_numbers.F32["QUARTER_PI"])
LN2_F32 = contract_numbers.f32(contract_numbers.F32["LN2"])
WIDE_BOUND_F32 = contract_numbers.f32(contract_numbers.F32["TRUNC_NORMAL_WIDE_BOUND"])
SECOND_DRAW = np.uint64(contract_numbers.SECOND_DRAW_BIT << 32)  # added to a block index
_POLY = {name: [contract_numbers.f32(c) for c in coefficients]
         for name, coefficients in contract_numbers.POLY_F32.items()}
U24_SCALE = contract_numbers.f32(contract_numbers.F32["U24_SCALE"])
U53_SCALE = float(contract_numbers.F64["U53_SCALE"])
TWO_PI_F64 = float(contract_numbers.F64["TWO_PI_F64"])


def philox4x32_10(c0, c1, c2, c3, k0: int, k1: int):
    """Philox4x32-10 on arrays of 32-bit counters (held in uint64), scalar key."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) & MASK32 for c in (c0, c1, c2, c3))
    m0, m1 = np.uint64(PHILOX_M0), np.uint64(PHILOX_M1)
    for _ in range(10):
        p0 = m0 * c0
        p1 = m1 * c2
        hi0, lo0 = p0 >> np.uint64(32), p0 & MASK32
        hi1, lo1 = p1 >> np.uint64(32), p1 & MASK32
        c0, c1, c2, c3 = hi1 ^ c1 ^ np.uint64(k0), lo1, hi0 ^ c3 ^ np.uint64(k1), lo0
        k0 = (k0 + PHILOX_W0) & 0xFFFFFFFF
        k1 = (k1 + PHILOX_W1) & 0xFFFFFFFF
    return c0, c1, c2, c3


def block_words(blocks: np.ndarray, stream: int, seed: int) -> np.ndarray:
    """Words (n, 4) of the contract's counters (block, stream) under key(seed)."""
    blocks = blocks.astype(np.uint64)
    w = philox4x32_10(
        blocks & MASK32,
        blocks >> np.uint64(32),
        np.full(blocks.shape, stream & 0xFFFFFFFF, dtype=np.uint64),
        np.full(blocks.shape, stream >> 32, dtype=np.uint64),
        seed & 0xFFFFFFFF,
        seed >> 32,
    )
    return np.stack(w, axis=-1)


def u24(w):
    return (w >> np.uint64(8)).astype(np.float64) * U24_SCALE


def u24o(w):
    return ((w >> np.uint64(8)) + np.uint64(1)).astype(np.float64) * U24_SCALE


def u24m(w):
    """Odd 24-bit numerators: exact in fp32 and strictly inside (0, 1) (see philox.h)."""
    return ((w >> np.uint64(8)) | np.uint64(1)).astype(np.float64) * U24_SCALE


def u53(a, b):
    bits = ((a >> np.uint64(5)) << np.uint64(26)) | (b >> np.uint64(6))
    return bits.astype(np.float64) * U53_SCALE


def f32(x):
    return np.asarray(x, dtype=np.float64).astype(np.float32).astype(np.float64)


def fma_f32(a, b, c):
    """Correctly rounded fp32 fma of fp32-valued arrays (see the module docstring)."""
    a, b, c = (np.asarray(v, dtype=np.float64) for v in (a, b, c))
    p = a * b  # exact: 24 x 24 bits
    s = p + c
    bb = s - p
    err = (p - (s - bb)) + (c - bb)
    even = (s.view(np.int64) & 1) == 0
    toward = np.where(err > 0, np.inf, -np.inf)
    s = np.where((err != 0) & even, np.nextafter(s, toward), s)
    return s.astype(np.float32).astype(np.float64)


def _angle_offset_f32(w):
    """The kernels' fp32 y = fma(((w >> 8) & (2^22 - 1)), fp32((pi/2) 2^-22), -fp32(pi/4)) of
    Box-Muller word w, in [-pi/4, pi/4]."""
    n = ((w >> np.uint64(8)) & np.uint64(0x3FFFFF)).astype(np.float64)
    return fma_f32(n, ANGLE_STEP_F32, -QUARTER_PI_F32)


def box_muller_angle(w):
    """The angle of Box-Muller word w: (pi/2) k + y with quadrant k = w >> 30 (fp64)."""
    return (w >> np.uint64(30)).astype(np.float64) * (np.pi / 2) + _angle_offset_f32(w)


def _log_f32_bits(bits):
    """log_f32_bits of distributions.h in exact fp32 arithmetic (fp32 values held in fp64: a
    product of two is exact, and a sum, quotient or square root rounded to fp64 then to fp32 is
    the correctly rounded fp32 result, 53 >= 2 * 24 + 2)."""
    ix = bits.astype(np.int64) - contract_numbers.U32["LOG_SPLIT_BITS"]
    m = ((ix & 0x7FFFFF) + contract_numbers.U32["LOG_SPLIT_BITS"]).astype(np.uint32)
    m = m.view(np.float32).astype(np.float64)
    fe = (ix >> 23).astype(np.float64)  # arithmetic shift, as the kernels' int32
    s = f32((m - 1.0) / f32(m + 1.0))
    t = f32(s * s)
    c0, c1, c2 = _POLY["LOG_ATANH"]
    q = fma_f32(fma_f32(t, c0, c1), t, c2)
    return fma_f32(fe, LN2_F32, fma_f32(f32(s * t), q, s + s))


def _box_muller_pair_f32(wa, wb):
    """The kernels' fp32 standard-normal pair (normal_pair_f32 with mean 0, std 1) of words
    (wa, wb), bit for bit: (cos value, sin value)."""
    n = ((wa >> np.uint64(8)) + np.uint64(1)).astype(np.float32)
    r = f32(np.sqrt(-2.0 * _log_f32_bits(n.view(np.uint32) - np.uint32(24 << 23))))
    y = _angle_offset_f32(wb)
    z = f32(y * y)
    s0, s1, s2 = _POLY["SIN"]
    c0, c1, c2 = _POLY["COS"]
    sin_y = fma_f32(f32(fma_f32(fma_f32(z, s0, s1), z, s2) * z), y, y)
    cos_y = fma_f32(f32(fma_f32(fma_f32(z, c0, c1), z, c2) * z), z, fma_f32(z, -0.5, 1.0))
    swap = (wb & np.uint64(0x40000000)) != 0
    sin_q = np.where(swap, cos_y, sin_y)
    cos_q = np.where(swap, sin_y, cos_y)
    sin_q = np.where((wb & np.uint64(0x80000000)) != 0, -sin_q, sin_q)
    cos_q = np.where(((wb ^ (wb << np.uint64(1))) & np.uint64(0x80000000)) != 0, -cos_q, cos_q)
    return fma_f32(r, cos_q, 0.0), fma_f32(r, sin_q, 0.0)


def box_muller_z_f32(words: np.ndarray) -> np.ndarray:
    """The kernels' fp32 normal(0, 1) values (n, 4) of Philox blocks with words (n, 4), bit for
    bit (element order). The wide trunc_normal decides with these."""
    return np.stack([v for pair in (0, 1)
                     for v in _box_muller_pair_f32(words[:, 2 * pair], words[:, 2 * pair + 1])],
                    axis=-1)


def trunc_normal_is_wide(params: Sequence[float]) -> bool:
    """trunc_normal_is_wide of fill.h: the standardised interval holds [-4, 4]."""
    return f32(params[4]) <= -WIDE_BOUND_F32 and f32(params[5]) >= WIDE_BOUND_F32


def ndtri(p: np.ndarray) -> np.ndarray:
    return torch.special.ndtri(torch.from_numpy(np.ascontiguousarray(p))).numpy()


def values_fp32_math(dist: int, params: Sequence[float], words: np.ndarray,
                     second_draws: Callable[[], np.ndarray] | None = None) -> np.ndarray:
    """Values (n, 4) of Philox blocks with words (n, 4) for the fp32-math distributions.
    `second_draws()`: the words (n, 4) of the blocks' second draws, which a trunc_normal on a
    wide interval needs (it is called only then)."""
    if dist == Distribution.UNIFORM:
        x = fma_f32(u24(words), f32(params[0]), f32(params[1]))
        return np.where(x >= f32(params[2]), f32(params[1]), x)  # the half-open [a, b)
    if dist == Distribution.NORMAL:
        mean, std = f32(params[0]), f32(params[1])
        out = np.empty(words.shape, dtype=np.float64)
        for pair in (0, 1):
            r = np.sqrt(-2.0 * np.log(u24o(words[:, 2 * pair])))
            theta = box_muller_angle(words[:, 2 * pair + 1])
            out[:, 2 * pair] = r * np.cos(theta) * std + mean
            out[:, 2 * pair + 1] = r * np.sin(theta) * std + mean
        return out
    if dist == Distribution.TRUNC_NORMAL:
        q = [f32(v) for v in params]
        if trunc_normal_is_wide(params):
            # Box-Muller values (fp64) where the kernels' fp32 value lies in [alpha, beta],
            # the quantile of the second draw elsewhere.
            z = values_fp32_math(Distribution.NORMAL, [0.0, 1.0], words)
            z32 = box_muller_z_f32(words)
            inside = (z32 >= q[4]) & (z32 <= q[5])
            values = np.clip(np.clip(z, q[4], q[5]) * q[1] + q[0], q[6], q[7])
            if not inside.all():
                if second_draws is None:
                    raise ValueError("a trunc_normal on a wide interval needs its second draws")
                values = np.where(inside, values, _quantile_values(q, second_draws()))
            return values
        return _quantile_values(q, words)
    raise ValueError(f"distribution {dist} has no fp32-math form")


def _quantile_values(q: Sequence[float], words: np.ndarray) -> np.ndarray:
    """trunc_normal values of words (n, 4) by the inverse CDF (fp32 parameters q)."""
    p = fma_f32(u24m(words), q[3], q[2])
    z = np.clip(ndtri(p), q[4], q[5])
    return np.clip(z * q[1] + q[0], q[6], q[7])


def values_fp64_math(dist: int, params: Sequence[float], words: np.ndarray) -> np.ndarray:
    """Values (n, 2) of Philox blocks with words (n, 4) for the fp64-math distributions."""
    if dist == Distribution.UNIFORM:
        u = np.stack([u53(words[:, 0], words[:, 1]), u53(words[:, 2], words[:, 3])], axis=-1)
        return u * params[0] + params[1]
    if dist == Distribution.NORMAL:
        r = np.sqrt(-2.0 * np.log(u53(words[:, 0], words[:, 1]) + U53_SCALE))
        theta = TWO_PI_F64 * u53(words[:, 2], words[:, 3])
        z = np.stack([r * np.cos(theta), r * np.sin(theta)], axis=-1)
        return z * params[1] + params[0]
    if dist in (Distribution.TRUNC_NORMAL, Distribution.TRUNC_NORMAL_FP64):
        u = np.stack([u53(words[:, 0], words[:, 1]), u53(words[:, 2], words[:, 3])], axis=-1)
        z = np.clip(ndtri(u * params[3] + params[2]), params[4], params[5])
        return np.clip(z * params[1] + params[0], params[6], params[7])
    if dist == Distribution.TRUNC_NORMAL_TAIL:
        # u counts from the far end, as p = u dP + Phi(alpha) does
        _, signed_std, near, tail_l, tail_d, h_d, lo, hi = params
        u = np.stack([u53(words[:, 0], words[:, 1]), u53(words[:, 2], words[:, 3])], axis=-1)
        d = normal_tail.tail_offsets(tail_l, tail_d, h_d, u).reshape(u.shape)
        return np.clip(near - signed_std * d, lo, hi)
    raise ValueError(f"distribution {dist} has no fp64-math form")


def values_at(fill: Fill, indices: np.ndarray) -> torch.Tensor:
    """The contract's values of `fill` at contract indices `indices` (uint64), as a flat tensor
    of its dtype."""
    n = indices.size
    dtype = fill.tensor.dtype
    if fill.dist == Distribution.CONSTANT:
        return torch.full((n,), fill.params[0], dtype=dtype)
    per_block = elements_per_block(fill.dist, dtype)
    blocks, which = np.unique(indices // np.uint64(per_block), return_inverse=True)
    words = block_words(blocks, fill.stream, fill.seed)
    if per_block == 4:
        values = values_fp32_math(fill.dist, fill.params, words,
                                  lambda: block_words(blocks | SECOND_DRAW, fill.stream, fill.seed))
    else:
        values = values_fp64_math(fill.dist, fill.params, words)
    slot = (indices % np.uint64(per_block)).astype(np.int64)
    flat = torch.from_numpy(np.ascontiguousarray(values[which.reshape(-1), slot]))
    if dtype == torch.float64:
        return flat
    # fp32 first, then the output dtype: the rounding path of the device backends.
    return flat.to(torch.float32).to(dtype)


def contract_indices(fill: Fill) -> np.ndarray:
    """Contract index of each element of `fill`, in the row-major order of its layout."""
    layout = fill.resolved_layout()
    index = np.full((), fill.first_index, dtype=np.uint64)
    for d, (n, step) in enumerate(zip(layout.sizes, layout.global_strides)):
        shape = [1] * len(layout.sizes)
        shape[d] = n
        index = index + (np.arange(n, dtype=np.uint64) * np.uint64(step)).reshape(shape)
    return np.broadcast_to(index, layout.sizes).reshape(-1)


def contract_values(fill: Fill) -> torch.Tensor:
    """The contract's values of `fill`, in the row-major order of its layout (for a plain
    tensor, its logical order), as a flat tensor of its dtype."""
    return values_at(fill, contract_indices(fill))


def supports(device) -> bool:
    return True


def run(fills: Sequence[Fill]) -> None:
    for fill in fills:
        layout = fill.resolved_layout()
        target = fill.tensor.as_strided(layout.sizes, layout.strides,
                                        fill.tensor.storage_offset() + layout.offset)
        target.copy_(contract_values(fill).view(layout.sizes))
