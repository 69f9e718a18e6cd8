"""Output rows of prefill-only requests: pooled hidden states ("embed") or next-token log-probabilities.

A prefill-only request's whole prompt (less any prefix-cache hit) is computed in the step that pools it, in
its rows query_start_loc[r]:query_start_loc[r + 1] of the final hidden states (after the model's last norm).

    embed        last: the last prompt position; cls: the first; mean: the mean over all positions;
                 all: every position. Then cut to `dimensions` (Matryoshka), then L2-normalised if asked.
    next_token   log_softmax over the vocabulary of the last position's logits, then the `token_ids` only.
    classify     the model's classification head over the row pooled by its default pooling, then its
                 activation (softmax; sigmoid for one label) unless `activation` is off.

Values are float32, whatever the model's dtype; pooling runs in float32 too.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from kvserve.messages import ExecuteBatch, PooledRows
from kvserve.request import PoolingParams, PoolingType, PreparedRequest


class PoolingHeads(Protocol):
    """The model heads pooled rows may go through (a model lacking one never gets requests for it)."""

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor: ...

    def classify(self, pooled: torch.Tensor) -> torch.Tensor: ...


def pool_rows(
    batch: ExecuteBatch,
    hidden: torch.Tensor,  # [T, hidden] final hidden states of the step
    requests: list[PreparedRequest | None],  # by slot
    default_pooling: PoolingType,
    heads: PoolingHeads,
) -> PooledRows:
    starts = batch.query_start_loc
    values: list[torch.Tensor | None] = []
    next_token: list[tuple[int, int, PoolingParams]] = []  # (output index, hidden row, params)
    classify: list[tuple[int, torch.Tensor, PoolingParams]] = []  # (output index, pooled state, params)
    # One pass over the step's pooled requests only (rows that produce this kind of output).
    for index, (slot, r) in enumerate(zip(batch.pool_slots.tolist(), batch.pool_req_indices.tolist())):
        params = requests[slot].request.pooling
        start, end = int(starts[r]), int(starts[r + 1])
        values.append(None)
        if params.kind == "next_token":
            next_token.append((index, end - 1, params))
            continue
        pooling = default_pooling if params.kind == "classify" else params.pooling or default_pooling
        num_cached = int(batch.seq_lens[r]) - (end - start)
        if pooling != "last" and num_cached:
            raise ValueError(f"pooling {pooling!r} needs every prompt position, but {num_cached} came from the cache")
        if params.kind == "classify":
            classify.append((index, _pool(hidden[start:end], pooling), params))
        else:
            values[index] = _embed(hidden[start:end].float(), pooling, params)
    if next_token:
        rows = torch.tensor([row for _, row, _ in next_token], device=hidden.device)
        logprobs = torch.log_softmax(heads.compute_logits(hidden[rows]), dim=-1, dtype=torch.float32)
        for (index, _, params), row_logprobs in zip(next_token, logprobs):
            token_ids = params.token_ids
            values[index] = row_logprobs if token_ids is None else row_logprobs[list(token_ids)]
    if classify:
        logits = heads.classify(torch.stack([state for _, state, _ in classify]))
        for (index, _, params), row_logits in zip(classify, logits):
            values[index] = _activate(row_logits) if params.activation else row_logits
    return PooledRows(
        handles=np.asarray(batch.pool_handles, dtype=np.int64),
        values=tuple(value.cpu().numpy() for value in values),
    )


def _pool(rows: torch.Tensor, pooling: PoolingType) -> torch.Tensor:
    """rows: [n, hidden], every computed position of one prompt."""
    match pooling:
        case "last":
            return rows[-1]
        case "cls":
            return rows[0]
        case "mean":
            return rows.mean(dim=0)
        case "all":
            return rows


def _activate(logits: torch.Tensor) -> torch.Tensor:
    """A classifier's scores as vLLM reports them: sigmoid for a single label, softmax over several."""
    return torch.sigmoid(logits) if logits.shape[-1] == 1 else torch.softmax(logits, dim=-1)


def _embed(rows: torch.Tensor, pooling: PoolingType, params: PoolingParams) -> torch.Tensor:
    """rows: [n, hidden] float32, every computed position of one prompt."""
    pooled = _pool(rows, pooling)
    if params.dimensions is not None:
        pooled = pooled[..., : params.dimensions]
    return F.normalize(pooled, dim=-1) if params.normalize else pooled
