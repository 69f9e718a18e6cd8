"""GET /metrics: vLLM's metric names (--metrics-prefix vllm) with exact counts after a known workload, and
the per-token latencies from hand-written request timestamps."""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client.parser import text_string_to_metric_families

from kvserve.messages import StepStats
from kvserve.metrics import ServerMetrics
from kvserve.outputs import RequestOutput, RequestTimes
from kvserve.request import EngineRequest, SampleGroup
from kvserve.sampling_params import SamplingParams
from tests.api.http_calls import call

NUM_REQUESTS = 4
MAX_TOKENS = 10


def scrape(server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    status, headers, body = call(server.base_url, "GET", "/metrics")  # public: no key
    assert status == 200 and headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted((k, v) for k, v in sample.labels.items() if k not in ("model_name", "engine")))): (
            sample.value
        )
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after[key] - before.get(key, 0.0)


def test_counts_after_a_known_workload_are_exact(ops_server, ops_client):
    prompts = [[100 + i, *range(20, 31)] for i in range(NUM_REQUESTS)]  # distinct first blocks: no prefix hits
    before = scrape(ops_server)

    def complete(prompt):
        return ops_client.completions.create(
            model="tiny-ops", prompt=prompt, max_tokens=MAX_TOKENS, temperature=0.0, extra_body={"ignore_eos": True}
        )

    with ThreadPoolExecutor(NUM_REQUESTS) as pool:
        results = list(pool.map(complete, prompts))
    time.sleep(0.2)  # a step's stats follow its outputs to the router
    after = scrape(ops_server)
    num_prompt_tokens = sum(r.usage.prompt_tokens for r in results)
    assert all(r.usage.completion_tokens == MAX_TOKENS for r in results)

    assert delta(before, after, "vllm:request_success_total", finished_reason="length") == NUM_REQUESTS
    assert delta(before, after, "vllm:request_success_total", finished_reason="stop") == 0
    assert delta(before, after, "vllm:generation_tokens_total") == NUM_REQUESTS * MAX_TOKENS
    assert delta(before, after, "vllm:prompt_tokens_total") == num_prompt_tokens
    assert delta(before, after, "vllm:prefix_cache_queries_total") == num_prompt_tokens
    assert delta(before, after, "vllm:prefix_cache_hits_total") == 0
    assert delta(before, after, "vllm:num_preemptions_total") == 0
    assert delta(before, after, "vllm:time_to_first_token_seconds_count") == NUM_REQUESTS
    assert delta(before, after, "vllm:inter_token_latency_seconds_count") == NUM_REQUESTS * (MAX_TOKENS - 1)
    assert delta(before, after, "vllm:request_time_per_output_token_seconds_count") == NUM_REQUESTS
    for name in ("e2e_request_latency", "request_queue_time", "request_prefill_time", "request_decode_time"):
        assert delta(before, after, f"vllm:{name}_seconds_count") == NUM_REQUESTS, name
    assert delta(before, after, "vllm:request_inference_time_seconds_count") == NUM_REQUESTS
    assert delta(before, after, "vllm:request_generation_tokens_sum") == NUM_REQUESTS * MAX_TOKENS
    assert delta(before, after, "vllm:request_prompt_tokens_sum") == num_prompt_tokens
    # Each request is a group of n = 1, asked for MAX_TOKENS and given them all.
    assert delta(before, after, "vllm:request_params_n_count") == NUM_REQUESTS
    assert delta(before, after, "vllm:request_params_n_sum") == NUM_REQUESTS
    assert delta(before, after, "vllm:request_params_max_tokens_sum") == NUM_REQUESTS * MAX_TOKENS
    assert delta(before, after, "vllm:request_max_num_generation_tokens_count") == NUM_REQUESTS
    assert delta(before, after, "vllm:request_max_num_generation_tokens_sum") == NUM_REQUESTS * MAX_TOKENS
    # Every prompt token once, then each generated token but the last as the next step's input.
    assert delta(before, after, "vllm:iteration_tokens_total_sum") == num_prompt_tokens + NUM_REQUESTS * (
        MAX_TOKENS - 1
    )
    # Gauges as the last step left them: nothing running or waiting, no block held.
    assert after[("vllm:num_requests_running", ())] == 0
    assert after[("vllm:num_requests_waiting", ())] == 0
    assert after[("vllm:kv_cache_usage_perc", ())] == 0
    assert after[("vllm:engine_sleep_state", (("sleep_state", "awake"),))] == 1
    assert delta(before, after, "vllm:e2e_request_latency_seconds_sum") > 0


def wait_for(server, name: str, before: dict, expected: float, **labels: str) -> dict:
    """Scrapes until the counter reached `expected` (an abort's output follows the disconnect by a step)."""
    deadline = time.monotonic() + 30
    while True:
        after = scrape(server)
        if delta(before, after, name, **labels) >= expected or time.monotonic() > deadline:
            return after
        time.sleep(0.1)


