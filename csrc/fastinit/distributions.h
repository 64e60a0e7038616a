// Distribution math of the fastinit random-number contract (../DESIGN.md), shared by the CPU
// fallback and the CUDA kernels. Every multiply-add is an explicit fma and the build turns off
// floating-point contraction (-ffp-contract=off, nvcc --fmad=false), so a value computed here is
// the same on every CPU and GPU, not only the bitwise-required uniform and constant.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

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
// fp32 elementary functions (Cephes logf / sinf / cosf coefficients), written with explicit fma
// so CPU and GPU agree bit for bit. Accurate to about 2 ulp on the ranges used here.

// Natural log for x in [0, +inf) (x == 0 gives -inf); only normal inputs occur in the contract.
FASTINIT_HD float log_f32(float x) {
  const uint32_t u = bits_of(x);
  const int32_t biased = static_cast<int32_t>((u >> 23) & 0xFFu);
  float m = float_of((u & 0x007FFFFFu) | 0x3F000000u);  // x = m * 2^e, m in [0.5, 1)
  int32_t e = biased - 126;
  const bool below_sqrt_half = m < 0.707106781186547524f;
  e = below_sqrt_half ? e - 1 : e;
  const float f = below_sqrt_half ? (m + m - 1.0f) : (m - 1.0f);  // m in [sqrt(.5), sqrt(2))
  const float fe = static_cast<float>(e);
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = std::fma(p, f, -1.1514610310e-1f);
  p = std::fma(p, f, 1.1676998740e-1f);
  p = std::fma(p, f, -1.2420140846e-1f);
  p = std::fma(p, f, 1.4249322787e-1f);
  p = std::fma(p, f, -1.6668057665e-1f);
  p = std::fma(p, f, 2.0000714765e-1f);
  p = std::fma(p, f, -2.4999993993e-1f);
  p = std::fma(p, f, 3.3333331174e-1f);
  float y = (p * f) * z;
  y = std::fma(fe, -2.12194440e-4f, y);
  y = std::fma(-0.5f, z, y);
  float r = f + y;
  r = std::fma(fe, 0.693359375f, r);
  const float neg_inf = float_of(0xFF800000u);
  return x == 0.0f ? neg_inf : r;
}

// sin and cos of theta in [0, 2*pi]: Cody-Waite reduction by pi/2 (three-part constant), then
// the minimax polynomials on [-pi/4, pi/4] and the quadrant's swap and signs.
FASTINIT_HD void sincos_f32(float theta, float& s, float& c) {
  const float k = std::rint(theta * 0.636619772367581343f);
  float y = std::fma(k, -1.5703125f, theta);
  y = std::fma(k, -4.837512969970703125e-4f, y);
  y = std::fma(k, -7.54978995489188216e-8f, y);
  const int32_t quadrant = static_cast<int32_t>(k) & 3;
  const float z = y * y;
  float sp = std::fma(-1.9515295891e-4f, z, 8.3321608736e-3f);
  sp = std::fma(sp, z, -1.6666654611e-1f);
  const float sin_y = std::fma(sp * z, y, y);
  float cp = std::fma(2.443315711809948e-5f, z, -1.388731625493765e-3f);
  cp = std::fma(cp, z, 4.166664568298827e-2f);
  const float cos_y = std::fma(cp * z, z, std::fma(-0.5f, z, 1.0f));
  const bool swap = (quadrant & 1) != 0;
  const float s0 = swap ? cos_y : sin_y;
  const float c0 = swap ? sin_y : cos_y;
  s = (quadrant & 2) ? -s0 : s0;
  c = ((quadrant + 1) & 2) ? -c0 : c0;
}

