// fp8 e4m3 scaled GEMMs with bf16 output for Hopper (see gemm/sm90_gemm.cuh).
#include "../gemm/sm90_gemm.cuh"

namespace kvserve::kernels {

std::vector<GemmKernelEntry> sm90_scaled_mm_fp8_bf16_kernels() {
  return sm90::configurations<cutlass::float_e4m3_t, cutlass::bfloat16_t, sm90::CoopFp8, sm90::PingpongFp8>(
      Operand::kFloat8E4M3, DType::kBFloat16);
}

}  // namespace kvserve::kernels
