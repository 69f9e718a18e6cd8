"""CPU matmuls at the default model's shapes: what torch has, and kvserve's stored-format kernels.

For each projection of SmolLM2-135M (hidden 576, intermediate 1536, vocab 49152; q|k|v and gate|up fused as
kvserve runs them) and each batch size M, the median time of y = x · Wᵀ with float32 activations:

- torch float32 `F.linear`; bf16 `F.linear` (oneDNN; activations cast to bf16, so not float32 math);
- torch `_weight_int8pack_mm` (int8 weights, a float32 scale per row) and `_weight_int4pack_mm_for_cpu`
  (4-bit, groups of 32, bf16 activations); neither reads GGUF blocks, they show what the format would cost;
- kvserve `quant_matmul` over Q4_1 / Q8_0 blocks, Q6_K where K is whole 256-value blocks, and f16 / bf16
  rows, and the path it replaced for prefill (dequantize W to float32 a panel at a time, torch's sgemm).

`--kernels` instead times kvserve's kernel alone over random blocks of every stored format (weights warm in
cache), at the default model's shapes and `--m` batch sizes, and prints GFLOP/s and bytes of W read per
second. Times are the minimum of repeats; with `--threads 1` they are the calling thread's CPU time (steady on a
shared machine), otherwise wall time.

    .venv/bin/python benchmarks/bench_cpu_matmul.py [--threads N] [--json out.json]
    .venv/bin/python benchmarks/bench_cpu_matmul.py --kernels [--threads N] [--m 1 8 16 64]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

from kvserve.ops import quant_kernels

SHAPES = {"qkv (576->960)": (960, 576), "gate_up (576->3072)": (3072, 576), "down (1536->576)": (576, 1536),
          "lm_head (576->49152)": (49152, 576)}  # fmt: skip
DECODE_M = (1, 4, 8, 16)
PREFILL_M = (32, 128, 512)
KERNEL_FORMATS = (GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1, GGMLQuantizationType.Q8_0,
                  GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q5_K, GGMLQuantizationType.Q6_K)  # fmt: skip
# Byte offsets of the f16 scales and minimums of each block format (random bytes there could be NaN).
_HALF_FIELDS = {GGMLQuantizationType.Q4_0: (0,), GGMLQuantizationType.Q4_1: (0, 2), GGMLQuantizationType.Q8_0: (0,),
                GGMLQuantizationType.Q4_K: (0, 2), GGMLQuantizationType.Q5_K: (0, 2),
                GGMLQuantizationType.Q6_K: (208,)}  # fmt: skip


def _time(fn: Callable[[], object], budget_s: float = 0.3) -> float:
    """Minimum of repeats in ms: the calling thread's CPU time when torch runs one thread, else wall time."""
    clock = time.thread_time if torch.get_num_threads() == 1 else time.perf_counter
    fn()
    samples = []
    deadline = time.perf_counter() + budget_s
    while time.perf_counter() < deadline or len(samples) < 5:
        start = clock()
        fn()
        samples.append(clock() - start)
    return min(samples) * 1e3


