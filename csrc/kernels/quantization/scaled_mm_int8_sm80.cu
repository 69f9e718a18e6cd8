// int8 scaled GEMMs for Ampere and Hopper (see gemm/sm80_gemm.cuh): int32 accumulation, then
// out = a_scale * b_scale * acc + bias in float32.
#include "../gemm/sm80_gemm.cuh"

namespace kvserve::kernels {

std::vector<GemmKernelEntry> sm80_scaled_mm_kernels() {
  auto bf16 = sm80::configurations<int8_t, cutlass::bfloat16_t>(Operand::kInt8, DType::kBFloat16);
  auto fp16 = sm80::configurations<int8_t, cutlass::half_t>(Operand::kInt8, DType::kFloat16);
  bf16.insert(bf16.end(), fp16.begin(), fp16.end());
  return bf16;
}

}  // namespace kvserve::kernels
