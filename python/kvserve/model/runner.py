"""The model runner: owns the model, the paged KV cache, the persistent batch and the logits pipeline, and
executes one step at a time.

It runs on the runner actor's dedicated thread. Inputs arrive as the scheduler's numpy arrays and go to
the model's device with one copy each; outputs go back as numpy arrays. All per-request state is keyed by
the request's persistent batch slot (`NewRequest.slot`).
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
from kvserve.messages import BatchResult, ExecuteBatch, NewRequest
from kvserve.model.cpu_kv_cache import cpu_kv_cache_budget, zeros_on_demand
from kvserve.model.cross_attention import cross_attention_context
from kvserve.model.forward_context import ForwardContext
from kvserve.model.input_batch import InputBatch
from kvserve.model.loader import build_model, model_weights
from kvserve.model.logits_pipeline import LogitsPipeline
from kvserve.model.model_config import ModelConfig, parse_dtype
from kvserve.model.noop_model import NoopModel
from kvserve.model.pooling import pool_rows
from kvserve.model.prompt_logprobs import PromptLogprobsTracker
from kvserve.model.quantization.config import half_weights
from kvserve.model.registry import ModelTasks, model_tasks
from kvserve.model.token_suppression import TokenSuppression
from kvserve.request import EngineRequest, PoolingParams, TaskKind
from kvserve.structured.compiler import GrammarCompiler
from kvserve.structured.matchers import GrammarMatchers

logger = logging.getLogger(__name__)

MAX_DEFAULT_BATCHED_TOKENS = 8192  # the larger of the engine's default token budgets (CUDA's)


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


def kv_block_bytes(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    """Bytes of one block across all layers: keys and values of block_size tokens."""
    element = torch.tensor([], dtype=dtype).element_size()
    return 2 * config.num_hidden_layers * block_size * config.num_key_value_heads * config.head_dim * element


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
        self.model = self._load_model(model_dir)
        self.num_blocks = self._num_kv_blocks() if self.tasks.uses_kv_cache else self._num_accounting_blocks()
        self.kv_caches = self._allocate_kv_cache()
        self.asleep: dict[str, int] = {}  # part ("weights", "kv_cache") -> the sleep level that released it
        matchers = None if grammars is None else GrammarMatchers(grammars, model_config.vocab_size)
        self.input_batch = InputBatch(model_config.vocab_size, self.device, grammars=matchers)
        self.logits_pipeline = LogitsPipeline()
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
        shape = (2, self.num_blocks, self.config.block_size, c.num_key_value_heads, c.head_dim)
        if self.device.type == "cpu":
            return [zeros_on_demand(shape, self.dtype) for _ in range(c.num_hidden_layers)]
        return [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in range(c.num_hidden_layers)]

    def _num_kv_blocks(self) -> int:
        block_bytes = kv_block_bytes(self.model_config, self.config.block_size, self.dtype)
        if self.config.kv_cache_memory is not None:
            budget = self.config.kv_cache_memory
        elif self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            budget = free - (1.0 - self.config.gpu_memory_utilization) * total
        else:
            budget = cpu_kv_cache_budget(self.config, self.model_config, block_bytes)
        num_blocks = int(budget // block_bytes)
        if num_blocks < 1:
            raise ValueError(f"no room for the KV cache: one block takes {block_bytes} bytes, {int(budget)} available")
        return num_blocks

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
        reason = (
            self.tasks.unsupported(request)
            or self._unsupported_pooling(request.pooling)
            or self._unsupported_encoder_input(request)
        )
        structured = request.sampling is not None and request.sampling.structured is not None
        if structured and self.input_batch.grammars is None:
            reason = "structured outputs are not available: the tokenizer could not be read as a grammar vocabulary"
        if reason is not None:
            raise ValueError(reason)

    def _unsupported_pooling(self, pooling: PoolingParams | None) -> str | None:
        c = self.model_config
        if pooling is None:
            return None
        if pooling.dimensions is not None and pooling.dimensions > c.hidden_size:
            return f"dimensions {pooling.dimensions} exceeds the model's hidden size {c.hidden_size}"
        if pooling.token_ids is not None and not all(0 <= t < c.vocab_size for t in pooling.token_ids):
            return f"token_ids must be in [0, {c.vocab_size})"
        return None

    def _unsupported_encoder_input(self, request: EngineRequest) -> str | None:
        # An encoder-decoder model says what its encoder takes; a wrong shape must not reach a step.
        if request.encoder_input is None:
            return None
        return self.model.unsupported_encoder_input(request.encoder_input)

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
    @torch.inference_mode()
    def execute(self, batch: ExecuteBatch) -> BatchResult:
        self.apply_request_changes(batch)
        inputs = self.prepare_inputs(batch)
        hidden = self.forward(inputs)
        return self.sample(batch, hidden)

    def apply_request_changes(self, batch: ExecuteBatch) -> None:
        # Finished first: a new request may take the slot of one that finished since the previous step.
        for slot in batch.finished_slots:
            self.input_batch.remove(slot)
            self.prompt_logprobs.remove(slot)
        for new in batch.new_requests:
            self._add_request(new)

    def prepare_inputs(self, batch: ExecuteBatch) -> StepInputs:
        q_lens = np.diff(batch.query_start_loc)
        ctx = ForwardContext(
            slot_mapping=self._to_device(batch.slot_mapping),
            block_tables=self._to_device(batch.block_tables),
            seq_lens=self._to_device(batch.seq_lens),
            query_start_loc=self._to_device(batch.query_start_loc),
            token_seq_lens=self._to_device(np.repeat(batch.seq_lens, q_lens)),
            max_query_len=batch.max_query_len,
            max_seq_len=batch.max_seq_len,
            kv_caches=self.kv_caches,
            cross=cross_attention_context(batch, self.input_batch.requests, self._to_device),
        )
        if getattr(self.model, "uses_token_type_ids", False):
            ctx = dataclasses.replace(ctx, token_type_ids=self._to_device(self._token_type_ids(batch)))
        return StepInputs(self._to_device(batch.input_ids), self._to_device(batch.positions), ctx)

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
        return self.model(inputs.input_ids, inputs.positions, inputs.ctx)

    @torch.inference_mode()
    def sample(self, batch: ExecuteBatch, hidden: torch.Tensor) -> BatchResult:
        """The step's output rows: sampled tokens (with logprobs), prompt-logprob chunks and pooled rows."""
        prompt_chunks = self.prompt_logprobs.compute(batch, hidden, self.model.compute_logits)
        pooled = None
        if len(batch.pool_handles):
            pooled = pool_rows(batch, hidden, self.input_batch.requests, self.tasks.default_pooling, self.model)
        if len(batch.sample_slots) == 0:
            return BatchResult(batch.step, np.empty(0, dtype=np.int32), None, prompt_chunks, pooled)
        logits = self.model.compute_logits(hidden[self._to_device(batch.logits_indices)])
        if self.token_suppression is not None:
            self.token_suppression.apply(logits, self.input_batch.num_output_tokens[batch.sample_slots])
        out = self.logits_pipeline(logits, self.input_batch.step_sampling(batch.sample_slots))
        sampled = out.sampled_token_ids.to(torch.int32).cpu().numpy()
        self.input_batch.record_sampled(batch.sample_slots, sampled)
        logprobs = None if out.logprobs is None else out.logprobs.to_numpy()
        return BatchResult(batch.step, sampled, logprobs, prompt_chunks, pooled)

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device, non_blocking=True)

    # -- sleep mode and RPC: called by the runner actor between steps, never during one ---------------
    # The scheduler drives these: a collective RPC calling one would run a step or release memory
    # behind the scheduler's back.
    _SCHEDULER_DRIVEN = frozenset(
        {"execute", "apply_request_changes", "prepare_inputs", "forward", "sample", "sleep", "wake_up"}
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
        return sorted(self.asleep)

    def _release_memory(self) -> None:
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
