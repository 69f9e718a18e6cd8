"""Runner-only timing of a decode step's sampling: the persistent batch's gather and the logits pipeline.

A ModelRunner with `--load-format noop` (zero logits of the model's vocabulary) holds N decoding requests;
each step is an ExecuteBatch built by hand (no scheduler, no actors). Reported per step, median:

  metadata   InputBatch.step_sampling: the gather of the step's sampling state by sample slot
  sample     ModelRunner.sample: logits, metadata, logits stages, sampler, recording the sampled tokens

for two mixes: all greedy, and mixed (a quarter each: greedy; temperature with top-k/top-p/min-p; seeded;
penalties with logit bias).

    python benchmarks/bench_sampling.py [--model DIR_OR_GGUF] [--requests 256] [--steps 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

MIXES = ("greedy", "mixed")


def mixed_params(index: int):
    from kvserve.sampling_params import SamplingParams

    match index % 4:
        case 0:
            return SamplingParams(max_tokens=4096, temperature=0.0, ignore_eos=True)
        case 1:
            return SamplingParams(max_tokens=4096, temperature=0.8, top_k=50, top_p=0.9, min_p=0.05, ignore_eos=True)
        case 2:
            return SamplingParams(max_tokens=4096, temperature=1.0, seed=index, ignore_eos=True)
        case _:
            return SamplingParams(
                max_tokens=4096,
                repetition_penalty=1.1,
                frequency_penalty=0.5,
                logit_bias=((5, 1.0), (7, -1.0)),
                ignore_eos=True,
            )


def decode_batch(step: int, num_requests: int, seq_len: int, new_requests: tuple):
    from kvserve.messages import ExecuteBatch

    rows = np.arange(num_requests)
    i32, i64 = np.int32, np.int64
    empty_i32, empty_i64 = np.empty(0, i32), np.empty(0, i64)
    return ExecuteBatch(
        step=step,
        req_handles=rows.astype(i64),
        req_slots=rows.astype(i32),
        input_ids=np.full(num_requests, 100, i32),
        positions=np.full(num_requests, seq_len - 1, i32),
        slot_mapping=rows.astype(i64),
        block_tables=rows.astype(i32)[:, None],
        query_start_loc=np.arange(num_requests + 1, dtype=i32),
        seq_lens=np.full(num_requests, seq_len, i32),
        logits_indices=rows.astype(i32),
        sample_handles=rows.astype(i64),
        sample_slots=rows.astype(i32),
        pool_handles=empty_i64,
        pool_req_indices=empty_i32,
        pool_slots=empty_i32,
        encoder_handles=empty_i64,
        encoder_req_indices=empty_i32,
        cross_block_tables=np.zeros((num_requests, 0), i32),
        cross_seq_lens=np.zeros(num_requests, i32),
        cross_slot_mapping=empty_i64,
        max_query_len=1,
        max_seq_len=seq_len,
        new_requests=new_requests,
        finished_slots=(),
    )


def measure(model: str, mix: str, num_requests: int, steps: int) -> dict[str, float]:
    from kvserve.config import EngineConfig
    from kvserve.messages import NewRequest
    from kvserve.model.loader import resolve_model_dir
    from kvserve.model.model_config import ModelConfig
    from kvserve.model.runner import ModelRunner
    from kvserve.request import EngineRequest, PreparedRequest

    config = EngineConfig(model=model, load_format="noop", kv_cache_memory=1 << 30, device="cpu")
    model_dir = resolve_model_dir(model)
    runner = ModelRunner(config, ModelConfig.from_directory(model_dir), model_dir)
    rng = np.random.default_rng(0)
    new = []
    for i in range(num_requests):
        params = mixed_params(i) if mix == "mixed" else mixed_params(0)
        prompt = rng.integers(100, 20000, 64).tolist()
        prepared = PreparedRequest(EngineRequest(f"r{i}", prompt, sampling=params), prompt, 4096, (2,))
        new.append(NewRequest(i, i, prepared))
    runner.apply_request_changes(decode_batch(0, num_requests, 65, tuple(new)))

    times: dict[str, list[float]] = {"metadata": [], "sample": []}
    clock = time.perf_counter_ns
    for step in range(1, steps + 6):
        batch = decode_batch(step, num_requests, 65 + step, ())
        hidden = runner.forward(runner.prepare_inputs(batch))
        t0 = clock()
        runner.input_batch.step_sampling(batch.sample_slots)
        t1 = clock()
        runner.sample(batch, hidden)
        t2 = clock()
        if step > 5:  # warm-up steps are not counted
            times["metadata"].append((t1 - t0) / 1e3)
            times["sample"].append((t2 - t1) / 1e3)
    return {phase: statistics.median(values) for phase, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory or .gguf (default: the embedded SmolLM2)")
    parser.add_argument("--requests", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    if args.model is None:
        from kvserve.cli import embedded_model_path

        args.model = str(embedded_model_path())

    import torch

    torch.set_num_threads(1)  # steadier figures on a shared machine; the comparison is what matters
    rows = {mix: measure(args.model, mix, args.requests, args.steps) for mix in MIXES}
    print(f"sampling per decode step at {args.requests} requests (us, median of {args.steps} steps), noop model")
    print(f"{'mix':>8}{'metadata':>10}{'sample':>10}")
    for mix, r in rows.items():
        print(f"{mix:>8}{r['metadata']:>10.1f}{r['sample']:>10.1f}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"benchmark": "sampling", "machine": platform.machine(), "args": vars(args), "results": rows}, indent=2
            )
        )


if __name__ == "__main__":
    main()
