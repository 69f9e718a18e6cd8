"""One request's outputs as an async iterator; deltas that queue up while the consumer is busy are merged."""

from __future__ import annotations

import asyncio

from kvserve.errors import KvserveError
from kvserve.outputs import RequestOutput


class RequestStream:
    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self._queue: asyncio.Queue[RequestOutput | KvserveError] = asyncio.Queue()
        self.finished = False

    def put(self, item: RequestOutput | KvserveError) -> None:
        self._queue.put_nowait(item)

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> RequestOutput:
        if self.finished:
            raise StopAsyncIteration
        item = await self._queue.get()
        while not isinstance(item, KvserveError) and not item.finished and not self._queue.empty():
            later = self._queue.get_nowait()
            if isinstance(later, KvserveError):
                item = later
                break
            item.merge(later)
        if isinstance(item, KvserveError):
            self.finished = True
            raise item
        self.finished = item.finished
        return item
