"""An engine stand-in for the render routes: a route runs unchanged, and each engine request it submits is
prepared exactly as the engine would (tokenized, truncated, max_tokens resolved, checked against the
model), recorded, and not run. Rendering thereby follows every route's own front half, whatever it adds.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kvserve.errors import KvserveError
from kvserve.request import EngineRequest, PreparedRequest

if TYPE_CHECKING:
    from kvserve.engine import AsyncEngine


class Rendered(Exception):
    """Ends a route once its engine requests are recorded."""


class _RecordingStream:
    """What generate() returns: the first step records the request and stops the route."""

    def __init__(self, engine: RecordingEngine, request: EngineRequest) -> None:
        self.engine = engine
        self.request = request

    def __aiter__(self) -> _RecordingStream:
        return self

    async def __anext__(self) -> Any:
        self.engine.record(self.request)
        raise Rendered

    async def aclose(self) -> None:
        """Nothing runs, so nothing is left to abort."""


class RecordingEngine:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self.prepared: list[PreparedRequest] = []
        self.errors: list[KvserveError] = []  # a refused request, even when a sibling stopped the route first

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)  # the model's config, tokenizer and limits, as the route reads them

    def record(self, request: EngineRequest) -> None:
        try:
            self.prepared.append(self._engine.prepare(request))
        except KvserveError as e:
            self.errors.append(e)
            raise

    def generate(self, request: EngineRequest) -> _RecordingStream:
        return _RecordingStream(self, request)
