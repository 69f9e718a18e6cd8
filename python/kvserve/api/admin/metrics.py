"""GET /metrics: Prometheus' text format (kvserve.metrics.ServerMetrics)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from quart import Blueprint, Quart, Response, current_app

from kvserve.api.settings import ServerSettings
from kvserve.metrics import ServerMetrics
from kvserve.metrics.admission import AdmissionCollector

bp = Blueprint("admin_metrics", __name__)

_CONFIG_KEY = "KVSERVE_METRICS"


def install_metrics(app: Quart, engine, settings: ServerSettings) -> ServerMetrics:
    """Feeds a ServerMetrics from the engine's step stats and outputs; GET /metrics exposes it."""
    metrics = ServerMetrics(
        settings.model_name, engine.max_model_len, settings.metrics_prefix, lambda: engine.sleep_level
    )
    metrics.registry.register(AdmissionCollector(engine, settings.model_name, settings.metrics_prefix))
    engine.add_stats_listener(metrics.on_step)
    engine.add_output_listener(metrics.on_outputs)
    engine.add_request_listener(metrics)
    app.config[_CONFIG_KEY] = metrics
    return metrics


@bp.get("/metrics")
async def metrics() -> Response:
    server_metrics: ServerMetrics = current_app.config[_CONFIG_KEY]
    return Response(server_metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
