"""The CPU attention kernels alone: one layer's attention of R requests over C tokens of context each, for
each KV cache type and thread count, timed in process (min and median wall time of repeated calls: the
kernels split their work across threads, so the calling thread's CPU time would not count the others').
Default shape: SmolLM2-135M's layer (9 query / 3 KV heads of 64), 16 requests x 256 tokens.

By default a decode step (one query token a request, the decode kernel). With --prefill each request is a
C-token prompt (the prefill kernel, causal), timed against torch's reference attention on the same cache,
with the kernel's rate in GFLOP/s of the causal half. With --layers N (decode) the call goes over N layers'
caches in turn, so that caches larger than L3 are read from DRAM, as a model's step reads them; the figures
are per layer, with the cache read's rate in GB/s.

    .venv/bin/python benchmarks/bench_cpu_attention.py [--requests 16] [--context 256] [--threads 1 2]
        [--kv-cache-dtype float32 float16 bfloat16] [--prefill | --layers N] [--json out.json]
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

from kvserve.ops import cpu_kernels, reference  # noqa: E402


def timed(call, repeats: int) -> list[float]:
    call()  # warm-up: the threads started, the cache's pages touched
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return times


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
    parser.add_argument("--prefill", action="store_true", help="C-token prompts instead of one decode token each")
    parser.add_argument("--layers", type=int, default=1, help="decode: layers' caches called in turn")
    parser.add_argument("--json", help="write the figures here too")
    args = parser.parse_args()
    torch.manual_seed(0)
    width = -(-args.context // args.block_size)
    num_blocks = args.requests * width
    tables = torch.randperm(num_blocks, dtype=torch.int32).view(args.requests, width)
    seq_lens = torch.full((args.requests,), args.context, dtype=torch.int32)
    rows = args.requests * args.context if args.prefill else args.requests
    query = torch.randn(rows, args.heads, args.head_dim)
    query_start_loc = torch.arange(args.requests + 1, dtype=torch.int32) * args.context
    cache32 = torch.randn(2, num_blocks, args.block_size, args.kv_heads, args.head_dim)
    scale = args.head_dim**-0.5
    causal_flop = 2 * args.requests * args.heads * args.context**2 * args.head_dim  # QKᵀ and PV, causal half
    results = []
    for dtype_name in args.kv_cache_dtype:
        cache = cache32.to(getattr(torch, dtype_name))
        attention_args = (query, cache, tables, seq_lens, query_start_loc, args.context, args.context, scale, 0)
        for threads in args.threads:
            torch.set_num_threads(threads)
            figures = {
                "kv_cache_dtype": dtype_name, "threads": threads, "requests": args.requests, "context": args.context,
            }  # fmt: skip
            if args.prefill:
                times = timed(lambda a=attention_args: cpu_kernels.paged_attention(*a), args.repeats)
                torch_times = timed(lambda a=attention_args: reference.paged_attention(*a), args.repeats)
                figures["torch_median_us"] = round(statistics.median(torch_times) * 1e6, 1)
                figures["gflops"] = round(causal_flop / statistics.median(times) / 1e9, 1)
                figures["speedup"] = round(statistics.median(torch_times) / statistics.median(times), 2)
            else:
                caches = [cache] + [cache.clone() for _ in range(args.layers - 1)]

                def step(caches=caches):
                    for c in caches:
                        cpu_kernels._decode(query, c, tables, seq_lens, scale, 0)

                times = [t / len(caches) for t in timed(step, max(3, args.repeats // len(caches)))]
                read = 2 * args.requests * args.context * args.kv_heads * args.head_dim * cache.element_size()
                figures["gb_per_s"] = round(read / statistics.median(times) / 1e9, 1)
            figures["min_us"] = round(min(times) * 1e6, 1)
            figures["median_us"] = round(statistics.median(times) * 1e6, 1)
            figures["load_avg_1m"] = os.getloadavg()[0]
            print(json.dumps(figures), flush=True)
            results.append(figures)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
