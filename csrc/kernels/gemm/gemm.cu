// The GEMM entry points: validate the problem, find the named configuration for the operand and output
// types among the kernels compiled for the current device, and launch it.
#include <mutex>
#include <unordered_map>

#include "gemm_registry.cuh"

namespace kvserve::kernels {
namespace {

const std::vector<GemmKernelEntry>& all_kernels() {
  static const std::vector<GemmKernelEntry> table = [] {
    std::vector<GemmKernelEntry> t;
    for (auto part : {
#ifdef KVSERVE_GEMM_SM90
             sm90_gemm_bf16_kernels(), sm90_gemm_fp16_kernels(), sm90_scaled_mm_fp8_bf16_kernels(),
             sm90_scaled_mm_fp8_fp16_kernels(),
#endif
             sm80_gemm_kernels(), sm80_scaled_mm_kernels()}) {
      t.insert(t.end(), part.begin(), part.end());
    }
    return t;
  }();
  return table;
}

bool runs_on(const GemmKernelEntry& e, int sm) { return e.sm == 90 ? sm == 90 : sm >= e.sm; }

int current_sm() {
  int device = 0;
  KV_CHECK(cudaGetDevice(&device) == cudaSuccess, "no CUDA device");
  static std::mutex mutex;
  static std::unordered_map<int, int> sm_of;
  std::lock_guard<std::mutex> lock(mutex);
  auto it = sm_of.find(device);
  if (it != sm_of.end()) return it->second;
  int major = 0, minor = 0;
  KV_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) == cudaSuccess,
           "cannot read the compute capability");
  KV_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device) == cudaSuccess,
           "cannot read the compute capability");
  return sm_of[device] = major * 10 + minor;
}

int element_bytes(Operand operand) {
  return operand == Operand::kFloat16 || operand == Operand::kBFloat16 ? 2 : 1;
}

const GemmKernelEntry& find(Operand operand, DType out_dtype, const std::string& config) {
  const int sm = current_sm();
  for (const auto& e : all_kernels()) {
    if (e.name == config && e.operand == operand && e.out_dtype == out_dtype) {
      KV_REQUIRE(runs_on(e, sm), "GEMM configuration " + config + " does not run on compute capability " +
                                     std::to_string(sm));
      return e;
    }
  }
  throw InvalidArgument("no GEMM configuration " + config + " for these operand and output types");
}

// TMA and 16-byte vector loads: every row of a, b and out starts on a 16-byte boundary.
void check_problem(const GemmProblem& p, Operand operand, int64_t m, int64_t n, int64_t k) {
  KV_REQUIRE(m >= 0 && n > 0 && k > 0, "GEMM: m must be >= 0, n and k > 0");
  KV_REQUIRE(m <= 0x7fffffff && n <= 0x7fffffff && k <= 0x7fffffff, "GEMM: a dimension exceeds 2^31 - 1");
  KV_REQUIRE(k * element_bytes(operand) % 16 == 0, "GEMM: rows of a and b must be a multiple of 16 bytes");
  KV_REQUIRE(n % 8 == 0, "GEMM: n must be a multiple of 8 (16-byte output rows)");
  KV_REQUIRE(aligned16(p.a) && aligned16(p.b) && aligned16(p.out) && (p.bias == nullptr || aligned16(p.bias)) &&
                 (p.b_scale == nullptr || aligned16(p.b_scale)),
             "GEMM: a, b, out, bias and b_scale must be 16-byte aligned");
}

}  // namespace

std::vector<std::string> gemm_configs(Operand operand, DType out_dtype, int sm) {
  std::vector<std::string> names;
  for (const auto& e : all_kernels()) {
    if (e.operand == operand && e.out_dtype == out_dtype && runs_on(e, sm)) names.push_back(e.name);
  }
  return names;
}

void gemm(DType dtype, void* out, const void* a, const void* b, const void* bias, int64_t m, int64_t n, int64_t k,
          const std::string& config, uintptr_t stream) {
  KV_REQUIRE(dtype == DType::kFloat16 || dtype == DType::kBFloat16, "gemm: dtype must be float16 or bfloat16");
  const Operand operand = dtype == DType::kFloat16 ? Operand::kFloat16 : Operand::kBFloat16;
  GemmProblem p{out, a, b, nullptr, nullptr, bias, false, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), as_stream(stream)};
  check_problem(p, operand, m, n, k);
  const auto& kernel = find(operand, dtype, config);
  if (m > 0) kernel.launch(p);
}

void scaled_mm(Operand operand, DType out_dtype, void* out, const void* a, const void* b, const float* a_scale,
               const float* b_scale, const void* bias, bool a_scale_per_row, int64_t m, int64_t n, int64_t k,
               const std::string& config, uintptr_t stream) {
  KV_REQUIRE(operand == Operand::kFloat8E4M3 || operand == Operand::kInt8, "scaled_mm: operands must be fp8 or int8");
  KV_REQUIRE(out_dtype == DType::kFloat16 || out_dtype == DType::kBFloat16,
             "scaled_mm: the output must be float16 or bfloat16");
  KV_REQUIRE(a_scale != nullptr && b_scale != nullptr, "scaled_mm: both scales are required");
  GemmProblem p{out, a, b, a_scale, b_scale, bias, a_scale_per_row, static_cast<int>(m), static_cast<int>(n),
                static_cast<int>(k), as_stream(stream)};
  check_problem(p, operand, m, n, k);
  const auto& kernel = find(operand, out_dtype, config);
  if (m > 0) kernel.launch(p);
}

}  // namespace kvserve::kernels
