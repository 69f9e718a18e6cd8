"""The model runner: owns the model, the paged KV cache, the persistent batch and the logits pipeline, and
executes one step at a time.

It runs on the runner actor's dedicated thread. Inputs arrive as the scheduler's numpy arrays and go to
the model's device in one copy (input_staging.py); decode-only steps replay CUDA graphs (cuda_graphs.py);
outputs go back as numpy arrays. On CUDA the KV cache is sized by profiling (memory_planning.py). All
per-request state is keyed by the request's persistent batch slot (`NewRequest.slot`).
"""

from __future__ import annotations

import dataclasses
import gc
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kvserve.config import EngineConfig
from kvserve.errors import InvalidRequestError
from kvserve.malloc_tuning import release_free_memory
from kvserve.messages import BatchResult, ExecuteBatch, NewRequest
from kvserve.model.cpu_kv_cache import cpu_kv_cache_budget, zeros_on_demand
from kvserve.model.cross_attention import cross_attention_context
from kvserve.model.cuda_graphs import DecodeGraphs, capture_sizes
from kvserve.model.forward_context import ForwardContext
from kvserve.model.input_batch import InputBatch
from kvserve.model.input_staging import InputStaging, staging_capacity
from kvserve.model.loader import build_model, model_weights
from kvserve.model.logits_pipeline import LogitsPipeline
from kvserve.model.memory_planning import (
    blocks_per_request,
    cuda_graph_pool_estimate,
    plan_kv_cache,
    profile_memory,
    profiling_inputs,
    resolve_kv_cache_dtype,
)
from kvserve.model.micro_batches import MICRO_BATCH_TOKENS, forward_in_pieces, piece_context, plan_pieces
from kvserve.model.model_config import ModelConfig, parse_dtype
from kvserve.model.noop_model import NoopModel
from kvserve.model.parallel import local_kv_heads, min_over_group
from kvserve.model.pooling import pool_rows
from kvserve.model.prompt_logprobs import PromptLogprobsTracker
from kvserve.model.quantization.config import half_weights
from kvserve.model.registry import ModelTasks, model_tasks
from kvserve.model.request_check import check_request
from kvserve.model.sampled_tokens import HostCopy, LastSampled
from kvserve.model.step_result import DoneResult, PendingResult, StepResult
from kvserve.model.token_suppression import TokenSuppression
from kvserve.request import EngineRequest, TaskKind
from kvserve.structured.compiler import GrammarCompiler
from kvserve.structured.matchers import GrammarMatchers

logger = logging.getLogger(__name__)

MAX_DEFAULT_BATCHED_TOKENS = 8192  # the larger of the engine's default token budgets (CUDA's)


def default_max_num_batched_tokens(config: EngineConfig, device: torch.device) -> int:
    """--max-num-batched-tokens, or its default on the device: 8192 on CUDA, 2048 on CPU."""
    return config.max_num_batched_tokens or (MAX_DEFAULT_BATCHED_TOKENS if device.type == "cuda" else 2048)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    return device


def keeps_half_weights(requested: str, model_config: ModelConfig, device: torch.device) -> bool:
    """--dtype auto on CPU with an unquantized f16/bf16 checkpoint: the weights stay as stored, activations
    and accumulation are float32 (so results are those of the float32 upcast, at half the memory)."""
    half = model_config.dtype in (torch.float16, torch.bfloat16) and model_config.quantization is None
    return requested == "auto" and device.type == "cpu" and half


def resolve_dtype(requested: str, model_config: ModelConfig, device: torch.device) -> torch.dtype:
    """The activations' (and KV cache's) dtype. --dtype auto: the checkpoint's on GPUs, float32 on CPUs (where
    half-precision weights stay as stored, see keeps_half_weights)."""
    if requested != "auto":
        return parse_dtype(requested)
    if device.type != "cpu":
        return model_config.dtype
    if keeps_half_weights(requested, model_config, device):
        logger.info("a %s checkpoint on CPU: weights kept as stored, float32 activations", model_config.dtype)
    return torch.float32


