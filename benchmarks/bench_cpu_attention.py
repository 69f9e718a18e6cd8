"""The CPU decode-attention kernel alone: one layer's attention of R requests over C tokens of context each,
for each KV cache type and thread count, timed in process (min and median wall time of repeated calls: the
kernel splits (request, KV head) pairs across threads, so the calling thread's CPU time would not count the
others'). Default shape: SmolLM2-135M's layer (9 query / 3 KV heads of 64), 16 requests x 256 tokens.

    .venv/bin/python benchmarks/bench_cpu_attention.py [--requests 16] [--context 256] [--threads 1 2]
        [--kv-cache-dtype float32 float16 bfloat16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from kvserve.openmp_waiting import configure_openmp_waiting  # noqa: E402

configure_openmp_waiting()  # as `kvserve serve` does, before torch loads

import torch  # noqa: E402

from kvserve.ops import cpu_kernels  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--context", type=int, default=256)
    parser.add_argument("--heads", type=int, default=9)
    parser.add_argument("--kv-heads", type=int, default=3)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--kv-cache-dtype", nargs="+", default=["float32", "float16", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    torch.manual_seed(0)
    width = -(-args.context // args.block_size)
    num_blocks = args.requests * width
    tables = torch.randperm(num_blocks, dtype=torch.int32).view(args.requests, width)
    seq_lens = torch.full((args.requests,), args.context, dtype=torch.int32)
    query = torch.randn(args.requests, args.heads, args.head_dim)
    cache32 = torch.randn(2, num_blocks, args.block_size, args.kv_heads, args.head_dim)
    scale = args.head_dim**-0.5
    results = []
    for dtype_name in args.kv_cache_dtype:
        cache = cache32.to(getattr(torch, dtype_name))
        for threads in args.threads:
            torch.set_num_threads(threads)
            times = []
            for _ in range(args.repeats):
                started = time.perf_counter()
                cpu_kernels._decode(query, cache, tables, seq_lens, scale, 0)
                times.append(time.perf_counter() - started)
            figures = {
                "kv_cache_dtype": dtype_name, "threads": threads, "requests": args.requests, "context": args.context,
                "min_us": round(min(times) * 1e6, 1), "median_us": round(statistics.median(times) * 1e6, 1),
                "load_avg_1m": os.getloadavg()[0],
            }  # fmt: skip
            print(json.dumps(figures), flush=True)
            results.append(figures)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
