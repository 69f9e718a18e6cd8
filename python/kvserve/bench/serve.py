"""`kvserve bench serve`: send a dataset's prompts to a running server and report what `vllm bench serve`
reports, computed the same way.

    kvserve bench serve --base-url http://127.0.0.1:8000 --dataset-name random \\
        --random-input-len 1024 --random-output-len 128 --num-prompts 100 --max-concurrency 8

Scripts call `run_benchmark(build_parser().parse_args([...]))` and get the result dict that
`--save-result` writes. Differences from vLLM's client, on purpose:

- The tokenizer defaults to the server's own model (the `root` /v1/models reports, read with kvserve's
  tokenizer), not a Hugging Face download of the model name; pass `--tokenizer DIR` to override.
- An error event inside a 200 stream marks the request failed (vLLM's client ignores it).
- Requests are greedy (`temperature` 0) unless `--temperature` says otherwise, as vLLM's client did before
  it left the default to the server.
- The result file always holds the per-request arrays, with start times relative to the run's start, and
  the mean/median/std/percentiles of all four latencies (the printed table shows `--percentile-metrics`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import time
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

from kvserve.bench.client import ENDPOINTS, RequestOutcome, build_payload, send_request
from kvserve.bench.datasets import DATASETS, SampleRequest, load_tokenizer, sample_requests
from kvserve.bench.metrics import LATENCY_METRICS, BenchmarkMetrics, compute_metrics

# Streams of long generations under heavy load can run for many minutes; vLLM's client allows 6 hours.
_HTTP_TIMEOUT = aiohttp.ClientTimeout(total=6 * 60 * 60)

_METRIC_TITLES = {
    "ttft": ("TTFT", "Time to First Token"),
    "tpot": ("TPOT", "Time per Output Token (excl. 1st token)"),
    "itl": ("ITL", "Inter-token Latency"),
    "e2el": ("E2EL", "End-to-end Latency"),
}


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The flags of `vllm bench serve` this client supports, with vLLM's names and defaults (except
    --num-prompts: 100)."""
    parser = argparse.ArgumentParser(prog="kvserve bench serve", description=__doc__.split("\n\n")[0])
    server = parser.add_argument_group("server")
    server.add_argument(
        "--backend",
        choices=sorted(ENDPOINTS),
        default="openai",
        help="openai: /v1/completions with a text prompt; openai-chat: /v1/chat/completions with one user message",
    )
    server.add_argument("--base-url", default="http://127.0.0.1:8000")
    server.add_argument(
        "--endpoint", default=None, help="default: /v1/completions (openai) or /v1/chat/completions (openai-chat)"
    )
    server.add_argument("--model", default=None, help="default: the first model GET /v1/models lists")
    server.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer directory (or .gguf file, or Hugging Face repo id) that sizes the "
        "prompts; default: the model path the server reports as `root` in /v1/models",
    )

    data = parser.add_argument_group("dataset")
    data.add_argument("--dataset-name", choices=DATASETS, default="random")
    data.add_argument("--dataset-path", default=None, help="the ShareGPT JSON file (sharegpt)")
    data.add_argument("--num-prompts", type=_positive_int, default=100)
    data.add_argument("--seed", type=int, default=0)
    data.add_argument(
        "--random-input-len", type=_positive_int, default=1024, help="prompt tokens, special tokens included (random)"
    )
    data.add_argument("--random-output-len", type=_positive_int, default=128, help="output tokens (random)")
    data.add_argument(
        "--random-range-ratio",
        type=float,
        default=0.0,
        help="draw lengths uniformly from [len * (1 - r), len * (1 + r)], 0 <= r < 1 (random)",
    )
    data.add_argument(
        "--sharegpt-output-len",
        type=_positive_int,
        default=None,
        help="output tokens for every request, instead of each answer's length (sharegpt)",
    )
    data.add_argument("--prefix-repetition-prefix-len", type=_positive_int, default=256)
    data.add_argument("--prefix-repetition-suffix-len", type=_positive_int, default=256)
    data.add_argument(
        "--prefix-repetition-num-prefixes",
        type=_positive_int,
        default=10,
        help="groups of num_prompts // num_prefixes prompts sharing a prefix",
    )
    data.add_argument("--prefix-repetition-output-len", type=_positive_int, default=128)

    load = parser.add_argument_group("load")
    load.add_argument(
        "--request-rate",
        type=_positive_float,
        default=math.inf,
        help="requests per second; inf (default) sends all at once, otherwise arrivals are a "
        "Poisson process (or gamma, see --burstiness)",
    )
    load.add_argument(
        "--burstiness",
        type=_positive_float,
        default=1.0,
        help="shape of the gamma-distributed gaps between arrivals: 1 is Poisson, lower is "
        "burstier, higher is more even",
    )
    load.add_argument(
        "--max-concurrency",
        type=_positive_int,
        default=None,
        help="most requests in flight at once (default: no limit)",
    )
    load.add_argument(
        "--num-warmups",
        type=int,
        default=0,
        help="requests (copies of the first prompt) sent and awaited before timing starts",
    )

    request = parser.add_argument_group("request")
    request.add_argument(
        "--ignore-eos", action="store_true", help="send ignore_eos (always sent with the random dataset, as vLLM does)"
    )
    request.add_argument("--temperature", type=float, default=0.0)

    report = parser.add_argument_group("report")
    report.add_argument(
        "--percentile-metrics",
        default="ttft,tpot,itl",
        help=f"metrics the table details, from {','.join(LATENCY_METRICS)}",
    )
    report.add_argument("--metric-percentiles", default="99", help='percentiles to report, e.g. "50,90,99"')
    report.add_argument("--save-result", action="store_true", help="write the result JSON")
    report.add_argument("--result-dir", default=None, help="directory for the result JSON (default: .)")
    report.add_argument(
        "--result-filename",
        default=None,
        help="default: {label}-{request_rate}qps[-concurrency{N}]-{model}-{date}.json",
    )
    report.add_argument("--plot-dir", default=None, help="write latency CDF plots (PNG) here")
    report.add_argument("--label", default=None, help="names the run in files and plots (default: --backend)")
    report.add_argument("--disable-tqdm", action="store_true", help="accepted for vLLM compatibility; no bar")
    return parser


