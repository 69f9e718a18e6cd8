// bf16 GEMMs for Hopper (see sm90_gemm.cuh): out = a @ b^T + bias.
#include "sm90_gemm.cuh"

namespace kvserve::kernels {

std::vector<GemmKernelEntry> sm90_gemm_bf16_kernels() {
  return sm90::configurations<cutlass::bfloat16_t, cutlass::bfloat16_t, sm90::Coop, sm90::Pingpong>(
      Operand::kBFloat16, DType::kBFloat16);
}

}  // namespace kvserve::kernels
