"""Batch-1 decode speed on CUDA against the weight-bandwidth roofline.

For each model shape (Llama-3.2-1B, Llama-3-8B; random bf16 weights from the config, `--load-format dummy`),
one request of `--input-len` prompt tokens generates `--output-len` tokens (EOS ignored) through the engine.
Decode tokens/s = (output tokens - 1) / (last token time - first token time), from the request's own
timestamps. The roofline is the device's measured copy bandwidth (read + write, same run) divided by the
weight bytes one decode step reads: a batch-1 step cannot be faster than reading every weight once. Each
(model, mode) runs in a fresh process; `--eager` adds a run with --enforce-eager (no CUDA graphs).

    python benchmarks/bench_latency.py --json OUT.json [--preset llama-3.2-1b llama-3-8b] [--eager]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

from gpu_models import PRESETS, copy_bandwidth, decode_bytes, device_name, write_model_dir


def measure(preset: str, enforce_eager: bool, args: argparse.Namespace) -> dict:
    from kvserve.config import EngineConfig
    from kvserve.engine import AsyncEngine
    from kvserve.request import EngineRequest
    from kvserve.sampling_params import SamplingParams

    bandwidth = copy_bandwidth()

    async def one_request(engine: AsyncEngine, request_id: str, prompt: list[int], max_tokens: int):
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        count, times = 0, None
        async for output in engine.generate(EngineRequest(request_id, prompt, sampling=params)):
            count, times = output.num_output_tokens, output.times
        return count, times

    async def run(model_dir: Path) -> dict:
        config = EngineConfig(
            model=str(model_dir), load_format="dummy", dtype="bfloat16", device="cuda",
            max_model_len=args.max_model_len, max_num_seqs=1, enforce_eager=enforce_eager,
        )  # fmt: skip
        started = time.perf_counter()
        engine = await AsyncEngine.start(config)
        start_s = time.perf_counter() - started
        try:
            prompt = list(range(1000, 1000 + args.input_len))
            await one_request(engine, "warmup", prompt, 16)
            count, times = await one_request(engine, "timed", prompt, args.output_len)
            (graph_sizes,) = await engine.collective_rpc("captured_graph_sizes")
        finally:
            await engine.shutdown()
        decode_s = times.latest_token - times.first_token
        decode_tok_s = (count - 1) / decode_s
        roofline_tok_s = bandwidth / decode_bytes(preset)
        return {
            "preset": preset,
            "cuda_graphs": bool(graph_sizes),  # False with --enforce-eager, or when the capture failed
            "engine_start_s": start_s,
            "ttft_ms": 1e3 * (times.first_token - times.arrival),
            "decode_tok_s": decode_tok_s,
            "ms_per_token": 1e3 / decode_tok_s,
            "weight_bytes": decode_bytes(preset),
            "copy_bandwidth_gb_s": bandwidth / 1e9,
            "roofline_tok_s": roofline_tok_s,
            "fraction_of_roofline": decode_tok_s / roofline_tok_s,
        }

    with tempfile.TemporaryDirectory() as tmp:
        return asyncio.run(run(write_model_dir(preset, Path(tmp))))


def in_fresh_process(fn, *args):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=256)
    parser.add_argument("--max-model-len", type=int, default=2048)
    parser.add_argument("--eager", action="store_true", help="also run each model with --enforce-eager")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()

    modes = [False, True] if args.eager else [False]
    results = [in_fresh_process(measure, preset, eager, args) for preset in args.preset for eager in modes]
    print(f"batch-1 decode, {args.input_len} in / {args.output_len} out, bf16, random weights")
    print(
        f"{'model':<14}{'graphs':>7}{'ttft ms':>9}{'tok/s':>9}{'ms/tok':>8}{'GB/step':>9}{'copy GB/s':>11}"
        f"{'roofline':>10}{'of roof':>9}"
    )
    for r in results:
        print(
            f"{r['preset']:<14}{'yes' if r['cuda_graphs'] else 'no':>7}{r['ttft_ms']:>9.1f}{r['decode_tok_s']:>9.1f}"
            f"{r['ms_per_token']:>8.2f}{r['weight_bytes'] / 1e9:>9.2f}{r['copy_bandwidth_gb_s']:>11.0f}"
            f"{r['roofline_tok_s']:>10.1f}{r['fraction_of_roofline']:>8.0%}"
        )
    if args.json:
        payload = {"benchmark": "batch1_decode", "device": in_fresh_process(device_name), "args": vars(args),
                   "results": results}  # fmt: skip
        Path(args.json).write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
