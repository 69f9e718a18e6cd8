// Ampere GEMM template (CUTLASS 2.x): cp.async multi-stage mainloop, mma.sync tensor cores, and an epilogue
// visitor tree that applies the scales and bias in registers before the single store. Compiled for every
// architecture of the build (sm_80 code also serves 8.x; the int8 kernels are the int8 path on Hopper too).
#pragma once

// The visitors need the 2.x GEMM and epilogue headers included first.
#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/kernel/default_gemm_universal_with_visitor.h>
#include <cutlass/epilogue/threadblock/fusion/visitors.hpp>

#include "gemm_registry.cuh"

namespace kvserve::kernels::sm80 {

using namespace cute;
namespace tb = cutlass::epilogue::threadblock;

template <class ElementAB, class ElementD, class TileShape, class WarpShape, int kStages>
struct Gemm {
  static constexpr bool kInt8 = std::is_same_v<ElementAB, int8_t>;
  using ElementAcc = std::conditional_t<kInt8, int32_t, float>;
  using Instruction = std::conditional_t<kInt8, cutlass::gemm::GemmShape<16, 8, 32>, cutlass::gemm::GemmShape<16, 8, 16>>;
  using Operator = std::conditional_t<kInt8, cutlass::arch::OpMultiplyAddSaturate, cutlass::arch::OpMultiplyAdd>;
  static constexpr int kAlignAB = 16 / sizeof(ElementAB);
  static constexpr int kAlignD = 16 / sizeof(ElementD);

  using ThreadMap = tb::OutputTileThreadLayout<TileShape, WarpShape, ElementD, kAlignD, 1>;
  // out = a_scale[row] * (b_scale[col] * acc) + bias[col]. a_scale's row stride is 1 (per token) or 0 (one
  // scale for the tensor), chosen at run time; a missing scale reads as 1 and a missing bias as 0.
  using ScaleA = tb::VisitorColBroadcast<ThreadMap, float, Stride<int64_t, _0, _0>>;
  using ScaleB = tb::VisitorRowBroadcast<ThreadMap, float, Stride<_0, _1, _0>>;
  using Bias = tb::VisitorRowBroadcast<ThreadMap, ElementD, Stride<_0, _1, _0>>;
  using Inner = tb::Sm80EVT<tb::VisitorCompute<cutlass::multiplies, float, float,
                                               cutlass::FloatRoundStyle::round_to_nearest>,
                            ScaleB, tb::VisitorAccFetch>;
  using Scaled = tb::Sm80EVT<tb::VisitorCompute<cutlass::multiply_add, ElementD, float,
                                                cutlass::FloatRoundStyle::round_to_nearest>,
                             ScaleA, Inner, Bias>;
  using Store = tb::VisitorAuxStore<ThreadMap, ElementD, cutlass::FloatRoundStyle::round_to_nearest,
                                    Stride<int64_t, _1, _0>>;
  using Tree = tb::Sm80EVT<Store, Scaled>;

  using Kernel = typename cutlass::gemm::kernel::DefaultGemmWithVisitor<
      ElementAB, cutlass::layout::RowMajor, cutlass::ComplexTransform::kNone, kAlignAB, ElementAB,
      cutlass::layout::ColumnMajor, cutlass::ComplexTransform::kNone, kAlignAB, ElementD, cutlass::layout::RowMajor,
      kAlignD, ElementAcc, float, cutlass::arch::OpClassTensorOp, cutlass::arch::Sm80, TileShape, WarpShape,
      Instruction, Tree, cutlass::gemm::threadblock::GemmIdentityThreadblockSwizzle<>, kStages, Operator,
      1>::GemmKernel;
  using Device = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static void launch(const GemmProblem& p) {
    typename Tree::Arguments epilogue{
        // {ScaleA, {ScaleB, AccFetch, multiplies}, Bias, multiply_add}
        {{p.a_scale, 1.f, {int64_t(p.a_scale_per_row ? 1 : 0), _0{}, _0{}}},
         {{p.b_scale, 1.f, {}}, {}, {}},
         {static_cast<const ElementD*>(p.bias), ElementD(0), {}},
         {}},
        {static_cast<ElementD*>(p.out), {int64_t(p.n), _1{}, _0{}}}};
    typename Device::Arguments args(cutlass::gemm::GemmUniversalMode::kGemm, {p.m, p.n, p.k}, 1, epilogue, p.a,
                                    p.b, nullptr, nullptr, 0, 0, 0, 0, p.k, p.k, 0, 0);
    run_cutlass<Device>(args, p.stream);
  }
};

// The tile configurations of one (operand, output) pair; names are stable (the tuning table stores them).
// K per stage is 64 bytes for 16-bit operands (32 elements) and 64 elements (64 bytes) for int8.
template <class ElementAB, class ElementD>
std::vector<GemmKernelEntry> configurations(Operand operand, DType out_dtype) {
  constexpr int K = 64 / sizeof(ElementAB);
  using cutlass::gemm::GemmShape;
  return {
      {"sm80_128x128_s4", 80, operand, out_dtype,
       &Gemm<ElementAB, ElementD, GemmShape<128, 128, K>, GemmShape<64, 64, K>, 4>::launch},
      {"sm80_128x256_s3", 80, operand, out_dtype,
       &Gemm<ElementAB, ElementD, GemmShape<128, 256, K>, GemmShape<64, 64, K>, 3>::launch},
      {"sm80_64x128_s5", 80, operand, out_dtype,
       &Gemm<ElementAB, ElementD, GemmShape<64, 128, K>, GemmShape<32, 64, K>, 5>::launch},
      {"sm80_32x64_s5", 80, operand, out_dtype,
       &Gemm<ElementAB, ElementD, GemmShape<32, 64, K>, GemmShape<32, 32, K>, 5>::launch},
  };
}

}  // namespace kvserve::kernels::sm80
