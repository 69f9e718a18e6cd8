#include <omp.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "avx2_math.h"
#include "bf16.h"
#include "cpu_isa.h"
#include "kernels.h"
#include "kv_cache_rows.h"
#include "simd.h"

namespace kvserve::cpu {
namespace {

// silu(g) * u rounded like torch's two ops: s = g / (1 + e^-g), then s * u.
KV_CLONES void silu_and_mul_portable(float* out, const float* x, int64_t rows, int64_t d) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* gate = x + r * 2 * d;
    const float* up = gate + d;
    float* o = out + r * d;
    for (int64_t i = 0; i < d; ++i) o[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
  }
}

KV_AVX2 __m256 silu8(__m256 g) {
  return _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
}

KV_AVX2 __m256 silu_times8(__m256 g, __m256 u) { return _mm256_mul_ps(silu8(g), u); }

// The same with a vectorised exp (libm's scalar expf was ~2.7 ns a value: most of an MLP's activation). The
// tail goes through the same vector code, so a value's result does not depend on its position.
__attribute__((target("avx2,fma,f16c"))) void silu_and_mul_avx2(float* out, const float* x, int64_t rows,
                                                                  int64_t d) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* gate = x + r * 2 * d;
    const float* up = gate + d;
    float* o = out + r * d;
    int64_t i = 0;
    for (; i + 8 <= d; i += 8) {
      _mm256_storeu_ps(o + i, silu_times8(_mm256_loadu_ps(gate + i), _mm256_loadu_ps(up + i)));
    }
    if (i < d) {
      alignas(32) float g[8] = {}, u[8] = {};
      std::copy(gate + i, gate + d, g);
      std::copy(up + i, up + d, u);
      _mm256_store_ps(g, silu_times8(_mm256_load_ps(g), _mm256_load_ps(u)));
      std::copy(g, g + (d - i), o + i);
    }
  }
}

// v[i] = silu(v[i]) in place.
KV_CLONES void silu_row_portable(float* v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) v[i] = v[i] / (1.0f + std::exp(-v[i]));
}

__attribute__((target("avx2,fma,f16c"))) void silu_row_avx2(float* v, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(v + i, silu8(_mm256_loadu_ps(v + i)));
  if (i < n) {
    alignas(32) float lanes[8] = {};
    std::copy(v + i, v + n, lanes);
    _mm256_store_ps(lanes, silu8(_mm256_load_ps(lanes)));
    std::copy(lanes, lanes + (n - i), v + i);
  }
}

// out = bf16(bf16(s) * up): torch's silu result stored in bfloat16, then the product, rounded again.
KV_CLONES void times_up_bf16(uint16_t* out, const float* s, const uint16_t* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = float_to_bf16(round_to_bf16(s[i]) * bf16_to_float(up[i]));
}

}  // namespace

void silu_and_mul_bf16(uint16_t* out, const uint16_t* x, int64_t rows, int64_t d, int num_threads) {
  static const auto silu_row = detect_isa() != Isa::kBaseline ? silu_row_avx2 : silu_row_portable;
  const int threads = rows * d < kMinElementwiseValues ? 1 : static_cast<int>(std::min<int64_t>(num_threads, rows));
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> gate(static_cast<size_t>(d));
    const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
    for (int64_t r = rows * t / n; r < rows * (t + 1) / n; ++r) {
      const uint16_t* in = x + r * 2 * d;
      widen_rows(gate.data(), in, CacheDtype::kBFloat16, 1, d, d);
      silu_row(gate.data(), d);
      times_up_bf16(out + r * d, gate.data(), in + d, d);
    }
  }
}

void silu_and_mul(float* out, const float* x, int64_t rows, int64_t d) {
  static const bool has_avx2 = detect_isa() != Isa::kBaseline;
  (has_avx2 ? silu_and_mul_avx2 : silu_and_mul_portable)(out, x, rows, d);
}

}  // namespace kvserve::cpu
