"""Prompt logprobs: for each prompt token after the first, its log-probability given the tokens before it.

Row p of a step's hidden states predicts prompt position p + 1, so a chunk of positions [c, c + q) yields
positions c + 1 .. c + q that are still in the prompt. Requests with prompt logprobs never read the prefix
cache, so every position is computed; after a preemption the recomputed positions are not reported twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from kvserve.messages import ExecuteBatch, PromptLogprobsChunk
from kvserve.model.logprobs import LogprobsTensors, rank_logprobs

# Rows of logits materialised at once: bounds memory to ROWS x vocab floats for long prompts.
_ROWS_PER_PASS = 256


@dataclass(slots=True)
class _Request:
    num_top: int
    prompt_token_ids: list[int]
    num_done: int = 0  # positions 1..num_done are reported


class PromptLogprobsTracker:
    """Keyed by persistent-batch slot."""

    def __init__(self) -> None:
        self.requests: dict[int, _Request] = {}

    def add(self, slot: int, num_top: int, prompt_token_ids: list[int]) -> None:
        self.requests[slot] = _Request(num_top, prompt_token_ids)

    def remove(self, slot: int) -> None:
        self.requests.pop(slot, None)

    def compute(
        self, batch: ExecuteBatch, hidden: torch.Tensor, compute_logits: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[PromptLogprobsChunk, ...]:
        if not self.requests:
            return ()
        chunks = []
        starts = batch.query_start_loc
        # A loop over the scheduled requests, run only while some request wants prompt logprobs (see above).
        for r, slot in enumerate(batch.req_slots.tolist()):
            request = self.requests.get(slot)
            if request is None:
                continue
            num_prompt = len(request.prompt_token_ids)
            query_len = int(starts[r + 1] - starts[r])
            context = int(batch.seq_lens[r]) - query_len
            first = max(context, request.num_done)  # first source row's position
            end = min(context + query_len, num_prompt - 1)
            if first >= end:
                continue
            rows = torch.arange(int(starts[r]) + first - context, int(starts[r]) + end - context, device=hidden.device)
            targets = torch.tensor(request.prompt_token_ids[first + 1 : end + 1], device=hidden.device)
            logprobs = _logprobs(hidden, rows, targets, request.num_top, compute_logits)
            chunks.append(PromptLogprobsChunk(int(batch.req_handles[r]), first + 1, logprobs.to_numpy()))
            request.num_done = end
            if end == num_prompt - 1:
                del self.requests[slot]
        return tuple(chunks)


def _logprobs(
    hidden: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    num_top: int,
    compute_logits: Callable[[torch.Tensor], torch.Tensor],
) -> LogprobsTensors:
    parts = [
        rank_logprobs(compute_logits(hidden[rows[part]]), targets[part], num_top)
        for part in (slice(start, start + _ROWS_PER_PASS) for start in range(0, len(rows), _ROWS_PER_PASS))
    ]
    return LogprobsTensors.cat(parts)
