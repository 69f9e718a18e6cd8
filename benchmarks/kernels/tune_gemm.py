"""Tunes the CUTLASS GEMMs: times every compiled tile configuration on a model's linear-layer shapes (or given
M, N, K) and writes the fastest per shape to the table kvserve.ops.gemm_dispatch reads.

Each configuration is timed with CUDA events (median of repeats after warm-up, bench_kernels.median_ms) on
inputs rotated among enough copies to exceed twice the L2, so weights come from device memory as in serving.
The printed table compares the best configuration with torch.matmul (cuBLAS) in bf16 and, for fp8, with
torch._scaled_mm (cuBLASLt, per-token and per-channel scales). Targets (issue 16, Llama-3-8B shapes on an
H100/H200): bf16 >= 90% of cuBLAS at M = 1, 16, 256, 4096; fp8 >= 1.6x bf16 cuBLAS at M = 4096.

    python benchmarks/kernels/tune_gemm.py --model llama-3-8b --m 1 16 256 4096 --kinds bf16 fp8
    python benchmarks/kernels/tune_gemm.py --shapes 4096,6144,4096 --kinds fp8 --table OUT.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import torch
from bench_kernels import median_ms

from kvserve.ops import cuda_gemm, gemm_dispatch, gemm_reference

# Llama-3-8B: hidden 4096, intermediate 14336, 32 query and 8 key/value heads of 128.
MODELS = {"llama-3-8b": dict(hidden_size=4096, intermediate_size=14336, num_attention_heads=32,
                             num_key_value_heads=8, head_dim=128)}  # fmt: skip
KINDS = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp8": torch.float8_e4m3fn, "int8": torch.int8}
OUT_DTYPE = {torch.float16: torch.float16}  # every other operand type writes bf16


def linear_shapes(config: dict) -> list[tuple[str, int, int]]:
    """(name, N, K) of the fused projections of a Llama-family layer."""
    h, inter = config["hidden_size"], config["intermediate_size"]
    d = config.get("head_dim") or h // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * d, config["num_key_value_heads"] * d
    return [("qkv_proj", q + 2 * kv, h), ("o_proj", h, q), ("gate_up_proj", 2 * inter, h), ("down_proj", h, inter)]


def operands(kind: torch.dtype, m: int, n: int, k: int, copies: int):
    """`copies` independent (a, b, a_scale, b_scale) sets; the scales are None for 16-bit kinds."""
    sets = []
    for _ in range(copies):
        a, b = torch.randn(m, k, device="cuda"), torch.randn(n, k, device="cuda") / k**0.5
        if kind in gemm_reference.QUANT_DTYPES:
            (qa, sa), (qb, sb) = gemm_reference.dynamic_quantize(a, kind), gemm_reference.dynamic_quantize(b, kind)
            sets.append((qa, qb, sa, sb))
        else:
            sets.append((a.to(kind), b.to(kind), None, None))
    return sets


def rotating(calls: list[Callable[[], object]]) -> Callable[[], object]:
    counter = itertools.count()
    return lambda: calls[next(counter) % len(calls)]()


def time_kind(kind: torch.dtype, m: int, n: int, k: int, repeats: int) -> dict:
    out_dtype = OUT_DTYPE.get(kind, torch.bfloat16)
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    copies = max(1, min(8, -(-2 * l2 // (n * k * torch.tensor([], dtype=kind).element_size()))))
    sets = operands(kind, m, n, k, copies)
    quantized = kind in gemm_reference.QUANT_DTYPES
    times = {}
    for config in cuda_gemm.available_configs(kind, out_dtype, torch.cuda.current_device()):
        if quantized:
            calls = [lambda s=s, c=config: cuda_gemm.scaled_mm_with_config(*s, out_dtype, None, c) for s in sets]
        else:
            calls = [lambda s=s, c=config: cuda_gemm.gemm_with_config(s[0], s[1], None, c) for s in sets]
        times[config] = median_ms(rotating(calls), repeats)
    bf16 = operands(torch.bfloat16, m, n, k, copies)
    baselines = {"cublas_bf16_ms": median_ms(rotating([lambda s=s: s[0] @ s[1].T for s in bf16]), repeats)}
    if kind == torch.float8_e4m3fn:
        calls = [
            lambda a=a, b=b, sa=sa, sb=sb: torch._scaled_mm(
                a, b.T, sa.view(-1, 1), sb.view(1, -1), out_dtype=torch.bfloat16, use_fast_accum=True
            )
            for a, b, sa, sb in sets
        ]
        try:
            baselines["scaled_mm_ms"] = median_ms(rotating(calls), repeats)
        except RuntimeError as e:  # no row-wise scaling on this card or torch build
            baselines["scaled_mm_error"] = str(e).splitlines()[0]
    best = min(times, key=times.get)
    return dict(m=m, n=n, k=k, kind=gemm_dispatch.kind_key(kind, out_dtype), best=best, best_ms=times[best],
                tflops=2 * m * n * k / (times[best] * 1e-3) / 1e12, configs_ms=times, **baselines)  # fmt: skip


def write_table(path: Path, rows: list[dict]) -> None:
    """Merges the best configuration per (kind, N x K, M) into the table at `path`."""
    table = json.loads(path.read_text()) if path.is_file() else {}
    table.update(device=torch.cuda.get_device_name(), sm=cuda_gemm.device_sm(torch.cuda.current_device()))
    kinds = table.setdefault("kinds", {})
    for r in rows:
        kinds.setdefault(r["kind"], {}).setdefault(gemm_dispatch.shape_key(r["n"], r["k"]), {})[str(r["m"])] = r["best"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="llama-3-8b", help=f"{', '.join(MODELS)} or a config.json")
    parser.add_argument("--m", type=int, nargs="+", default=[1, 16, 256, 4096], help="token counts")
    parser.add_argument("--shapes", nargs="+", help="M,N,K triples instead of --model x --m")
    parser.add_argument("--kinds", nargs="+", default=["bf16", "fp8"], choices=sorted(KINDS))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--table", type=Path, help="the dispatch table to update (default: the device's)")
    parser.add_argument("--json", type=Path, help="write every timing here")
    args = parser.parse_args()
    if not (torch.cuda.is_available() and hasattr(cuda_gemm, "available_configs")):
        raise SystemExit("needs a CUDA device and kvserve._kernels")
    if args.shapes:
        problems = [("shape", *map(int, s.split(","))) for s in args.shapes]
    else:
        config = MODELS.get(args.model) or json.loads(Path(args.model).read_text())
        problems = [(name, m, n, k) for m in args.m for name, n, k in linear_shapes(config)]
    torch.manual_seed(0)
    rows = []
    for kind_name in args.kinds:
        for name, m, n, k in problems:
            rows.append(dict(layer=name, **time_kind(KINDS[kind_name], m, n, k, args.repeats)))
            torch.cuda.empty_cache()
    table = args.table or gemm_dispatch.table_file(torch.cuda.get_device_name())
    write_table(table, rows)
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    print(f"{torch.cuda.get_device_name()}, {date}, torch {torch.__version__}; table: {table}")
    print(f"{'kind':24} {'layer':12} {'M':>5} {'N':>6} {'K':>6} {'best configuration':32} {'ms':>8} {'TFLOP/s':>8} "
          f"{'cuBLAS bf16':>11} {'vs bf16':>8} {'_scaled_mm':>10}")  # fmt: skip
    for r in rows:
        scaled = f"{r['scaled_mm_ms']:10.4f}" if "scaled_mm_ms" in r else f"{'-':>10}"
        print(
            f"{r['kind']:24} {r['layer']:12} {r['m']:5} {r['n']:6} {r['k']:6} {r['best']:32} {r['best_ms']:8.4f} "
            f"{r['tflops']:8.1f} {r['cublas_bf16_ms']:11.4f} {r['cublas_bf16_ms'] / r['best_ms']:7.2f}x {scaled}"
        )
    if args.json:
        args.json.write_text(json.dumps(dict(device=torch.cuda.get_device_name(), date=date, rows=rows), indent=1))


if __name__ == "__main__":
    main()