def _parse_percentile_metrics(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(LATENCY_METRICS))
    if unknown:
        raise ValueError(f"--percentile-metrics: unknown {unknown}; choose from {','.join(LATENCY_METRICS)}")
    return names


def _parse_percentiles(text: str) -> list[float]:
    percentiles = [float(p) for p in text.split(",") if p.strip()]
    if not all(0 <= p <= 100 for p in percentiles):
        raise ValueError(f"--metric-percentiles must lie in [0, 100], got {text}")
    return percentiles


def arrival_offsets(num_requests: int, request_rate: float, burstiness: float, rng: np.random.Generator) -> list[float]:
    """Seconds after the start at which each request is sent: gaps drawn from a gamma distribution of
    shape `burstiness` and mean 1 / rate (exponential, so a Poisson process, at burstiness 1)."""
    if math.isinf(request_rate):
        return [0.0] * num_requests
    if math.isinf(burstiness):
        gaps = np.full(num_requests, 1.0 / request_rate)
    else:
        gaps = rng.gamma(shape=burstiness, scale=1.0 / (request_rate * burstiness), size=num_requests)
    offsets = np.cumsum(gaps)
    # As vLLM does, stretch the draw so the last request leaves at num_requests / rate: the run's length,
    # and so its throughput, then does not depend on the seed's luck.
    offsets *= (num_requests / request_rate) / offsets[-1]
    return offsets.tolist()


def percentile_key(percentile: float) -> str:
    """vLLM's key spelling: 99 -> "p99", 99.9 -> "p99.9"."""
    return f"p{int(percentile)}" if percentile == int(percentile) else f"p{percentile}"


async def _served_model(session: aiohttp.ClientSession, base_url: str, model: str | None) -> tuple[str, str]:
    """(model id to request, the path or repo id the server loaded it from)."""
    async with session.get(f"{base_url}/v1/models") as response:
        response.raise_for_status()
        cards = (await response.json())["data"]
    if model is None:
        if not cards:
            raise ValueError(f"{base_url}/v1/models lists no model")
        return cards[0]["id"], cards[0].get("root") or cards[0]["id"]
    root = next((card.get("root") for card in cards if card["id"] == model), None)
    return model, root or model


