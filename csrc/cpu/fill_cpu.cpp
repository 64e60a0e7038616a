// The C++ CPU backend: fills a list of tensors (one FillDescriptor each) in one call.
//
// Work is cut into fixed chunks of kChunkElements contract indices per tensor and the chunks are
// spread over OpenMP threads; since every value is a pure function of (seed, stream, index),
// the output never depends on the thread count. Inside a chunk, batches of Philox blocks are
// computed in a loop the compiler vectorises across counters (AVX-512 or AVX2+FMA lanes, chosen
// at run time by function multi-versioning, with a portable baseline).
#include "fill_cpu.h"

#include <omp.h>
#include <pthread.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <thread>
#include <cstring>
#include <vector>

#include "../fastinit/fill.h"

namespace fastinit {
namespace {

constexpr int64_t kChunkElements = kMaxChunkElements;
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

// Philox words of counters (c0 + i, c1, c2, c3), i in [0, n), into structure-of-arrays
// buffers. Portable form: the compiler vectorises it as well as it can.
struct PhiloxPortable {
  static inline __attribute__((always_inline)) void words(uint32_t c0, uint32_t c1, uint32_t c2,
                                                          uint32_t c3, uint32_t k0, uint32_t k1,
                                                          int n, uint32_t* w0, uint32_t* w1,
                                                          uint32_t* w2, uint32_t* w3) {
#pragma omp simd
    for (int i = 0; i < n; ++i) {
      const Words4 w = philox4x32_10(c0 + static_cast<uint32_t>(i), c1, c2, c3, k0, k1);
      w0[i] = w.w[0];
      w1[i] = w.w[1];
      w2[i] = w.w[2];
      w3[i] = w.w[3];
    }
  }
};

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FASTINIT_HAVE_X86_KERNELS 1
// The instruction-set extensions of each kernel, named one by one (GCC >= 11 and clang alike;
// "arch=x86-64-v4" as a target and a __builtin_cpu_supports name needs GCC 12).
// detect_simd_level() checks the same lists at run time. fma makes std::fma one instruction.
#define FASTINIT_V4 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi,bmi2")))
#define FASTINIT_V3 __attribute__((target("avx2,fma,bmi,bmi2")))

// AVX-512: 16 counters per step in two independent vectors of 8, one counter per 64-bit lane,
// in its low half. vpmuludq reads only the low halves and returns the full 64-bit product, so
// hi is one shift away and lo is the product itself (its high half is ignored by every later
// step); the three-way xors are one vpternlogq each. The two chains overlap their latencies.
// At the end one vpermt2d packs the 16 low halves into a vector for a single full store
// (vpmovqd to memory is slow on some cores).
struct PhiloxAvx512 {
  static FASTINIT_V4 inline void round(__m512i& x0, __m512i& x1, __m512i& x2, __m512i& x3,
                                       __m512i m0, __m512i m1, __m512i key0, __m512i key1) {
    const __m512i p0 = _mm512_mul_epu32(x0, m0);
    const __m512i p1 = _mm512_mul_epu32(x2, m1);
    x0 = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p1, 32), x1, key0, 0x96);
    x1 = p1;
    x2 = _mm512_ternarylogic_epi64(_mm512_srli_epi64(p0, 32), x3, key1, 0x96);
    x3 = p0;
  }
  static FASTINIT_V4 inline void words(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                       uint32_t k0, uint32_t k1, int n, uint32_t* w0,
                                       uint32_t* w1, uint32_t* w2, uint32_t* w3) {
    const __m512i m0 = _mm512_set1_epi64(kPhiloxM0);
    const __m512i m1 = _mm512_set1_epi64(kPhiloxM1);
    __m512i key0[10], key1[10];
    for (int r = 0; r < 10; ++r) {
      key0[r] = _mm512_set1_epi64(static_cast<uint32_t>(k0 + r * kPhiloxW0));
      key1[r] = _mm512_set1_epi64(static_cast<uint32_t>(k1 + r * kPhiloxW1));
    }
    const __m512i lane = _mm512_setr_epi64(0, 1, 2, 3, 4, 5, 6, 7);
    const __m512i even_halves =
        _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    for (int i = 0; i < n; i += 16) {
      __m512i a0 = _mm512_add_epi64(_mm512_set1_epi64(c0 + static_cast<uint32_t>(i)), lane);
      __m512i b0 = _mm512_add_epi64(_mm512_set1_epi64(c0 + static_cast<uint32_t>(i + 8)), lane);
      __m512i a1 = _mm512_set1_epi64(c1), b1 = a1;
      __m512i a2 = _mm512_set1_epi64(c2), b2 = a2;
      __m512i a3 = _mm512_set1_epi64(c3), b3 = a3;
      for (int r = 0; r < 10; ++r) {
        round(a0, a1, a2, a3, m0, m1, key0[r], key1[r]);
        round(b0, b1, b2, b3, m0, m1, key0[r], key1[r]);
      }
      _mm512_store_si512(w0 + i, _mm512_permutex2var_epi32(a0, even_halves, b0));
      _mm512_store_si512(w1 + i, _mm512_permutex2var_epi32(a1, even_halves, b1));
      _mm512_store_si512(w2 + i, _mm512_permutex2var_epi32(a2, even_halves, b2));
      _mm512_store_si512(w3 + i, _mm512_permutex2var_epi32(a3, even_halves, b3));
    }
  }
};

