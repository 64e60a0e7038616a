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

constexpr int64_t kChunkElements = 65536;
constexpr int kBatchBlocks = 64;  // Philox blocks per vectorised batch


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
      const float scale = q.p[0], shift = q.p[1];
#pragma omp simd
      for (int i = 0; i < nblocks; ++i) {
        v[4 * i + 0] = uniform_value_f32(w0[i], scale, shift);
        v[4 * i + 1] = uniform_value_f32(w1[i], scale, shift);
        v[4 * i + 2] = uniform_value_f32(w2[i], scale, shift);
        v[4 * i + 3] = uniform_value_f32(w3[i], scale, shift);
      }
      break;
    }
    case kNormal: {
      const float mean = q.p[0], std_ = q.p[1];
#pragma omp simd
      for (int i = 0; i < nblocks; ++i) {
        float a, b, c, e;
        normal_pair_f32(w0[i], w1[i], mean, std_, a, b);
        normal_pair_f32(w2[i], w3[i], mean, std_, c, e);
        v[4 * i + 0] = a;
        v[4 * i + 1] = b;
        v[4 * i + 2] = c;
        v[4 * i + 3] = e;
      }
      break;
    }
    default: {  // kTruncNormal
      // p first, with its range: the batch takes Giles' central polynomial alone when every p
      // allows it, and only elements below Giles' range (rare) are redone in fp64.
      float pmin = 1.0f, pmax = 0.0f;
#pragma omp simd reduction(min : pmin) reduction(max : pmax)
      for (int i = 0; i < nblocks; ++i) {
        const float p0 = trunc_normal_p(w0[i], q), p1 = trunc_normal_p(w1[i], q);
        const float p2 = trunc_normal_p(w2[i], q), p3 = trunc_normal_p(w3[i], q);
        v[4 * i + 0] = p0;
        v[4 * i + 1] = p1;
        v[4 * i + 2] = p2;
        v[4 * i + 3] = p3;
        pmin = std::min(pmin, std::min(std::min(p0, p1), std::min(p2, p3)));
        pmax = std::max(pmax, std::max(std::max(p0, p1), std::max(p2, p3)));
      }
      if (central_quantile_range(pmin, pmax)) {
#pragma omp simd
        for (int k = 0; k < 4 * nblocks; ++k) v[k] = trunc_normal_from_p<false>(v[k], q);
        break;
      }
#pragma omp simd
      for (int k = 0; k < 4 * nblocks; ++k) v[k] = trunc_normal_from_p(v[k], q);
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

// Elements [begin, end) (local indices) of one tensor.
template <typename Philox>
inline __attribute__((always_inline)) void fill_range_impl(const FillDescriptor& d, int64_t begin,
                                                           int64_t end) {
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
  const int per_block = elements_per_block(d.dist, d.dtype);
  const uint64_t first = static_cast<uint64_t>(d.first_index) + static_cast<uint64_t>(begin);
  uint64_t block = first / per_block;
  int64_t skip = static_cast<int64_t>(first % per_block);
  int64_t pos = begin;
  if (per_block == 2) {
    // fp64 math: scalar, used for fp64 outputs and for trunc_normal far in the tails.
    for (; pos < end; ++block) {
      const Words4 w = philox_block(block, d.stream, d.seed);
      for (int t = static_cast<int>(skip); t < 2 && pos < end; ++t, ++pos) {
        const double x = element_value_f64(d.dist, d.param, w, t);
        if (d.dtype == kFloat64) {
          reinterpret_cast<double*>(base)[pos] = x;
        } else {
          const float xf = static_cast<float>(x);
          store_f32(&xf, 1, d.dtype, base + pos * esize);
        }
      }
      skip = 0;
    }
    return;
  }
  const ParamsF32 q = params_f32(d);
  alignas(64) float v[4 * kBatchBlocks];
  while (pos < end) {
    const int64_t wanted_blocks = (skip + (end - pos) + 3) / 4;
    const int nblocks = static_cast<int>(std::min<int64_t>(kBatchBlocks, wanted_blocks));
    const int64_t count = std::min<int64_t>(4 * nblocks - skip, end - pos);
    if (d.dtype == kFloat32 && skip == 0 && count == 4 * nblocks) {
      // A whole batch of fp32 values goes straight to the output.
      batch_values_f32<Philox>(d, q, block, nblocks, reinterpret_cast<float*>(base) + pos);
    } else {
      batch_values_f32<Philox>(d, q, block, nblocks, v);
      store_f32(v + skip, count, d.dtype, base + pos * esize);
    }
    pos += count;
    block += static_cast<uint64_t>(nblocks);
    skip = 0;
  }
}

__attribute__((flatten)) void fill_range_portable(const FillDescriptor& d, int64_t begin, int64_t end) {
  fill_range_impl<PhiloxPortable>(d, begin, end);
}

#if defined(FASTINIT_HAVE_X86_KERNELS)
FASTINIT_V4 __attribute__((flatten)) void fill_range_avx512(const FillDescriptor& d, int64_t begin, int64_t end) {
  fill_range_impl<PhiloxAvx512>(d, begin, end);
}
FASTINIT_V3 __attribute__((flatten)) void fill_range_avx2(const FillDescriptor& d, int64_t begin, int64_t end) {
  fill_range_impl<PhiloxAvx2>(d, begin, end);
}
#endif

using FillRangeFn = void (*)(const FillDescriptor&, int64_t, int64_t);

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

FillRangeFn select_fill_range() {
  switch (detect_simd_level()) {
#if defined(FASTINIT_HAVE_X86_KERNELS)
    case SimdLevel::kAvx512:
      return fill_range_avx512;
    case SimdLevel::kAvx2:
      return fill_range_avx2;
#endif
    default:
      return fill_range_portable;
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
    int64_t begin;
  };
  std::vector<Chunk> chunks;
  for (int64_t i = 0; i < count; ++i) {
    for (int64_t begin = 0; begin < descriptors[i].numel; begin += kChunkElements) {
      chunks.push_back(Chunk{i, begin});
    }
  }
  const int64_t n = static_cast<int64_t>(chunks.size());
  static const FillRangeFn fill_range = select_fill_range();
  const auto fill_chunk = [&](int64_t c) {
    const FillDescriptor& d = descriptors[chunks[c].descriptor];
    fill_range(d, chunks[c].begin, std::min(chunks[c].begin + kChunkElements, d.numel));
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
