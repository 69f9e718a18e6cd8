"""OutputRouter: the engine's end of the pipeline; delivers outputs and errors to request streams, each
step's stats to the engine's stats listeners, every output to its output listeners (metrics) and the
runner's replies to the engine calls awaiting them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from kvserve.actors.base import Actor
from kvserve.engine.request_stream import RequestStream
from kvserve.errors import InvalidRequestError, KvserveError
from kvserve.messages import RequestFailed, RunnerReply, StepStats, StreamOutputs
from kvserve.outputs import RequestOutput
from kvserve.request import EngineRequest

logger = logging.getLogger(__name__)

StatsListener = Callable[[StepStats], None]
# Called with every batch of outputs before they reach their streams (which may merge them): each output is
# one request's delta of one step. It runs on the event loop once per batch, so keep its work per output tiny.
OutputListener = Callable[[Sequence[RequestOutput]], None]


class RequestListener(Protocol):
    """Told of each request as it is submitted, and of a request that failed (its stream gets the error and
    no final output follows); every other request ends with a finished output to the output listeners."""

    def on_submitted(self, request: EngineRequest) -> None: ...

    def on_failed(self, request_id: str) -> None: ...


class OutputRouter(Actor):
    name = "output-router"

    def __init__(self) -> None:
        super().__init__()
        self.streams: dict[str, RequestStream] = {}
        self.stats_listeners: list[StatsListener] = []
        self.output_listeners: list[OutputListener] = []
        self.request_listeners: list[RequestListener] = []
        self.pending_calls: dict[int, asyncio.Future] = {}  # RunnerCall id -> the engine call awaiting it
        self.handles(StreamOutputs, self.on_outputs)
        self.handles(RequestFailed, self.on_failed)
        self.handles(StepStats, self.on_stats)
        self.handles(RunnerReply, self.on_reply)

    def open(self, request_id: str) -> RequestStream:
        if request_id in self.streams:
            raise InvalidRequestError(f"Request id {request_id!r} is already in use.", "request_id")
        stream = self.streams[request_id] = RequestStream(request_id)
        return stream

    def close(self, request_id: str) -> None:
        self.streams.pop(request_id, None)

    def on_outputs(self, message: StreamOutputs) -> None:
        for listener in self.output_listeners:
            listener(message.outputs)
        for output in message.outputs:
            stream = self.streams.get(output.request_id)
            if stream is not None:  # its consumer may have gone away
                stream.put(output)

    def on_failed(self, failure: RequestFailed) -> None:
        for listener in self.request_listeners:
            listener.on_failed(failure.request_id)
        stream = self.streams.get(failure.request_id)
        if stream is not None:
            stream.put(failure.error.to_exception())

    def on_stats(self, stats: StepStats) -> None:
        for listener in self.stats_listeners:
            listener(stats)

    def expect_reply(self, call_id: int) -> asyncio.Future:
        future = self.pending_calls[call_id] = asyncio.get_running_loop().create_future()
        return future

    def on_reply(self, reply: RunnerReply) -> None:
        future = self.pending_calls.pop(reply.call_id, None)
        if future is None or future.done():  # its caller went away
            return
        if reply.error is not None:
            future.set_exception(reply.error.to_exception())
        else:
            future.set_result(reply.result)

    def fail_all(self, error: KvserveError) -> None:
        for stream in self.streams.values():
            stream.put(error)
        for future in self.pending_calls.values():
            if not future.done():
                future.set_exception(error)
        self.pending_calls.clear()
