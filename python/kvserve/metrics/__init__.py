"""Prometheus metrics with vLLM's names and semantics, read from the engine's step stats and request
outputs."""

from kvserve.metrics.server_metrics import ServerMetrics

__all__ = ["ServerMetrics"]
