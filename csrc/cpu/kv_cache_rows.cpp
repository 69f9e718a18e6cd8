#include "kv_cache_rows.h"

#include <cstring>
#include <stdexcept>
#include <string>

#include "bf16.h"
#include "cpu_isa.h"
#include "simd.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define KV_HAS_X86 1
#endif

namespace kvserve::cpu {
namespace {

using WidenFn = void (*)(float*, const uint16_t*, int64_t, int64_t, int64_t);
using NarrowFn = void (*)(uint16_t*, const float*, int64_t);

// ---- bf16: the top half of a float32 (bf16.h); integer code that each clone vectorises ----

KV_CLONES void widen_bf16(float* out, const uint16_t* in, int64_t rows, int64_t n, int64_t stride) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* src = in + r * stride;
    float* dst = out + r * n;
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_float(src[i]);
  }
}

KV_CLONES void narrow_bf16(uint16_t* out, const float* in, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = float_to_bf16(in[i]);
}

// ---- f16: the F16C/AVX-512 conversion instructions where present, the compiler's _Float16 otherwise ----

void widen_f16_baseline(float* out, const uint16_t* in, int64_t rows, int64_t n, int64_t stride) {
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t i = 0; i < n; ++i) {
      _Float16 h;
      std::memcpy(&h, in + r * stride + i, sizeof(h));
      out[r * n + i] = static_cast<float>(h);
    }
  }
}

void narrow_f16_baseline(uint16_t* out, const float* in, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const _Float16 h = static_cast<_Float16>(in[i]);
    std::memcpy(out + i, &h, sizeof(h));
  }
}

#ifdef KV_HAS_X86
#define KV_F16C __attribute__((target("avx2,f16c")))
#define KV_AVX512_F16 __attribute__((target("avx512f,avx2,f16c")))
constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;

KV_F16C void widen_row_f16c(float* dst, const uint16_t* src, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
  }
  for (; i < n; ++i) dst[i] = _cvtsh_ss(src[i]);
}

KV_F16C void widen_f16_f16c(float* out, const uint16_t* in, int64_t rows, int64_t n, int64_t stride) {
  for (int64_t r = 0; r < rows; ++r) widen_row_f16c(out + r * n, in + r * stride, n);
}

KV_F16C void narrow_f16_f16c(uint16_t* out, const float* in, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + i), _mm256_cvtps_ph(_mm256_loadu_ps(in + i), kRound));
  }
  for (; i < n; ++i) out[i] = _cvtss_sh(in[i], kRound);
}

// 16 values at a time, the rest by the F16C loops. The masked forms: GCC 12 warns that the unmasked ones'
// undefined passthrough may be used uninitialized.
KV_AVX512_F16 void widen_f16_avx512(float* out, const uint16_t* in, int64_t rows, int64_t n, int64_t stride) {
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* src = in + r * stride;
    float* dst = out + r * n;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
      const __m256i halves = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i));
      _mm512_storeu_ps(dst + i, _mm512_mask_cvtph_ps(_mm512_setzero_ps(), 0xffff, halves));
    }
    widen_row_f16c(dst + i, src + i, n - i);
  }
}

KV_AVX512_F16 void narrow_f16_avx512(uint16_t* out, const float* in, int64_t n) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256i halves = _mm512_mask_cvtps_ph(_mm256_setzero_si256(), 0xffff, _mm512_loadu_ps(in + i), kRound);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), halves);
  }
  narrow_f16_f16c(out + i, in + i, n - i);
}
#endif

struct F16Kernels {
  WidenFn widen;
  NarrowFn narrow;
  const char* isa;
};

F16Kernels f16_kernels() {
#ifdef KV_HAS_X86
  switch (detect_isa()) {
    case Isa::kAvx512:
      return {widen_f16_avx512, narrow_f16_avx512, "avx512"};
    case Isa::kAvx2:
      return {widen_f16_f16c, narrow_f16_f16c, "f16c"};
    default:
      break;
  }
#endif
  return {widen_f16_baseline, narrow_f16_baseline, "baseline"};
}

const F16Kernels kF16 = f16_kernels();

}  // namespace

int64_t cache_element_bytes(int cache_dtype) {
  switch (static_cast<CacheDtype>(cache_dtype)) {
    case CacheDtype::kFloat32:
      return 4;
    case CacheDtype::kFloat16:
    case CacheDtype::kBFloat16:
      return 2;
  }
  throw std::invalid_argument(std::string(__FILE__) + ":" + std::to_string(__LINE__) + ": no KV cache type " +
                              std::to_string(cache_dtype));
}

void widen_rows(float* out, const uint16_t* in, CacheDtype dtype, int64_t rows, int64_t n, int64_t in_stride) {
  if (dtype == CacheDtype::kFloat16) {
    kF16.widen(out, in, rows, n, in_stride);
  } else {
    widen_bf16(out, in, rows, n, in_stride);
  }
}

void narrow_row(uint16_t* out, const float* in, CacheDtype dtype, int64_t n) {
  if (dtype == CacheDtype::kFloat16) {
    kF16.narrow(out, in, n);
  } else {
    narrow_bf16(out, in, n);
  }
}

const char* kv_cache_rows_isa() { return kF16.isa; }

}  // namespace kvserve::cpu