def _random_blocks(qtype: GGMLQuantizationType, n: int, k: int) -> quant_kernels.StoredWeight:
    """Random quants with finite f16 scales (gguf-py cannot quantize K-quants)."""
    values, size = GGML_QUANT_SIZES[qtype]
    blocks = np.random.default_rng(0).integers(0, 256, (n, k // values, size), dtype=np.uint8)
    for offset in _HALF_FIELDS[qtype]:
        blocks[:, :, offset : offset + 2] = np.array([0.01], dtype=np.float16).view(np.uint8)
    return quant_kernels.StoredWeight(torch.from_numpy(blocks.reshape(n, -1)), int(qtype), n, k)


def _gguf_weight(weight: torch.Tensor, qtype: GGMLQuantizationType) -> quant_kernels.StoredWeight:
    if qtype == GGMLQuantizationType.Q6_K:
        return _random_blocks(qtype, *weight.shape)
    blocks = quants.quantize(weight.numpy(), qtype)
    return quant_kernels.StoredWeight(torch.from_numpy(np.ascontiguousarray(blocks)), int(qtype), *weight.shape)


def kernel_rows(m_values: list[int]) -> list[dict]:
    """kvserve's kernel alone: every block format (K-quants where K is whole 256-value blocks), f16, bf16."""
    results = []
    for shape_name, (n, k) in SHAPES.items():
        weights = {q.name: _random_blocks(q, n, k) for q in KERNEL_FORMATS if k % GGML_QUANT_SIZES[q][0] == 0}
        for name, dtype in (("F16", torch.float16), ("BF16", torch.bfloat16)):
            weights[name] = quant_kernels.StoredWeight.from_half((torch.randn(n, k) * 0.05).to(dtype))
        for name, stored in weights.items():
            for m in m_values:
                x, out = torch.randn(m, k), torch.empty(m, n)
                ms = _time(lambda: quant_kernels.gemv_into(out, x, stored), budget_s=0.2)  # noqa: B023
                gflops, gbps = 2 * m * n * k / ms / 1e6, stored.data.numel() / ms / 1e6
                results.append({"shape": shape_name, "format": name, "m": m, "ms": ms, "gflops": gflops,
                                "weight_gbps": gbps})  # fmt: skip
    return results


def _candidates(weight: torch.Tensor, m: int) -> dict[str, Callable[[], object]]:
    n, k = weight.shape
    x = torch.randn(m, k)
    x_bf16 = x.to(torch.bfloat16)
    w_bf16 = weight.to(torch.bfloat16)
    scale = weight.abs().amax(dim=1) / 127
    w_int8 = torch.round(weight / scale[:, None]).to(torch.int8)
    groups = weight.reshape(n, k // 32, 32)
    lo, hi = groups.amin(-1), groups.amax(-1)
    step = ((hi - lo) / 15).clamp(min=1e-8)
    q4 = torch.round((groups - lo[..., None]) / step[..., None]).to(torch.int32).reshape(n, k)
    # int4pack's zero point is the value of the middle code (8), per group: [K/32, N, 2] of (scale, zero).
    scales_zeros = torch.stack([step, lo + 8 * step], dim=-1).transpose(0, 1).contiguous().to(torch.bfloat16)
    w_int4 = torch._convert_weight_to_int4pack_for_cpu(q4, 2)
    fns: dict[str, Callable[[], object]] = {
        "torch f32 linear": lambda: F.linear(x, weight),
        "torch bf16 linear": lambda: F.linear(x_bf16, w_bf16),
        "torch int8pack_mm": lambda: torch._weight_int8pack_mm(x, w_int8, scale),
        "torch int4pack_mm (bf16 act)": lambda: torch._weight_int4pack_mm_for_cpu(x_bf16, w_int4, 32, scales_zeros),
    }
    for name, qtype in (("Q4_1", GGMLQuantizationType.Q4_1), ("Q8_0", GGMLQuantizationType.Q8_0),
                        ("Q6_K", GGMLQuantizationType.Q6_K)):  # fmt: skip
        if k % GGML_QUANT_SIZES[qtype][0]:  # K-quants need rows of whole 256-value blocks
            continue
        stored = _gguf_weight(weight, qtype)
        fns[f"kvserve {name} gemv"] = lambda s=stored: quant_kernels.gemv(x, s)
        fns[f"kvserve {name} dequant+sgemm"] = lambda s=stored: quant_kernels.dequantize_matmul(x, s)
    for name, dtype in (("f16", torch.float16), ("bf16", torch.bfloat16)):
        stored = quant_kernels.StoredWeight.from_half(weight.to(dtype))
        fns[f"kvserve {name} gemv"] = lambda s=stored: quant_kernels.gemv(x, s)
        fns[f"kvserve {name} dequant+sgemm"] = lambda s=stored: quant_kernels.dequantize_matmul(x, s)
    return fns


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--json", default=None)
    parser.add_argument("--kernels", action="store_true", help="kvserve's kernel alone, every stored format")
    parser.add_argument("--m", type=int, nargs="+", default=[1, 8, 16, 64], help="batch sizes for --kernels")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.kernels:
        results = kernel_rows(args.m)
        print(f"threads={args.threads} isa={quant_kernels._kernels.quant_matmul_isa()}")
        print(f"{'shape':<22}{'format':<8}{'M':>5}{'ms':>10}{'GFLOP/s':>10}{'W GB/s':>9}")
        for r in results:
            print(
                f"{r['shape']:<22}{r['format']:<8}{r['m']:>5}{r['ms']:>10.3f}{r['gflops']:>10.1f}{r['weight_gbps']:>9.1f}"
            )
    else:
        results = compare_rows()
        print(f"threads={args.threads}")
        header = f"{'shape':<22}{'impl':<32}" + "".join(f"{'M=' + str(m):>10}" for m in DECODE_M + PREFILL_M)
        print(header)
        for shape_name in SHAPES:
            impls = dict.fromkeys(r["impl"] for r in results if r["shape"] == shape_name)
            for impl in impls:
                cells = {r["m"]: r["ms"] for r in results if r["shape"] == shape_name and r["impl"] == impl}
                row = "".join(f"{cells[m]:>10.3f}" if m in cells else f"{'-':>10}" for m in DECODE_M + PREFILL_M)
                print(f"{shape_name:<22}{impl:<32}{row}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"threads": args.threads, "results": results}, f, indent=1)


def compare_rows() -> list[dict]:
    """Every candidate at every shape and M (kvserve's kernel named `gemv` at every M)."""
    results = []
    for shape_name, (n, k) in SHAPES.items():
        weight = torch.randn(n, k) * 0.05
        for m in DECODE_M + PREFILL_M:
            for name, fn in _candidates(weight, m).items():
                results.append({"shape": shape_name, "m": m, "impl": name, "ms": _time(fn)})
    return results


if __name__ == "__main__":
    main()