def test_n_samples_count_once_and_aborts_count_as_abort(ops_server, ops_client):
    """n = 3 is one group (request_params_n observes 3 once, the longest sample once); each sample observes its
    max_tokens; a stream left after its first chunk is aborted and counted under finished_reason="abort"."""
    before = scrape(ops_server)
    ops_client.chat.completions.create(
        model="tiny-ops",
        messages=[{"role": "user", "content": "Count"}],
        n=3,
        max_tokens=MAX_TOKENS,
        seed=1,
        extra_body={"ignore_eos": True},
    )
    stream = ops_client.chat.completions.create(
        model="tiny-ops",
        messages=[{"role": "user", "content": "Talk"}],
        max_tokens=200,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    next(iter(stream))
    stream.close()
    after = wait_for(ops_server, "vllm:request_success_total", before, 1, finished_reason="abort")
    assert delta(before, after, "vllm:request_success_total", finished_reason="abort") == 1
    assert delta(before, after, "vllm:request_success_total", finished_reason="length") == 3
    assert delta(before, after, "vllm:request_success_total", finished_reason="error") == 0
    assert delta(before, after, "vllm:request_params_n_count") == 2
    assert delta(before, after, "vllm:request_params_n_sum") == 3 + 1
    assert delta(before, after, "vllm:request_params_n_bucket", le="2.0") == 1  # the single stream
    assert delta(before, after, "vllm:request_params_max_tokens_count") == 4
    assert delta(before, after, "vllm:request_params_max_tokens_sum") == 3 * MAX_TOKENS + 200
    aborted_tokens = delta(before, after, "vllm:request_max_num_generation_tokens_sum") - MAX_TOKENS
    assert delta(before, after, "vllm:request_max_num_generation_tokens_count") == 2
    assert 1 <= aborted_tokens < 200


def test_groups_max_tokens_and_failures_from_submitted_requests():
    """By hand: a request without max_tokens observes what the context leaves it; a failure after acceptance
    counts as an error and still closes its group; one refused before acceptance counts nowhere."""
    metrics = ServerMetrics("m", max_model_len=64)
    params = SamplingParams(max_tokens=None)
    group = SampleGroup("g", 2)
    for request in (
        EngineRequest("g-0", "hi", sampling=params, samples=group),
        EngineRequest("g-1", "hi", sampling=params, samples=group),
        EngineRequest("refused", "hi", sampling=params),
    ):
        metrics.on_submitted(request)
    for output in outputs_of("g-0", 10.0, [11.0, 11.5], "stop"):
        metrics.on_outputs([output])
    metrics.on_outputs([outputs_of("g-1", 10.0, [], "stop")[0]])  # accepted, then the engine fails it
    metrics.on_failed("g-1")
    metrics.on_failed("refused")
    value = exposed(metrics)

    assert value("request_success_total", finished_reason="stop") == 1
    assert value("request_success_total", finished_reason="error") == 1
    assert value("request_params_n_count") == 1 and value("request_params_n_sum") == 2
    assert value("request_max_num_generation_tokens_sum") == 2  # the longer sample: 2 tokens
    assert value("request_params_max_tokens_sum") == 64 - 3  # the context left after a 3-token prompt
    assert not metrics._tracked and not metrics._groups


def exposed(metrics: ServerMetrics) -> Callable[..., float]:
    """A metric's value (`kvserve:` name, labels but model and engine) as the exposition shows it."""
    samples = {
        (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("model_name", "engine")))): s.value
        for family in text_string_to_metric_families(metrics.exposition().decode())
        for s in family.samples
    }

    def value(name: str, **labels: str) -> float:
        return samples[(f"kvserve:{name}", tuple(sorted(labels.items())))]

    return value


def outputs_of(request_id: str, arrival: float, token_times: list[float], reason: str) -> list[RequestOutput]:
    """The deltas the router sees for one request: accepted, then one token per step."""
    scheduled = arrival + 0.5
    accepted = RequestOutput(request_id, "", [], 3, 0, 0, [1, 2, 3], RequestTimes(arrival))
    deltas = [accepted]
    for i, t in enumerate(token_times):
        last = i == len(token_times) - 1
        times = RequestTimes(arrival, scheduled, token_times[0], t)
        deltas.append(
            RequestOutput(request_id, "x", [7], 3, i + 1, 1, [1, 2, 3], times, last, reason if last else None)
        )
    return deltas


def test_latencies_follow_the_request_timestamps():
    metrics = ServerMetrics("m", max_model_len=64)
    outputs = outputs_of("a", 10.0, [11.0, 11.25, 11.75], "stop")
    for output in outputs:  # one delta per step, as the router delivers them
        metrics.on_outputs([output])
    metrics.on_step(
        StepStats(
            step=1,
            time=11.0,
            num_running=0,
            num_waiting=2,
            num_used_blocks=5,
            num_free_blocks=95,
            num_total_blocks=100,
            prefix_cache_queries=3,
            prefix_cache_hits=1,
            num_preemptions=1,
            num_scheduled_tokens=6,
            num_scheduled_reqs=2,
            num_encoder_tokens=0,
            num_generated_tokens=1,
            num_finished=0,
            num_pooled=0,
        )
    )
    value = exposed(metrics)

    assert value("time_to_first_token_seconds_sum") == pytest.approx(1.0)
    assert value("inter_token_latency_seconds_count") == 2
    assert value("inter_token_latency_seconds_sum") == pytest.approx(0.75)
    assert value("inter_token_latency_seconds_bucket", le="0.3") == 1  # 0.25 s, then 0.5 s
    assert value("e2e_request_latency_seconds_sum") == pytest.approx(1.75)
    assert value("request_queue_time_seconds_sum") == pytest.approx(0.5)
    assert value("request_prefill_time_seconds_sum") == pytest.approx(0.5)
    assert value("request_decode_time_seconds_sum") == pytest.approx(0.75)
    assert value("request_inference_time_seconds_sum") == pytest.approx(1.25)
    assert value("request_time_per_output_token_seconds_sum") == pytest.approx(0.375)
    assert value("request_success_total", finished_reason="stop") == 1
    assert value("generation_tokens_total") == 3
    assert value("prompt_tokens_total") == 3
    assert value("request_prefill_kv_computed_tokens_sum") == 2  # 3 prompt tokens, 1 from the cache
    assert value("num_requests_waiting") == 2
    assert value("kv_cache_usage_perc") == pytest.approx(0.05)
    assert value("prefix_cache_queries_total") == 3 and value("prefix_cache_hits_total") == 1
    assert not metrics._latest_token  # nothing kept once the request finished
