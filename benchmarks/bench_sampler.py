"""The logits pipeline alone (metadata gather, logits stages, sampler) on random logits, per decode step.
(It replaces bench_sampling.py, which ran the same through a noop runner whose logits are all zero.)

An InputBatch holds N requests (SmolLM2's 49,152-token vocabulary by default); each step gathers their
sampling state (`InputBatch.step_sampling`) and runs `LogitsPipeline` on fresh float32 logits shaped like a
trained model's (a normal tail and a few tokens well ahead, so that a top-p 0.9 nucleus is a few dozen
tokens). Mixes, per row:

  greedy     temperature 0
  random     temperature 1, nothing else (what OpenAI's clients send by default)
  logprobs   greedy; a quarter of the rows ask for 5 logprobs
  top-k/p    temperature 0.8, top-k 50, top-p 0.9
  top-p      temperature 1.0, top-p 0.9 (no top-k: the partial selection's fallback case when flat)
  mixed      a quarter each: greedy; temperature + top-k/top-p/min-p; seeded temperature 1; penalties + bias

    python benchmarks/bench_sampler.py [--requests 256] [--vocab 49152] [--steps 30] [--json out.json]

The same script runs against another checkout of the package (e.g. the commit before a change) for the
"before" column: the API it uses (InputBatch, LogitsPipeline, SamplingParams) is the same.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

MIXES = ("greedy", "random", "logprobs", "top-k/p", "top-p", "mixed")


def row_params(mix: str, index: int):
    from kvserve.sampling_params import SamplingParams

    common = dict(max_tokens=4096, ignore_eos=True)
    if mix == "greedy":
        return SamplingParams(temperature=0.0, **common)
    if mix == "random":
        return SamplingParams(temperature=1.0, **common)
    if mix == "logprobs":
        return SamplingParams(temperature=0.0, logprobs=5 if index % 4 == 0 else None, **common)
    if mix == "top-k/p":
        return SamplingParams(temperature=0.8, top_k=50, top_p=0.9, **common)
    if mix == "top-p":
        return SamplingParams(temperature=1.0, top_p=0.9, **common)
    match index % 4:
        case 0:
            return SamplingParams(temperature=0.0, **common)
        case 1:
            return SamplingParams(temperature=0.8, top_k=50, top_p=0.9, min_p=0.05, **common)
        case 2:
            return SamplingParams(temperature=1.0, seed=index, **common)
        case _:
            return SamplingParams(
                repetition_penalty=1.1, frequency_penalty=0.5, logit_bias=((5, 1.0), (7, -1.0)), **common
            )


def model_like_logits(num_rows: int, vocab_size: int, rng: np.random.Generator):
    import torch

    logits = rng.standard_normal((num_rows, vocab_size), dtype=np.float32) * 2.0
    leaders = rng.integers(0, vocab_size, (num_rows, 20))
    np.put_along_axis(logits, leaders, np.take_along_axis(logits, leaders, 1) + 12.0, 1)
    return torch.from_numpy(logits)


def measure(mix: str, num_requests: int, vocab_size: int, steps: int) -> dict[str, float]:
    import torch

    from kvserve.model.input_batch import InputBatch
    from kvserve.model.logits_pipeline import LogitsPipeline
    from kvserve.request import EngineRequest, PreparedRequest

    batch = InputBatch(vocab_size, torch.device("cpu"))
    rng = np.random.default_rng(0)
    for i in range(num_requests):
        prompt = rng.integers(100, vocab_size, 64).tolist()
        params = row_params(mix, i)
        batch.add(i, PreparedRequest(EngineRequest(f"r{i}", prompt, sampling=params), prompt, 4096, (2,)))
    slots = np.arange(num_requests, dtype=np.int32)
    pipeline = LogitsPipeline()
    times, gathers = [], []
    for step in range(steps + 3):
        logits = model_like_logits(num_requests, vocab_size, rng)
        t0 = time.perf_counter_ns()
        step_sampling = batch.step_sampling(slots)
        gathered = time.perf_counter_ns()
        out = pipeline(logits, step_sampling)
        sampled = out.sampled_token_ids.to(torch.int32).numpy()
        if out.logprobs is not None:
            out.logprobs.to_numpy()
        t1 = time.perf_counter_ns()
        batch.record_sampled(slots, sampled)
        if step >= 3:
            times.append((t1 - t0) / 1e6)
            gathers.append((gathered - t0) / 1e6)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "metadata_ms": statistics.median(gathers)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=49152)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--mixes", default=",".join(MIXES))
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the runner's: --cpu-threads)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    rows = {mix: measure(mix, args.requests, args.vocab, args.steps) for mix in args.mixes.split(",")}
    print(f"logits pipeline per step, {args.requests} rows x {args.vocab} vocab, float32 (ms over {args.steps} steps)")
    print(f"{'mix':>10}{'median':>10}{'min':>10}{'metadata':>10}")
    for mix, r in rows.items():
        print(f"{mix:>10}{r['median_ms']:>10.2f}{r['min_ms']:>10.2f}{r['metadata_ms']:>10.3f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"benchmark": "sampler", "machine": platform.machine(), "args": vars(args), "results": rows}, indent=2
            )
        )


if __name__ == "__main__":
    main()
