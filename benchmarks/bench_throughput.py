"""Offline throughput: kvserve's engine against transformers' generate, same model, prompts and lengths.

A batch of `--batch-size` requests runs through each, on this machine's CPU, each side in a fresh process
(torch's OpenMP threads left over from one run would slow the other). Two workloads:

  uniform  every prompt has `--input-len` tokens and asks for exactly `--output-len` tokens
  mixed    prompt lengths drawn in [input-len/2, 3*input-len/2], output lengths in [output-len/2,
           3*output-len/2]: what a server sees. transformers pads the prompts (left) and generates the
           batch's longest output for every row, as its batch generate must; kvserve runs each request
           to its own length. Both are credited only with the requested tokens.

Throughput = (prompt + requested output tokens) / wall time; EOS is ignored. Each side runs `--repeats`
times (alternating) and reports its median, since a shared VM's timings spread by 20% or more. Prints a
table; `--json PATH` writes the figures.

    python benchmarks/bench_throughput.py                      # a random-weight Llama built on the fly
    python benchmarks/bench_throughput.py --model DIR         # any supported HF model directory
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class Workload:
    name: str
    prompts: list[list[int]]
    output_lens: list[int]

    @property
    def requested_tokens(self) -> int:
        return sum(map(len, self.prompts)) + sum(self.output_lens)


def make_workloads(args: argparse.Namespace, vocab: int) -> list[Workload]:
    rng = np.random.default_rng(args.seed)
    n, i, o = args.batch_size, args.input_len, args.output_len
    uniform = Workload("uniform", rng.integers(0, vocab, (n, i)).tolist(), [o] * n)
    prompt_lens = rng.integers(i // 2, 3 * i // 2 + 1, n)
    mixed = Workload(
        "mixed",
        [rng.integers(0, vocab, int(length)).tolist() for length in prompt_lens],
        rng.integers(o // 2, 3 * o // 2 + 1, n).tolist(),
    )
    return [w for w in (uniform, mixed) if args.workload in (w.name, "both")]


def build_random_llama(directory: Path, hidden: int, layers: int, vocab: int) -> Path:
    """A random-weight Llama (test-time reference library only: transformers)."""
    import torch
    import transformers

    config = transformers.LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=hidden * 8 // 3 // 64 * 64 or 64,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        num_key_value_heads=max(1, hidden // 128),
        max_position_embeddings=2048,
        initializer_range=0.1,
    )
    torch.manual_seed(0)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(directory)
    _write_placeholder_tokenizer(directory, vocab)
    return directory


def _write_placeholder_tokenizer(directory: Path, vocab: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE(vocab={f"t{i}": i for i in range(vocab)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.BPEDecoder()
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"eos_token": None}))


def run_kvserve(model: Path, workload: Workload, args: argparse.Namespace) -> float:
    from kvserve.config import EngineConfig

    config = EngineConfig(
        model=str(model),
        dtype=args.dtype,
        kv_cache_memory=args.kv_cache_gib << 30,
        max_num_batched_tokens=args.max_num_batched_tokens,
        enable_prefix_caching=False,
    )
    return timed_greedy_run(config, workload.prompts, workload.output_lens)


def timed_greedy_run(config, prompts: list[list[int]], output_lens: list[int]) -> float:
    """Seconds for an engine with `config` to run every prompt at once, greedily, to exactly its output length
    (after a short warm-up request)."""
    from kvserve.engine import AsyncEngine
    from kvserve.request import EngineRequest
    from kvserve.sampling_params import SamplingParams

    async def consume(engine: AsyncEngine, prompt: list[int], max_tokens: int, request_id: str) -> int:
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        count = 0
        async for output in engine.generate(EngineRequest(request_id, prompt, sampling=params)):
            count += len(output.token_ids)
        return count

    async def main() -> float:
        engine = await AsyncEngine.start(config)
        try:
            await consume(engine, prompts[0][:8], 8, "warmup")
            start = time.perf_counter()
            counts = await asyncio.gather(
                *(consume(engine, p, n, f"r{i}") for i, (p, n) in enumerate(zip(prompts, output_lens)))
            )
            elapsed = time.perf_counter() - start
            assert counts == output_lens, counts
            return elapsed
        finally:
            await engine.shutdown()

    return asyncio.run(main())


def run_transformers(model: Path, workload: Workload, args: argparse.Namespace) -> float:
    import torch
    import transformers

    dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    hf = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=dtype).eval()
    hf.generation_config.eos_token_id = None
    width = max(map(len, workload.prompts))
    input_ids = torch.zeros(len(workload.prompts), width, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row, prompt in enumerate(workload.prompts):  # left padding, as decoder-only batch generation needs
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt)
        attention_mask[row, width - len(prompt) :] = 1
    longest = max(workload.output_lens)
    generation = transformers.GenerationConfig(
        do_sample=False, max_new_tokens=longest, min_new_tokens=longest, eos_token_id=None, pad_token_id=0
    )
    with torch.inference_mode():
        warmup = transformers.GenerationConfig(max_new_tokens=2, pad_token_id=0)
        hf.generate(input_ids[:1, -8:], generation_config=warmup)
        start = time.perf_counter()
        out = hf.generate(input_ids, attention_mask=attention_mask, generation_config=generation)
        elapsed = time.perf_counter() - start
    assert out.shape == (len(workload.prompts), width + longest)
    return elapsed


def in_fresh_process(fn, *args):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model directory (default: build a random Llama)")
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--num-layers", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--workload", default="both", choices=["uniform", "mixed", "both"])
    parser.add_argument("--dtype", default="float32", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--kv-cache-gib", type=int, default=2)
    parser.add_argument("--max-num-batched-tokens", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or in_fresh_process(
            build_random_llama, Path(tmp), args.hidden_size, args.num_layers, args.vocab_size
        )
        vocab = json.loads((model / "config.json").read_text())["vocab_size"]
        for workload in make_workloads(args, vocab):
            runs = [
                (
                    in_fresh_process(run_kvserve, model, workload, args),
                    in_fresh_process(run_transformers, model, workload, args),
                )
                for _ in range(args.repeats)
            ]
            kvserve_s = statistics.median(k for k, _ in runs)
            hf_s = statistics.median(h for _, h in runs)
            results.append(
                {
                    "workload": workload.name,
                    "requested_tokens": workload.requested_tokens,
                    "kvserve_s": kvserve_s,
                    "transformers_s": hf_s,
                    "kvserve_tok_s": workload.requested_tokens / kvserve_s,
                    "transformers_tok_s": workload.requested_tokens / hf_s,
                    "ratio": hf_s / kvserve_s,
                }
            )

    print(
        f"offline throughput, batch {args.batch_size}, ~{args.input_len} in / ~{args.output_len} out, {args.dtype}, "
        f"model {args.model or f'random Llama h{args.hidden_size} x{args.num_layers}'}"
    )
    print(f"{'workload':<10}{'kvserve s':>11}{'hf s':>9}{'kvserve tok/s':>15}{'hf tok/s':>11}{'ratio':>8}")
    for r in results:
        print(
            f"{r['workload']:<10}{r['kvserve_s']:>11.2f}{r['transformers_s']:>9.2f}"
            f"{r['kvserve_tok_s']:>15.1f}{r['transformers_tok_s']:>11.1f}{r['ratio']:>7.2f}x"
        )
    if args.json:
        payload = {
            "benchmark": "offline_throughput",
            "machine": platform.machine(),
            "args": {**vars(args), "model": str(args.model)},
            "results": results,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
