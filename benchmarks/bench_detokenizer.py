"""Incremental detokenization per token at N concurrent streams, three ways, on the embedded SmolLM2 tokenizer
(byte-level BPE, 49,152 tokens):

  window        IncrementalDetokenizer: decodes a short window of tokens per push (the general path)
  DecodeStream  tokenizers.decoders.DecodeStream.step (prefix offsets in Rust, one call per token)
  byte-level    ByteLevelDetokenizer: a token-id -> text table, the UTF-8 decoder only for split characters

Each stream's output is real text in several scripts (emoji and CJK split over byte tokens), pushed one token
per stream per step, streams interleaved as the detokenizer actor visits them. Reported: µs per token (the
best of --repeats runs, and the median).

    python benchmarks/bench_detokenizer.py [--streams 256] [--tokens 128] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

TEXT = (
    "The quick brown fox jumps over the lazy dog, then naps in the warm afternoon sun. "
    "Über den Wolken muss die Freiheit wohl grenzenlos sein. Le garçon a mangé une crème brûlée. "
    "今日はいい天気ですね。你好，世界！ Emoji time: 😀 🎉 🚀 👍🏽 and 🦀 for the crab. "
    'def greet(name: str) -> str:\n    return f"Hello, {name}!"\n'
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--streams", type=int, default=256)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()

    from tokenizers.decoders import DecodeStream

    from kvserve.cli import embedded_model_path
    from kvserve.model.loader import resolve_model_dir
    from kvserve.text.detokenizers import DetokenizerFactory
    from kvserve.text.incremental_detokenizer import IncrementalDetokenizer
    from kvserve.tokenizer import Tokenizer

    tokenizer = Tokenizer.from_directory(resolve_model_dir(str(embedded_model_path()))).backend
    ids = tokenizer.encode(TEXT * 20).ids
    prompt = ids[:32]
    outputs = [ids[32 + 7 * s : 32 + 7 * s + args.tokens] for s in range(args.streams)]
    factory = DetokenizerFactory(tokenizer)

    def run(kind: str) -> tuple[float, list[str]]:
        if kind == "window":
            streams = [IncrementalDetokenizer(tokenizer, prompt) for _ in outputs]
            steps = [stream.push for stream in streams]
        elif kind == "DecodeStream":
            streams = [DecodeStream(ids=prompt, skip_special_tokens=True) for _ in outputs]
            steps = [lambda token_ids, s=stream: s.step(tokenizer, token_ids[0]) or "" for stream in streams]
        else:
            streams = [factory(prompt) for _ in outputs]
            steps = [stream.push for stream in streams]
        texts = [[] for _ in outputs]
        start = time.perf_counter_ns()
        for position in range(args.tokens):
            for push, output, text in zip(steps, outputs, texts):
                text.append(push((output[position],)))
        elapsed = time.perf_counter_ns() - start
        return elapsed / 1e3 / (args.tokens * len(outputs)), ["".join(t) for t in texts]

    rows = {}
    reference = None
    for kind in ("window", "DecodeStream", "byte-level"):
        runs = [run(kind) for _ in range(args.repeats)]
        texts = runs[0][1]
        if reference is None:
            reference = texts
        agrees = sum(a == b for a, b in zip(texts, reference))
        per_token = [r[0] for r in runs]
        rows[kind] = {"best_us": min(per_token), "median_us": statistics.median(per_token), "agree": agrees}
    print(f"detokenization, {args.streams} streams x {args.tokens} tokens, SmolLM2 tokenizer (us per token)")
    print(f"{'method':>14}{'best':>8}{'median':>8}  streams agreeing with window")
    for kind, r in rows.items():
        print(f"{kind:>14}{r['best_us']:>8.2f}{r['median_us']:>8.2f}  {r['agree']}/{args.streams}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"benchmark": "detokenizer", "machine": platform.machine(), "args": vars(args), "results": rows},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
