// silu_and_mul: out = silu(gate) * up for x = [gate | up]. Each thread reads one vector of gate and one of up
// and writes one vector; silu is rounded to the dtype before the product, as ops.reference rounds it.
#include "common.cuh"

namespace kvserve::kernels {
namespace {

template <typename T, int kVec>
__global__ void silu_and_mul_kernel(T* __restrict__ out,      // [rows, d]
                                    const T* __restrict__ x,  // [rows, 2 * d]
                                    int64_t d) {
  const int64_t row = blockIdx.x;
  const int64_t i = (static_cast<int64_t>(blockIdx.y) * blockDim.x + threadIdx.x) * kVec;
  if (i >= d) return;
  const Vec<T> gate = load<kVec>(x + row * 2 * d + i);
  const Vec<T> up = load<kVec>(x + row * 2 * d + d + i);
  Vec<T> o;
#pragma unroll
  for (int j = 0; j < kVec; ++j) {
    const float g = to_float(gate.v[j]);
    const float silu = round_to<T>(g / (1.f + expf(-g)));
    o.v[j] = from_float<T>(silu * to_float(up.v[j]));
  }
  store<kVec>(out + row * d + i, o);
}

}  // namespace

void silu_and_mul(DType dtype, void* out, const void* x, int64_t rows, int64_t d, uintptr_t stream) {
  KV_REQUIRE(rows >= 0 && d > 0, "silu_and_mul: rows must be >= 0 and d > 0");
  KV_REQUIRE(rows <= 0x7fffffff, "silu_and_mul: too many rows for one launch");
  if (rows == 0) return;
  KV_DISPATCH_DTYPE(dtype, [&] {
    using T = scalar_t;
    constexpr int kVec = Vec<T>::kSize;
    auto* o = static_cast<T*>(out);
    auto* in = static_cast<const T*>(x);
    const bool vectorised = d % kVec == 0 && aligned16(out) && aligned16(x);
    const int64_t units = vectorised ? d / kVec : d;
    const int threads = static_cast<int>(units < 256 ? (units + 31) / 32 * 32 : 256);
    const dim3 grid(static_cast<unsigned>(rows), static_cast<unsigned>((units + threads - 1) / threads));
    if (vectorised) {
      silu_and_mul_kernel<T, kVec><<<grid, threads, 0, as_stream(stream)>>>(o, in, d);
    } else {
      silu_and_mul_kernel<T, 1><<<grid, threads, 0, as_stream(stream)>>>(o, in, d);
    }
    KV_CHECK_LAUNCH();
  });
}

}  // namespace kvserve::kernels
