#include <algorithm>
#include <cmath>
#include <vector>

#include "avx2_math.h"
#include "bf16.h"
#include "cpu_isa.h"
#include "kernels.h"
#include "kv_cache_rows.h"
#include "row_split.h"
#include "simd.h"

namespace kvserve::cpu {
namespace {

// out[i] = silu(g[i]) = g / (1 + e^-g); out may be g.
KV_CLONES void silu_row_portable(float* out, const float* g, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = g[i] / (1.0f + std::exp(-g[i]));
}

KV_AVX2 __m256 silu8(__m256 g) {
  return _mm256_div_ps(g, _mm256_add_ps(_mm256_set1_ps(1.0f), exp8(_mm256_sub_ps(_mm256_setzero_ps(), g))));
}

// The same with a vectorised exp (libm's scalar expf was ~2.7 ns a value: most of an MLP's activation). The
// tail goes through the same vector code, so a value's result does not depend on its position.
__attribute__((target("avx2,fma,f16c"))) void silu_row_avx2(float* out, const float* g, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, silu8(_mm256_loadu_ps(g + i)));
  if (i < n) {
    alignas(32) float lanes[8] = {};
    std::copy(g + i, g + n, lanes);
    _mm256_store_ps(lanes, silu8(_mm256_load_ps(lanes)));
    std::copy(lanes, lanes + (n - i), out + i);
  }
}

using SiluRow = void (*)(float*, const float*, int64_t);

SiluRow silu_row() {
  static const SiluRow row = detect_isa() != Isa::kBaseline ? silu_row_avx2 : silu_row_portable;
  return row;
}

// o = s * up, s silu's float32 result in place in o: torch's two float32 ops, rounded each.
KV_CLONES void times_up(float* o, const float* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) o[i] *= up[i];
}

// out = bf16(bf16(s) * up): torch's silu result stored in bfloat16, then the product, rounded again.
KV_CLONES void times_up_bf16(uint16_t* out, const float* s, const uint16_t* up, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = float_to_bf16(round_to_bf16(s[i]) * bf16_to_float(up[i]));
}

}  // namespace

void silu_and_mul(float* out, const float* x, int64_t rows, int64_t d, int num_threads) {
  const SiluRow silu = silu_row();
  split_rows(rows, rows * d, num_threads, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const float* gate = x + r * 2 * d;
      float* o = out + r * d;
      silu(o, gate, d);
      times_up(o, gate + d, d);
    }
  });
}

void silu_and_mul_bf16(uint16_t* out, const uint16_t* x, int64_t rows, int64_t d, int num_threads) {
  const SiluRow silu = silu_row();
  split_rows(rows, rows * d, num_threads, [&](int64_t begin, int64_t end) {
    std::vector<float> gate(static_cast<size_t>(d));
    for (int64_t r = begin; r < end; ++r) {
      const uint16_t* in = x + r * 2 * d;
      widen_rows(gate.data(), in, CacheDtype::kBFloat16, 1, d, d);
      silu(gate.data(), gate.data(), d);
      times_up_bf16(out + r * d, gate.data(), in + d, d);
    }
  });
}

}  // namespace kvserve::cpu
