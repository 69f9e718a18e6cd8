"""CUDA graphs for decode-only steps: the model's forward captured once per batch size, replayed per step.

A decode-only step (every scheduled request computes exactly one token; no pooled rows, no encoder runs, no
cross-attention) of R requests runs the graph of the smallest captured size B >= R. Its inputs are copied
into static buffers, the B - R padding rows are filled so that they are harmless, the graph is replayed, and
the first R rows of its static output are the step's hidden states:

    rows        | 0 .. R-1: the step's requests             | R .. B-1: padding                      |
    input_ids   | the step's tokens                         | 0                                      |
    slot_map    | the step's slots                          | the reserved dummy block's first slot  |
    block_table | the step's tables (columns past W unread) | the dummy block                        |
    seq_lens    | the step's lengths                        | 1 (padding attends to the dummy slot)  |
    query_start | 0, 1, 2, ..., B (fixed: one token per row)                                         |

The dummy block is one KV block the runner allocates beyond the scheduler's pool, so padding never touches a
request's cache. Attention is captured with a fixed max_seq_len (max_model_len, at most
MAX_GRAPH_SEQ_LEN), so the graph reads no per-step host value; the CUDA attention kernel sizes its splits and
workspace from it and skips the empty splits. The workspace grows with batch size x max_seq_len, which is why
the bound is capped: a decode step with a longer context runs eagerly. Graphs are captured at start, largest
first, into one shared memory pool (a smaller graph reuses the larger one's memory: one graph replays at a
time, on the runner's stream).
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Sequence

import torch

from kvserve.messages import ExecuteBatch
from kvserve.model.forward_context import ForwardContext
from kvserve.model.memory_planning import blocks_per_request

logger = logging.getLogger(__name__)

MAX_CAPTURE_SIZE = 512
# Attention workspace at the largest graph: 512 tiles x 8 KV heads x 16 splits x 4 rows x 128 dims x 4 bytes
# = 134 MB; the splits past a row's context are launched and exit at once, a cost that grows with the bound.
MAX_GRAPH_SEQ_LEN = 8192

ModelForward = Callable[[torch.Tensor, torch.Tensor, ForwardContext], torch.Tensor]


def capture_sizes(max_rows: int, requested: Sequence[int] | None = None) -> list[int]:
    """Batch sizes to capture, ascending, for decode steps of at most `max_rows` requests: `requested` (those
    up to max_rows), else 1, 2, 4, 8 and every multiple of 8 from 16 up to max_rows (512 at most), with
    max_rows itself so every decode batch has a graph."""
    limit = min(max_rows, MAX_CAPTURE_SIZE)
    if requested is not None:
        return sorted({size for size in requested if size <= max_rows})
    sizes = {size for size in (1, 2, 4, 8) if size <= limit}
    sizes.update(range(16, limit + 1, 8))
    sizes.add(limit)
    return sorted(sizes)


def padded_size(sizes: Sequence[int], num_reqs: int) -> int | None:
    """The smallest captured size holding `num_reqs` rows; None when the batch is larger than every graph."""
    index = bisect.bisect_left(sizes, num_reqs)
    return sizes[index] if index < len(sizes) else None


def is_decode_only(batch: ExecuteBatch) -> bool:
    """One token per scheduled request and no rows of another kind: what a decode graph computes."""
    num_reqs = len(batch.req_handles)
    return (
        num_reqs > 0
        and batch.max_query_len == 1
        and len(batch.input_ids) == num_reqs
        and len(batch.pool_handles) == 0
        and len(batch.encoder_handles) == 0
        and batch.cross_block_tables.shape[1] == 0
    )


class DecodeGraphs:
    """Static input buffers for the largest captured size, one graph (and its output) per size."""

    def __init__(
        self,
        sizes: Sequence[int],
        *,
        max_model_len: int,
        block_size: int,
        dummy_block: int,
        kv_caches: list[torch.Tensor],
        device: torch.device,
    ) -> None:
        if not sizes:
            raise ValueError("no CUDA graph sizes to capture")
        self.sizes = sorted(sizes)
        self.max_seq_len = min(max_model_len, MAX_GRAPH_SEQ_LEN)
        self.max_blocks_per_seq = blocks_per_request(self.max_seq_len, block_size)
        self.dummy_block = dummy_block
        self.dummy_slot = dummy_block * block_size
        self.kv_caches = kv_caches
        largest = self.sizes[-1]

        def buffer(*shape: int, dtype: torch.dtype, fill: int) -> torch.Tensor:
            return torch.full(shape, fill, dtype=dtype, device=device)

        self.input_ids = buffer(largest, dtype=torch.int32, fill=0)
        self.positions = buffer(largest, dtype=torch.int32, fill=0)
        self.slot_mapping = buffer(largest, dtype=torch.int64, fill=self.dummy_slot)
        self.block_tables = buffer(largest, self.max_blocks_per_seq, dtype=torch.int32, fill=dummy_block)
        self.seq_lens = buffer(largest, dtype=torch.int32, fill=1)
        self.query_start_loc = torch.arange(largest + 1, dtype=torch.int32, device=device)
        self.graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}

    def size_for(self, batch: ExecuteBatch) -> int | None:
        """The captured size this step replays, or None when it runs eagerly."""
        too_long = batch.max_seq_len > self.max_seq_len or batch.block_tables.shape[1] > self.max_blocks_per_seq
        if too_long or not is_decode_only(batch):
            return None
        return padded_size(self.sizes, len(batch.req_handles))

    def static_inputs(self, size: int) -> tuple[torch.Tensor, torch.Tensor, ForwardContext]:
        """The model's arguments for a padded batch of `size` rows: views of the static buffers."""
        ctx = ForwardContext(
            slot_mapping=self.slot_mapping[:size],
            block_tables=self.block_tables[:size],
            seq_lens=self.seq_lens[:size],
            query_start_loc=self.query_start_loc[: size + 1],
            token_seq_lens=self.seq_lens[:size],  # one token per request: its request's length
            max_query_len=1,
            max_seq_len=self.max_seq_len,
            kv_caches=self.kv_caches,
        )
        return self.input_ids[:size], self.positions[:size], ctx

    def fill(self, input_ids: torch.Tensor, positions: torch.Tensor, ctx: ForwardContext, size: int) -> None:
        """Copies a decode step of R rows into the static buffers and pads rows R..size-1 (see the table
        above). Device-side copies only: nothing waits for the host."""
        n, width = input_ids.shape[0], ctx.block_tables.shape[1]
        self.input_ids[:n].copy_(input_ids)
        self.input_ids[n:size].zero_()
        self.positions[:n].copy_(positions)
        self.positions[n:size].zero_()
        self.slot_mapping[:n].copy_(ctx.slot_mapping)
        self.slot_mapping[n:size].fill_(self.dummy_slot)
        self.block_tables[:n, :width].copy_(ctx.block_tables)
        self.block_tables[n:size].fill_(self.dummy_block)
        self.seq_lens[:n].copy_(ctx.seq_lens)
        self.seq_lens[n:size].fill_(1)

    def capture(self, forward: ModelForward) -> None:
        """CUDA only: captures every size, largest first, into one memory pool, each after an eager warm-up
        run (lazy buffers such as RoPE tables, cuBLAS workspaces and allocator blocks exist before capture)."""
        from tqdm.auto import tqdm

        start = time.perf_counter()
        # One row at the largest position a replayed step can have: lazily grown tables (RoPE) reach their
        # full size before any capture.
        self.positions[0], self.seq_lens[0] = self.max_seq_len - 1, self.max_seq_len
        forward(*self.static_inputs(1))
        self.positions[0], self.seq_lens[0] = 0, 1
        pool = torch.cuda.graph_pool_handle()
        device = self.input_ids.device
        before = torch.cuda.memory_reserved(device)
        for size in tqdm(sorted(self.sizes, reverse=True), desc="Capturing CUDA graphs", unit="graph"):
            forward(*self.static_inputs(size))
            torch.cuda.synchronize(device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                output = forward(*self.static_inputs(size))
            self.graphs[size] = (graph, output)
        torch.cuda.synchronize(device)
        logger.info(
            "captured %d CUDA graphs (decode batch sizes %s) in %.1f s, using %.2f GiB",
            len(self.graphs),
            self.sizes,
            time.perf_counter() - start,
            (torch.cuda.memory_reserved(device) - before) / (1 << 30),
        )

    def replay(self, input_ids: torch.Tensor, positions: torch.Tensor, ctx: ForwardContext, size: int) -> torch.Tensor:
        """The hidden states [R, hidden] of a decode step, from the graph of `size` rows. The result is a view
        of the graph's static output: valid until the next replay, which stream order puts after this step's
        readers."""
        self.fill(input_ids, positions, ctx, size)
        graph, output = self.graphs[size]
        graph.replay()
        return output[: input_ids.shape[0]]
