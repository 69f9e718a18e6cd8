"""vLLM's Prometheus metric set under a chosen prefix (`kvserve:` by default, `vllm:` for dashboards and
gateways that expect vLLM's names), fed by the engine's listeners, never by scanning engine state:

    StepStats (each executed step)   gauges (running, waiting, KV-cache usage, as the step left them) and
                                     counters (prefix-cache queries and hits, preemptions, tokens per step)
    RequestOutput (each delta)       prompt and generation token counters, time to first token,
                                     inter-token latency; on the final output the per-request histograms
                                     (end-to-end, queue, prefill, decode, inference time, token counts,
                                     max_tokens) and request_success by finish reason (stop, length, abort)
    EngineRequest (each submitted)   what the final output needs of its request: max_tokens, its sample
                                     group; n and the group's most generated tokens are observed once per
                                     group of n samples (a request of its own is a group of 1), as vLLM does
                                     for a parent request; a request that fails after it was accepted
                                     counts as request_success{finished_reason="error"}

Labels are vLLM's: model_name and engine ("0": one engine per server).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from kvserve.messages import StepStats
from kvserve.metrics import buckets
from kvserve.outputs import RequestOutput
from kvserve.request import EngineRequest

LABELS = ("model_name", "engine")
FINISH_REASONS = ("stop", "length", "abort", "error")
SLEEP_STATES = ("awake", "weights_offloaded", "discard_all")
N_BUCKETS = (1, 2, 5, 10, 20)


@dataclass(slots=True)
class _Tracked:
    """A submitted request, until its final output or its failure."""

    max_tokens: int | None  # as asked (None: up to the context length, resolved once the prompt is known)
    group_id: str
    accepted: bool = False


@dataclass(slots=True)
class _Group:
    n: int
    num_unfinished: int
    max_generated: int = 0
    served: bool = False  # a sample was accepted: the group is observed when its last sample ends


class ServerMetrics:
    def __init__(
        self, model_name: str, max_model_len: int, prefix: str = "kvserve", sleep_level: Callable[[], int] = lambda: 0
    ) -> None:
        self.registry = CollectorRegistry()
        self.prefix = prefix
        values = (model_name, "0")

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(f"{prefix}:{name}", doc, LABELS, registry=self.registry).labels(*values)

        def counter(name: str, doc: str) -> Counter:
            return Counter(f"{prefix}:{name}", doc, LABELS, registry=self.registry).labels(*values)

        def histogram(name: str, doc: str, bounds: Sequence[float]) -> Histogram:
            return Histogram(f"{prefix}:{name}", doc, LABELS, buckets=bounds, registry=self.registry).labels(*values)

        token_buckets = buckets.one_two_five(max_model_len)
        self.running = gauge("num_requests_running", "Number of requests in model execution batches.")
        self.waiting = gauge("num_requests_waiting", "Number of requests waiting to be processed.")
        self.kv_cache_usage = gauge("kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.")
        self.prefix_cache_queries = counter(
            "prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens."
        )
        self.prefix_cache_hits = counter("prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.")
        self.preemptions = counter("num_preemptions", "Cumulative number of preemption from the engine.")
        self.prompt_tokens = counter("prompt_tokens", "Number of prefill tokens processed.")
        self.generation_tokens = counter("generation_tokens", "Number of generation tokens processed.")
        self.iteration_tokens = histogram(
            "iteration_tokens_total", "Histogram of number of tokens per engine_step.", buckets.ITERATION_TOKENS
        )
        success = Counter(
            f"{prefix}:request_success",
            "Count of successfully processed requests.",
            (*LABELS, "finished_reason"),
            registry=self.registry,
        )
        self.success = {reason: success.labels(*values, reason) for reason in FINISH_REASONS}
        self.ttft = histogram(
            "time_to_first_token_seconds", "Histogram of time to first token in seconds.", buckets.TIME_TO_FIRST_TOKEN
        )
        self.itl = histogram(
            "inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", buckets.INTER_TOKEN_LATENCY
        )
        self.tpot = histogram(
            "request_time_per_output_token_seconds",
            "Histogram of time_per_output_token_seconds per request.",
            buckets.INTER_TOKEN_LATENCY,
        )
        self.e2e = histogram(
            "e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", buckets.REQUEST_LATENCY
        )
        self.queue = histogram(
            "request_queue_time_seconds",
            "Histogram of time spent in WAITING phase for request.",
            buckets.REQUEST_LATENCY,
        )
        self.inference = histogram(
            "request_inference_time_seconds",
            "Histogram of time spent in RUNNING phase for request.",
            buckets.REQUEST_LATENCY,
        )
        self.prefill = histogram(
            "request_prefill_time_seconds",
            "Histogram of time spent in PREFILL phase for request.",
            buckets.REQUEST_LATENCY,
        )
        self.decode = histogram(
            "request_decode_time_seconds",
            "Histogram of time spent in DECODE phase for request.",
            buckets.REQUEST_LATENCY,
        )
        self.request_prompt_tokens = histogram(
            "request_prompt_tokens", "Number of prefill tokens processed.", token_buckets
        )
        self.request_generation_tokens = histogram(
            "request_generation_tokens", "Number of generation tokens processed.", token_buckets
        )
        self.prefill_kv_computed = histogram(
            "request_prefill_kv_computed_tokens",
            "Histogram of new KV tokens computed during prefill (excluding cached tokens).",
            token_buckets,
        )
        self.request_params_n = histogram("request_params_n", "Histogram of the n request parameter.", N_BUCKETS)
        self.request_params_max_tokens = histogram(
            "request_params_max_tokens", "Histogram of the max_tokens request parameter.", token_buckets
        )
        self.request_max_num_generation_tokens = histogram(
            "request_max_num_generation_tokens",
            "Histogram of maximum number of requested generation tokens.",
            token_buckets,
        )
        sleep_state = Gauge(
            f"{prefix}:engine_sleep_state",
            "Engine sleep state; awake = 0 means engine is sleeping; awake = 1 means engine is awake; "
            "weights_offloaded = 1 means sleep level 1; discard_all = 1 means sleep level 2.",
            (*LABELS, "sleep_state"),
            registry=self.registry,
        )
        # Read when scraped: the engine's sleep level is the one source of truth.
        sleep_state.labels(*values, "awake").set_function(lambda: float(sleep_level() == 0))
        sleep_state.labels(*values, "weights_offloaded").set_function(lambda: float(sleep_level() == 1))
        sleep_state.labels(*values, "discard_all").set_function(lambda: float(sleep_level() == 2))
        self._latest_token: dict[str, float] = {}  # request id -> time of its latest token, while it runs
        self._max_model_len = max_model_len
        self._tracked: dict[str, _Tracked] = {}  # request id -> its request, from submission to its end
        self._groups: dict[str, _Group] = {}  # sample group id -> its unfinished count, while one runs

    def on_submitted(self, request: EngineRequest) -> None:
        if request.sampling is None:  # pooling requests have no n or max_tokens
            return
        samples = request.samples
        group_id = samples.group_id if samples is not None else request.request_id
        if group_id not in self._groups:
            self._groups[group_id] = _Group(samples.n if samples is not None else 1, 0)
        self._groups[group_id].num_unfinished += 1
        self._tracked[request.request_id] = _Tracked(request.sampling.max_tokens, group_id)

    def on_failed(self, request_id: str) -> None:
        tracked = self._tracked.pop(request_id, None)
        if tracked is None:
            return
        if tracked.accepted:  # one refused before acceptance (a 4xx) is not a request the engine served
            self.success["error"].inc()
        self._sample_ended(tracked.group_id, 0, tracked.accepted)

    def _sample_ended(self, group_id: str, num_generated: int, served: bool) -> None:
        group = self._groups[group_id]
        group.num_unfinished -= 1
        group.max_generated = max(group.max_generated, num_generated)
        group.served |= served
        if group.num_unfinished == 0:
            del self._groups[group_id]
            if group.served:
                self.request_params_n.observe(group.n)
                self.request_max_num_generation_tokens.observe(group.max_generated)

    def on_step(self, stats: StepStats) -> None:
        self.running.set(stats.num_running)
        self.waiting.set(stats.num_waiting)
        self.kv_cache_usage.set(stats.kv_cache_usage)
        self.prefix_cache_queries.inc(stats.prefix_cache_queries)
        self.prefix_cache_hits.inc(stats.prefix_cache_hits)
        self.preemptions.inc(stats.num_preemptions)
        self.iteration_tokens.observe(stats.num_scheduled_tokens)

    def on_outputs(self, outputs: Sequence[RequestOutput]) -> None:
        # Per output: a dict lookup and a few observations; nothing per request beyond its latest token time.
        for output in outputs:
            tracked = self._tracked.get(output.request_id)
            if tracked is not None:
                tracked.accepted = True
            num_tokens = len(output.token_ids)
            if num_tokens or output.pooled is not None:
                self._on_rows(output, num_tokens)
            if output.finished:
                self._on_finished(output)

    def _on_rows(self, output: RequestOutput, num_tokens: int) -> None:
        times = output.times
        previous = self._latest_token.get(output.request_id)
        if previous is None:  # the request's first output row: its prompt is computed
            self.prompt_tokens.inc(output.num_prompt_tokens)
            if num_tokens:
                self.ttft.observe(times.first_token - times.arrival)
        elif num_tokens:
            gap = (times.latest_token - previous) / num_tokens
            for _ in range(num_tokens):
                self.itl.observe(gap)
        self.generation_tokens.inc(num_tokens)
        if not output.finished:
            self._latest_token[output.request_id] = times.latest_token

    def _on_finished(self, output: RequestOutput) -> None:
        self._latest_token.pop(output.request_id, None)
        self.success[output.finish_reason or "error"].inc()
        times = output.times
        for histogram, value in (
            (self.e2e, times.e2e_time),
            (self.queue, times.queue_time),
            (self.prefill, times.prefill_time),
            (self.decode, times.decode_time),
        ):
            if value is not None:
                histogram.observe(value)
        if times.latest_token is not None and times.first_scheduled is not None:
            self.inference.observe(times.latest_token - times.first_scheduled)
        self.request_prompt_tokens.observe(output.num_prompt_tokens)
        self.request_generation_tokens.observe(output.num_output_tokens)
        self.prefill_kv_computed.observe(output.num_prompt_tokens - output.num_cached_tokens)
        if output.num_output_tokens > 1 and times.decode_time is not None:
            self.tpot.observe(times.decode_time / (output.num_output_tokens - 1))
        tracked = self._tracked.pop(output.request_id, None)
        if tracked is not None:
            max_tokens = tracked.max_tokens
            self.request_params_max_tokens.observe(
                max_tokens if max_tokens is not None else self._max_model_len - output.num_prompt_tokens
            )
            self._sample_ended(tracked.group_id, output.num_output_tokens, served=True)

    def exposition(self) -> bytes:
        """The Prometheus text format of every metric."""
        return generate_latest(self.registry)