// AVX2: the same with 8 counters per vector.
struct PhiloxAvx2 {
  static FASTINIT_V3 inline void mulhilo(__m256i a, __m256i m,
                                                                         __m256i& hi, __m256i& lo) {
    const __m256i even = _mm256_mul_epu32(a, m);
    const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
    hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
    lo = _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
  }
  static FASTINIT_V3 inline void words(
      uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1, int n,
      uint32_t* w0, uint32_t* w1, uint32_t* w2, uint32_t* w3) {
    const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kPhiloxM0));
    const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kPhiloxM1));
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int i = 0; i < n; i += 8) {
      __m256i x0 = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(c0 + i)), lane);
      __m256i x1 = _mm256_set1_epi32(static_cast<int>(c1));
      __m256i x2 = _mm256_set1_epi32(static_cast<int>(c2));
      __m256i x3 = _mm256_set1_epi32(static_cast<int>(c3));
      uint32_t key0 = k0, key1 = k1;
      for (int round = 0; round < 10; ++round) {
        __m256i hi0, lo0, hi1, lo1;
        mulhilo(x0, m0, hi0, lo0);
        mulhilo(x2, m1, hi1, lo1);
        x0 = _mm256_xor_si256(_mm256_xor_si256(hi1, x1), _mm256_set1_epi32(static_cast<int>(key0)));
        x1 = lo1;
        x2 = _mm256_xor_si256(_mm256_xor_si256(hi0, x3), _mm256_set1_epi32(static_cast<int>(key1)));
        x3 = lo0;
        key0 += kPhiloxW0;
        key1 += kPhiloxW1;
      }
      _mm256_store_si256(reinterpret_cast<__m256i*>(w0 + i), x0);
      _mm256_store_si256(reinterpret_cast<__m256i*>(w1 + i), x1);
      _mm256_store_si256(reinterpret_cast<__m256i*>(w2 + i), x2);
      _mm256_store_si256(reinterpret_cast<__m256i*>(w3 + i), x3);
    }
  }
};
#endif

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
void prefault(char* begin, char* end) {
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

// A strided descriptor is cut into boxes: the dims from `whole_from` on are whole in every box,
// and a box holds up to `per_box` indices of dim whole_from - 1 (whole_from == 0: the whole
// descriptor is one box). Every box is a range [begin, end) of the local row-major order, of
// at most kChunkElements elements.
struct BoxShape {
  int whole_from;
  int64_t inner;    // elements of one index of dim whole_from - 1: product of the whole dims
  int64_t per_box;  // indices of dim whole_from - 1 per box
};

inline BoxShape box_shape(const FillDescriptor& d) {
  BoxShape b{d.ndim, 1, 1};
  while (b.whole_from > 0 && b.inner * d.size[b.whole_from - 1] <= kChunkElements) {
    b.inner *= d.size[--b.whole_from];
  }
  if (b.whole_from > 0) b.per_box = std::max<int64_t>(1, kChunkElements / b.inner);
  return b;
}

// Local element `local` of a strided descriptor: its memory offset (elements from data) and
// contract index.
inline void locate(const FillDescriptor& d, int64_t local, int64_t& offset, uint64_t& index) {
  offset = 0;
  index = static_cast<uint64_t>(d.first_index);
  for (int k = d.ndim - 1; k >= 0; --k) {
    const int64_t i = local % d.size[k];
    local /= d.size[k];
    offset += i * d.stride[k];
    index += static_cast<uint64_t>(i) * static_cast<uint64_t>(d.global_stride[k]);
  }
}

// Elements from local element `local` on (at most `limit`) that take consecutive contract
// indices: the rest of its last-dim row, and the following rows while the global steps nest.
inline int64_t run_length(const FillDescriptor& d, int64_t local, int64_t limit) {
  const int last = d.ndim - 1;
  if (d.global_stride[last] != 1) return 1;
  int64_t run = d.size[last] - local % d.size[last];
  int64_t inner = d.size[last];  // elements of one index of dim k - 1, while the steps nest
  for (int k = last; k > 0 && run < limit && d.global_stride[k - 1] == inner; --k) {
    const int64_t index = (local / inner) % d.size[k - 1];
    run += (d.size[k - 1] - index - 1) * inner;
    inner *= d.size[k - 1];
  }
  return std::min(run, limit);
}

// Copies a box from `values` (its row-major order, elements of type T) to memory at `out`
// (elements of type T), iterating the box's dims in the order of their memory strides, so the
// innermost loop writes with the smallest stride (contiguously for channels_last or a
// transposed tensor) and successive writes stay close in memory.
template <typename T>
void store_box(const T* values, int ndim, const int64_t* size, const int64_t* stride, T* out) {
  int64_t value_stride[kMaxDims];
  int order[kMaxDims];
  int64_t step = 1;
  for (int k = ndim - 1; k >= 0; --k) {
    value_stride[k] = step;
    step *= size[k];
    order[k] = k;
  }
  // order[0] the dim with the largest memory stride, order[ndim - 1] the smallest.
  std::stable_sort(order, order + ndim, [&](int a, int b) { return stride[a] > stride[b]; });
  const int inner = order[ndim - 1];
  const int64_t n = size[inner], out_step = stride[inner], value_step = value_stride[inner];
  int64_t index[kMaxDims] = {};
  int64_t out_offset = 0, value_offset = 0;
  while (true) {
    T* o = out + out_offset;
    const T* v = values + value_offset;
    for (int64_t i = 0; i < n; ++i) o[i * out_step] = v[i * value_step];
    int level = ndim - 2;  // odometer over the other dims, innermost first
    for (; level >= 0; --level) {
      const int k = order[level];
      ++index[k];
      out_offset += stride[k];
      value_offset += value_stride[k];
      if (index[k] < size[k]) break;
      out_offset -= index[k] * stride[k];
      value_offset -= index[k] * value_stride[k];
      index[k] = 0;
    }
    if (level < 0) return;
  }
}

// One box [begin, end) of a strided descriptor: its values are generated in row-major order,
// run by run of consecutive contract indices as for a contiguous tensor, into a buffer of the
// output type, then stored in memory order.
template <typename Philox>
inline __attribute__((always_inline)) void fill_strided(const FillDescriptor& d, int64_t begin,
                                                        int64_t end) {
  const size_t esize = element_size(d.dtype);
  thread_local std::vector<uint64_t> buffer(kChunkElements);  // 8-byte aligned, fp64 or less
  char* const values = reinterpret_cast<char*>(buffer.data());
  float* const direct = d.dtype == kFloat32 ? reinterpret_cast<float*>(values) : nullptr;
  for (int64_t pos = begin; pos < end;) {
    const int64_t run = run_length(d, pos, end - pos);
    int64_t offset;
    uint64_t index;
    locate(d, pos, offset, index);
    char* const out = values + (pos - begin) * esize;
    generate<Philox>(d, index, run, direct ? direct + (pos - begin) : nullptr,
                     [&](const auto* v, int64_t at, int64_t n) {
                       if constexpr (sizeof(*v) == sizeof(float)) {
                         store_f32(v, n, d.dtype, out + at * esize);
                       } else {
                         store_f64(v, n, d.dtype, out + at * esize);
                       }
                     });
    pos += run;
  }
  // The box's dims: [per-box part of dim whole_from - 1], whole dims.
  const BoxShape b = box_shape(d);
  int64_t size[kMaxDims], stride[kMaxDims];
  int ndim = 0;
  if (b.whole_from > 0) {
    size[ndim] = (end - begin) / b.inner;
    stride[ndim++] = d.stride[b.whole_from - 1];
  }
  for (int k = b.whole_from; k < d.ndim; ++k) {
    size[ndim] = d.size[k];
    stride[ndim++] = d.stride[k];
  }
  int64_t offset;
  uint64_t index;
  locate(d, begin, offset, index);
  char* const base = reinterpret_cast<char*>(d.data) + offset * static_cast<int64_t>(esize);
  int64_t span = 1;  // elements from base to the box's last element, plus one
  for (int k = 0; k < ndim; ++k) span += (size[k] - 1) * stride[k];
  if (span == end - begin) {  // a dense box (channels_last, transposed): one memory range
    prefault(base, base + span * static_cast<int64_t>(esize));
  }
  switch (esize) {
    case 8:
      store_box(reinterpret_cast<const uint64_t*>(values), ndim, size, stride,
                reinterpret_cast<uint64_t*>(base));
      break;
    case 4:
      store_box(reinterpret_cast<const uint32_t*>(values), ndim, size, stride,
                reinterpret_cast<uint32_t*>(base));
      break;
    default:
      store_box(reinterpret_cast<const uint16_t*>(values), ndim, size, stride,
                reinterpret_cast<uint16_t*>(base));
      break;
  }
}

// Each path of each instruction set is a function of its own: sharing one would change the
// contiguous path's code (measured 12% slower for fp32 uniform when both were inlined together).
__attribute__((flatten)) void fill_contiguous_portable(const FillDescriptor& d, int64_t begin,
                                                       int64_t end) {
  fill_contiguous<PhiloxPortable>(d, begin, end);
}
__attribute__((flatten)) void fill_strided_portable(const FillDescriptor& d, int64_t begin,
                                                    int64_t end) {
  fill_strided<PhiloxPortable>(d, begin, end);
}

#if defined(FASTINIT_HAVE_X86_KERNELS)
FASTINIT_V4 __attribute__((flatten)) void fill_contiguous_avx512(const FillDescriptor& d,
                                                                 int64_t begin, int64_t end) {
  fill_contiguous<PhiloxAvx512>(d, begin, end);
}
FASTINIT_V4 __attribute__((flatten)) void fill_strided_avx512(const FillDescriptor& d,
                                                              int64_t begin, int64_t end) {
  fill_strided<PhiloxAvx512>(d, begin, end);
}
FASTINIT_V3 __attribute__((flatten)) void fill_contiguous_avx2(const FillDescriptor& d,
                                                               int64_t begin, int64_t end) {
  fill_contiguous<PhiloxAvx2>(d, begin, end);
}
FASTINIT_V3 __attribute__((flatten)) void fill_strided_avx2(const FillDescriptor& d,
                                                            int64_t begin, int64_t end) {
  fill_strided<PhiloxAvx2>(d, begin, end);
}
#endif

using FillRangeFn = void (*)(const FillDescriptor&, int64_t, int64_t);

// The fill of local elements [begin, end) of a contiguous and of a strided descriptor.
struct FillRangeFns {
  FillRangeFn contiguous, strided;
};

enum class SimdLevel { kPortable, kAvx2, kAvx512 };

SimdLevel detect_simd_level() {
#if defined(FASTINIT_HAVE_X86_KERNELS)
  __builtin_cpu_init();
  const bool v3 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                  __builtin_cpu_supports("bmi") && __builtin_cpu_supports("bmi2");
  if (v3 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl")) {
    return SimdLevel::kAvx512;
  }
  if (v3) return SimdLevel::kAvx2;
#endif
  return SimdLevel::kPortable;
}

FillRangeFns select_fill_range() {
  switch (detect_simd_level()) {
#if defined(FASTINIT_HAVE_X86_KERNELS)
    case SimdLevel::kAvx512:
      return {fill_contiguous_avx512, fill_strided_avx512};
    case SimdLevel::kAvx2:
      return {fill_contiguous_avx2, fill_strided_avx2};
#endif
    default:
      return {fill_contiguous_portable, fill_strided_portable};
  }
}

// libgomp keeps its worker threads between parallel regions and has no fork handler: in a child
// forked after a parallel region ran on the forking thread (one of fastinit's, or one of
// torch's, which shares the library), the next region waits forever for workers that were not
// copied. So a forked child never enters OpenMP: it fills on fresh threads of its own, started
// per call (the values never depend on the thread count).
std::atomic<bool> g_forked_child{false};

void mark_forked_child() { g_forked_child.store(true, std::memory_order_relaxed); }

// Registered when the module loads, so any later fork is seen.
[[maybe_unused]] const int g_fork_handler = pthread_atfork(nullptr, nullptr, mark_forked_child);

// Runs fill_chunk(c) for every c in [0, n) on `threads` new threads (the caller waits), taking
// chunks in order from a shared counter as schedule(dynamic, 1) does.
template <typename FillChunk>
void fill_on_fresh_threads(int threads, int64_t n, const FillChunk& fill_chunk) {
  std::atomic<int64_t> next{0};
  const auto work = [&] {
    for (int64_t c = next.fetch_add(1); c < n; c = next.fetch_add(1)) fill_chunk(c);
  };
  std::vector<std::thread> workers;
  workers.reserve(static_cast<size_t>(threads));
  for (int t = 0; t < threads; ++t) workers.emplace_back(work);
  for (std::thread& worker : workers) worker.join();
}

}  // namespace

