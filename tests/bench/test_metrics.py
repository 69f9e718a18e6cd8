"""The benchmark's arithmetic against hand computation, from synthetic per-request timings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from kvserve.bench.client import RequestOutcome
from kvserve.bench.metrics import (
    compute_metrics,
    distribution,
    peak_concurrency,
    peak_output_tokens_per_s,
    request_tpot,
)
from kvserve.bench.serve import arrival_offsets, percentile_key


def outcome(start: float, ttft: float, itl: list[float], output_tokens: int | None, prompt_len: int, **kw):
    return RequestOutcome(
        success=True,
        start_time=start,
        ttft=ttft,
        itl=itl,
        latency=ttft + sum(itl),
        output_tokens=output_tokens,
        prompt_len=prompt_len,
        **kw,
    )


# A: 4 tokens in 4 chunks. B: a one-token answer. C: failed. D: no usage chunk, so its text is counted.
A = outcome(0.00, 0.10, [0.02, 0.03, 0.05], 4, 10)
B = outcome(0.05, 0.20, [], 1, 20)
C = RequestOutcome(success=False, start_time=0.01, prompt_len=30, error="HTTP 500 Internal Server Error: boom")
D = outcome(0.30, 0.05, [0.01], None, 5, generated_text="ab")


def test_metrics_by_hand():
    metrics = compute_metrics([A, B, C, D], duration_s=0.5, percentiles=[50, 99], count_tokens=len)
    assert (metrics.completed, metrics.failed) == (3, 1)
    # Input: A, B, D only (C failed). Output: 4 + 1 + len("ab").
    assert (metrics.total_input_tokens, metrics.total_output_tokens) == (35, 7)
    assert metrics.output_lens == [4, 1, 0, 2]
    assert metrics.request_throughput == pytest.approx(3 / 0.5)
    assert metrics.output_throughput == pytest.approx(7 / 0.5)
    assert metrics.total_token_throughput == pytest.approx(42 / 0.5)

    # TPOT = (E2EL - TTFT) / (tokens - 1): A (0.2 - 0.1) / 3, D (0.06 - 0.05) / 1; B has one token: none.
    assert metrics.tpots == pytest.approx([0.1 / 3, None, None, 0.01])
    tpot = metrics.latencies["tpot"]
    assert tpot.mean_ms == pytest.approx((100 / 3 + 10) / 2)
    assert tpot.median_ms == pytest.approx((100 / 3 + 10) / 2)

    ttft = metrics.latencies["ttft"]  # [100, 200, 50] ms
    assert ttft.mean_ms == pytest.approx(350 / 3)
    assert ttft.median_ms == pytest.approx(100)
    mean = 350 / 3
    assert ttft.std_ms == pytest.approx(math.sqrt(((100 - mean) ** 2 + (200 - mean) ** 2 + (50 - mean) ** 2) / 3))
    # Linear interpolation over the sorted [50, 100, 200]: p99 sits at rank 0.99 * 2 = 1.98.
    assert ttft.percentiles_ms == ((50, pytest.approx(100)), (99, pytest.approx(100 + 0.98 * 100)))

    itl = metrics.latencies["itl"]  # pooled gaps of all successful requests: [20, 30, 50, 10] ms
    assert itl.mean_ms == pytest.approx(27.5)
    assert itl.median_ms == pytest.approx(25)
    assert itl.percentiles_ms[1] == (99, pytest.approx(np.percentile([20, 30, 50, 10], 99)))

    e2el = metrics.latencies["e2el"]  # [200, 200, 60] ms
    assert e2el.mean_ms == pytest.approx(460 / 3)
    assert e2el.median_ms == pytest.approx(200)

    # A [0, 0.2) and B [0.05, 0.25) overlap; D [0.3, 0.36) does not; C failed and is left out.
    assert metrics.max_concurrent_requests == 2
    # Every chunk of A (4), B (1) and D (2) arrives within the first second.
    assert metrics.max_output_tokens_per_s == 7


def test_request_without_usage_and_without_tokenizer_counts_one_token():
    metrics = compute_metrics([D], duration_s=1.0, percentiles=[99], count_tokens=None)
    assert metrics.output_lens == [1]
    assert metrics.tpots == [None]
    assert metrics.latencies["tpot"].mean_ms == 0.0


def test_zero_completion_tokens_in_usage_falls_back_to_the_text():
    empty_usage = outcome(0.0, 0.1, [0.1], 0, 3, generated_text="abc")
    assert compute_metrics([empty_usage], 1.0, [99], count_tokens=len).output_lens == [3]


def test_single_output_token_tpot_rule():
    one = outcome(0.0, 0.1, [], 1, 1)
    two = outcome(0.0, 0.1, [0.04], 2, 1)
    assert request_tpot(one, 1) is None
    assert request_tpot(one, 0) is None
    assert request_tpot(two, 2) == pytest.approx(0.04)
    # Usage may count more tokens than chunks (several tokens in one chunk): TPOT divides by tokens.
    assert request_tpot(two, 5) == pytest.approx(0.01)


def test_all_failed_reports_zeros():
    metrics = compute_metrics([C, C], duration_s=2.0, percentiles=[99], count_tokens=len)
    assert (metrics.completed, metrics.failed, metrics.total_output_tokens) == (0, 2, 0)
    assert metrics.request_throughput == 0.0
    assert metrics.max_concurrent_requests == 0 and metrics.max_output_tokens_per_s == 0.0
    for dist in metrics.latencies.values():
        assert (dist.mean_ms, dist.median_ms, dist.std_ms, dist.percentiles_ms) == (0.0, 0.0, 0.0, ((99.0, 0.0),))


def test_distribution_is_numpy_in_milliseconds():
    values = [0.003, 0.001, 0.002, 0.010]
    dist = distribution(values, [25, 90, 99.9])
    ms = np.array(values) * 1000
    assert dist.mean_ms == pytest.approx(ms.mean())
    assert dist.median_ms == pytest.approx(2.5)
    assert dist.std_ms == pytest.approx(ms.std())
    assert [p for p, _ in dist.percentiles_ms] == [25, 90, 99.9]
    assert [v for _, v in dist.percentiles_ms] == pytest.approx(np.percentile(ms, [25, 90, 99.9]))


def test_peak_concurrency_half_open_intervals():
    back_to_back = [outcome(0.0, 0.5, [0.5], 2, 1), outcome(1.0, 0.5, [0.5], 2, 1)]
    assert peak_concurrency(back_to_back) == 1
    nested = [outcome(0.0, 1.0, [2.0], 2, 1), outcome(0.5, 0.1, [0.1], 2, 1), outcome(1.0, 0.1, [], 1, 1)]
    assert peak_concurrency(nested) == 2
    assert peak_concurrency([]) == 0


def test_peak_output_tokens_per_second_buckets_chunk_times():
    # Chunks at 0.5, 1.1 and 1.2 s: one in second 0, two in second 1.
    assert peak_output_tokens_per_s([outcome(0.0, 0.5, [0.6, 0.1], 3, 1)]) == 2
    # Seconds count from the earliest start (1.5 s): chunks at 1.6 and 2.4 s share its first second.
    late = [outcome(1.9, 0.5, [], 1, 1), outcome(1.5, 0.1, [], 1, 1)]
    assert peak_output_tokens_per_s(late) == 2


def test_percentile_keys_follow_vllm():
    assert [percentile_key(p) for p in (99.0, 50.0, 99.9)] == ["p99", "p50", "p99.9"]


def test_arrivals_all_at_once_at_infinite_rate():
    assert arrival_offsets(4, math.inf, 1.0, np.random.default_rng(0)) == [0.0] * 4


def test_poisson_arrivals_are_seeded_and_end_at_n_over_rate():
    offsets = arrival_offsets(50, 10.0, 1.0, np.random.default_rng(3))
    assert offsets == arrival_offsets(50, 10.0, 1.0, np.random.default_rng(3))
    assert offsets != arrival_offsets(50, 10.0, 1.0, np.random.default_rng(4))
    assert offsets[-1] == pytest.approx(50 / 10.0)
    assert all(b > a for a, b in zip(offsets, offsets[1:]))


def test_burstiness_shapes_the_gaps():
    even = arrival_offsets(5, 2.0, math.inf, np.random.default_rng(0))
    assert even == pytest.approx([0.5, 1.0, 1.5, 2.0, 2.5])
    # Gamma gaps with shape k have a coefficient of variation 1 / sqrt(k): bursty (k < 1) spreads more.
    rng = np.random.default_rng(0)
    cv = {k: np.std(np.diff(arrival_offsets(4000, 100.0, k, rng))) * 100.0 for k in (0.25, 1.0, 4.0)}
    assert cv[0.25] == pytest.approx(2.0, rel=0.1)
    assert cv[1.0] == pytest.approx(1.0, rel=0.1)
    assert cv[4.0] == pytest.approx(0.5, rel=0.1)
