"""Admission-control and deadline metrics, read from the engine's plain counters when /metrics is scraped:

<prefix>:num_requests_rejected_total    engine requests refused with 503 because the queue was full
<prefix>:num_requests_timed_out_total   requests aborted at their deadline (--request-timeout)
<prefix>:num_requests_queued            requests waiting to be scheduled (tokenizing included)
<prefix>:num_tokens_queued              their prompt tokens, once tokenized
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from kvserve.engine import AsyncEngine

LABELS = ["model_name", "engine"]


class AdmissionCollector(Collector):
    def __init__(self, engine: AsyncEngine, model_name: str, prefix: str) -> None:
        self.engine = engine
        self.prefix = prefix
        self.values = [model_name, "0"]

    def collect(self) -> Iterator[Metric]:
        admission = self.engine.admission
        for family, name, doc, value in (
            (
                CounterMetricFamily,
                "num_requests_rejected",
                "Requests refused because the queue was full.",
                admission.num_rejected,
            ),
            (
                CounterMetricFamily,
                "num_requests_timed_out",
                "Requests aborted at their deadline.",
                self.engine.num_timed_out,
            ),
            (
                GaugeMetricFamily,
                "num_requests_queued",
                "Requests waiting to be scheduled.",
                admission.num_queued_requests,
            ),
            (
                GaugeMetricFamily,
                "num_tokens_queued",
                "Prompt tokens of the requests waiting to be scheduled.",
                admission.num_queued_tokens,
            ),
        ):
            metric = family(f"{self.prefix}:{name}", doc, labels=LABELS)
            metric.add_metric(self.values, value)
            yield metric
