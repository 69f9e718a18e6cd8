"""kvserve on Ray Serve: one AsyncEngine per replica, kvserve's own HTTP app behind Ray's proxy.

    serve run kvserve.integrations.ray_serve:build_app model=Qwen/Qwen3-0.6B max_model_len=4096
    serve run python/kvserve/integrations/ray_serve/example.yaml

Needs `pip install 'kvserve[ray]'`. The names load on first use, so that Ray's proxy can import
`proxy_errors` without loading the engine (torch).
"""

from __future__ import annotations

from kvserve.lazy_names import lazy_getattr

_LAZY = {
    "build_app": "kvserve.integrations.ray_serve.app_builder",
    "serve_namespace": "kvserve.integrations.ray_serve.app_builder",
    "KvserveDeployment": "kvserve.integrations.ray_serve.deployment",
    "proxy_middlewares": "kvserve.integrations.ray_serve.proxy_errors",
}

__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = ["KvserveDeployment", "build_app", "proxy_middlewares", "serve_namespace"]
