// fp8 e4m3 scaled GEMMs with fp16 output for Hopper (see gemm/sm90_gemm.cuh).
#include "../gemm/sm90_gemm.cuh"

namespace kvserve::kernels {

std::vector<GemmKernelEntry> sm90_scaled_mm_fp8_fp16_kernels() {
  return sm90::configurations<cutlass::float_e4m3_t, cutlass::half_t, sm90::CoopFp8, sm90::PingpongFp8>(
      Operand::kFloat8E4M3, DType::kFloat16);
}

}  // namespace kvserve::kernels
