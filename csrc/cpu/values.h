// The values of contiguous runs of contract indices, batch by batch: Philox words (of any
// struct of philox_simd.h) through the distribution transforms into fp32 or fp64 values, stored
// into the output dtype. fill_contiguous fills one chunk of a contiguous tensor with them.
// Everything here is inlined into the per-instruction-set entry points of fill_range.cpp.
#pragma once

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "../fastinit/fill.h"

namespace fastinit {
namespace cpu {

constexpr int kBatchBlocks = 128;  // Philox blocks per vectorised batch
constexpr int kQuantileGroup = 16;  // trunc_normal lanes that take Giles' tail or not together

// Rounds `count` fp32 values into the output dtype at `out`.
inline __attribute__((always_inline)) void store_f32(const float* v, int64_t count, int32_t dtype,
                                                     void* out) {
  switch (dtype) {
    case kFloat32:
      std::memcpy(out, v, static_cast<size_t>(count) * sizeof(float));
      break;
    case kFloat16: {
      uint16_t* o = static_cast<uint16_t*>(out);
#pragma omp simd
      for (int64_t i = 0; i < count; ++i) o[i] = half_bits_rne(v[i]);
      break;
    }
    default: {
      uint16_t* o = static_cast<uint16_t*>(out);
#pragma omp simd
      for (int64_t i = 0; i < count; ++i) o[i] = bf16_bits_rne(v[i]);
      break;
    }
  }
}

// Box-Muller values (normal_pair_f32) of Philox blocks with words w0..w3[0, nblocks), into
// v[4 * i + t]: the two pairs of every block in loops of their own, then interleaved.
inline __attribute__((always_inline)) void box_muller_batch(
    const uint32_t* w0, const uint32_t* w1, const uint32_t* w2, const uint32_t* w3, int nblocks,
    float mean, float std_, float* v) {
  alignas(64) float even[2 * kBatchBlocks], odd[2 * kBatchBlocks];
#pragma omp simd
  for (int i = 0; i < nblocks; ++i) normal_pair_f32(w0[i], w1[i], mean, std_, even[i], odd[i]);
#pragma omp simd
  for (int i = 0; i < nblocks; ++i) {
    normal_pair_f32(w2[i], w3[i], mean, std_, even[kBatchBlocks + i], odd[kBatchBlocks + i]);
  }
#pragma omp simd
  for (int i = 0; i < nblocks; ++i) {
    v[4 * i + 0] = even[i];
    v[4 * i + 1] = odd[i];
    v[4 * i + 2] = even[kBatchBlocks + i];
    v[4 * i + 3] = odd[kBatchBlocks + i];
  }
}

// Values of Philox blocks [block0, block0 + nblocks) for the fp32-math distributions, into
// v[4 * i + t]. Words go through structure-of-arrays buffers so each loop vectorises.
template <typename Philox>
inline __attribute__((always_inline)) void batch_values_f32(const FillDescriptor& d,
                                                            const ParamsF32& q, uint64_t block0,
                                                            int nblocks, float* v) {
  alignas(64) uint32_t w0[kBatchBlocks], w1[kBatchBlocks], w2[kBatchBlocks], w3[kBatchBlocks];
  const uint32_t s0 = static_cast<uint32_t>(d.stream), s1 = static_cast<uint32_t>(d.stream >> 32);
  const uint32_t k0 = static_cast<uint32_t>(d.seed), k1 = static_cast<uint32_t>(d.seed >> 32);
  const uint32_t c0 = static_cast<uint32_t>(block0), c1 = static_cast<uint32_t>(block0 >> 32);
  if (static_cast<uint64_t>(c0) + kBatchBlocks <= (uint64_t{1} << 32)) {
    // The whole batch (padded to kBatchBlocks) shares the high counter word.
    Philox::words(c0, c1, s0, s1, k0, k1, kBatchBlocks, w0, w1, w2, w3);
  } else {
    for (int i = 0; i < nblocks; ++i) {
      const Words4 w = philox_block(block0 + static_cast<uint64_t>(i), d.stream, d.seed);
      w0[i] = w.w[0];
      w1[i] = w.w[1];
      w2[i] = w.w[2];
      w3[i] = w.w[3];
    }
  }
  switch (d.dist) {
    case kUniform: {
      const float scale = q.p[0], shift = q.p[1], limit = q.p[2];
#pragma omp simd
      for (int i = 0; i < nblocks; ++i) {
        v[4 * i + 0] = uniform_value_f32(w0[i], scale, shift, limit);
        v[4 * i + 1] = uniform_value_f32(w1[i], scale, shift, limit);
        v[4 * i + 2] = uniform_value_f32(w2[i], scale, shift, limit);
        v[4 * i + 3] = uniform_value_f32(w3[i], scale, shift, limit);
      }
      break;
    }
    case kNormal:
      box_muller_batch(w0, w1, w2, w3, nblocks, q.p[0], q.p[1], v);
      break;
    default: {  // kTruncNormal
      if (trunc_normal_is_wide(q)) {
        // Box-Muller values, each kept when inside [alpha, beta]; the rare element outside
        // takes the quantile value of its second draw.
        alignas(64) float z[4 * kBatchBlocks];
        box_muller_batch(w0, w1, w2, w3, nblocks, 0.0f, 1.0f, z);
        int outside = 0;
#pragma omp simd reduction(+ : outside)
        for (int k = 0; k < 4 * nblocks; ++k) {
          v[k] = trunc_normal_from_z(z[k], q);
          outside += trunc_normal_accepts(z[k], q) ? 0 : 1;
        }
        for (int k = 0; outside > 0 && k < 4 * nblocks; ++k) {
          if (trunc_normal_accepts(z[k], q)) continue;
          const uint64_t block = block0 + static_cast<uint64_t>(k / 4);
          const Words4 w = philox_block(block | (uint64_t{kSecondDrawBit} << 32), d.stream, d.seed);
          v[k] = trunc_normal_value_f32(w.w[k % 4], q);
          --outside;
        }
        break;
      }
      // p first; then Giles' quantile kQuantileGroup lanes at a time, with the tail polynomial
      // only for the groups where some w needs it (about 5% of them when p spans the tails),
      // and the last elements (fewer than a group) in one loop. Elements below Giles' range
      // (rare) are redone in fp64.
      float pmin = 1.0f;
#pragma omp simd reduction(min : pmin)
      for (int i = 0; i < nblocks; ++i) {
        const float p0 = trunc_normal_p(w0[i], q), p1 = trunc_normal_p(w1[i], q);
        const float p2 = trunc_normal_p(w2[i], q), p3 = trunc_normal_p(w3[i], q);
        v[4 * i + 0] = p0;
        v[4 * i + 1] = p1;
        v[4 * i + 2] = p2;
        v[4 * i + 3] = p3;
        pmin = std::min(pmin, std::min(std::min(p0, p1), std::min(p2, p3)));
      }
      const int grouped = 4 * nblocks / kQuantileGroup * kQuantileGroup;
      for (int g = 0; g < grouped; g += kQuantileGroup) {
        float* const group = v + g;
        alignas(64) float w[kQuantileGroup];
        int tails = 0;
#pragma omp simd reduction(+ : tails)
        for (int k = 0; k < kQuantileGroup; ++k) {
          w[k] = giles_w(group[k]);
          tails += w[k] < kGilesSplit ? 0 : 1;
        }
        if (tails > 0) {
#pragma omp simd
          for (int k = 0; k < kQuantileGroup; ++k) {
            group[k] = trunc_normal_from_z(giles_quantile_f32(group[k], w[k]), q);
          }
        } else {
#pragma omp simd
          for (int k = 0; k < kQuantileGroup; ++k) {
            group[k] = trunc_normal_from_z(giles_quantile_f32<false>(group[k], w[k]), q);
          }
        }
      }
#pragma omp simd
      for (int k = grouped; k < 4 * nblocks; ++k) {
        v[k] = trunc_normal_from_z(normal_quantile_f32(v[k]), q);
      }
      if (pmin < kGilesMinP) {
        const uint32_t* words[4] = {w0, w1, w2, w3};
        for (int k = 0; k < 4 * nblocks; ++k) {
          const uint32_t w = words[k & 3][k >> 2];
          if (trunc_normal_p(w, q) < kGilesMinP) v[k] = trunc_normal_value_f32(w, q);
        }
      }
      break;
    }
  }
}

// Initialisation is often the first touch of freshly allocated memory (a model materialised
// from meta). Faulting the pages in with one MADV_POPULATE_WRITE per chunk, on the thread that
// then fills the chunk, costs about half of taking a page fault per 4 KiB on first write. A
// chunk whose first page is already resident (memory written before) skips it. It never
// changes the contents; kernels without it (before Linux 5.14) return EINVAL, ignored.
inline void prefault(char* begin, char* end) {
#if defined(__linux__)
  constexpr int kPopulateWrite = 23;  // MADV_POPULATE_WRITE
  constexpr uintptr_t kPage = 4096;
  const uintptr_t first = (reinterpret_cast<uintptr_t>(begin) + kPage - 1) & ~(kPage - 1);
  const uintptr_t last = reinterpret_cast<uintptr_t>(end) & ~(kPage - 1);
  unsigned char resident = 0;
  if (last >= first + 16 * kPage &&
      mincore(reinterpret_cast<void*>(first), kPage, &resident) == 0 && !(resident & 1)) {
    madvise(reinterpret_cast<void*>(first), last - first, kPopulateWrite);
  }
#else
  (void)begin;
  (void)end;
#endif
}

// Rounds `count` fp64-math values into the output dtype at `out` (fp32 first for 16-bit types).
inline __attribute__((always_inline)) void store_f64(const double* v, int64_t count,
                                                     int32_t dtype, void* out) {
  if (dtype == kFloat64) {
    std::memcpy(out, v, static_cast<size_t>(count) * sizeof(double));
    return;
  }
  float f[2 * kBatchBlocks];
  for (int64_t i = 0; i < count; ++i) f[i] = static_cast<float>(v[i]);
  store_f32(f, count, dtype, out);
}

// The values of contract indices [first, first + count), in order, in batches: emit(values,
// position of values[0] in [0, count), n) with a const float* (fp32 math) or a const double*
// (fp64 math and fp64 constants). `direct`: where fp32 values may be written in place of a
// batch (the output of a contiguous fp32 tensor), or null.
template <typename Philox, typename Emit>
inline __attribute__((always_inline)) void generate(const FillDescriptor& d, uint64_t first,
                                                    int64_t count, float* direct, Emit&& emit) {
  const int per_block = elements_per_block(d.dist, d.dtype);
  uint64_t block = first / per_block;
  int64_t skip = static_cast<int64_t>(first % per_block);
  int64_t pos = 0;
  if (d.dist == kConstant) {
    if (d.dtype == kFloat64) {
      double v[2 * kBatchBlocks];
      for (int i = 0; i < 2 * kBatchBlocks; ++i) v[i] = d.param[0];
      for (; pos < count; pos += 2 * kBatchBlocks) {
        emit(v, pos, std::min<int64_t>(2 * kBatchBlocks, count - pos));
      }
    } else {
      float v[4 * kBatchBlocks];
      for (int i = 0; i < 4 * kBatchBlocks; ++i) v[i] = static_cast<float>(d.param[0]);
      for (; pos < count; pos += 4 * kBatchBlocks) {
        emit(v, pos, std::min<int64_t>(4 * kBatchBlocks, count - pos));
      }
    }
    return;
  }
  if (per_block == 2) {
    // fp64 math: scalar, used for fp64 outputs and for trunc_normal far in the tails.
    double v[2 * kBatchBlocks];
    while (pos < count) {
      int n = 0;
      while (n < 2 * kBatchBlocks && pos + n < count) {
        const Words4 w = philox_block(block, d.stream, d.seed);
        int t = static_cast<int>(skip);
        for (; t < 2 && n < 2 * kBatchBlocks && pos + n < count; ++t) {
          v[n++] = element_value_f64(d.dist, d.param, w, t);
        }
        skip = t == 2 ? 0 : t;
        block += t == 2 ? 1 : 0;
      }
      emit(static_cast<const double*>(v), pos, static_cast<int64_t>(n));
      pos += n;
    }
    return;
  }
  const ParamsF32 q = params_f32(d);
  alignas(64) float v[4 * kBatchBlocks];
  while (pos < count) {
    const int64_t wanted_blocks = (skip + (count - pos) + 3) / 4;
    const int nblocks = static_cast<int>(std::min<int64_t>(kBatchBlocks, wanted_blocks));
    const int64_t n = std::min<int64_t>(4 * nblocks - skip, count - pos);
    if (direct != nullptr && skip == 0 && n == 4 * nblocks) {
      // A whole batch of fp32 values goes straight to the output.
      batch_values_f32<Philox>(d, q, block, nblocks, direct + pos);
    } else {
      batch_values_f32<Philox>(d, q, block, nblocks, v);
      emit(static_cast<const float*>(v + skip), pos, n);
    }
    pos += n;
    block += static_cast<uint64_t>(nblocks);
    skip = 0;
  }
}

// Elements [begin, end) (local indices) of a contiguous tensor.
template <typename Philox>
inline __attribute__((always_inline)) void fill_contiguous(const FillDescriptor& d,
                                                           int64_t begin, int64_t end) {
  char* const base = reinterpret_cast<char*>(d.data);
  const size_t esize = element_size(d.dtype);
  prefault(base + begin * esize, base + end * esize);
  if (d.dist == kConstant) {
    // The value is already rounded to the dtype on the host: store its bit pattern.
    if (d.dtype == kFloat64) {
      double* o = reinterpret_cast<double*>(base);
      const double value = d.param[0];
      for (int64_t i = begin; i < end; ++i) o[i] = value;
    } else if (d.dtype == kFloat32) {
      float* o = reinterpret_cast<float*>(base);
      const float value = static_cast<float>(d.param[0]);
      for (int64_t i = begin; i < end; ++i) o[i] = value;
    } else {
      uint16_t* o = reinterpret_cast<uint16_t*>(base);
      const float value = static_cast<float>(d.param[0]);
      const uint16_t bits = d.dtype == kFloat16 ? half_bits_rne(value) : bf16_bits_rne(value);
      for (int64_t i = begin; i < end; ++i) o[i] = bits;
    }
    return;
  }
  char* const out = base + begin * esize;
  float* const direct = d.dtype == kFloat32 ? reinterpret_cast<float*>(out) : nullptr;
  generate<Philox>(d, static_cast<uint64_t>(d.first_index) + static_cast<uint64_t>(begin),
                   end - begin, direct, [&](const auto* v, int64_t at, int64_t n) {
                     if constexpr (sizeof(*v) == sizeof(float)) {
                       store_f32(v, n, d.dtype, out + at * esize);
                     } else {
                       store_f64(v, n, d.dtype, out + at * esize);
                     }
                   });
}

}  // namespace cpu
}  // namespace fastinit
