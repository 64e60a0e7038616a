// Distribution math of the fastinit random-number contract (docs/contract.md), shared by the CPU
// fallback and the CUDA kernels. Every multiply-add is an explicit fma and the build turns off
// floating-point contraction (-ffp-contract=off, nvcc --fmad=false), so a value computed here is
// the same on every CPU and GPU, not only the bitwise-required uniform and constant.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "contract_numbers.h"
#include "philox.h"

namespace fastinit {

// ---------------------------------------------------------------------------------------------
// Bit casts.
FASTINIT_HD uint32_t bits_of(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  uint32_t u;
  std::memcpy(&u, &x, sizeof u);
  return u;
#endif
}
FASTINIT_HD float float_of(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float x;
  std::memcpy(&x, &u, sizeof x);
  return x;
#endif
}

// ---------------------------------------------------------------------------------------------
// Rounding fp32 to the 16-bit output types, round-to-nearest-even, branch-free so it vectorises.
FASTINIT_HD uint16_t bf16_bits_rne(float x) {
  const uint32_t u = bits_of(x);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const bool is_nan = (u & 0x7FFFFFFFu) > 0x7F800000u;
  return static_cast<uint16_t>(is_nan ? ((u >> 16) | 0x40u) : rounded);
}

// fp32 -> IEEE half. Scaling by 2^112 then 2^-110 lets the fp32 adder do the rounding of the
// mantissa (and of subnormals) in round-to-nearest-even; overflow saturates to inf.
FASTINIT_HD uint16_t half_bits_rne(float x) {
  const float scale_to_inf = 5.192296858534827628530496329220096e+33f;  // 2^112
  const float scale_to_zero = 7.703719777548943412223911770339732e-34f;  // 2^-110
  float base = (std::fabs(x) * scale_to_inf) * scale_to_zero;
  const uint32_t w = bits_of(x);
  const uint32_t shl1_w = w + w;
  const uint32_t sign = w & 0x80000000u;
  uint32_t bias = shl1_w & 0xFF000000u;
  bias = bias < 0x71000000u ? 0x71000000u : bias;
  base = float_of((bias >> 1) + 0x07800000u) + base;
  const uint32_t bits = bits_of(base);
  const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
  const uint32_t mantissa_bits = bits & 0x00000FFFu;
  const uint32_t nonsign = exp_bits + mantissa_bits;
  return static_cast<uint16_t>((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

// ---------------------------------------------------------------------------------------------
// fp32 elementary functions of the contract (docs/contract.md, "Distributions"), written with
// explicit fma so CPU and GPU agree bit for bit.

// Natural log of the positive normal fp32 number with bit pattern `bits`: x = m 2^e with m in
// [sqrt(.5), sqrt(2)) (integer ops on the bits), then log(m) = 2 atanh(s) = 2s + s^3 Q(s^2)
// with s = (m - 1) / (m + 1), |s| <= 0.1716 (m - 1 is exact; one IEEE division), Q the minimax
// LOG_ATANH polynomial. Taking the bits lets a caller fold an exact power-of-two scaling of x
// into them (log_u24o).
FASTINIT_HD float log_f32_bits(uint32_t bits) {
  const int32_t ix = static_cast<int32_t>(bits - kLogSplitBits);
  const float m = float_of((static_cast<uint32_t>(ix) & 0x007FFFFFu) + kLogSplitBits);
  const float fe = static_cast<float>(ix >> 23);  // arithmetic shift: e may be negative
  const float s = (m - 1.0f) / (m + 1.0f);
  const float t = s * s;
  float q = std::fma(kLogAtanh0, t, kLogAtanh1);
  q = std::fma(q, t, kLogAtanh2);
  const float log_m = std::fma(s * t, q, s + s);
  return std::fma(fe, kLn2, log_m);
}

// log(u24o(w)) = log_f32_bits(bits of u24o(w)): u24o(w) is the integer (w >> 8) + 1, exact in
// fp32, times 2^-24, so its bits are those of the integer with 24 taken off the exponent.
FASTINIT_HD float log_u24o(uint32_t w) {
  return log_f32_bits(bits_of(static_cast<float>((w >> 8) + 1u)) - (24u << 23));
}

// sin and cos of the Box-Muller angle of word w: theta = (pi/2) (k + f) with quadrant
// k = w >> 30 (its two top bits) and f = ((w >> 8) & (2^22 - 1)) 2^-22 - 1/2 in [-1/2, 1/2), so
// y = fma(n, (pi/2) 2^-22, -pi/4) is already in [-pi/4, pi/4] (no argument reduction); the
// Cephes sinf/cosf polynomials of y, then the quadrant's swap and signs.
FASTINIT_HD void angle_sincos_f32(uint32_t w, float& s, float& c) {
  const float y = std::fma(static_cast<float>((w >> 8) & 0x003FFFFFu), kAngleStep, -kQuarterPi);
  const float z = y * y;
  float sp = std::fma(kSin0, z, kSin1);
  sp = std::fma(sp, z, kSin2);
  const float sin_y = std::fma(sp * z, y, y);
  float cp = std::fma(kCos0, z, kCos1);
  cp = std::fma(cp, z, kCos2);
  const float cos_y = std::fma(cp * z, z, std::fma(-0.5f, z, 1.0f));
  // Quadrant k = (b31, b30) of w: odd k swaps sin and cos; sin is negated for k = 2, 3 (b31),
  // cos for k = 1, 2 (b31 xor b30); a negation flips the sign bit.
  const bool swap = (w & 0x40000000u) != 0;
  const float s0 = swap ? cos_y : sin_y;
  const float c0 = swap ? sin_y : cos_y;
  s = float_of(bits_of(s0) ^ (w & 0x80000000u));
  c = float_of(bits_of(c0) ^ ((w ^ (w << 1)) & 0x80000000u));
}

// M. Giles' single-precision erfinv takes its log term from p directly, w = -log(4p(1-p)),
// which keeps the lower tail free of cancellation.
// x = 4p(1 - p) is 0 only where p rounded to 0 or 1: w = +inf there (the quantile is infinite).
FASTINIT_HD float giles_w(float p) {
  const float x = (4.0f * p) * (1.0f - p);
  const float pos_inf = float_of(0x7F800000u);
  return x == 0.0f ? pos_inf : -log_f32_bits(bits_of(x));
}

// sqrt(2) * erfinv(2p - 1) from p and w = giles_w(p): Giles' central polynomial in w - 2.5 for
// w < 5, his tail polynomial in sqrt(w) - 3 above. A caller that knows every w it passes is
// below 5 (central_quantile_range, or a look at the w themselves) may drop the tail with
// kWithTail = false: the values are the same.
template <bool kWithTail = true>
FASTINIT_HD float giles_quantile_f32(float p, float w) {
  const float x = std::fma(2.0f, p, -1.0f);
  const float wc = w - kGilesCentralShift;
  float pc = kGilesCentral0;
  pc = std::fma(pc, wc, kGilesCentral1);
  pc = std::fma(pc, wc, kGilesCentral2);
  pc = std::fma(pc, wc, kGilesCentral3);
  pc = std::fma(pc, wc, kGilesCentral4);
  pc = std::fma(pc, wc, kGilesCentral5);
  pc = std::fma(pc, wc, kGilesCentral6);
  pc = std::fma(pc, wc, kGilesCentral7);
  pc = std::fma(pc, wc, kGilesCentral8);
  if (!kWithTail) return kSqrt2 * (pc * x);
  const float wt = std::sqrt(w) - kGilesTailShift;
  float pt = kGilesTail0;
  pt = std::fma(pt, wt, kGilesTail1);
  pt = std::fma(pt, wt, kGilesTail2);
  pt = std::fma(pt, wt, kGilesTail3);
  pt = std::fma(pt, wt, kGilesTail4);
  pt = std::fma(pt, wt, kGilesTail5);
  pt = std::fma(pt, wt, kGilesTail6);
  pt = std::fma(pt, wt, kGilesTail7);
  pt = std::fma(pt, wt, kGilesTail8);
  const float poly = w < kGilesSplit ? pc : pt;
  return kSqrt2 * (poly * x);
}

// The standard normal quantile of p in fp32 math (Giles).
template <bool kWithTail = true>
FASTINIT_HD float normal_quantile_f32(float p) {
  return giles_quantile_f32<kWithTail>(p, giles_w(p));
}

// True when every p in [lo, hi] has Giles' w = -log(4p(1-p)) below 4.9 (a margin under the
// branch point 5 for the rounding of p): the central polynomial alone then gives every value.
FASTINIT_HD bool central_quantile_range(double lo, double hi) {
  const double w_lo = -std::log(4.0 * lo * (1.0 - lo));
  const double w_hi = -std::log(4.0 * hi * (1.0 - hi));
  return lo > 0.0 && hi < 1.0 && w_lo < kGilesCentralMaxW && w_hi < kGilesCentralMaxW;
}

// Standard normal quantile in fp64: Wichura's AS241 (PPND16), accurate to about 1e-16.
FASTINIT_HD double normal_quantile_f64(double p) {
  const double q = p - 0.5;
  if (std::fabs(q) <= 0.425) {
    const double r = 0.180625 - q * q;
    // Products and sums rounded separately, highest degree first (AS241's form).
    const double num = (((((((kAs241CentralNum0 * r + kAs241CentralNum1) * r + kAs241CentralNum2) * r +
        kAs241CentralNum3) * r + kAs241CentralNum4) * r + kAs241CentralNum5) * r +
        kAs241CentralNum6) * r + kAs241CentralNum7);
    const double den = (((((((kAs241CentralDen0 * r + kAs241CentralDen1) * r + kAs241CentralDen2) * r +
        kAs241CentralDen3) * r + kAs241CentralDen4) * r + kAs241CentralDen5) * r +
        kAs241CentralDen6) * r + kAs241CentralDen7);
    return q * num / den;
  }
  double r = q < 0.0 ? p : 1.0 - p;
  if (r <= 0.0) return q < 0.0 ? -HUGE_VAL : HUGE_VAL;
  r = std::sqrt(-std::log(r));
  double value;
  if (r <= 5.0) {
    r -= 1.6;
    value = (((((((kAs241NearNum0 * r + kAs241NearNum1) * r + kAs241NearNum2) * r +
        kAs241NearNum3) * r + kAs241NearNum4) * r + kAs241NearNum5) * r + kAs241NearNum6) * r +
        kAs241NearNum7) /
            (((((((kAs241NearDen0 * r + kAs241NearDen1) * r + kAs241NearDen2) * r +
                kAs241NearDen3) * r + kAs241NearDen4) * r + kAs241NearDen5) * r + kAs241NearDen6) * r +
                kAs241NearDen7);
  } else {
    r -= 5.0;
    value = (((((((kAs241FarNum0 * r + kAs241FarNum1) * r + kAs241FarNum2) * r + kAs241FarNum3) * r +
        kAs241FarNum4) * r + kAs241FarNum5) * r + kAs241FarNum6) * r + kAs241FarNum7) /
            (((((((kAs241FarDen0 * r + kAs241FarDen1) * r + kAs241FarDen2) * r + kAs241FarDen3) * r +
                kAs241FarDen4) * r + kAs241FarDen5) * r + kAs241FarDen6) * r + kAs241FarDen7);
  }
  return q < 0.0 ? -value : value;
}

}  // namespace fastinit
