"""Admission control: a bound on the requests (and prompt tokens) waiting in the engine, checked before any
rendering or tokenization, so an overloaded server answers 503 at once instead of queueing without limit.

A request is *queued* from the moment it enters the engine until the scheduler first runs it (or it ends
before that). Its prompt tokens count once they are known (after tokenization): the token bound refuses new
requests while the queue already holds that many tokens. The counters are plain numbers for the metrics.
"""

from __future__ import annotations

from kvserve.errors import ServiceUnavailableError


class AdmissionControl:
    def __init__(self, max_num_queued_requests: int | None, max_num_queued_tokens: int | None) -> None:
        self.max_num_queued_requests = max_num_queued_requests
        self.max_num_queued_tokens = max_num_queued_tokens
        self.num_rejected = 0  # engine requests refused because the queue was full (a choice of n counts one)
        self.num_queued_tokens = 0
        self._queued: dict[str, int] = {}  # request id -> its prompt tokens (0 until tokenized)
        self.closed_reason: str | None = None  # set when the server stops taking requests (draining)

    @property
    def num_queued_requests(self) -> int:
        return len(self._queued)

    def check(self, num_requests: int) -> None:
        """Raises a 503 unless `num_requests` more requests may queue now (all or none)."""
        if self.closed_reason is not None:
            raise ServiceUnavailableError(self.closed_reason)
        reason = None
        limit = self.max_num_queued_requests
        if limit is not None and len(self._queued) + num_requests > limit:
            reason = f"{len(self._queued)} requests are queued and this one adds {num_requests} (limit {limit})"
        limit = self.max_num_queued_tokens
        if reason is None and limit is not None and self.num_queued_tokens >= limit:
            reason = f"{self.num_queued_tokens} prompt tokens are queued (limit {limit})"
        if reason is not None:
            self.num_rejected += num_requests
            raise ServiceUnavailableError(f"The server is overloaded: {reason}. Retry later.")

    def enter(self, request_id: str) -> None:
        self.check(1)
        self._queued[request_id] = 0

    def tokenized(self, request_id: str, num_prompt_tokens: int) -> None:
        if request_id in self._queued:
            self.num_queued_tokens += num_prompt_tokens - self._queued[request_id]
            self._queued[request_id] = num_prompt_tokens

    def leave(self, request_ids: list[str]) -> None:
        """The requests were scheduled or ended; ids no longer queued are ignored."""
        for request_id in request_ids:
            self.num_queued_tokens -= self._queued.pop(request_id, 0)

    def close(self, reason: str) -> None:
        """Refuses every request from now on (503 with `reason`)."""
        self.closed_reason = reason
