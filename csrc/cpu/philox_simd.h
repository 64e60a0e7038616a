// Philox4x32-10 of a batch of consecutive counters, into structure-of-arrays word buffers: a
// portable form the compiler vectorises, and AVX2 and AVX-512 forms (x86-64 only). Each is a
// struct with one static `words` function, the template argument of the value transforms.
#pragma once

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cstdint>

#include "../fastinit/philox.h"

namespace fastinit {
namespace cpu {

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

}  // namespace cpu
}  // namespace fastinit
