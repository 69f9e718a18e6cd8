// fp16 GEMMs for Hopper (see sm90_gemm.cuh): out = a @ b^T + bias.
#include "sm90_gemm.cuh"

namespace kvserve::kernels {

std::vector<GemmKernelEntry> sm90_gemm_fp16_kernels() {
  return sm90::configurations<cutlass::half_t, cutlass::half_t, sm90::Coop, sm90::Pingpong>(Operand::kFloat16,
                                                                                        DType::kFloat16);
}

}  // namespace kvserve::kernels
