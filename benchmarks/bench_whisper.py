"""Speech to text: kvserve's engine against transformers' generate on the same random Whisper weights.

Two workloads, each side in a fresh process, one run each (after a warm-up request):

  long     one 60 s clip: two 30 s chunks (kvserve: two requests)
  16x10s   16 concurrent 10 s clips (kvserve: 16 requests at once)

transformers runs each workload twice: as one batched generate call (its best case, which a server cannot
use for requests arriving at different times), and one chunk at a time (what serving without a batching
engine does).

Every chunk generates exactly `--output-len` tokens (EOS ignored on both sides) after Whisper's 4-token
prompt, greedy, float32. Both sides include their log-mel features (transformers' WhisperFeatureExtractor;
kvserve computes them in the runner) and the encoder. transformers runs the standard GenerationMixin.generate
with Whisper's suppress lists: Whisper's own generate adds a long-form "seek" loop that re-decodes after the
time tokens a random model emits, which would make it do more work than asked.

    python benchmarks/bench_whisper.py                        # the tests' tiny model (d_model 64)
    python benchmarks/bench_whisper.py --dims whisper-tiny    # whisper-tiny's shape (39M), random weights
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

SAMPLE_RATE = 16_000
CHUNK = 30 * SAMPLE_RATE
WORKLOADS = {"long": [60.0], "16x10s": [10.0] * 16}


def clips(seconds: list[float]) -> list[np.ndarray]:
    from tests.whisper.tiny_whisper import tone

    return [tone(s, 200.0 + 20 * i, seed=i) for i, s in enumerate(seconds)]


def chunks_of(audio: list[np.ndarray]) -> list[np.ndarray]:
    return [a[start : start + CHUNK] for a in audio for start in range(0, len(a), CHUNK)]


def run_kvserve(model: Path, workload: str, output_len: int) -> float:
    from kvserve.audio.log_mel import pad_chunk
    from kvserve.config import EngineConfig
    from kvserve.engine import AsyncEngine
    from kvserve.model.whisper.prompt import WhisperPrompts
    from kvserve.request import EncoderInput, EngineRequest
    from kvserve.sampling_params import SamplingParams

    params = SamplingParams(max_tokens=output_len, temperature=0.0, ignore_eos=True)

    async def transcribe(engine: AsyncEngine, request_id: str, samples: np.ndarray, prompt: list[int]) -> int:
        request = EngineRequest(
            request_id, prompt, sampling=params, encoder_input=EncoderInput(pad_chunk(samples), 1500)
        )
        return sum([len(o.token_ids) async for o in engine.generate(request)])

    async def main() -> float:
        engine = await AsyncEngine.start(EngineConfig(model=str(model), kv_cache_memory=1 << 30))
        try:
            config = engine.model_config
            prompt = WhisperPrompts.of(engine.tokenizer, config.hf_config, config.hf_generation_config).decoder_prompt(
                "en", "transcribe", []
            )
            await transcribe(engine, "warmup", clips([1.0])[0], prompt)
            pieces = chunks_of(clips(WORKLOADS[workload]))
            start = time.perf_counter()
            counts = await asyncio.gather(*(transcribe(engine, f"r{i}", p, prompt) for i, p in enumerate(pieces)))
            elapsed = time.perf_counter() - start
            assert counts == [output_len] * len(pieces), counts
            return elapsed
        finally:
            await engine.shutdown()

    return asyncio.run(main())


def run_transformers(model: Path, workload: str, output_len: int, batched: bool) -> float:
    import torch
    import transformers

    hf = transformers.WhisperForConditionalGeneration.from_pretrained(model).eval()
    extractor = transformers.WhisperFeatureExtractor(feature_size=hf.config.num_mel_bins)
    g = hf.generation_config
    prompt = [g.decoder_start_token_id, g.lang_to_id["<|en|>"], g.task_to_id["transcribe"], g.no_timestamps_token_id]

    def generate(pieces: list[np.ndarray], n: int) -> torch.Tensor:
        features = extractor(pieces, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
        return transformers.GenerationMixin.generate(
            hf,
            input_features=features,
            decoder_input_ids=torch.tensor([prompt] * len(pieces)),
            max_new_tokens=n,
            min_new_tokens=n,
            do_sample=False,
            suppress_tokens=g.suppress_tokens,
            begin_suppress_tokens=g.begin_suppress_tokens,
        )

    with torch.inference_mode():
        generate(clips([1.0]), 4)
        pieces = chunks_of(clips(WORKLOADS[workload]))
        start = time.perf_counter()
        outs = [generate(pieces, output_len)] if batched else [generate([p], output_len) for p in pieces]
        elapsed = time.perf_counter() - start
    assert sum(len(out) for out in outs) == len(pieces) and outs[0].shape[1] == len(prompt) + output_len
    return elapsed


def build(directory: Path, dims_name: str) -> Path:
    from tests.whisper.tiny_whisper import WHISPER_TINY_DIMS, build_tiny_whisper

    return build_tiny_whisper(directory, dims=WHISPER_TINY_DIMS if dims_name == "whisper-tiny" else None)


def in_fresh_process(fn, *args):
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dims", default="tiny", choices=["tiny", "whisper-tiny"])
    parser.add_argument("--output-len", type=int, default=128, help="tokens generated per 30 s chunk")
    parser.add_argument("--workload", default="both", choices=[*WORKLOADS, "both"])
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args()

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model = in_fresh_process(build, Path(tmp), args.dims)
        for workload in [w for w in WORKLOADS if args.workload in (w, "both")]:
            kvserve_s = in_fresh_process(run_kvserve, model, workload, args.output_len)
            hf_s = in_fresh_process(run_transformers, model, workload, args.output_len, True)
            hf_one_s = in_fresh_process(run_transformers, model, workload, args.output_len, False)
            num_chunks = len(chunks_of(clips(WORKLOADS[workload])))
            results.append(
                {
                    "workload": workload,
                    "audio_s": sum(WORKLOADS[workload]),
                    "chunks": num_chunks,
                    "tokens": num_chunks * args.output_len,
                    "kvserve_s": round(kvserve_s, 3),
                    "transformers_batched_s": round(hf_s, 3),
                    "transformers_one_at_a_time_s": round(hf_one_s, 3),
                    "speedup_vs_batched": round(hf_s / kvserve_s, 2),
                    "speedup_vs_one_at_a_time": round(hf_one_s / kvserve_s, 2),
                }
            )
    print(f"dims={args.dims} output_len={args.output_len} machine={platform.machine()} {platform.processor()}")
    header = ("workload", "audio s", "chunks", "tokens", "kvserve s", "hf batched s", "x", "hf 1-by-1 s", "x")
    print(" | ".join(header))
    for r in results:
        row = (
            r["workload"],
            f"{r['audio_s']:.0f}",
            r["chunks"],
            r["tokens"],
            f"{r['kvserve_s']:.2f}",
            f"{r['transformers_batched_s']:.2f}",
            f"{r['speedup_vs_batched']:.2f}",
            f"{r['transformers_one_at_a_time_s']:.2f}",
            f"{r['speedup_vs_one_at_a_time']:.2f}",
        )
        print(" | ".join(map(str, row)))
    if args.json:
        Path(args.json).write_text(json.dumps({"dims": args.dims, "output_len": args.output_len, "results": results}))


if __name__ == "__main__":
    main()
