// The compiled GEMM kernels, one table per architecture file, and the problem every launcher takes.
// gemm.cu picks an entry by (name, operand, output dtype) for the current device and calls its launcher.
#pragma once

#include <cuda_runtime.h>
#include <cutlass/cutlass.h>

#include <cstdint>
#include <string>
#include <vector>

#include "../common.cuh"
#include "gemm.h"

namespace kvserve::kernels {

// out = a_scale * b_scale * (a @ b^T) + bias; the scales are null for the 16-bit GEMM (a factor of 1).
struct GemmProblem {
  void* out;               // [m, n]
  const void* a;           // [m, k]
  const void* b;           // [n, k]
  const float* a_scale;    // [m] when a_scale_per_row, else [1]; or null
  const float* b_scale;    // [n], or null
  const void* bias;        // [n] of the output dtype, or null
  bool a_scale_per_row;
  int m, n, k;
  cudaStream_t stream;
};

using GemmLaunch = void (*)(const GemmProblem&);

struct GemmKernelEntry {
  std::string name;  // the tile configuration, as the tuning table stores it
  int sm;            // 90: runs on compute capability 9.0 only (sm_90a code); 80: on 8.0 and newer
  Operand operand;
  DType out_dtype;
  GemmLaunch launch;
};

// Defined by each architecture's file when it is compiled (see CMakeLists.txt); best default first.
std::vector<GemmKernelEntry> sm90_gemm_bf16_kernels();           // gemm/gemm_bf16_sm90.cu
std::vector<GemmKernelEntry> sm90_gemm_fp16_kernels();           // gemm/gemm_fp16_sm90.cu
std::vector<GemmKernelEntry> sm90_scaled_mm_fp8_bf16_kernels();  // quantization/scaled_mm_fp8_bf16_sm90.cu
std::vector<GemmKernelEntry> sm90_scaled_mm_fp8_fp16_kernels();  // quantization/scaled_mm_fp8_fp16_sm90.cu
std::vector<GemmKernelEntry> sm80_gemm_kernels();                // bf16/fp16, gemm/gemm_sm80.cu
std::vector<GemmKernelEntry> sm80_scaled_mm_kernels();           // int8, quantization/scaled_mm_int8_sm80.cu

// Throws with CUTLASS's message when a step of a CUTLASS launch fails.
#define KV_CHECK_CUTLASS(status, what)                                                                     \
  KV_CHECK((status) == cutlass::Status::kSuccess,                                                          \
           std::string(what) + " failed: " + cutlass::cutlassGetStatusString(status))

// Runs a CUTLASS device-level GEMM (2.x or 3.x adapter) on `stream`, with a stream-ordered workspace when the
// configuration asks for one (none of ours does today; a tile scheduler with split-K would).
template <class Device>
void run_cutlass(const typename Device::Arguments& args, cudaStream_t stream) {
  Device gemm;
  KV_CHECK_CUTLASS(gemm.can_implement(args), "CUTLASS can_implement");
  const size_t workspace_bytes = Device::get_workspace_size(args);
  void* workspace = nullptr;
  if (workspace_bytes > 0) {
    KV_CHECK(cudaMallocAsync(&workspace, workspace_bytes, stream) == cudaSuccess, "GEMM workspace allocation");
  }
  const cutlass::Status initialized = gemm.initialize(args, workspace, stream);
  const cutlass::Status ran = initialized == cutlass::Status::kSuccess ? gemm.run(stream) : initialized;
  if (workspace != nullptr) cudaFreeAsync(workspace, stream);
  KV_CHECK_CUTLASS(ran, "CUTLASS GEMM launch");
  KV_CHECK_LAUNCH();
}

}  // namespace kvserve::kernels
