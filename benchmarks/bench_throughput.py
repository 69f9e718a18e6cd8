"""Offline throughput: kvserve's engine against transformers' generate, same model, prompts and lengths.

A batch of `--batch-size` requests runs through each, on this machine's CPU, each side in a fresh process
(torch's OpenMP threads left over from one run would slow the other). Two workloads:

  uniform  every prompt has `--input-len` tokens and asks for exactly `--output-len` tokens
  mixed    prompt lengths drawn in [input-len/2, 3*input-len/2], output lengths in [output-len/2,
           3*output-len/2]: what a server sees. transformers pads the prompts (left) and generates the
           batch's longest output for every row, as its batch generate must; kvserve runs each request
           to its own length. Both are credited only with the requested tokens.

Throughput = (prompt + requested output tokens) / wall time; EOS is ignored. Each side runs `--repeats`
times (alternating) and reports its median, since a shared VM's timings spread by 20% or more, with the
range of the repeats' own ratios (each repeat runs the two sides back to back). Prints a table; `--json PATH`
writes the figures, every repeat's included.

    python benchmarks/bench_throughput.py                      # a random-weight Llama built on the fly
    python benchmarks/bench_throughput.py --model DIR         # any supported HF model directory

On CUDA (`--device cuda`), the models are Llama-3.2-1B- and Llama-3-8B-shaped with random bf16 weights
(`--preset`, gpu_models.py; kvserve with --load-format dummy and its KV cache planned from
--gpu-memory-utilization, transformers from the config on the GPU), and the uniform workload runs at each
`--concurrency` (64 and 256) in one engine and one transformers process per model, in the same run:

    python benchmarks/bench_throughput.py --device cuda --json OUT.json
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
from gpu_models import PRESETS, device_name, write_model_dir, write_placeholder_tokenizer


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
    uniform = uniform_workload("uniform", n, i, o, vocab, rng)
    prompt_lens = rng.integers(i // 2, 3 * i // 2 + 1, n)
    mixed = Workload(
        "mixed",
        [rng.integers(0, vocab, int(length)).tolist() for length in prompt_lens],
        rng.integers(o // 2, 3 * o // 2 + 1, n).tolist(),
    )
    return [w for w in (uniform, mixed) if args.workload in (w.name, "both")]


def uniform_workload(name: str, n: int, input_len: int, output_len: int, vocab: int, rng) -> Workload:
    return Workload(name, rng.integers(0, vocab, (n, input_len)).tolist(), [output_len] * n)


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
    write_placeholder_tokenizer(directory, vocab)
    return directory


def kvserve_config(model: Path, args: argparse.Namespace):
    from kvserve.config import EngineConfig

    if args.device == "cuda":
        return EngineConfig(
            model=str(model), device="cuda", dtype="bfloat16", load_format="dummy", enable_prefix_caching=False,
            max_model_len=args.input_len + args.output_len + 16, max_num_seqs=max(args.concurrency),
            max_num_batched_tokens=args.max_num_batched_tokens, gpu_memory_utilization=0.85,
        )  # fmt: skip
    return EngineConfig(
        model=str(model),
        dtype=args.dtype,
        kv_cache_memory=args.kv_cache_gib << 30,
        max_num_batched_tokens=args.max_num_batched_tokens,
        enable_prefix_caching=False,
    )


def run_kvserve(model: Path, workloads: list[Workload], args: argparse.Namespace) -> list[float]:
    """Seconds for each workload, in one engine (started and warmed up once)."""
    return timed_greedy_runs(kvserve_config(model, args), workloads, report_graphs=args.device == "cuda")


def timed_greedy_runs(config, workloads: list[Workload], report_graphs: bool = False) -> list[float]:
    """Seconds for an engine with `config` to run each workload's prompts at once, greedily, to exactly their
    output lengths (after a short warm-up request)."""
    from kvserve.engine import AsyncEngine
    from kvserve.request import EngineRequest
    from kvserve.sampling_params import SamplingParams

    async def consume(engine: AsyncEngine, prompt: list[int], max_tokens: int, request_id: str) -> int:
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        count = 0
        async for output in engine.generate(EngineRequest(request_id, prompt, sampling=params)):
            count += len(output.token_ids)
        return count

    async def timed(engine: AsyncEngine, workload: Workload) -> float:
        start = time.perf_counter()
        counts = await asyncio.gather(
            *(
                consume(engine, p, n, f"{workload.name}-{i}")
                for i, (p, n) in enumerate(zip(workload.prompts, workload.output_lens))
            )
        )
        elapsed = time.perf_counter() - start
        assert counts == workload.output_lens, counts
        return elapsed

    async def main() -> list[float]:
        engine = await AsyncEngine.start(config)
        try:
            await consume(engine, workloads[0].prompts[0][:8], 8, "warmup")
            seconds = [await timed(engine, workload) for workload in workloads]
            if report_graphs:
                (graph_sizes,) = await engine.collective_rpc("captured_graph_sizes")
                print(f"kvserve: CUDA graphs for batch sizes {graph_sizes or 'none'}", flush=True)
            return seconds
        finally:
            await engine.shutdown()

    return asyncio.run(main())


def load_transformers(model: Path, args: argparse.Namespace):
    import torch
    import transformers

    if args.device == "cuda":  # the same random-weight shape as kvserve's dummy load, built on the GPU
        config = transformers.AutoConfig.from_pretrained(model)
        with torch.device("cuda"):
            return transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).eval()
    dtype = {"auto": "auto", "float32": torch.float32, "bfloat16": torch.bfloat16}[args.dtype]
    return transformers.AutoModelForCausalLM.from_pretrained(model, dtype=dtype).eval()


def run_transformers(model: Path, workloads: list[Workload], args: argparse.Namespace) -> list[float]:
    """Seconds of one batch generate per workload, in one process (the model loaded once)."""
    hf = load_transformers(model, args)
    hf.generation_config.eos_token_id = None
    return [generate_batch(hf, workload) for workload in workloads]


def generate_batch(hf, workload: Workload) -> float:
    import torch
    import transformers

    device = hf.device
    width = max(map(len, workload.prompts))
    input_ids = torch.zeros(len(workload.prompts), width, dtype=torch.long, device=device)
    attention_mask = torch.zeros_like(input_ids)
    for row, prompt in enumerate(workload.prompts):  # left padding, as decoder-only batch generation needs
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt, device=device)
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
        if device.type == "cuda":
            torch.cuda.synchronize()
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
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--preset", nargs="+", default=list(PRESETS), choices=list(PRESETS), help="models on CUDA")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[64, 256], help="batch sizes on CUDA")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()
    if args.device == "cuda":
        args.max_num_batched_tokens = max(args.max_num_batched_tokens, 8192)
    # Inherited by both sides' fresh processes before they load torch: OpenMP waits as `kvserve serve` sets it.
    from kvserve.openmp_waiting import configure_openmp_waiting

    configure_openmp_waiting()

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for model_name, model, workloads in models_and_workloads(args, Path(tmp)):
            runs = [
                (
                    in_fresh_process(run_kvserve, model, workloads, args),
                    in_fresh_process(run_transformers, model, workloads, args),
                )
                for _ in range(args.repeats)
            ]
            for w, workload in enumerate(workloads):
                kvserve_runs = [k[w] for k, _ in runs]
                hf_runs = [h[w] for _, h in runs]
                kvserve_s, hf_s = statistics.median(kvserve_runs), statistics.median(hf_runs)
                # Each repeat ran the two sides back to back: their ratio, repeat by repeat, shows the host's drift.
                repeat_ratios = [h / k for k, h in zip(kvserve_runs, hf_runs)]
                results.append(
                    {
                        "model": model_name,
                        "workload": workload.name,
                        "requested_tokens": workload.requested_tokens,
                        "kvserve_s": kvserve_s,
                        "transformers_s": hf_s,
                        "kvserve_tok_s": workload.requested_tokens / kvserve_s,
                        "transformers_tok_s": workload.requested_tokens / hf_s,
                        "ratio": hf_s / kvserve_s,
                        "kvserve_runs_s": kvserve_runs,
                        "transformers_runs_s": hf_runs,
                        "repeat_ratios": repeat_ratios,
                    }
                )

    dtype = "bfloat16" if args.device == "cuda" else args.dtype
    print(f"offline throughput on {args.device}, ~{args.input_len} in / ~{args.output_len} out, {dtype}")
    print(
        f"{'model':<16}{'workload':<14}{'kvserve s':>11}{'hf s':>9}{'kvserve tok/s':>15}{'hf tok/s':>11}{'ratio':>8}"
        f"{'repeats':>15}"
    )
    for r in results:
        spread = f"{min(r['repeat_ratios']):.2f}-{max(r['repeat_ratios']):.2f}x"
        print(
            f"{r['model']:<16}{r['workload']:<14}{r['kvserve_s']:>11.2f}{r['transformers_s']:>9.2f}"
            f"{r['kvserve_tok_s']:>15.1f}{r['transformers_tok_s']:>11.1f}{r['ratio']:>7.2f}x{spread:>15}"
        )
    if args.json:
        payload = {
            "benchmark": "offline_throughput",
            "machine": platform.machine(),
            "device": in_fresh_process(device_name) if args.device == "cuda" else platform.processor(),
            "args": {**vars(args), "model": str(args.model)},
            "results": results,
        }
        Path(args.json).write_text(json.dumps(payload, indent=2))


def models_and_workloads(args: argparse.Namespace, tmp: Path):
    """(name, model directory, workloads): on CUDA the presets at each concurrency, else one CPU model."""
    if args.device == "cuda":
        for preset in args.preset:
            model = write_model_dir(preset, tmp / preset)
            vocab = PRESETS[preset]["vocab_size"]
            rng = np.random.default_rng(args.seed)
            workloads = [
                uniform_workload(f"concurrent-{n}", n, args.input_len, args.output_len, vocab, rng)
                for n in args.concurrency
            ]
            yield preset, model, workloads
        return
    model = args.model or in_fresh_process(build_random_llama, tmp, args.hidden_size, args.num_layers, args.vocab_size)
    vocab = json.loads((model / "config.json").read_text())["vocab_size"]
    name = str(args.model) if args.model else f"llama-h{args.hidden_size}x{args.num_layers}"
    for workload in make_workloads(args, vocab):
        yield name, model, [workload]


if __name__ == "__main__":
    main()
