"""CPU matmuls at the default model's shapes: what torch has, and kvserve's stored-format kernels.

For each projection of SmolLM2-135M (hidden 576, intermediate 1536, vocab 49152; q|k|v and gate|up fused as
kvserve runs them) and each batch size M, the median time of y = x · Wᵀ with float32 activations:

- torch float32 `F.linear`; bf16 `F.linear` (oneDNN; activations cast to bf16, so not float32 math);
- torch `_weight_int8pack_mm` (int8 weights, a float32 scale per row) and `_weight_int4pack_mm_for_cpu`
  (4-bit, groups of 32, bf16 activations); neither reads GGUF blocks, they show what the format would cost;
- kvserve `quant_matmul` over Q4_1 / Q8_0 blocks, Q6_K where K is whole 256-value blocks, and f16 / bf16
  rows (decode-sized M), and the prefill path (dequantize W to float32 a panel at a time, torch's sgemm).

    .venv/bin/python benchmarks/bench_cpu_matmul.py [--threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, quants

from kvserve.ops import quant_kernels

SHAPES = {"qkv (576->960)": (960, 576), "gate_up (576->3072)": (3072, 576), "down (1536->576)": (576, 1536),
          "lm_head (576->49152)": (49152, 576)}  # fmt: skip
DECODE_M = (1, 4, 16)
PREFILL_M = (128, 512)


def _time(fn: Callable[[], object], budget_s: float = 0.3) -> float:
    fn()
    samples = []
    deadline = time.perf_counter() + budget_s
    while time.perf_counter() < deadline or len(samples) < 3:
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e3


def _gguf_weight(weight: torch.Tensor, qtype: GGMLQuantizationType) -> quant_kernels.StoredWeight:
    if qtype == GGMLQuantizationType.Q6_K:  # gguf-py cannot quantize K-quants: random quants, a finite scale
        n, k = weight.shape
        blocks = np.random.default_rng(0).integers(0, 256, (n, k // 256, 210), dtype=np.uint8)
        blocks[:, :, 208:] = np.array([0.01], dtype=np.float16).view(np.uint8)
        blocks = blocks.reshape(n, -1)
    else:
        blocks = quants.quantize(weight.numpy(), qtype)
    return quant_kernels.StoredWeight(torch.from_numpy(np.ascontiguousarray(blocks)), int(qtype), *weight.shape)


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
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = []
    for shape_name, (n, k) in SHAPES.items():
        weight = torch.randn(n, k) * 0.05
        for m in DECODE_M + PREFILL_M:
            for name, fn in _candidates(weight, m).items():
                if m in PREFILL_M and name.endswith("gemv"):
                    continue
                results.append({"shape": shape_name, "m": m, "impl": name, "ms": _time(fn)})
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


if __name__ == "__main__":
    main()