@dataclass(frozen=True, slots=True)
class StepInputs:
    input_ids: torch.Tensor
    positions: torch.Tensor
    ctx: ForwardContext
    graph_size: int | None = None  # the CUDA graph (padded batch size) this step replays; None: eager
    pieces: tuple[tuple[slice, ForwardContext], ...] = ()  # the forward's micro-batches (micro_batches.py)


def kv_block_bytes(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    """Bytes of one block across all layers: keys and values of block_size tokens (this rank's heads)."""
    element = torch.tensor([], dtype=dtype).element_size()
    return 2 * config.num_hidden_layers * block_size * local_kv_heads(config) * config.head_dim * element


class ModelRunner:
    def __init__(
        self,
        engine_config: EngineConfig,
        model_config: ModelConfig,
        model_dir: Path,
        grammars: GrammarCompiler | None = None,
    ) -> None:
        self.config = engine_config
        self.model_config = model_config
        self.device = resolve_device(engine_config.device)
        self.dtype = resolve_dtype(engine_config.dtype, model_config, self.device)
        self.model_dir = model_dir
        torch.manual_seed(engine_config.seed)
        self.tasks: ModelTasks = model_tasks(model_config.architecture).served_as(
            engine_config.runner, model_config.pooler
        )
        self.kv_cache_dtype = resolve_kv_cache_dtype(engine_config.kv_cache_dtype, self.dtype, self.device)
        self.max_model_len = engine_config.max_model_len or model_config.max_position_embeddings
        self.max_num_batched_tokens = default_max_num_batched_tokens(engine_config, self.device)
        self.model = self._load_model(model_dir)
        self.graph_sizes = self._cuda_graph_sizes()
        self.micro_batch_tokens = self._micro_batch_tokens()
        self._trim_pending = False  # a step went in pieces since the last trim (_after_pieces)
        # Graphs pad their batches with rows that write one block outside the scheduler's pool.
        self.num_reserved_blocks = 1 if self.graph_sizes else 0
        self.num_blocks = self._num_kv_blocks() if self.tasks.uses_kv_cache else self._num_accounting_blocks()
        self.kv_caches = self._allocate_kv_cache()
        self.staging = InputStaging(
            self.device,
            staging_capacity(
                self.max_num_batched_tokens,
                engine_config.max_num_seqs,
                blocks_per_request(self.max_model_len, engine_config.block_size),
            ),
        )
        self.cuda_graphs = self._capture_cuda_graphs()
        self.asleep: dict[str, int] = {}  # part ("weights", "kv_cache") -> the sleep level that released it
        matchers = None if grammars is None else GrammarMatchers(grammars, model_config.vocab_size)
        self.input_batch = InputBatch(model_config.vocab_size, self.device, grammars=matchers)
        self.logits_pipeline = LogitsPipeline()
        self.last_sampled = LastSampled(self.device)  # fills the placeholders of overlapped steps
        # Tokens the model itself never samples (Whisper's generation config), before the per-request stages.
        self.token_suppression: TokenSuppression | None = getattr(self.model, "token_suppression", None)
        self.prompt_logprobs = PromptLogprobsTracker()
        logger.info(
            "model on %s in %s; KV cache: %d blocks of %d tokens",
            self.device,
            self.dtype,
            self.num_blocks,
            engine_config.block_size,
        )

    def _load_model(self, model_dir: Path) -> torch.nn.Module:
        fmt = self.config.load_format
        if fmt == "noop":
            return NoopModel(self.model_config, self.device)
        config = self.model_config
        if keeps_half_weights(self.config.dtype, config, self.device):
            config = dataclasses.replace(config, quantization=half_weights(config.dtype))
        weights = None if fmt == "dummy" else model_weights(model_dir, config, self.device)
        return build_model(config, weights, self.dtype, self.device)

    def _allocate_kv_cache(self) -> list[torch.Tensor]:
        # Zeroed, not empty: padded attention rows read never-written slots, which must not hold NaN. On CPU
        # the zeros are calloc's, resident only once written (cpu_kv_cache.py).
        # The noop model reads no KV, so it gets none; neither does an encoder (see _num_accounting_blocks).
        if self.config.load_format == "noop" or not self.tasks.uses_kv_cache:
            return []
        c = self.model_config
        num_blocks = self.num_blocks + self.num_reserved_blocks
        shape = (2, num_blocks, self.config.block_size, local_kv_heads(c), c.head_dim)
        if self.device.type == "cpu":
            return [zeros_on_demand(shape, self.kv_cache_dtype) for _ in range(c.num_hidden_layers)]
        return [torch.zeros(shape, dtype=self.kv_cache_dtype, device=self.device) for _ in range(c.num_hidden_layers)]

    def _num_kv_blocks(self) -> int:
        """Blocks for the scheduler: --kv-cache-memory; on CPU what --max-num-seqs full contexts need, within a
        share of free memory (cpu_kv_cache.py); on CUDA what a profiled step leaves of --gpu-memory-utilization
        (memory_planning.py); fewer the blocks reserved for graph padding."""
        c = self.config
        block_bytes = kv_block_bytes(self.model_config, c.block_size, self.kv_cache_dtype)
        kv_cache_memory = c.kv_cache_memory
        if kv_cache_memory is None and self.device.type != "cuda":
            kv_cache_memory = cpu_kv_cache_budget(c, self.model_config, block_bytes)
        profile = None
        if kv_cache_memory is None:
            largest_graph = self.graph_sizes[-1] if self.graph_sizes else 0
            profile = profile_memory(
                self.device,
                self._profile_step,
                lambda peak: cuda_graph_pool_estimate(peak, self.max_num_batched_tokens, largest_graph),
            )
        plan = plan_kv_cache(
            block_bytes=block_bytes,
            block_size=c.block_size,
            max_model_len=self.max_model_len,
            kv_cache_memory=kv_cache_memory,
            profile=profile,
            gpu_memory_utilization=c.gpu_memory_utilization,
            require_max_model_len=c.max_model_len is not None,
        )
        logger.info("%s", plan.describe(c.block_size))
        num_blocks = min_over_group(plan.num_blocks)  # one scheduler: the same blocks on every rank
        if num_blocks <= self.num_reserved_blocks:
            raise ValueError(f"no room for the KV cache: {num_blocks} block(s), one is reserved for CUDA graphs")
        return num_blocks - self.num_reserved_blocks

    @torch.inference_mode()
    def _profile_step(self) -> None:
        """The largest step memory planning measures: a forward at max_num_batched_tokens over up to
        max_num_seqs sequences, then logits for max_num_seqs rows with the sampler's largest temporaries (a
        sorted copy with its indices, for top-p/top-k, and the probabilities)."""
        c = self.config
        if TaskKind.ENCODER_DECODER in self.tasks.tasks:
            # Its forward needs encoder outputs and cross-attention blocks; its decoder steps are small.
            logger.warning("activation memory is not profiled for encoder-decoder models")
            return
        input_ids, positions, ctx = profiling_inputs(
            self.model_config, self.max_num_batched_tokens, c.max_num_seqs, c.block_size, self.kv_cache_dtype,
            self.device,
        )  # fmt: skip
        hidden = self.model(input_ids, positions, ctx)
        rows = torch.arange(c.max_num_seqs, device=self.device) % hidden.shape[0]
        logits = self.model.compute_logits(hidden[rows])
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        del logits, sorted_logits, order, probs

    def _cuda_graph_sizes(self) -> list[int]:
        """Decode batch sizes to capture: none on CPU, with --enforce-eager, for models without a paged KV
        cache, for the noop model and for encoder-decoder models (their decode steps read cross-attention)."""
        c = self.config
        capturable = (
            self.device.type == "cuda"
            and not c.enforce_eager
            and c.load_format != "noop"
            and self.tasks.uses_kv_cache
            and TaskKind.GENERATE in self.tasks.tasks
            and TaskKind.ENCODER_DECODER not in self.tasks.tasks
        )
        # A decode step has at most one row per sequence and per budgeted token.
        max_decode_rows = min(c.max_num_seqs, self.max_num_batched_tokens)
        return capture_sizes(max_decode_rows, c.cuda_graph_sizes) if capturable else []

    def _micro_batch_tokens(self) -> int | None:
        """The most tokens a forward runs at once: MICRO_BATCH_TOKENS on CPU, for decoders with a paged KV cache
        (micro_batches.py); None (the whole step) on CUDA, whose memory plan profiles a full step."""
        tasks = self.tasks
        splittable = tasks.uses_kv_cache and TaskKind.ENCODER_DECODER not in tasks.tasks
        if self.device.type != "cpu" or not splittable or getattr(self.model, "uses_token_type_ids", False):
            return None
        return MICRO_BATCH_TOKENS

    def _capture_cuda_graphs(self) -> DecodeGraphs | None:
        if not self.graph_sizes or not self.kv_caches:
            return None
        graphs = DecodeGraphs(
            self.graph_sizes,
            max_model_len=self.max_model_len,
            block_size=self.config.block_size,
            dummy_block=self.num_blocks,
            kv_caches=self.kv_caches,
            device=self.device,
        )
        try:
            with torch.inference_mode():
                graphs.capture(self.model)
        except RuntimeError as e:
            # A forward that synchronises with the host (an op reading a device value) cannot be captured.
            # Serving still works eagerly; the log says why, and captured_graph_sizes() reports none.
            logger.warning("capturing CUDA graphs failed, decode steps run eagerly (--enforce-eager skips it): %s", e)
            torch.cuda.synchronize(self.device)
            return None
        return graphs

    def captured_graph_sizes(self) -> list[int]:
        """The decode batch sizes replayed from CUDA graphs (none on CPU, eager, or after a failed capture)."""
        return [] if self.cuda_graphs is None else sorted(self.cuda_graphs.graphs)

    def _num_accounting_blocks(self) -> int:
        """Blocks for a model that keeps no KV cache (encoders): the core still books blocks for the tokens it
        schedules, and frees them when the prefill-only request finishes after its one step. Those blocks
        cost no memory here, so there are enough for any step the token and sequence budgets allow (plus one
        partial block per request): scheduling is then limited by the budgets alone, never by "memory"."""
        c, bs = self.config, self.config.block_size
        max_step_tokens = max(
            c.max_num_batched_tokens or 0, MAX_DEFAULT_BATCHED_TOKENS, self.model_config.max_position_embeddings
        )
        return -(-max_step_tokens // bs) + c.max_num_seqs

    # -- what this model serves -------------------------------------------------------------------------
    @property
    def supported_tasks(self) -> frozenset[TaskKind]:
        return self.tasks.tasks

    def check_request(self, request: EngineRequest) -> None:
        """Raises ValueError when this model cannot serve `request` (a task, pooling kind or option it lacks)."""
        check_request(request, self.tasks, self.model_config, self.input_batch.grammars is not None, self.model)

    # -- per-request state, by slot ---------------------------------------------------------------------
    def _add_request(self, new: NewRequest) -> None:
        prepared = new.prepared
        self.input_batch.add(new.slot, prepared)
        params = prepared.request.sampling
        if params is not None and params.prompt_logprobs is not None:
            self.prompt_logprobs.add(new.slot, params.prompt_logprobs, prepared.prompt_token_ids)

    # -- one step --------------------------------------------------------------------------------------
    # Hot path: execute() is the step; its phases are separate methods so bench_host_overhead.py can time
    # each. No per-request Python loop runs over the whole batch: sampling state is a gather from the
    # persistent batch (InputBatch.step_sampling), and the loops that remain visit only the rows that use a
    # feature (new and finished requests, seeded rows, processors, prompt logprobs, pooled rows).
    def execute(self, batch: ExecuteBatch) -> BatchResult:
        """One step, waited for (tensor-parallel workers and tests; the runner actor calls launch)."""
        return self.launch(batch).wait()

    @torch.inference_mode()
    def launch(self, batch: ExecuteBatch) -> StepResult:
        """Enqueues one step; on CUDA it returns before the device has finished it (step_result.py)."""
        self.apply_request_changes(batch)
        inputs = self.prepare_inputs(batch)
        hidden = self.forward(inputs)
        result = self.sample(batch, hidden)
        self._after_pieces(bool(inputs.pieces))
        return result

    def _after_pieces(self, in_pieces: bool) -> None:
        """The first step after a run of steps that went in pieces hands what their temporaries left free back
        to the system (malloc_trim, ~4 ms on the default model): otherwise it stays resident through the decode
        steps that follow (~20 MiB there, RESULTS.md #14). While long steps keep coming, they reuse it."""
        if in_pieces:
            self._trim_pending = True
        elif self._trim_pending:
            self._trim_pending = False
            release_free_memory()

    def apply_request_changes(self, batch: ExecuteBatch) -> None:
        # Finished first: a new request may take the slot of one that finished since the previous step.
        for slot in batch.finished_slots:
            self.input_batch.remove(slot)
            self.prompt_logprobs.remove(slot)
        for new in batch.new_requests:
            self._add_request(new)

    def prepare_inputs(self, batch: ExecuteBatch) -> StepInputs:
        token_seq_lens = np.repeat(batch.seq_lens, np.diff(batch.query_start_loc))
        input_ids, positions, slot_mapping, block_tables, seq_lens, query_start_loc, token_seq_lens = (
            self.staging.to_device(
                (
                    batch.input_ids,
                    batch.positions,
                    batch.slot_mapping,
                    batch.block_tables,
                    batch.seq_lens,
                    batch.query_start_loc,
                    token_seq_lens,
                )
            )
        )
        ctx = ForwardContext(
            slot_mapping=slot_mapping,
            block_tables=block_tables,
            seq_lens=seq_lens,
            query_start_loc=query_start_loc,
            token_seq_lens=token_seq_lens,
            max_query_len=batch.max_query_len,
            max_seq_len=batch.max_seq_len,
            kv_caches=self.kv_caches,
            cross=cross_attention_context(batch, self.input_batch.requests, self._to_device),
        )
        if getattr(self.model, "uses_token_type_ids", False):
            ctx = dataclasses.replace(ctx, token_type_ids=self._to_device(self._token_type_ids(batch)))
        input_ids = self.last_sampled.fill(input_ids, batch.placeholder_indices, batch.placeholder_slots)
        graph_size = None if self.cuda_graphs is None else self.cuda_graphs.size_for(batch)
        pieces = ()
        limit = self.micro_batch_tokens
        if limit is not None and len(batch.input_ids) > limit:
            split = plan_pieces(batch.query_start_loc, batch.seq_lens, limit)
            pieces = tuple((piece.tokens, piece_context(ctx, piece, self._to_device)) for piece in split)
        return StepInputs(input_ids, positions, ctx, graph_size, pieces)

    def _token_type_ids(self, batch: ExecuteBatch) -> np.ndarray:
        """[T] segment ids: 0, except the second text of TextPair prompts. Visits only the step's requests,
        each computed whole (encoders are prefill-only, never chunked, and read no cached prefix)."""
        token_types = np.zeros(len(batch.input_ids), dtype=np.int64)
        requests = self.input_batch.requests
        starts = batch.query_start_loc
        for r, slot in enumerate(batch.req_slots.tolist()):
            type_ids = requests[slot].token_type_ids
            if type_ids is not None:
                token_types[starts[r] : starts[r + 1]] = type_ids
        return token_types

    @torch.inference_mode()
    def forward(self, inputs: StepInputs) -> torch.Tensor:
        if inputs.graph_size is not None:
            return self.cuda_graphs.replay(inputs.input_ids, inputs.positions, inputs.ctx, inputs.graph_size)
        if inputs.pieces:
            return forward_in_pieces(self.model, inputs.input_ids, inputs.positions, inputs.pieces)
        return self.model(inputs.input_ids, inputs.positions, inputs.ctx)

    @torch.inference_mode()
    def sample(self, batch: ExecuteBatch, hidden: torch.Tensor) -> StepResult:
        """The step's output rows: sampled tokens (with logprobs), prompt-logprob chunks and pooled rows."""
        prompt_chunks = self.prompt_logprobs.compute(batch, hidden, self.model.compute_logits)
        pooled = None
        if len(batch.pool_handles):
            pooled = pool_rows(batch, hidden, self.input_batch.requests, self.tasks.default_pooling, self.model)
        if len(batch.sample_slots) == 0:
            return DoneResult(BatchResult(batch.step, np.empty(0, dtype=np.int32), None, prompt_chunks, pooled))
        logits = self.model.compute_logits(hidden[self._to_device(batch.logits_indices)])
        if self.token_suppression is not None:
            self.token_suppression.apply(logits, self.input_batch.num_output_tokens[batch.sample_slots])
        out = self.logits_pipeline(logits, self.input_batch.step_sampling(batch.sample_slots))
        sampled_device = out.sampled_token_ids.to(torch.int32)
        self.last_sampled.record(batch.sample_slots, sampled_device)
        outputs = [sampled_device]
        if out.logprobs is not None:
            outputs += [out.logprobs.token_ids, out.logprobs.logprobs, out.logprobs.ranks]
        copy = HostCopy(outputs)
        # Grammars and token histories need the ids on the host before the next step samples; other rows
        # only count their token, and the copy finishes behind the rest of this step's work, or the next's.
        needs_ids = self.input_batch.needs_sampled_ids(batch.sample_slots)
        self.input_batch.record_sampled(batch.sample_slots, copy.numpy()[0] if needs_ids else None)
        return PendingResult(batch.step, copy, prompt_chunks, pooled)

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device, non_blocking=True)

    # -- sleep mode and RPC: called by the runner actor between steps, never during one ---------------
    # The scheduler drives these: a collective RPC calling one would run a step or release memory
    # behind the scheduler's back.
    _SCHEDULER_DRIVEN = frozenset(
        {"execute", "launch", "apply_request_changes", "prepare_inputs", "forward", "sample", "sleep", "wake_up"}
    )

    def rpc_method(self, name: str, *, internal: bool = False) -> Callable[..., object]:
        """The runner method `name` for a RunnerCall; a collective RPC may call any public method the
        scheduler does not drive."""
        method = getattr(self, name, None) if not name.startswith("_") else None
        if method is None or not callable(method) or (name in self._SCHEDULER_DRIVEN and not internal):
            raise InvalidRequestError(f"The model runner has no method {name!r} that can be called.", "method")
        return method

    def memory_bytes(self) -> dict[str, int]:
        """Bytes the weights and the KV cache hold on the serving device (tensor storage, not RSS)."""
        weights = 0
        if self.model is not None:
            tensors = [*self.model.parameters(), *self.model.buffers()]
            weights = sum(t.nbytes for t in tensors if t.device == self.device)
        return {"weights": weights, "kv_cache": sum(t.nbytes for t in self.kv_caches)}

    def sleep(self, level: int) -> dict[str, int]:
        """Level 1: the KV cache is freed and the weights move to host memory (already there on CPU);
        level 2: the weights are freed too, and reloaded from the checkpoint on wake. Returns the bytes
        released on the device."""
        if level not in (1, 2):
            raise ValueError(f"sleep level must be 1 or 2, got {level}")
        if self.asleep:
            raise ValueError("the model runner is already asleep")
        before = self.memory_bytes()
        self.kv_caches = []
        self.cuda_graphs = None  # they hold the addresses of the cache and the weights
        if level == 2:
            self.model = None
        elif self.device.type != "cpu":
            self.model.to("cpu")
        self.asleep = {"weights": level, "kv_cache": level}
        self._release_memory()
        after = self.memory_bytes()
        return {part: before[part] - after[part] for part in before}

    def wake_up(self, tags: list[str] | None = None) -> list[str]:
        """Restores the parts named in `tags` (all by default); returns the parts still asleep."""
        parts = list(self.asleep) if tags is None else tags
        unknown = set(parts) - {"weights", "kv_cache"}
        if unknown:
            raise ValueError(f"unknown wake_up tags {sorted(unknown)}: use 'weights' and 'kv_cache'")
        if "weights" in parts and "weights" in self.asleep:
            if self.asleep.pop("weights") == 2:
                self.model = self._load_model(self.model_dir)
            else:
                self.model.to(self.device)
        if "kv_cache" in parts and self.asleep.pop("kv_cache", None) is not None:
            self.kv_caches = self._allocate_kv_cache()
        if not self.asleep and self.cuda_graphs is None:
            self.cuda_graphs = self._capture_cuda_graphs()
        return sorted(self.asleep)

    def _release_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