int fill_cpu(const FillDescriptor* descriptors, int64_t count, int num_threads) {
  struct Chunk {
    int64_t descriptor;
    int64_t begin, end;  // local elements (a box of a strided descriptor)
  };
  std::vector<Chunk> chunks;
  for (int64_t i = 0; i < count; ++i) {
    const FillDescriptor& d = descriptors[i];
    if (is_contiguous(d)) {
      for (int64_t begin = 0; begin < d.numel; begin += kChunkElements) {
        chunks.push_back(Chunk{i, begin, std::min(begin + kChunkElements, d.numel)});
      }
      continue;
    }
    const BoxShape b = box_shape(d);
    if (b.whole_from == 0) {
      if (d.numel > 0) chunks.push_back(Chunk{i, 0, d.numel});
      continue;
    }
    const int64_t split = d.size[b.whole_from - 1];
    for (int64_t row = 0; row < d.numel; row += split * b.inner) {  // each index of the outer dims
      for (int64_t j = 0; j < split; j += b.per_box) {
        const int64_t begin = row + j * b.inner;
        chunks.push_back(Chunk{i, begin, begin + std::min(b.per_box, split - j) * b.inner});
      }
    }
  }
  const int64_t n = static_cast<int64_t>(chunks.size());
  static const FillRangeFns fill_range = select_fill_range();
  const auto fill_chunk = [&](int64_t c) {
    const FillDescriptor& d = descriptors[chunks[c].descriptor];
    (is_contiguous(d) ? fill_range.contiguous : fill_range.strided)(d, chunks[c].begin,
                                                                    chunks[c].end);
  };
  const int threads = static_cast<int>(
      std::min<int64_t>(num_threads > 0 ? num_threads : omp_get_max_threads(), n));
  if (threads <= 1) {
    for (int64_t c = 0; c < n; ++c) fill_chunk(c);
    return 1;
  }
  if (g_forked_child.load(std::memory_order_relaxed)) {
    fill_on_fresh_threads(threads, n, fill_chunk);
    return threads;
  }
  int team = 0;
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
  for (int64_t c = 0; c < n; ++c) {
    if (c == 0) team = omp_get_num_threads();
    fill_chunk(c);
  }
  return team;
}

const char* cpu_simd_level() {
  switch (detect_simd_level()) {
    case SimdLevel::kAvx512:
      return "avx512 (avx512f/bw/dq/vl, x86-64-v4 class)";
    case SimdLevel::kAvx2:
      return "avx2+fma (x86-64-v3 class)";
    default:
      return "portable (compiler auto-vectorised)";
  }
}

}  // namespace fastinit
