"""Output rows of prefill-only requests: pooled hidden states ("embed") or next-token log-probabilities.

A prefill-only request's whole prompt (less any prefix-cache hit) is computed in the step that pools it, in
its rows query_start_loc[r]:query_start_loc[r + 1] of the final hidden states (after the model's last norm).

    embed        last: the last prompt position; cls: the first; mean: the mean over all positions;
                 all: every position. Then cut to `dimensions` (Matryoshka), then L2-normalised if asked.
    next_token   log_softmax over the vocabulary of the last position's logits, then the `token_ids` only.

Values are float32, whatever the model's dtype; pooling runs in float32 too.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from kvserve.messages import ExecuteBatch, PooledRows
from kvserve.request import PoolingParams, PoolingType, PreparedRequest


def pool_rows(
    batch: ExecuteBatch,
    hidden: torch.Tensor,  # [T, hidden] final hidden states of the step
    requests: list[PreparedRequest | None],  # by slot
    default_pooling: PoolingType,
    compute_logits: Callable[[torch.Tensor], torch.Tensor],
) -> PooledRows:
    starts = batch.query_start_loc
    values: list[torch.Tensor | None] = []
    next_token: list[tuple[int, int, PoolingParams]] = []  # (output index, hidden row, params)
    # One pass over the step's pooled requests only (rows that produce this kind of output).
    for index, (slot, r) in enumerate(zip(batch.pool_slots.tolist(), batch.pool_req_indices.tolist())):
        params = requests[slot].request.pooling
        start, end = int(starts[r]), int(starts[r + 1])
        if params.kind == "next_token":
            next_token.append((index, end - 1, params))
            values.append(None)
            continue
        pooling = params.pooling or default_pooling
        num_cached = int(batch.seq_lens[r]) - (end - start)
        if pooling != "last" and num_cached:
            raise ValueError(f"pooling {pooling!r} needs every prompt position, but {num_cached} came from the cache")
        values.append(_embed(hidden[start:end].float(), pooling, params))
    if next_token:
        rows = torch.tensor([row for _, row, _ in next_token], device=hidden.device)
        logprobs = torch.log_softmax(compute_logits(hidden[rows]), dim=-1, dtype=torch.float32)
        for (index, _, params), row_logprobs in zip(next_token, logprobs):
            token_ids = params.token_ids
            values[index] = row_logprobs if token_ids is None else row_logprobs[list(token_ids)]
    return PooledRows(
        handles=np.asarray(batch.pool_handles, dtype=np.int64),
        values=tuple(value.cpu().numpy() for value in values),
    )


def _embed(rows: torch.Tensor, pooling: PoolingType, params: PoolingParams) -> torch.Tensor:
    """rows: [n, hidden] float32, every computed position of one prompt."""
    match pooling:
        case "last":
            pooled = rows[-1]
        case "cls":
            pooled = rows[0]
        case "mean":
            pooled = rows.mean(dim=0)
        case "all":
            pooled = rows
    if params.dimensions is not None:
        pooled = pooled[..., : params.dimensions]
    return F.normalize(pooled, dim=-1) if params.normalize else pooled
