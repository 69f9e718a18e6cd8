"""The responses store (--enable-responses-store): stored responses for GET, previous_response_id, background.

Bounded in memory: at most --responses-store-max-entries responses, each kept --responses-store-max-age
seconds after it was stored; beyond the count the least recently used goes first. Evicting a background
response that still runs cancels it, so no engine request outlives its entry. Without the flag nothing is
stored (as in vLLM, where `store` is accepted and ignored) and ids are unknown.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from quart import Quart, current_app

from kvserve.api.openai.responses.protocol import ResponseObject
from kvserve.api.settings import ServerSettings
from kvserve.errors import NotFoundError

_CONFIG_KEY = "KVSERVE_RESPONSES_STORE"
RUNNING = ("queued", "in_progress")


@dataclass(slots=True)
class StoredResponse:
    response: ResponseObject
    items: list[dict[str, Any]]  # the conversation's input items (earlier turns included), for the next turn
    stored_at: float = 0.0
    task: asyncio.Task[None] | None = None  # a background response's run
    events: list[bytes] | None = None  # a streamed background response's SSE events, for GET ?stream=true
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set at every new event and at the end

    @property
    def running(self) -> bool:
        return self.response.status in RUNNING

    def conversation(self) -> list[dict[str, Any]]:
        """The items a next turn continues from: this turn's input and its output."""
        return [*self.items, *self.response.output]


class ResponseStore:
    def __init__(self, max_entries: int, max_age: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_entries < 1 or max_age <= 0:
            raise ValueError("the responses store needs a positive size and age")
        self.max_entries = max_entries
        self.max_age = max_age
        self._clock = clock
        self._entries: OrderedDict[str, StoredResponse] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, entry: StoredResponse) -> None:
        entry.stored_at = self._clock()
        self._entries[entry.response.id] = entry
        self._entries.move_to_end(entry.response.id)
        self._evict()

    def get(self, response_id: str) -> StoredResponse | None:
        self._evict()
        entry = self._entries.get(response_id)
        if entry is not None:
            self._entries.move_to_end(response_id)
        return entry

    def finish(self, response: ResponseObject) -> None:
        """A background response's result, unless it was cancelled (or evicted) meanwhile."""
        entry = self._entries.get(response.id)
        if entry is not None and entry.response.status != "cancelled":
            entry.response = response
            entry.changed.set()

    def _evict(self) -> None:
        deadline = self._clock() - self.max_age
        expired = [key for key, entry in self._entries.items() if entry.stored_at < deadline]
        for key in expired:
            self._drop(key)
        while len(self._entries) > self.max_entries:
            self._drop(next(iter(self._entries)))

    def _drop(self, response_id: str) -> None:
        entry = self._entries.pop(response_id)
        if entry.task is not None:
            entry.task.cancel()

    def cancel_all(self) -> None:
        for entry in self._entries.values():
            if entry.task is not None:
                entry.task.cancel()


def install_responses_store(app: Quart, settings: ServerSettings) -> None:
    if not settings.enable_responses_store:
        return
    store = ResponseStore(settings.responses_store_max_entries, settings.responses_store_max_age)
    app.config[_CONFIG_KEY] = store

    @app.after_serving
    async def cancel_background_responses() -> None:
        store.cancel_all()


def current_store() -> ResponseStore | None:
    return current_app.config.get(_CONFIG_KEY)


def not_found(response_id: str, store: ResponseStore | None) -> NotFoundError:
    message = f"Response with id '{response_id}' not found."
    if store is None:
        message += " Responses are stored only when the server runs with --enable-responses-store."
    return NotFoundError(message, "response_id")


def stored(store: ResponseStore | None, response_id: str) -> StoredResponse:
    entry = store.get(response_id) if store is not None else None
    if entry is None:
        raise not_found(response_id, store)
    return entry