def _result_path(args: argparse.Namespace, label: str, model_id: str, date: str) -> Path:
    concurrency = f"-concurrency{args.max_concurrency}" if args.max_concurrency is not None else ""
    name = args.result_filename or f"{label}-{args.request_rate}qps{concurrency}-{model_id.split('/')[-1]}-{date}.json"
    directory = Path(args.result_dir) if args.result_dir else Path(".")
    directory.mkdir(parents=True, exist_ok=True)
    return directory / name


def _metric_fields(metrics: BenchmarkMetrics) -> dict[str, float]:
    fields: dict[str, float] = {}
    for name, dist in metrics.latencies.items():
        fields[f"mean_{name}_ms"] = dist.mean_ms
        fields[f"median_{name}_ms"] = dist.median_ms
        fields[f"std_{name}_ms"] = dist.std_ms
        for percentile, value in dist.percentiles_ms:
            fields[f"{percentile_key(percentile)}_{name}_ms"] = value
    return fields


def _measurements(outcomes: Sequence[RequestOutcome], duration: float, metrics: BenchmarkMetrics) -> dict[str, Any]:
    """The result's numbers: totals, rates, latency statistics, then the per-request arrays."""
    start = min(o.start_time for o in outcomes)
    return {
        "duration": duration,
        "completed": metrics.completed,
        "failed": metrics.failed,
        "total_input_tokens": metrics.total_input_tokens,
        "total_output_tokens": metrics.total_output_tokens,
        "request_throughput": metrics.request_throughput,
        "output_throughput": metrics.output_throughput,
        "total_token_throughput": metrics.total_token_throughput,
        "max_output_tokens_per_s": metrics.max_output_tokens_per_s,
        "max_concurrent_requests": metrics.max_concurrent_requests,
        **_metric_fields(metrics),
        "input_lens": [o.prompt_len for o in outcomes],
        "output_lens": metrics.output_lens,
        "ttfts": [o.ttft for o in outcomes],
        "tpots": metrics.tpots,
        "itls": [o.itl for o in outcomes],
        "e2els": [o.latency for o in outcomes],
        "start_times": [o.start_time - start for o in outcomes],
        "errors": [o.error for o in outcomes],
    }


def format_report(result: dict[str, Any], percentile_metrics: Sequence[str], percentiles: Sequence[float]) -> str:
    """The "Serving Benchmark Result" block, laid out as vLLM prints it."""
    lines = [f"{' Serving Benchmark Result ':=^50}"]

    def row(title: str, value: Any, spec: str = "") -> None:
        lines.append(f"{title:<40} {value:<10{spec}}")

    row("Successful requests:", result["completed"])
    row("Failed requests:", result["failed"])
    if result["max_concurrency"] is not None:
        row("Maximum request concurrency:", result["max_concurrency"])
    if result["request_rate"] != "inf":
        row("Request rate configured (RPS):", result["request_rate"], ".2f")
    row("Benchmark duration (s):", result["duration"], ".2f")
    row("Total input tokens:", result["total_input_tokens"])
    row("Total generated tokens:", result["total_output_tokens"])
    row("Request throughput (req/s):", result["request_throughput"], ".2f")
    row("Output token throughput (tok/s):", result["output_throughput"], ".2f")
    row("Peak output token throughput (tok/s):", result["max_output_tokens_per_s"], ".2f")
    row("Peak concurrent requests:", result["max_concurrent_requests"], ".2f")
    row("Total token throughput (tok/s):", result["total_token_throughput"], ".2f")
    for name in percentile_metrics:
        short, title = _METRIC_TITLES[name]
        lines.append(f"{title:-^50}")
        row(f"Mean {short} (ms):", result[f"mean_{name}_ms"], ".2f")
        row(f"Median {short} (ms):", result[f"median_{name}_ms"], ".2f")
        for percentile in percentiles:
            key = percentile_key(percentile)
            row(f"{key.upper()} {short} (ms):", result[f"{key}_{name}_ms"], ".2f")
    lines.append("=" * 50)
    return "\n".join(lines)


