"""Per-request outcomes to the numbers `vllm bench serve` reports, computed with its definitions.

- Only successful requests contribute to latencies, token totals and throughputs; failed ones are counted.
- TTFT, E2EL: one sample per request. ITL: every gap of every request, pooled.
- TPOT of a request = (E2EL - TTFT) / (output tokens - 1), only for requests with more than one output
  token (a one-token answer has no decode time to divide).
- Throughputs divide by the whole run's duration (first dispatch to last completion).
- Mean, median, std (population) and linearly interpolated percentiles as numpy computes them, in ms;
  an empty sample reports 0 for everything, as vLLM's `np.mean(values or 0)` does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from kvserve.bench.client import RequestOutcome

LATENCY_METRICS = ("ttft", "tpot", "itl", "e2el")


@dataclass(frozen=True, slots=True)
class Distribution:
    mean_ms: float
    median_ms: float
    std_ms: float
    percentiles_ms: tuple[tuple[float, float], ...]  # (percentile, value)


def distribution(values_s: Sequence[float], percentiles: Sequence[float]) -> Distribution:
    samples = np.asarray(values_s if len(values_s) else [0.0], dtype=np.float64) * 1000.0
    return Distribution(
        mean_ms=float(np.mean(samples)),
        median_ms=float(np.median(samples)),
        std_ms=float(np.std(samples)),
        percentiles_ms=tuple((float(p), float(np.percentile(samples, p))) for p in percentiles),
    )


def request_tpot(outcome: RequestOutcome, output_len: int) -> float | None:
    """Seconds per output token after the first; None for answers of one token or none."""
    if output_len <= 1:
        return None
    return (outcome.latency - outcome.ttft) / (output_len - 1)


def peak_concurrency(outcomes: Sequence[RequestOutcome]) -> int:
    """The most requests in flight at once, each over [start, start + E2EL); a request that ends exactly
    when another starts does not overlap it."""
    events = sorted(
        [(o.start_time, 1) for o in outcomes] + [(o.start_time + o.latency, -1) for o in outcomes]
    )  # at equal times -1 sorts first: departures before arrivals
    in_flight = peak = 0
    for _, delta in events:
        in_flight += delta
        peak = max(peak, in_flight)
    return peak


def peak_output_tokens_per_s(outcomes: Sequence[RequestOutcome]) -> float:
    """The most token chunks received in one whole second after the first request started (vLLM counts
    chunks here, each chunk's time being start + TTFT + the ITLs before it)."""
    if not outcomes:
        return 0.0
    first_start = min(o.start_time for o in outcomes)
    last_end = max(o.start_time + o.latency for o in outcomes)
    counts = np.zeros(math.ceil(last_end - first_start) + 1)
    for o in outcomes:
        times = o.start_time + o.ttft + np.concatenate(([0.0], np.cumsum(o.itl)))
        seconds = (times - first_start).astype(np.int64)
        np.add.at(counts, seconds[(seconds >= 0) & (seconds < len(counts))], 1)
    return float(counts.max())


@dataclass(frozen=True, slots=True)
class BenchmarkMetrics:
    completed: int
    failed: int
    total_input_tokens: int
    total_output_tokens: int
    request_throughput: float
    output_throughput: float
    total_token_throughput: float
    max_output_tokens_per_s: float
    max_concurrent_requests: int
    output_lens: list[int]  # per request, 0 for a failed one
    tpots: list[float | None]  # per request, seconds; None for a failed or one-token request
    latencies: dict[str, Distribution]  # LATENCY_METRICS -> distribution


def compute_metrics(
    outcomes: Sequence[RequestOutcome],
    duration_s: float,
    percentiles: Sequence[float],
    count_tokens: Callable[[str], int] | None,
) -> BenchmarkMetrics:
    """`count_tokens` sizes the generated text of a request whose stream had no usage chunk; without it
    such a request counts one token (vLLM's fallbacks)."""
    output_lens: list[int] = []
    tpots: list[float | None] = []
    samples: dict[str, list[float]] = {name: [] for name in LATENCY_METRICS}
    total_input = 0
    succeeded = [o for o in outcomes if o.success]
    for outcome in outcomes:
        if not outcome.success:
            output_lens.append(0)
            tpots.append(None)
            continue
        output_len = outcome.output_tokens
        if not output_len:
            output_len = count_tokens(outcome.generated_text) if count_tokens is not None else 1
        output_lens.append(output_len)
        total_input += outcome.prompt_len
        tpot = request_tpot(outcome, output_len)
        tpots.append(tpot)
        if tpot is not None:
            samples["tpot"].append(tpot)
        samples["ttft"].append(outcome.ttft)
        samples["itl"].extend(outcome.itl)
        samples["e2el"].append(outcome.latency)
    total_output = sum(output_lens)
    return BenchmarkMetrics(
        completed=len(succeeded),
        failed=len(outcomes) - len(succeeded),
        total_input_tokens=total_input,
        total_output_tokens=total_output,
        request_throughput=len(succeeded) / duration_s,
        output_throughput=total_output / duration_s,
        total_token_throughput=(total_input + total_output) / duration_s,
        max_output_tokens_per_s=peak_output_tokens_per_s(succeeded),
        max_concurrent_requests=peak_concurrency(succeeded),
        output_lens=output_lens,
        tpots=tpots,
        latencies={name: distribution(values, percentiles) for name, values in samples.items()},
    )
