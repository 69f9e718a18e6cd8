// AVX2 math shared by the kernels that dispatch to an AVX2 path at run time (the functions carry their own
// target attribute, so this header compiles in any translation unit).
#pragma once

#include <immintrin.h>

#define KV_AVX2 inline __attribute__((always_inline, target("avx2,fma,f16c")))

namespace kvserve::cpu {

// e^x to within 2 ulp (Cephes' expf: a degree-5 polynomial on x - n ln 2, |x - n ln 2| <= ln 2 / 2, times
// 2^n). x is clamped to [-87.3, 88.7], where 2^n is a normal float; NaN stays NaN.
KV_AVX2 __m256 exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_set1_ps(88.7f), _mm256_max_ps(_mm256_set1_ps(-87.3f), x));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  for (const float c : {1.3981999507e-3f, 8.3334519073e-3f, 4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f}) {
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
  }
  p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
  const __m256i scale = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(scale));
}

}  // namespace kvserve::cpu
