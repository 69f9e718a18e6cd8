"""Per-step cost of the C++ scheduler against the pure-Python reference on one synthetic serving trace.

Both schedulers replay the same trace with the same policy: requests with prompts of a few hundred tokens,
half of them sharing a long prefix, ~128 output tokens (ignore_eos, so lengths are fixed), at most
`--concurrency` running at once. A step is schedule() + update() with pre-drawn sampled tokens, timed from
Python, so the binding cost is included. Prints a table; `--json PATH` also writes the figures.

    python benchmarks/bench_scheduler.py [--num-requests 768] [--concurrency 256] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kvserve import _core

# The reference scheduler is a test oracle, kept with the tests rather than shipped in the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests import reference_scheduler as ref  # noqa: E402


@dataclass(frozen=True, slots=True)
class TraceRequest:
    request_id: str
    prompt: list[int]
    max_tokens: int


def make_trace(num_requests: int, seed: int, vocab: int = 32000) -> list[TraceRequest]:
    rng = np.random.default_rng(seed)
    shared_prefix = rng.integers(0, vocab, 256).tolist()
    trace = []
    for i in range(num_requests):
        suffix = rng.integers(0, vocab, int(rng.integers(64, 320))).tolist()
        prompt = shared_prefix + suffix if i % 2 == 0 else suffix + rng.integers(0, vocab, 128).tolist()
        trace.append(TraceRequest(f"req-{i}", prompt, int(rng.integers(96, 160))))
    return trace


def config_kwargs(args: argparse.Namespace) -> dict:
    return dict(
        num_blocks=args.num_blocks,
        block_size=args.block_size,
        max_num_seqs=args.concurrency,
        max_num_batched_tokens=args.max_num_batched_tokens,
        max_model_len=4096,
    )


def run_core(trace: list[TraceRequest], args: argparse.Namespace, sampled: np.ndarray) -> tuple[list, list]:
    scheduler = _core.Scheduler(_core.SchedulerConfig(**config_kwargs(args)))
    for r in trace:
        scheduler.add_request(r.request_id, r.prompt, _core.RequestParams(max_tokens=r.max_tokens, ignore_eos=True))
    step_ns, running = [], []
    clock = time.perf_counter_ns
    while scheduler.has_unfinished:
        t0 = clock()
        out = scheduler.schedule()
        num_samples = len(out.sample_handles)
        t1 = clock()
        tokens = sampled[:num_samples]
        t2 = clock()
        scheduler.update(tokens)
        t3 = clock()
        step_ns.append((t1 - t0) + (t3 - t2))
        running.append(out.num_reqs)
    return step_ns, running


def run_reference(trace: list[TraceRequest], args: argparse.Namespace, sampled: np.ndarray) -> tuple[list, list]:
    scheduler = ref.ReferenceScheduler(ref.SchedulerConfig(**config_kwargs(args)))
    for r in trace:
        scheduler.add_request(r.request_id, r.prompt, ref.RequestParams(max_tokens=r.max_tokens, ignore_eos=True))
    sampled_list = sampled.tolist()
    step_ns, running = [], []
    clock = time.perf_counter_ns
    while scheduler.requests:
        t0 = clock()
        out = scheduler.schedule()
        t1 = clock()
        tokens = sampled_list[: len(out.sample_handles)]
        t2 = clock()
        scheduler.update(tokens)
        t3 = clock()
        step_ns.append((t1 - t0) + (t3 - t2))
        running.append(len(out.req_handles))
    return step_ns, running


def summarize(step_ns: list[int], running: list[int], full: int) -> dict:
    at_full = [t for t, r in zip(step_ns, running) if r == full]
    return {
        "steps": len(step_ns),
        "median_us": statistics.median(step_ns) / 1e3,
        "median_us_at_full_batch": statistics.median(at_full) / 1e3 if at_full else None,
        "steps_at_full_batch": len(at_full),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-requests", type=int, default=768)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--block-size", type=int, default=16)
    parser.add_argument("--num-blocks", type=int, default=16384)
    parser.add_argument("--max-num-batched-tokens", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()

    trace = make_trace(args.num_requests, args.seed)
    sampled = np.random.default_rng(args.seed + 1).integers(0, 32000, args.concurrency).astype(np.int32)
    core = summarize(*run_core(trace, args, sampled), full=args.concurrency)
    reference = summarize(*run_reference(trace, args, sampled), full=args.concurrency)
    if core["steps"] != reference["steps"]:
        raise SystemExit(f"the two schedulers disagree: {core['steps']} vs {reference['steps']} steps")

    results = {
        "benchmark": "scheduler_step",
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "python": platform.python_version(),
        "args": vars(args),
        "cpp": core,
        "python_reference": reference,
        "speedup_median": reference["median_us"] / core["median_us"],
        "speedup_at_full_batch": (reference["median_us_at_full_batch"] or 0) / (core["median_us_at_full_batch"] or 1),
    }
    print(
        f"scheduler step (schedule + update), {args.num_requests} requests, {args.concurrency} concurrent, "
        f"block size {args.block_size}, {core['steps']} steps"
    )
    print(f"{'':<22}{'C++ core':>14}{'Python ref':>14}{'ratio':>10}")
    for key, label in [("median_us", "median us/step"), ("median_us_at_full_batch", f"median us @{args.concurrency}")]:
        c, r = core[key], reference[key]
        if c is not None and r is not None:
            print(f"{label:<22}{c:>14.1f}{r:>14.1f}{r / c:>9.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
