// rotary_embedding: rotates channel pairs of each head of query or key by the token's cos/sin.
// One thread block per token; its threads walk (head, pair). Each product and the sum are rounded to the
// dtype separately (__fmul_rn/__fadd_rn stop nvcc fusing them into an FMA), as ops.reference rounds them, so
// results match the reference bit for bit.
#include "common.cuh"

namespace kvserve::kernels {
namespace {

template <typename T>
__device__ __forceinline__ void rotate_pair(T& a, T& b, float c, float s) {
  const float x1 = to_float(a);
  const float x2 = to_float(b);
  const float x1c = round_to<T>(__fmul_rn(x1, c));
  const float x2s = round_to<T>(__fmul_rn(x2, s));
  const float x2c = round_to<T>(__fmul_rn(x2, c));
  const float x1s = round_to<T>(__fmul_rn(x1, s));
  a = from_float<T>(__fsub_rn(x1c, x2s));
  b = from_float<T>(__fadd_rn(x2c, x1s));
}

template <typename T, bool kNeox>
__global__ void rotary_kernel(T* out,                       // [T, heads, head_dim], may equal x
                              const T* x,                   // [T, heads, head_dim]
                              const T* __restrict__ cos,    // [T, rot_dim / 2]
                              const T* __restrict__ sin,    // [T, rot_dim / 2]
                              int heads, int head_dim, int rot_dim, int64_t x_token_stride, int64_t x_head_stride,
                              int64_t out_token_stride, int64_t out_head_stride) {
  const int64_t token = blockIdx.x;
  const int half = rot_dim / 2;
  const T* cos_row = cos + token * half;
  const T* sin_row = sin + token * half;
  for (int idx = threadIdx.x; idx < heads * half; idx += blockDim.x) {
    const int head = idx / half;
    const int pair = idx % half;
    const T* src = x + token * x_token_stride + head * x_head_stride;
    T* dst = out + token * out_token_stride + head * out_head_stride;
    const int i1 = kNeox ? pair : 2 * pair;
    const int i2 = kNeox ? pair + half : 2 * pair + 1;
    T a = src[i1];
    T b = src[i2];
    rotate_pair(a, b, to_float(cos_row[pair]), to_float(sin_row[pair]));
    dst[i1] = a;
    dst[i2] = b;
  }
  const int pass = head_dim - rot_dim;
  if (pass == 0 || out == x) return;
  for (int idx = threadIdx.x; idx < heads * pass; idx += blockDim.x) {
    const int head = idx / pass;
    const int c = rot_dim + idx % pass;
    out[token * out_token_stride + head * out_head_stride + c] = x[token * x_token_stride + head * x_head_stride + c];
  }
}

}  // namespace

void rotary_embedding(DType dtype, void* out, const void* x, const void* cos, const void* sin, int64_t tokens,
                      int64_t heads, int64_t head_dim, int64_t rot_dim, int64_t x_token_stride, int64_t x_head_stride,
                      int64_t out_token_stride, int64_t out_head_stride, bool is_neox, uintptr_t stream) {
  KV_REQUIRE(tokens >= 0 && heads > 0 && head_dim > 0, "rotary_embedding: sizes must be positive");
  KV_REQUIRE(rot_dim > 0 && rot_dim % 2 == 0 && rot_dim <= head_dim,
             "rotary_embedding: rot_dim must be even and in (0, head_dim]");
  KV_REQUIRE(heads * head_dim <= 0x7fffffff && tokens <= 0x7fffffff, "rotary_embedding: sizes too large");
  if (tokens == 0) return;
  const int threads = static_cast<int>(heads * rot_dim / 2 < 256 ? (heads * rot_dim / 2 + 31) / 32 * 32 : 256);
  KV_DISPATCH_DTYPE(dtype, [&] {
    using T = scalar_t;
    auto* o = static_cast<T*>(out);
    auto* in = static_cast<const T*>(x);
    auto* c = static_cast<const T*>(cos);
    auto* s = static_cast<const T*>(sin);
    const auto h = static_cast<int>(heads);
    const auto d = static_cast<int>(head_dim);
    const auto r = static_cast<int>(rot_dim);
    if (is_neox) {
      rotary_kernel<T, true><<<tokens, threads, 0, as_stream(stream)>>>(o, in, c, s, h, d, r, x_token_stride,
                                                                        x_head_stride, out_token_stride,
                                                                        out_head_stride);
    } else {
      rotary_kernel<T, false><<<tokens, threads, 0, as_stream(stream)>>>(o, in, c, s, h, d, r, x_token_stride,
                                                                         x_head_stride, out_token_stride,
                                                                         out_head_stride);
    }
    KV_CHECK_LAUNCH();
  });
}

}  // namespace kvserve::kernels