async def _run(
    session: aiohttp.ClientSession,
    url: str,
    args: argparse.Namespace,
    model_id: str,
    samples: list[SampleRequest],
    ignore_eos: bool,
) -> tuple[list[RequestOutcome], float]:
    """Warm-ups, then the timed run: (outcomes in dataset order, seconds from first send to last answer)."""
    limit = asyncio.Semaphore(args.max_concurrency) if args.max_concurrency else contextlib.nullcontext()

    async def send(sample: SampleRequest) -> RequestOutcome:
        payload = build_payload(args.backend, model_id, sample.prompt, sample.output_len, ignore_eos, args.temperature)
        async with limit:
            return await send_request(session, url, args.backend, payload, sample.prompt_len)

    if args.num_warmups > 0:
        await asyncio.gather(*(send(samples[0]) for _ in range(args.num_warmups)))
    offsets = arrival_offsets(len(samples), args.request_rate, args.burstiness, np.random.default_rng(args.seed))
    tasks = []
    start = time.perf_counter()
    for sample, offset in zip(samples, offsets):
        delay = start + offset - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(sample)))
    outcomes = await asyncio.gather(*tasks)
    return outcomes, time.perf_counter() - start


async def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Runs the benchmark `args` describes (from `build_parser()`), prints the table, writes the files the
    flags ask for, and returns the result dict (the JSON of --save-result)."""
    percentile_metrics = _parse_percentile_metrics(args.percentile_metrics)
    percentiles = _parse_percentiles(args.metric_percentiles)
    base_url = args.base_url.rstrip("/")
    url = base_url + (args.endpoint or ENDPOINTS[args.backend])
    label = args.label or args.backend
    # vLLM always sets ignore_eos for the random dataset, so each request runs to its drawn length.
    ignore_eos = args.ignore_eos or args.dataset_name == "random"
    # limit: aiohttp's default caps at 100. force_close: a connection per request, because a server that
    # drops idle keep-alive connections (llama-server) otherwise fails the request that reuses one.
    connector = aiohttp.TCPConnector(limit=args.max_concurrency or 0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=_HTTP_TIMEOUT) as session:
        model_id, model_root = await _served_model(session, base_url, args.model)
        tokenizer_id = args.tokenizer or model_root
        tokenizer = load_tokenizer(tokenizer_id)
        samples = sample_requests(args, tokenizer)
        outcomes, duration = await _run(session, url, args, model_id, samples, ignore_eos)

    metrics = compute_metrics(
        outcomes, duration, percentiles, lambda text: len(tokenizer.encode(text, add_special_tokens=False))
    )
    date = datetime.now().strftime("%Y%m%d-%H%M%S")
    result: dict[str, Any] = {
        "date": date,
        "backend": args.backend,
        "label": label,
        "model_id": model_id,
        "tokenizer_id": tokenizer_id,
        "dataset_name": args.dataset_name,
        "num_prompts": args.num_prompts,
        "request_rate": args.request_rate if math.isfinite(args.request_rate) else "inf",
        "burstiness": args.burstiness,
        "max_concurrency": args.max_concurrency,
        "ignore_eos": ignore_eos,
        "temperature": args.temperature,
        **_measurements(outcomes, duration, metrics),
    }

    errors = [o.error for o in outcomes if not o.success]
    for i, error in enumerate(errors[:10]):
        print(f"Failed request {i}: {error}")
    print(format_report(result, percentile_metrics, percentiles))
    if args.save_result:
        path = _result_path(args, label, model_id, date)
        path.write_text(json.dumps(result))
        print(f"Result written to {path}")
    if args.plot_dir:
        from kvserve.bench.plots import plot_latency_cdfs  # matplotlib only when plots are asked for

        for path in plot_latency_cdfs(result, args.plot_dir):
            print(f"Plot written to {path}")
    return result


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:
        asyncio.run(run_benchmark(args))
    except (ValueError, OSError, aiohttp.ClientError) as e:
        raise SystemExit(f"kvserve bench serve: {e}") from None


if __name__ == "__main__":
    main()
