"""Offline throughput: kvserve's engine against transformers' generate, same model, prompts and lengths.

Both run a batch of `--batch-size` random prompts of `--input-len` tokens and generate exactly
`--output-len` tokens each (EOS ignored) on this machine's CPU, one after the other in one run.
Throughput = (prompt + output tokens) / wall time. Prints a table; `--json PATH` writes the figures.

    python benchmarks/bench_throughput.py                      # a random-weight Llama built on the fly
    python benchmarks/bench_throughput.py --model DIR         # any supported HF model directory
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import tempfile
import time
from pathlib import Path

import torch


def build_random_llama(directory: Path, hidden: int, layers: int, vocab: int) -> Path:
    """A random-weight Llama (test-time reference library only: transformers)."""
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
    _write_byte_tokenizer(directory, vocab)
    return directory


def _write_byte_tokenizer(directory: Path, vocab: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE(vocab={f"t{i}": i for i in range(vocab)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.BPEDecoder()
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"eos_token": None}))


def run_kvserve(model: Path, prompts: list[list[int]], output_len: int, args: argparse.Namespace) -> float:
    from kvserve.config import EngineConfig
    from kvserve.engine import AsyncEngine
    from kvserve.sampling_params import SamplingParams

    config = EngineConfig(
        model=str(model),
        dtype=args.dtype,
        kv_cache_memory=args.kv_cache_gib << 30,
        max_num_batched_tokens=args.max_num_batched_tokens,
        enable_prefix_caching=False,
    )
    params = SamplingParams(max_tokens=output_len, temperature=0.0, ignore_eos=True)

    async def consume(engine: AsyncEngine, prompt: list[int], request_id: str) -> int:
        count = 0
        async for output in engine.generate(prompt, params, request_id):
            count += len(output.token_ids)
        return count

    async def main() -> float:
        engine = await AsyncEngine.start(config)
        try:
            await consume(engine, prompts[0][:8], "warmup")
            start = time.perf_counter()
            counts = await asyncio.gather(*(consume(engine, p, f"r{i}") for i, p in enumerate(prompts)))
            elapsed = time.perf_counter() - start
            assert all(c == output_len for c in counts), counts
            return elapsed
        finally:
            await engine.shutdown()

    return asyncio.run(main())


def run_transformers(model: Path, prompts: list[list[int]], output_len: int, args: argparse.Namespace) -> float:
    import transformers

    dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    hf = transformers.AutoModelForCausalLM.from_pretrained(model, dtype=dtype).eval()
    hf.generation_config.eos_token_id = None
    generation = transformers.GenerationConfig(
        do_sample=False, max_new_tokens=output_len, min_new_tokens=output_len, eos_token_id=None, pad_token_id=0
    )
    input_ids = torch.tensor(prompts)
    with torch.inference_mode():
        hf.generate(
            input_ids[:1, :8], generation_config=transformers.GenerationConfig(max_new_tokens=2, pad_token_id=0)
        )
        start = time.perf_counter()
        out = hf.generate(input_ids, attention_mask=torch.ones_like(input_ids), generation_config=generation)
        elapsed = time.perf_counter() - start
    assert out.shape == (len(prompts), input_ids.shape[1] + output_len)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model directory (default: build a random Llama)")
    parser.add_argument("--hidden-size", type=int, default=512)
    parser.add_argument("--num-layers", type=int, default=8)
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--dtype", default="float32", choices=["auto", "float32", "bfloat16"])
    parser.add_argument("--kv-cache-gib", type=int, default=2)
    parser.add_argument("--max-num-batched-tokens", type=int, default=2048)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or build_random_llama(Path(tmp), args.hidden_size, args.num_layers, args.vocab_size)
        generator = torch.Generator().manual_seed(args.seed)
        vocab = json.loads((model / "config.json").read_text())["vocab_size"]
        prompts = torch.randint(0, vocab, (args.batch_size, args.input_len), generator=generator).tolist()
        kvserve_s = run_kvserve(model, prompts, args.output_len, args)
        hf_s = run_transformers(model, prompts, args.output_len, args)

    total_tokens = args.batch_size * (args.input_len + args.output_len)
    output_tokens = args.batch_size * args.output_len
    rows = {
        "kvserve": {
            "seconds": kvserve_s,
            "tokens_per_s": total_tokens / kvserve_s,
            "output_tokens_per_s": output_tokens / kvserve_s,
        },
        "transformers": {
            "seconds": hf_s,
            "tokens_per_s": total_tokens / hf_s,
            "output_tokens_per_s": output_tokens / hf_s,
        },
    }
    print(
        f"offline throughput, batch {args.batch_size}, {args.input_len} in / {args.output_len} out, {args.dtype}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'':<14}{'seconds':>10}{'total tok/s':>14}{'output tok/s':>14}")
    for name, row in rows.items():
        print(f"{name:<14}{row['seconds']:>10.2f}{row['tokens_per_s']:>14.1f}{row['output_tokens_per_s']:>14.1f}")
    ratio = rows["kvserve"]["tokens_per_s"] / rows["transformers"]["tokens_per_s"]
    print(f"kvserve / transformers: {ratio:.2f}x")
    if args.json:
        result = {
            "benchmark": "offline_throughput",
            "machine": platform.machine(),
            "args": {**vars(args), "model": str(args.model)},
            "results": rows,
            "ratio": ratio,
        }
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
