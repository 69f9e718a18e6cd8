// The widest instruction set the CPU kernels may use on this machine, detected once per process.
#pragma once

namespace kvserve::cpu {

// kAvx512: AVX-512 F/BW/VL/DQ + FMA + F16C; kAvx2: AVX2 + FMA + F16C; kBaseline: x86-64 (or any other CPU).
enum class Isa { kBaseline, kAvx2, kAvx512 };

// What the CPU supports, capped by KVSERVE_CPU_ISA=avx2|baseline so the tests can run every build on one
// machine.
Isa detect_isa();

}  // namespace kvserve::cpu
