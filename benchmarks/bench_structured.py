"""Cost of structured-output masks: decode throughput of N streams, unconstrained vs each under a JSON schema.

Two measures, on the embedded SmolLM2-135M (real weights, 49,152-token vocabulary) unless --model says otherwise:

  engine   tokens/s of N concurrent requests decoding `--tokens` tokens each (EOS ignored, so both runs decode
           the same number), unconstrained and with every request under the JSON schema below; repeats
           alternate the two, medians reported
  mask     the constraint stage alone, per step: llguidance filling N masks in parallel
           (GrammarMatchers.fill) plus applying them to [N, V] logits, after a warm-up, median of the steps

    python benchmarks/bench_structured.py [--model DIR_OR_GGUF] [--streams 16] [--tokens 64] [--repeats 3]
                                          [--torch-threads N] [--json out.json]

--torch-threads 1 keeps torch off OpenMP: on an oversubscribed VM every parallel op can wait a scheduler
quantum at its barrier, which swamps what is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import time

import numpy as np

# An open-ended document (a list of records), so no stream finishes its grammar before --tokens.
SCHEMA = {
    "type": "array",
    "items": {
        "type": "object",
        "properties": {"name": {"type": "string"}, "score": {"type": "number"}, "tags": {"type": "array"}},
        "required": ["name", "score"],
    },
}


async def engine_throughput(model: str, streams: int, tokens: int, constrained: bool) -> float:
    from kvserve.config import EngineConfig
    from kvserve.engine import AsyncEngine
    from kvserve.request import EngineRequest
    from kvserve.sampling_params import SamplingParams
    from kvserve.structured.spec import GrammarSpec

    engine = await AsyncEngine.start(EngineConfig(model=model, kv_cache_memory=1 << 30, max_model_len=1024))
    spec = GrammarSpec.json_schema(SCHEMA) if constrained else None

    async def one(i: int) -> int:
        params = SamplingParams(max_tokens=tokens, ignore_eos=True, temperature=1.0, seed=i, structured=spec)
        count = 0
        async for output in engine.generate(EngineRequest(f"r{i}", "Here are the results as JSON:", sampling=params)):
            count += len(output.token_ids)
        return count

    try:
        await one(-1)  # warm-up: first forward, grammar compiled into the cache
        start = time.perf_counter()
        counts = await asyncio.gather(*(one(i) for i in range(streams)))
        return sum(counts) / (time.perf_counter() - start)
    finally:
        await engine.shutdown()


def mask_step_us(model: str, streams: int, steps: int) -> tuple[float, float]:
    """(fill, apply) median µs per step for `streams` matchers that follow random allowed tokens."""
    import torch

    from kvserve.engine.async_engine import grammar_compiler
    from kvserve.model.loader import resolve_model_dir
    from kvserve.model.model_config import ModelConfig
    from kvserve.model.token_bitmask import TokenBitmask, apply_token_bitmask
    from kvserve.structured.matchers import GrammarMatchers
    from kvserve.structured.spec import GrammarSpec
    from kvserve.tokenizer import Tokenizer

    model_dir = resolve_model_dir(model, None)
    model_config = ModelConfig.from_directory(model_dir)
    compiler = grammar_compiler(Tokenizer.from_directory(model_dir), model_config)
    matchers = GrammarMatchers(compiler, model_config.vocab_size)
    spec = GrammarSpec.json_schema(SCHEMA)
    for slot in range(streams):
        matchers.add(slot, spec)
    rng = np.random.default_rng(0)
    logits = torch.zeros(streams, model_config.vocab_size)
    rows = torch.arange(streams)
    slots = list(range(streams))
    fills, applies = [], []
    for _ in range(steps):
        start = time.perf_counter()
        words = matchers.fill(slots)
        fills.append(time.perf_counter() - start)
        start = time.perf_counter()
        apply_token_bitmask(logits, TokenBitmask(rows, torch.from_numpy(np.ascontiguousarray(words))))
        applies.append(time.perf_counter() - start)
        for slot, row in zip(slots, words):
            bits = np.unpackbits(row.view(np.uint8), bitorder="little")[: model_config.vocab_size]
            matchers.accept(slot, int(rng.choice(np.flatnonzero(bits))))
        logits.zero_()
    warm = slice(len(fills) // 5, None)
    return statistics.median(fills[warm]) * 1e6, statistics.median(applies[warm]) * 1e6


def main() -> None:
    from kvserve.cli import embedded_model_path

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model directory or .gguf (default: the embedded SmolLM2)")
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mask-steps", type=int, default=200)
    parser.add_argument("--torch-threads", type=int, help="torch's intra-op threads (default: torch's own)")
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    if args.torch_threads:
        import torch

        torch.set_num_threads(args.torch_threads)
    model = args.model or str(embedded_model_path())

    fill_us, apply_us = mask_step_us(model, args.streams, args.mask_steps)
    runs: dict[str, list[float]] = {"unconstrained": [], "json schema": []}
    for _ in range(args.repeats):
        for name in runs:
            runs[name].append(asyncio.run(engine_throughput(model, args.streams, args.tokens, name != "unconstrained")))
    free, masked = (statistics.median(runs[name]) for name in runs)
    result = {
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
        "model": model,
        "streams": args.streams,
        "torch_threads": args.torch_threads,
        "tokens_per_stream": args.tokens,
        "unconstrained_tok_s": free,
        "json_schema_tok_s": masked,
        "throughput_cost": 1.0 - masked / free,
        "mask_fill_us_per_step": fill_us,
        "mask_apply_us_per_step": apply_us,
        "runs": runs,
    }
    print(f"{args.streams} streams x {args.tokens} tokens, {args.repeats} repeats (median)")
    print("| run | tok/s |\n|---|---|")
    print(f"| unconstrained | {free:.1f} |\n| json schema | {masked:.1f} |")
    print(f"throughput cost: {100 * result['throughput_cost']:.1f}%")
    print(f"mask per step ({args.streams} rows): fill {fill_us:.0f} us, apply {apply_us:.0f} us")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
