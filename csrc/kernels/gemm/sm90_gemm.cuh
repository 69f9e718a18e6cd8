// Hopper GEMM template (CUTLASS 3.x collective builders): TMA loads into a multi-stage shared-memory
// pipeline, warp-group MMA (wgmma), a persistent tile scheduler and a TMA-stored epilogue that applies the
// scales and bias in registers (an epilogue visitor tree), so an 8-bit product is one kernel and one pass
// over the output. Compiled for sm_90a only: the CUTLASS 3.x mainloop is compiled out for plain sm_90.
//
// kSwapAB computes out^T = b @ a^T instead: the weight's N rows fill the 64- or 128-row wgmma tile and the
// few tokens of a decode step take the narrow N side of the tile (wgmma's N goes down to 8), where the
// direct product would waste most of a 64-row tile on M = 1..64. The output is then written column-major
// in the swapped problem, which is row-major [M, N] for the caller.
#pragma once

#include <cute/tensor.hpp>
#include <cutlass/cutlass.h>
#include <cutlass/epilogue/collective/collective_builder.hpp>
#include <cutlass/epilogue/fusion/sm90_callbacks_tma_warpspecialized.hpp>
#include <cutlass/gemm/collective/collective_builder.hpp>
#include <cutlass/gemm/device/gemm_universal_adapter.h>
#include <cutlass/gemm/kernel/gemm_universal.hpp>
#include <cutlass/util/packed_stride.hpp>

#include "gemm_registry.cuh"

namespace kvserve::kernels::sm90 {

using namespace cute;
namespace fusion = cutlass::epilogue::fusion;

// Scale and bias vectors: per row of the (possibly swapped) problem is a column broadcast, per column a row
// broadcast. A `bool` stride makes the vector-or-scalar choice a run-time one (a_scale per token or per
// tensor); a null pointer reads as null_default (1 for a missing scale, 0 for a missing bias).
template <class Tile, class Element>
using PerRow = fusion::Sm90ColBroadcast<0, Tile, Element, float, Stride<bool, _0, _0>>;
template <class Tile, class Element>
using PerCol = fusion::Sm90RowBroadcast<0, Tile, Element, float, Stride<_0, bool, _0>>;

// out = row_scale * (col_scale * acc) + bias, in float32 and rounded once to ElementD. Without kSwapAB the
// rows are tokens (a_scale) and the columns output features (b_scale, bias); with it, the other way round.
template <class Tile, class ElementD, bool kSwapAB>
struct ScaledEpilogue {
  using ScaleM = PerRow<Tile, float>;
  using ScaleN = PerCol<Tile, float>;
  using Bias = std::conditional_t<kSwapAB, PerRow<Tile, ElementD>, PerCol<Tile, ElementD>>;
  using Inner = fusion::Sm90EVT<fusion::Sm90Compute<cutlass::multiplies, float, float, cutlass::FloatRoundStyle::round_to_nearest>, ScaleN, fusion::Sm90AccFetch>;
  using Tree = fusion::Sm90EVT<fusion::Sm90Compute<cutlass::multiply_add, ElementD, float, cutlass::FloatRoundStyle::round_to_nearest>, ScaleM, Inner, Bias>;

  static typename Tree::Arguments arguments(const GemmProblem& p) {
    const bool token_scale_vector = p.a_scale_per_row;
    const float* token_scale = p.a_scale;
    const float* feature_scale = p.b_scale;
    const auto* bias = static_cast<const ElementD*>(p.bias);
    // {ScaleM, {ScaleN, AccFetch, multiplies}, Bias, multiply_add}
    if constexpr (kSwapAB) {
      return {{feature_scale, 1.f, {true, _0{}, _0{}}},
              {{token_scale, 1.f, {_0{}, token_scale_vector, _0{}}}, {}, {}},
              {bias, ElementD(0), {true, _0{}, _0{}}},
              {}};
    } else {
      return {{token_scale, 1.f, {token_scale_vector, _0{}, _0{}}},
              {{feature_scale, 1.f, {_0{}, true, _0{}}}, {}, {}},
              {bias, ElementD(0), {_0{}, true, _0{}}},
              {}};
    }
  }
};

template <class ElementAB, class ElementD, class Tile, class Cluster, class KernelSchedule, class EpilogueSchedule,
          bool kSwapAB>
struct Gemm {
  using Epi = ScaledEpilogue<Tile, ElementD, kSwapAB>;
  using LayoutA = cutlass::layout::RowMajor;     // K-major
  using LayoutB = cutlass::layout::ColumnMajor;  // K-major
  // Row-major [M, N] for the caller; in the swapped problem that is column-major.
  using LayoutD = std::conditional_t<kSwapAB, cutlass::layout::ColumnMajor, cutlass::layout::RowMajor>;
  static constexpr int kAlignAB = 16 / sizeof(ElementAB);
  static constexpr int kAlignD = 16 / sizeof(ElementD);

