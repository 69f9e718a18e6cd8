"""float32 projections on CPU: oneDNN's kernel against kvserve's blocked kernel on the same packed weights.

oneDNN packs a float32 linear weight in blocks of 64 output columns; kvserve multiplies it in place with
csrc/cpu/blocked_matmul.cpp (kvserve.model.quantization.packed_weights). For each shape of a Llama layer (q|k|v,
o, gate|up, down fused as kvserve runs them, and the LM head) and each batch size M, the median GFLOP/s of
both, with the weight hot (one copy, called again and again) and cold (`--copies` copies called in turn, so a
layer's weights larger than the caches stream from DRAM, as in a decode step). Default shapes: bench_throughput's
float32 Llama (hidden 512, intermediate 1344, 8/4 heads of 64, vocabulary 8192).

    .venv/bin/python benchmarks/bench_cpu_blocked_matmul.py [--m 1 8 32 64 2048] [--copies 12] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from kvserve.model.quantization import packed_weights


def shapes(hidden: int, intermediate: int, heads: int, kv_heads: int, head_dim: int, vocab: int) -> dict:
    q, kv = heads * head_dim, kv_heads * head_dim
    return {
        "q|k|v": (q + 2 * kv, hidden),
        "o": (hidden, q),
        "gate|up": (2 * intermediate, hidden),
        "down": (hidden, intermediate),
        "lm_head": (vocab, hidden),
    }


def median_seconds(call, weights: list, calls: int) -> float:
    for w in weights:
        call(w)
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        for w in weights:
            call(w)
        times.append((time.perf_counter() - started) / len(weights))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", type=int, nargs="+", default=[1, 8, 32, 64, 2048])
    parser.add_argument("--copies", type=int, default=12, help="weights called in turn for the cold figures")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--intermediate", type=int, default=1344)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=8192)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    torch.manual_seed(0)
    layer = shapes(args.hidden, args.intermediate, args.heads, args.kv_heads, args.head_dim, args.vocab)
    print(f"GFLOP/s, {torch.get_num_threads()} threads; cold = {args.copies} copies in turn")
    print(f"{'M':>5} {'shape':<9}{'N x K':>12}{'oneDNN hot':>12}{'ours hot':>10}{'oneDNN cold':>13}{'ours cold':>11}")
    rows = []
    for m in args.m:
        for name, (n, k) in layer.items():
            x = torch.randn(m, k)
            figures = {"m": m, "shape": name, "n": n, "k": k}
            for label, copies in (("hot", 1), ("cold", args.copies)):
                weights = [packed_weights.packed_parameter(torch.randn(n, k)) for _ in range(copies)]
                if any(w.blocked is None for w in weights):
                    raise SystemExit(f"oneDNN did not leave the {n} x {k} weight in the blocked layout here")
                calls = max(3, 64 // copies * 32 // max(m, 32))

                def onednn(w, x=x):
                    return torch.ops.mkldnn._linear_pointwise(x, w, None, "none", [], "")

                def ours(w, x=x):
                    return packed_weights.linear(x, w)

                for kernel, call in (("onednn", onednn), ("ours", ours)):
                    seconds = median_seconds(call, weights, calls)
                    figures[f"{kernel}_{label}_gflops"] = round(2 * m * n * k / seconds / 1e9, 1)
            rows.append(figures)
            print(
                f"{m:>5} {name:<9}{f'{n} x {k}':>12}{figures['onednn_hot_gflops']:>12}{figures['ours_hot_gflops']:>10}"
                f"{figures['onednn_cold_gflops']:>13}{figures['ours_cold_gflops']:>11}",
                flush=True,
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
