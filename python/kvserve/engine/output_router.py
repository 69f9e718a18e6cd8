"""OutputRouter: the engine's end of the pipeline; delivers outputs and errors to request streams, and each
step's stats to the engine's stats listeners."""

from __future__ import annotations

import logging
from collections.abc import Callable

from kvserve.actors.base import Actor
from kvserve.engine.request_stream import RequestStream
from kvserve.errors import InvalidRequestError, KvserveError
from kvserve.messages import RequestFailed, StepStats, StreamOutputs

logger = logging.getLogger(__name__)

StatsListener = Callable[[StepStats], None]


class OutputRouter(Actor):
    name = "output-router"

    def __init__(self) -> None:
        super().__init__()
        self.streams: dict[str, RequestStream] = {}
        self.stats_listeners: list[StatsListener] = []
        self.handles(StreamOutputs, self.on_outputs)
        self.handles(RequestFailed, self.on_failed)
        self.handles(StepStats, self.on_stats)

    def open(self, request_id: str) -> RequestStream:
        if request_id in self.streams:
            raise InvalidRequestError(f"Request id {request_id!r} is already in use.", "request_id")
        stream = self.streams[request_id] = RequestStream(request_id)
        return stream

    def close(self, request_id: str) -> None:
        self.streams.pop(request_id, None)

    def on_outputs(self, message: StreamOutputs) -> None:
        for output in message.outputs:
            stream = self.streams.get(output.request_id)
            if stream is not None:  # its consumer may have gone away
                stream.put(output)

    def on_failed(self, failure: RequestFailed) -> None:
        stream = self.streams.get(failure.request_id)
        if stream is not None:
            stream.put(failure.error.to_exception())

    def on_stats(self, stats: StepStats) -> None:
        for listener in self.stats_listeners:
            listener(stats)

    def fail_all(self, error: KvserveError) -> None:
        for stream in self.streams.values():
            stream.put(error)
