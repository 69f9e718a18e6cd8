// bf16 and fp16 GEMMs for Ampere and newer (see sm80_gemm.cuh): out = a @ b^T + bias.
#include "sm80_gemm.cuh"

namespace kvserve::kernels {

std::vector<GemmKernelEntry> sm80_gemm_kernels() {
  auto bf16 = sm80::configurations<cutlass::bfloat16_t, cutlass::bfloat16_t>(Operand::kBFloat16, DType::kBFloat16);
  auto fp16 = sm80::configurations<cutlass::half_t, cutlass::half_t>(Operand::kFloat16, DType::kFloat16);
  bf16.insert(bf16.end(), fp16.begin(), fp16.end());
  return bf16;
}

}  // namespace kvserve::kernels
