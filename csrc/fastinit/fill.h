// One fill request per tensor (the descriptor packed by fastinit/plan.py) and the per-element
// values of each distribution, shared by the CPU fallback and the CUDA kernels.
#pragma once

#include <cstddef>
#include <cstdint>

#include "contract_numbers.h"
#include "distributions.h"
#include "philox.h"

namespace fastinit {

// Bytes per element of a dtype code.
FASTINIT_HD size_t element_size(int32_t dtype) {
  return dtype == kFloat64 ? 8 : (dtype == kFloat32 ? 4 : 2);
}

// Host-computed parameters, per distribution (fastinit/plan.py fills them):
//   constant:        [value already rounded to the output dtype]
//   uniform:         [scale = hi - lo (taken in fp64), shift = lo, limit (uniform_value_f32)]
//   normal:          [mean, std]
//   trunc_normal(*): [mean, s * std, Phi(alpha), Phi(beta) - Phi(alpha), alpha, beta,
//                     a rounded inward to the dtype, b rounded inward to the dtype]
//                    with (alpha, beta, s) mirrored so that alpha + beta <= 0.
//
// Layout of the elements: local element (i_0, ..., i_{ndim-1}) of the row-major order over
// size[] lies at data + sum(i_d * stride[d]) elements and receives contract index
// first_index + sum(i_d * global_stride[d]). A contiguous tensor (or a shard that is one run of
// the global order) is ndim = 1, stride = global_stride = 1: the backends' fast path. Unused
// dims (d >= ndim) hold size 1 and strides 0. struct FillDescriptor, its layout (struct format
// DESCRIPTOR_FORMAT of fastinit/contract_numbers.py), kMaxDims and the distribution and dtype
// codes are generated into contract_numbers.h.

// The fast path: one run of consecutive addresses and consecutive contract indices.
FASTINIT_HD bool is_contiguous(const FillDescriptor& d) {
  return d.ndim == 1 && d.stride[0] == 1 && d.global_stride[0] == 1;
}

// Contract elements per Philox call: 4 for fp32 math, 2 for fp64 math.
FASTINIT_HD int elements_per_block(int32_t dist, int32_t dtype) {
  return (dtype == kFloat64 || dist == kTruncNormalFp64) ? 2 : 4;
}

struct ParamsF32 {
  float p[8];
};

FASTINIT_HD ParamsF32 params_f32(const FillDescriptor& d) {
  ParamsF32 r;
  for (int i = 0; i < 8; ++i) r.p[i] = static_cast<float>(d.param[i]);
  return r;
}

// limit (param[2]): the smallest fp32 value that rounds to b or above in a 16-bit output dtype
// (+inf for fp32): such a value maps to the lower bound, so the output stays in [a, b).
FASTINIT_HD float uniform_value_f32(uint32_t w, float scale, float shift, float limit) {
  const float x = std::fma(u24(w), scale, shift);
  return x >= limit ? shift : x;
}

// Box-Muller on one pair of words: r = sqrt(-2 log(u24o(wa))) and the angle of wb
// (angle_sincos_f32); (cos, sin) for (even, odd) t.
FASTINIT_HD void normal_pair_f32(uint32_t wa, uint32_t wb, float mean, float std_,
                                 float& x_even, float& x_odd) {
  const float r = std::sqrt(-2.0f * log_u24o(wa));
  float s, c;
  angle_sincos_f32(wb, s, c);
  const float r_std = r * std_;
  x_even = std::fma(r_std, c, mean);
  x_odd = std::fma(r_std, s, mean);
}

// Clamp written as selects (not fminf/fmaxf, whose NaN rules block vectorisation).
template <typename T>
FASTINIT_HD T clamp_to(T x, T lo, T hi) {
  x = x < lo ? lo : x;
  return x > hi ? hi : x;
}

// Giles' fp32 erfinv is accurate to ~1.2e-6 in z for p >= kGilesMinP = 2^-24; below, it
// extrapolates (at p = 1e-22 it even returns a positive z). Those elements take the fp64
// quantile (AS241).

FASTINIT_HD float trunc_normal_p(uint32_t w, const ParamsF32& q) {
  return std::fma(u24m(w), q.p[3], q.p[2]);
}

// The value of a trunc_normal element from its standard-normal quantile z: correct whenever
// p >= kGilesMinP (vectorised loops redo the other elements with trunc_normal_value_f32).
FASTINIT_HD float trunc_normal_from_z(float z, const ParamsF32& q) {
  z = clamp_to(z, q.p[4], q.p[5]);
  return clamp_to(std::fma(z, q.p[1], q.p[0]), q.p[6], q.p[7]);
}

// The contract's value of one trunc_normal element (fp32 math). kWithTail = false: see
// normal_quantile_f32 (then p >= kGilesMinP too).
template <bool kWithTail = true>
FASTINIT_HD float trunc_normal_value_f32(uint32_t w, const ParamsF32& q) {
  const float p = trunc_normal_p(w, q);
  const float z = p < kGilesMinP ? static_cast<float>(normal_quantile_f64(p))
                                 : normal_quantile_f32<kWithTail>(p);
  return trunc_normal_from_z(z, q);
}

// A trunc_normal on a wide interval, alpha <= -4 and beta >= 4 (docs/contract.md): the
// standard Box-Muller value z of each element (normal_pair_f32 with mean 0, std 1) is kept
// when it lies in [alpha, beta]; an element outside takes the quantile value of word t of its
// second draw, the Philox block whose block-high counter word has kSecondDrawBit set.
FASTINIT_HD bool trunc_normal_is_wide(const ParamsF32& q) {
  return q.p[4] <= -kTruncNormalWideBound && q.p[5] >= kTruncNormalWideBound;
}

FASTINIT_HD bool trunc_normal_accepts(float z, const ParamsF32& q) {
  return z >= q.p[4] && z <= q.p[5];
}

// The four values of one block of a wide trunc_normal from its words; second() gives the
// words of the block's second draw (called only when an element needs them).
template <typename SecondDraw>
FASTINIT_HD void trunc_normal_wide_block_f32(const Words4& w, const ParamsF32& q,
                                             const SecondDraw& second, float v[4]) {
  float z[4];
  normal_pair_f32(w.w[0], w.w[1], 0.0f, 1.0f, z[0], z[1]);
  normal_pair_f32(w.w[2], w.w[3], 0.0f, 1.0f, z[2], z[3]);
  bool all_inside = true;
  for (int t = 0; t < 4; ++t) all_inside = all_inside && trunc_normal_accepts(z[t], q);
  if (all_inside) {
    for (int t = 0; t < 4; ++t) v[t] = trunc_normal_from_z(z[t], q);
    return;
  }
  const Words4 w2 = second();
  for (int t = 0; t < 4; ++t) {
    v[t] = trunc_normal_accepts(z[t], q) ? trunc_normal_from_z(z[t], q)
                                         : trunc_normal_value_f32(w2.w[t], q);
  }
}

// fp32-math uniform (dist == kUniform) and normal (any other): the four values of one Philox
// block (element 4*block + t). trunc_normal needs more than the block's words (its second
// draw, Giles' range): trunc_normal_value_f32, trunc_normal_wide_block_f32.
FASTINIT_HD void block_values_f32(int32_t dist, const ParamsF32& q, const Words4& w, float v[4]) {
  if (dist == kUniform) {
    for (int t = 0; t < 4; ++t) v[t] = uniform_value_f32(w.w[t], q.p[0], q.p[1], q.p[2]);
  } else {
    normal_pair_f32(w.w[0], w.w[1], q.p[0], q.p[1], v[0], v[1]);
    normal_pair_f32(w.w[2], w.w[3], q.p[0], q.p[1], v[2], v[3]);
  }
}

// fp64-math distributions: the value of element 2*block + t, t in {0, 1}.
FASTINIT_HD double element_value_f64(int32_t dist, const double* param, const Words4& w, int t) {
  switch (dist) {
    case kUniform:  // product and sum rounded separately: the reference's exact formula
      return u53(w.w[2 * t], w.w[2 * t + 1]) * param[0] + param[1];
    case kNormal: {
      const double r = std::sqrt(-2.0 * std::log(u53o(w.w[0], w.w[1])));
      const double theta = kTwoPiF64 * u53(w.w[2], w.w[3]);
      const double z = r * (t == 0 ? std::cos(theta) : std::sin(theta));
      return z * param[1] + param[0];
    }
    case kTruncNormal:
    case kTruncNormalFp64: {
      const double p = u53(w.w[2 * t], w.w[2 * t + 1]) * param[3] + param[2];
      const double z = clamp_to(normal_quantile_f64(p), param[4], param[5]);
      return clamp_to(z * param[1] + param[0], param[6], param[7]);
    }
    default:
      return param[0];
  }
}

}  // namespace fastinit