  using CollectiveEpilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, Tile, Cluster,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, void, LayoutD, kAlignD, ElementD, LayoutD,
      kAlignD, EpilogueSchedule, typename Epi::Tree>::CollectiveOp;

  using CollectiveMainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, ElementAB, LayoutA, kAlignAB, ElementAB, LayoutB,
      kAlignAB, float, Tile, Cluster,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(
          sizeof(typename CollectiveEpilogue::SharedStorage))>,
      KernelSchedule>::CollectiveOp;

  using Kernel = cutlass::gemm::kernel::GemmUniversal<Shape<int, int, int, int>, CollectiveMainloop,
                                                      CollectiveEpilogue, cutlass::gemm::PersistentScheduler>;
  using Device = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;

  static void launch(const GemmProblem& p) {
    using StrideA = typename Kernel::StrideA;
    using StrideB = typename Kernel::StrideB;
    using StrideD = typename Kernel::StrideD;
    // In the swapped problem the weight is operand A (N rows) and the activations operand B (M columns).
    const int rows = kSwapAB ? p.n : p.m;
    const int cols = kSwapAB ? p.m : p.n;
    const auto* first = static_cast<const ElementAB*>(kSwapAB ? p.b : p.a);
    const auto* second = static_cast<const ElementAB*>(kSwapAB ? p.a : p.b);
    typename Device::Arguments args{
        cutlass::gemm::GemmUniversalMode::kGemm,
        {rows, cols, p.k, 1},
        {first, cutlass::make_cute_packed_stride(StrideA{}, {rows, p.k, 1}), second,
         cutlass::make_cute_packed_stride(StrideB{}, {cols, p.k, 1})},
        {Epi::arguments(p), nullptr, StrideD{}, static_cast<ElementD*>(p.out),
         cutlass::make_cute_packed_stride(StrideD{}, {rows, cols, 1})}};
    run_cutlass<Device>(args, p.stream);
  }
};

// The tile configurations compiled for each operand type; KTile is 128 bytes of K per stage.
template <class ElementAB>
constexpr int kTileK = 128 / sizeof(ElementAB);

using Coop = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
using Pingpong = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
// fp8: wgmma accumulates without periodic promotion to float32 (as cuBLAS's and vLLM's fp8 GEMMs do).
using CoopFp8 = cutlass::gemm::KernelTmaWarpSpecializedCooperativeFP8FastAccum;
using PingpongFp8 = cutlass::gemm::KernelTmaWarpSpecializedPingpongFP8FastAccum;
using CoopEpi = cutlass::epilogue::TmaWarpSpecializedCooperative;
using PingpongEpi = cutlass::epilogue::TmaWarpSpecialized;

// The table rows of one (operand, output) pair, each pair in its own file (one CPU-minute of compilation
// each, in parallel). Names are stable: the tuning table stores them.
template <class ElementAB, class ElementD, class CoopSchedule, class PingpongSchedule>
std::vector<GemmKernelEntry> configurations(Operand operand, DType out_dtype) {
  constexpr int K = kTileK<ElementAB>;
  using T128x128 = Shape<_128, _128, Int<K>>;
  using T128x256 = Shape<_128, _256, Int<K>>;
  using T64x128 = Shape<_64, _128, Int<K>>;
  using T64x16 = Shape<_64, _16, Int<K>>;
  using T64x64 = Shape<_64, _64, Int<K>>;
  using C1 = Shape<_1, _1, _1>;
  using C2 = Shape<_2, _1, _1>;
  return {
      {"sm90_128x128_c2x1_coop", 90, operand, out_dtype,
       &Gemm<ElementAB, ElementD, T128x128, C2, CoopSchedule, CoopEpi, false>::launch},
      {"sm90_128x256_c2x1_coop", 90, operand, out_dtype,
       &Gemm<ElementAB, ElementD, T128x256, C2, CoopSchedule, CoopEpi, false>::launch},
      {"sm90_64x128_c1x1_pingpong", 90, operand, out_dtype,
       &Gemm<ElementAB, ElementD, T64x128, C1, PingpongSchedule, PingpongEpi, false>::launch},
      {"sm90_swapab_64x16_c1x1_pingpong", 90, operand, out_dtype,
       &Gemm<ElementAB, ElementD, T64x16, C1, PingpongSchedule, PingpongEpi, true>::launch},
      {"sm90_swapab_64x64_c1x1_pingpong", 90, operand, out_dtype,
       &Gemm<ElementAB, ElementD, T64x64, C1, PingpongSchedule, PingpongEpi, true>::launch},
  };
}

}  // namespace kvserve::kernels::sm90
