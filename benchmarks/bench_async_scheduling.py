"""Decode throughput with async scheduling on and off (`--async-scheduling`), same model and requests.

With it on, the scheduler sends step N+1 while step N executes, so the scheduler's and the detokenizer's
host work overlap the forward pass. `--batch-sizes` concurrent requests with short prompts each decode
`--output-len` tokens greedily (EOS ignored); output tokens / wall time, median of `--repeats` runs per side,
alternating, each in a fresh process. Models: a small random Llama (host work is a large share of its step)
and the embedded SmolLM2-135M GGUF (`--no-smollm2` leaves it out). Prints a table; `--json PATH` writes it.

    python benchmarks/bench_async_scheduling.py [--batch-sizes 1 16] [--output-len 64] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path

from bench_throughput import Workload, build_random_llama, in_fresh_process, timed_greedy_runs


def decode(model: str, batch_size: int, output_len: int, async_scheduling: bool) -> float:
    """Output tokens per second of batch_size concurrent greedy requests."""
    from kvserve.config import EngineConfig

    config = EngineConfig(
        model=model, kv_cache_memory=1 << 30, enable_prefix_caching=False, async_scheduling=async_scheduling
    )
    prompts = [[10 + (i * 7 + j) % 500 for j in range(16)] for i in range(batch_size)]
    (seconds,) = timed_greedy_runs(config, [Workload("decode", prompts, [output_len] * batch_size)])
    return batch_size * output_len / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--output-len", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-smollm2", action="store_true", help="only the small random Llama")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {"random Llama h256 x4": str(in_fresh_process(build_random_llama, Path(tmp), 256, 4, 4096))}
        if not args.no_smollm2:
            from kvserve.cli import embedded_model_path

            models["SmolLM2-135M Q4_1 GGUF"] = str(embedded_model_path())
        for name, model in models.items():
            for batch_size in args.batch_sizes:
                runs = {True: [], False: []}
                for _ in range(args.repeats):
                    for on in (True, False):
                        runs[on].append(in_fresh_process(decode, model, batch_size, args.output_len, on))
                on_tok_s, off_tok_s = statistics.median(runs[True]), statistics.median(runs[False])
                results.append(
                    {
                        "model": name,
                        "batch_size": batch_size,
                        "async_tok_s": on_tok_s,
                        "sync_tok_s": off_tok_s,
                        "speedup": on_tok_s / off_tok_s,
                        "runs": {"async": runs[True], "sync": runs[False]},
                    }
                )

    print(f"decode throughput, {args.output_len} output tokens per request, median of {args.repeats} runs")
    print(f"{'model':<26}{'batch':>6}{'async tok/s':>13}{'sync tok/s':>12}{'speedup':>9}")
    for r in results:
        print(
            f"{r['model']:<26}{r['batch_size']:>6}{r['async_tok_s']:>13.1f}{r['sync_tok_s']:>12.1f}"
            f"{r['speedup']:>8.2f}x"
        )
    if args.json:
        payload = {
            "benchmark": "async_scheduling",
            "machine": platform.machine(),
            "args": vars(args),
            "results": results,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
