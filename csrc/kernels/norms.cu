// rms_norm and fused_add_rms_norm: one thread block per row. The first pass reads the row and sums its
// squares; the second re-reads it (an L1/L2 hit: the row was just read by the same threads) and writes.
// Roundings follow ops.reference: normalise in float32, round to the activation dtype, then multiply by the
// weight in that dtype; the residual sum is rounded to the dtype before it is normalised.
#include "common.cuh"

namespace kvserve::kernels {
namespace {

// Sum of v over the block; every thread gets the result. Uses 32 floats of shared memory.
__device__ float block_sum(float v) {
  __shared__ float partial[32];
  const int lane = threadIdx.x % 32;
  const int warp = threadIdx.x / 32;
  v = warp_sum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  const int num_warps = (blockDim.x + 31) / 32;
  v = lane < num_warps ? partial[lane] : 0.f;
  return warp_sum(v);
}

template <typename T>
__device__ __forceinline__ T norm_one(float x, float inv_rms, T w) {
  return from_float<T>(__fmul_rn(to_float(w), round_to<T>(__fmul_rn(x, inv_rms))));
}

template <typename T, int kVec>
__global__ void rms_norm_kernel(T* __restrict__ out,           // [rows, hidden]
                                const T* __restrict__ x,       // [rows, hidden], row stride x_stride
                                const T* __restrict__ weight,  // [hidden]
                                int64_t hidden, int64_t x_stride, float eps) {
  const T* row = x + blockIdx.x * x_stride;
  T* out_row = out + blockIdx.x * hidden;
  float sum_sq = 0.f;
  for (int64_t i = threadIdx.x * kVec; i < hidden; i += blockDim.x * kVec) {
    const Vec<T> v = load<kVec>(row + i);
#pragma unroll
    for (int j = 0; j < kVec; ++j) sum_sq += to_float(v.v[j]) * to_float(v.v[j]);
  }
  const float inv_rms = rsqrtf(block_sum(sum_sq) / static_cast<float>(hidden) + eps);
  for (int64_t i = threadIdx.x * kVec; i < hidden; i += blockDim.x * kVec) {
    const Vec<T> v = load<kVec>(row + i);
    const Vec<T> w = load<kVec>(weight + i);
    Vec<T> o;
#pragma unroll
    for (int j = 0; j < kVec; ++j) o.v[j] = norm_one(to_float(v.v[j]), inv_rms, w.v[j]);
    store<kVec>(out_row + i, o);
  }
}

template <typename T, int kVec>
__global__ void fused_add_rms_norm_kernel(T* __restrict__ out,           // [rows, hidden]
                                          T* residual_out,               // [rows, hidden], may alias residual
                                          const T* __restrict__ x,       // [rows, hidden]
                                          const T* residual,             // [rows, hidden]
                                          const T* __restrict__ weight,  // [hidden]
                                          int64_t hidden, float eps) {
  const int64_t base = blockIdx.x * hidden;
  float sum_sq = 0.f;
  for (int64_t i = threadIdx.x * kVec; i < hidden; i += blockDim.x * kVec) {
    const Vec<T> a = load<kVec>(x + base + i);
    const Vec<T> r = load<kVec>(residual + base + i);
    Vec<T> s;
#pragma unroll
    for (int j = 0; j < kVec; ++j) {
      s.v[j] = from_float<T>(to_float(a.v[j]) + to_float(r.v[j]));
      const float f = to_float(s.v[j]);
      sum_sq += f * f;
    }
    store<kVec>(residual_out + base + i, s);
  }
  const float inv_rms = rsqrtf(block_sum(sum_sq) / static_cast<float>(hidden) + eps);
  // Each thread re-reads only the elements it wrote itself, so no barrier is needed.
  for (int64_t i = threadIdx.x * kVec; i < hidden; i += blockDim.x * kVec) {
    const Vec<T> s = load<kVec>(residual_out + base + i);
    const Vec<T> w = load<kVec>(weight + i);
    Vec<T> o;
#pragma unroll
    for (int j = 0; j < kVec; ++j) o.v[j] = norm_one(to_float(s.v[j]), inv_rms, w.v[j]);
    store<kVec>(out + base + i, o);
  }
}

// Enough threads that each moves one or two vectors of a typical row (hidden 2k-8k), at most 1024.
int threads_for(int64_t units) {
  int64_t threads = (units + 31) / 32 * 32;
  if (threads > 1024) threads = 1024;
  return static_cast<int>(threads);
}

void check_rows(int64_t rows, int64_t hidden, const char* op) {
  KV_REQUIRE(rows >= 0 && hidden > 0, std::string(op) + ": rows must be >= 0 and hidden > 0");
  KV_REQUIRE(rows <= 0x7fffffff, std::string(op) + ": too many rows for one launch");
}

}  // namespace

void rms_norm(DType dtype, void* out, const void* x, const void* weight, int64_t rows, int64_t hidden,
              int64_t x_stride, float eps, uintptr_t stream) {
  check_rows(rows, hidden, "rms_norm");
  KV_REQUIRE(x_stride >= hidden, "rms_norm: x_stride must be >= hidden");
  if (rows == 0) return;
  KV_DISPATCH_DTYPE(dtype, [&] {
    using T = scalar_t;
    constexpr int kVec = Vec<T>::kSize;
    auto* o = static_cast<T*>(out);
    auto* in = static_cast<const T*>(x);
    auto* w = static_cast<const T*>(weight);
    const cudaStream_t s = as_stream(stream);
    if (hidden % kVec == 0 && x_stride % kVec == 0 && aligned16(out) && aligned16(x) && aligned16(weight)) {
      rms_norm_kernel<T, kVec><<<rows, threads_for(hidden / kVec), 0, s>>>(o, in, w, hidden, x_stride, eps);
    } else {
      rms_norm_kernel<T, 1><<<rows, threads_for(hidden), 0, s>>>(o, in, w, hidden, x_stride, eps);
    }
    KV_CHECK_LAUNCH();
  });
}

void fused_add_rms_norm(DType dtype, void* out, void* residual_out, const void* x, const void* residual,
                        const void* weight, int64_t rows, int64_t hidden, float eps, uintptr_t stream) {
  check_rows(rows, hidden, "fused_add_rms_norm");
  if (rows == 0) return;
  KV_DISPATCH_DTYPE(dtype, [&] {
    using T = scalar_t;
    constexpr int kVec = Vec<T>::kSize;
    auto* o = static_cast<T*>(out);
    auto* r_out = static_cast<T*>(residual_out);
    auto* in = static_cast<const T*>(x);
    auto* r = static_cast<const T*>(residual);
    auto* w = static_cast<const T*>(weight);
    const cudaStream_t s = as_stream(stream);
    if (hidden % kVec == 0 && aligned16(out) && aligned16(residual_out) && aligned16(x) && aligned16(residual) &&
        aligned16(weight)) {
      fused_add_rms_norm_kernel<T, kVec><<<rows, threads_for(hidden / kVec), 0, s>>>(o, r_out, in, r, w, hidden, eps);
    } else {
      fused_add_rms_norm_kernel<T, 1><<<rows, threads_for(hidden), 0, s>>>(o, r_out, in, r, w, hidden, eps);
    }
    KV_CHECK_LAUNCH();
  });
}

}  // namespace kvserve::kernels