// sqrt(2) * erfinv(2p - 1) by M. Giles' single-precision approximation, with its log term taken
// from p directly, w = -log(4p(1-p)), which keeps the lower tail free of cancellation.
// Giles' tail polynomial serves w >= 5; a caller that knows every p it passes has w < 5 (see
// central_quantile_range) may drop it with kWithTail = false: the values are the same.
template <bool kWithTail = true>
FASTINIT_HD float normal_quantile_f32(float p) {
  const float x = std::fma(2.0f, p, -1.0f);
  const float w = -log_f32((4.0f * p) * (1.0f - p));
  const float wc = w - 2.5f;
  float pc = 2.81022636e-08f;
  pc = std::fma(pc, wc, 3.43273939e-07f);
  pc = std::fma(pc, wc, -3.5233877e-06f);
  pc = std::fma(pc, wc, -4.39150654e-06f);
  pc = std::fma(pc, wc, 0.00021858087f);
  pc = std::fma(pc, wc, -0.00125372503f);
  pc = std::fma(pc, wc, -0.00417768164f);
  pc = std::fma(pc, wc, 0.246640727f);
  pc = std::fma(pc, wc, 1.50140941f);
  if (!kWithTail) return 1.41421356237309505f * (pc * x);
  const float wt = std::sqrt(w) - 3.0f;
  float pt = -0.000200214257f;
  pt = std::fma(pt, wt, 0.000100950558f);
  pt = std::fma(pt, wt, 0.00134934322f);
  pt = std::fma(pt, wt, -0.00367342844f);
  pt = std::fma(pt, wt, 0.00573950773f);
  pt = std::fma(pt, wt, -0.0076224613f);
  pt = std::fma(pt, wt, 0.00943887047f);
  pt = std::fma(pt, wt, 1.00167406f);
  pt = std::fma(pt, wt, 2.83297682f);
  const float poly = w < 5.0f ? pc : pt;
  return 1.41421356237309505f * (poly * x);
}

// True when every p in [lo, hi] has Giles' w = -log(4p(1-p)) below 4.9 (a margin under the
// branch point 5 for the rounding of p): the central polynomial alone then gives every value.
FASTINIT_HD bool central_quantile_range(double lo, double hi) {
  const double w_lo = -std::log(4.0 * lo * (1.0 - lo));
  const double w_hi = -std::log(4.0 * hi * (1.0 - hi));
  return lo > 0.0 && hi < 1.0 && w_lo < 4.9 && w_hi < 4.9;
}

// Standard normal quantile in fp64: Wichura's AS241 (PPND16), accurate to about 1e-16.
FASTINIT_HD double normal_quantile_f64(double p) {
  const double q = p - 0.5;
  if (std::fabs(q) <= 0.425) {
    const double r = 0.180625 - q * q;
    const double num =
        ((((((((2.5090809287301226727e+3 * r + 3.3430575583588128105e+4) * r +
               6.7265770927008700853e+4) * r + 4.5921953931549871457e+4) * r +
             1.3731693765509461125e+4) * r + 1.9715909503065514427e+3) * r +
           1.3314166789178437745e+2) * r + 3.3871328727963666080e+0));
    const double den =
        ((((((((5.2264952788528545610e+3 * r + 2.8729085735721942674e+4) * r +
               3.9307895800092710610e+4) * r + 2.1213794301586595867e+4) * r +
             5.3941960214247511077e+3) * r + 6.8718700749205790830e+2) * r +
           4.2313330701600911252e+1) * r + 1.0));
    return q * num / den;
  }
  double r = q < 0.0 ? p : 1.0 - p;
  if (r <= 0.0) return q < 0.0 ? -HUGE_VAL : HUGE_VAL;
  r = std::sqrt(-std::log(r));
  double value;
  if (r <= 5.0) {
    r -= 1.6;
    const double num =
        (((((((7.74545014278341407640e-4 * r + 2.27238449892691845833e-2) * r +
              2.41780725177450611770e-1) * r + 1.27045825245236838258e+0) * r +
            3.64784832476320460504e+0) * r + 5.76949722146069140550e+0) * r +
          4.63033784615654529590e+0) * r + 1.42343711074968357734e+0);
    const double den =
        (((((((1.05075007164441684324e-9 * r + 5.47593808499534494600e-4) * r +
              1.51986665636164571966e-2) * r + 1.48103976427480074590e-1) * r +
            6.89767334985100004550e-1) * r + 1.67638483018380384940e+0) * r +
          2.05319162663775882187e+0) * r + 1.0);
    value = num / den;
  } else {
    r -= 5.0;
    const double num =
        (((((((2.01033439929228813265e-7 * r + 2.71155556874348757815e-5) * r +
              1.24266094738807843860e-3) * r + 2.65321895265761230930e-2) * r +
            2.96560571828504891230e-1) * r + 1.78482653991729133580e+0) * r +
          5.46378491116411436990e+0) * r + 6.65790464350110377720e+0);
    const double den =
        (((((((2.04426310338993978564e-15 * r + 1.42151175831644588870e-7) * r +
              1.84631831751005468180e-5) * r + 7.86869131145613259100e-4) * r +
            1.48753612908506148525e-2) * r + 1.36929880922735805310e-1) * r +
          5.99832206555887937690e-1) * r + 1.0);
    value = num / den;
  }
  return q < 0.0 ? -value : value;
}

}  // namespace fastinit
