"""system_fingerprint: which server build and configuration produced a response (vLLM's shape)."""

from __future__ import annotations

import dataclasses
import hashlib

import kvserve
from kvserve.engine import AsyncEngine


def system_fingerprint(engine: AsyncEngine) -> str:
    """kvserve-<version>-<8 hex of the engine configuration>; computed once at start-up."""
    identity = repr((dataclasses.asdict(engine.config), engine.max_model_len, engine.model_config.architecture))
    return f"kvserve-{kvserve.__version__}-{hashlib.sha256(identity.encode()).hexdigest()[:8]}"
