"""A long CPU step's forward in micro-batches: consecutive pieces of at most MICRO_BATCH_TOKENS tokens.

The scheduler's token budget (2,048 on CPU) decides how much prompt a step takes in, and a prefill-only
prompt (an embedding's, a score's) must fit in one step. The forward's temporaries grow with the tokens it
runs at once: the MLP's [T, 2 x intermediate] activations alone are 25 MB for SmolLM2 at 2,048 tokens and
235 MB for a Llama-3-8B. So, as llama.cpp runs a batch in micro-batches (its ubatch), a longer step runs its
forward piece by piece. Each piece writes its keys and values to the paged cache before the next reads them,
exactly as chunked prefill does across steps, and the pieces' hidden states are the step's.

    step tokens  | r0 (decode) | r1 (prompt .................................) | r2 (prompt ......) |
    pieces       | piece 0 ............................ | piece 1 ............................ | p 2 |
    r1 in piece 0: its first tokens; its context ends at its last position there (seq_lens below)

Only decoders with a paged KV cache qualify: an encoder's tokens attend to later tokens of their request,
and an encoder-decoder step reads cross-attention built for the whole batch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch

from kvserve.model.forward_context import ForwardContext

# Half llama.cpp's default ubatch (512). Measured on the default model at 16 streams (RESULTS.md, #14): the
# server peaks at 606-609 MiB with 256, 612-623 with 512 and 686-714 without pieces, at the same speed (and the
# float32 bench's prefill too): a piece of 256 rows is still a large GEMM.
MICRO_BATCH_TOKENS = 256


@dataclass(frozen=True, slots=True)
class Piece:
    """One micro-batch, in the step's token and request order."""

    tokens: slice  # the step's tokens it runs
    requests: slice  # the step's requests with a token in it
    query_start_loc: np.ndarray  # [r + 1] int32, from 0: each request's tokens within the piece
    seq_lens: np.ndarray  # [r] int32: each request's context up to its last token in the piece
    max_query_len: int


def plan_pieces(query_start_loc: np.ndarray, seq_lens: np.ndarray, max_tokens: int) -> list[Piece]:
    """The pieces of a step of query_start_loc [R + 1] and seq_lens [R] (context after the step), each of at
    most max_tokens tokens; one piece when the step fits."""
    num_tokens = int(query_start_loc[-1])
    pieces = []
    for start in range(0, num_tokens, max_tokens):
        stop = min(start + max_tokens, num_tokens)
        first = int(np.searchsorted(query_start_loc, start, side="right")) - 1
        end = int(np.searchsorted(query_start_loc, stop, side="left"))  # requests that start before stop
        bounds = np.clip(query_start_loc[first : end + 1], start, stop)
        # A request cut by the piece's end has its later tokens, still to come, outside its context.
        later = query_start_loc[first + 1 : end + 1] - bounds[1:]
        q_lens = np.diff(bounds)
        pieces.append(
            Piece(
                tokens=slice(start, stop),
                requests=slice(first, end),
                query_start_loc=(bounds - start).astype(np.int32),
                seq_lens=(seq_lens[first:end] - later).astype(np.int32),
                max_query_len=int(q_lens.max()),
            )
        )
    return pieces


def piece_context(ctx: ForwardContext, piece: Piece, to_device) -> ForwardContext:
    """The step's context narrowed to a piece. token_seq_lens and max_seq_len stay the step's (a bound for every
    piece), so dynamic RoPE sees the lengths it would in one forward."""
    return dataclasses.replace(
        ctx,
        slot_mapping=ctx.slot_mapping[piece.tokens],
        block_tables=ctx.block_tables[piece.requests],
        seq_lens=to_device(piece.seq_lens),
        query_start_loc=to_device(piece.query_start_loc),
        token_seq_lens=ctx.token_seq_lens[piece.tokens],
        max_query_len=piece.max_query_len,
    )


def forward_in_pieces(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    positions: torch.Tensor,
    pieces: tuple[tuple[slice, ForwardContext], ...],
) -> torch.Tensor:
    """The step's final hidden states [T, hidden], one piece at a time."""
    out = None
    for tokens, ctx in pieces:
        hidden = model(input_ids[tokens], positions[tokens], ctx)
        if out is None:
            out = hidden.new_empty((input_ids.shape[0], *hidden.shape[1:]))
        out[tokens] = hidden
    return out
