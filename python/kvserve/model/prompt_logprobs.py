"""Prompt logprobs: for each prompt token after the first, its log-probability given the tokens before it.

Row p of a step's hidden states predicts prompt position p + 1, so a chunk of positions [c, c + q) yields
positions c + 1 .. c + q that are still in the prompt. Requests with prompt logprobs never read the prefix
cache, so every position is computed; after a preemption the recomputed positions are not reported twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from kvserve.messages import ExecuteBatch, PromptLogprobsChunk, SampleLogprobs

# Rows of logits materialised at once: bounds memory to ROWS x vocab floats for long prompts.
_ROWS_PER_PASS = 256


@dataclass(slots=True)
class _Request:
    num_top: int
    prompt_token_ids: list[int]
    num_done: int = 0  # positions 1..num_done are reported


class PromptLogprobsTracker:
    def __init__(self) -> None:
        self.requests: dict[int, _Request] = {}

    def add(self, handle: int, num_top: int, prompt_token_ids: list[int]) -> None:
        self.requests[handle] = _Request(num_top, prompt_token_ids)

    def remove(self, handle: int) -> None:
        self.requests.pop(handle, None)

    def compute(
        self, batch: ExecuteBatch, hidden: torch.Tensor, compute_logits: Callable[[torch.Tensor], torch.Tensor]
    ) -> tuple[PromptLogprobsChunk, ...]:
        if not self.requests:
            return ()
        chunks = []
        starts = batch.query_start_loc
        for r, handle in enumerate(batch.req_handles.tolist()):
            request = self.requests.get(handle)
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
            chunks.append(
                PromptLogprobsChunk(
                    handle, first + 1, _logprobs(hidden, rows, targets, request.num_top, compute_logits)
                )
            )
            request.num_done = end
            if end == num_prompt - 1:
                del self.requests[handle]
        return tuple(chunks)


def _logprobs(
    hidden: torch.Tensor,
    rows: torch.Tensor,
    targets: torch.Tensor,
    num_top: int,
    compute_logits: Callable[[torch.Tensor], torch.Tensor],
) -> SampleLogprobs:
    token_ids, values, ranks = [], [], []
    for start in range(0, len(rows), _ROWS_PER_PASS):
        part = slice(start, start + _ROWS_PER_PASS)
        logprobs = torch.log_softmax(compute_logits(hidden[rows[part]]), dim=-1)
        target = targets[part].unsqueeze(1)
        target_logprob = logprobs.gather(1, target)
        top_values, top_ids = logprobs.topk(num_top, dim=-1)
        token_ids.append(torch.cat([target, top_ids], dim=1))
        values.append(torch.cat([target_logprob, top_values], dim=1))
        ranks.append((logprobs > target_logprob).sum(dim=1) + 1)
    return SampleLogprobs(
        torch.cat(token_ids).cpu().numpy().astype(np.int64),
        torch.cat(values).cpu().numpy(),
        torch.cat(ranks).cpu().numpy(),
    )
