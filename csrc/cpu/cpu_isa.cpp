#include "cpu_isa.h"

#include <cstdlib>
#include <string>

namespace kvserve::cpu {

Isa detect_isa() {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
  __builtin_cpu_init();
  const char* cap = std::getenv("KVSERVE_CPU_ISA");
  const bool allow_avx512 = cap == nullptr, allow_avx2 = cap == nullptr || std::string(cap) == "avx2";
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
      allow_avx512) {
    return Isa::kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c") &&
      allow_avx2) {
    return Isa::kAvx2;
  }
#endif
  return Isa::kBaseline;
}

}  // namespace kvserve::cpu
