"""The model runner: owns the model, the paged KV cache and the sampler, and executes one step at a time.

It runs on the runner actor's dedicated thread. Inputs arrive as the scheduler's numpy arrays and go to
the model's device with one copy each; outputs go back as numpy arrays.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from kvserve.config import EngineConfig, GiB
from kvserve.messages import BatchResult, ExecuteBatch, NewRequestData, SampleLogprobs
from kvserve.model.forward_context import ForwardContext
from kvserve.model.loader import build_model, iterate_safetensors, safetensors_files
from kvserve.model.logits_processors import LogitsProcessors
from kvserve.model.model_config import ModelConfig, parse_dtype
from kvserve.model.noop_model import NoopModel
from kvserve.model.prompt_logprobs import PromptLogprobsTracker
from kvserve.model.sampler import Sampler, SamplingMetadata
from kvserve.sampling_params import SamplingParams

logger = logging.getLogger(__name__)

DEFAULT_CPU_KV_CACHE_MEMORY = 4 * GiB


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    return device


def cpu_has_fast_bf16() -> bool:
    """Native bfloat16 matmuls (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower than float32."""
    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, probe, lambda: False)() for probe in probes)


def resolve_dtype(requested: str, model_dtype: torch.dtype, device: torch.device) -> torch.dtype:
    """--dtype auto: the checkpoint's dtype on GPUs; on CPUs half precision only where it is native (bf16)."""
    if requested != "auto":
        return parse_dtype(requested)
    if device.type != "cpu" or model_dtype == torch.float32:
        return model_dtype
    chosen = torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    logger.info("a %s checkpoint on this CPU: serving in %s", model_dtype, chosen)
    return chosen


@dataclass(frozen=True, slots=True)
class StepInputs:
    input_ids: torch.Tensor
    positions: torch.Tensor
    ctx: ForwardContext


@dataclass(slots=True)
class _RequestState:
    params: SamplingParams
    generator: torch.Generator | None


def kv_block_bytes(config: ModelConfig, block_size: int, dtype: torch.dtype) -> int:
    """Bytes of one block across all layers: keys and values of block_size tokens."""
    element = torch.tensor([], dtype=dtype).element_size()
    return 2 * config.num_hidden_layers * block_size * config.num_key_value_heads * config.head_dim * element


class ModelRunner:
    def __init__(self, engine_config: EngineConfig, model_config: ModelConfig, model_dir: Path) -> None:
        self.config = engine_config
        self.model_config = model_config
        self.device = resolve_device(engine_config.device)
        self.dtype = resolve_dtype(engine_config.dtype, model_config.dtype, self.device)
        torch.manual_seed(engine_config.seed)
        self.model = self._load_model(model_dir)
        self.num_blocks = self._num_kv_blocks()
        c = model_config
        # Zeroed, not empty: padded attention rows read never-written slots, which must not hold NaN.
        # The noop model reads no KV, so it gets none.
        self.kv_caches = (
            []
            if engine_config.load_format == "noop"
            else [
                torch.zeros(
                    2,
                    self.num_blocks,
                    engine_config.block_size,
                    c.num_key_value_heads,
                    c.head_dim,
                    dtype=self.dtype,
                    device=self.device,
                )
                for _ in range(c.num_hidden_layers)
            ]
        )
        self.sampler = Sampler()
        self.processors = LogitsProcessors(model_config.vocab_size, self.device)
        self.prompt_logprobs = PromptLogprobsTracker()
        self.requests: dict[int, _RequestState] = {}
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
        weights = None if fmt == "dummy" else iterate_safetensors(safetensors_files(model_dir))
        return build_model(self.model_config, weights, self.dtype, self.device)

    def _num_kv_blocks(self) -> int:
        block_bytes = kv_block_bytes(self.model_config, self.config.block_size, self.dtype)
        if self.config.kv_cache_memory is not None:
            budget = self.config.kv_cache_memory
        elif self.device.type == "cuda":
            free, total = torch.cuda.mem_get_info(self.device)
            budget = free - (1.0 - self.config.gpu_memory_utilization) * total
        else:
            budget = DEFAULT_CPU_KV_CACHE_MEMORY
        num_blocks = int(budget // block_bytes)
        if num_blocks < 1:
            raise ValueError(f"no room for the KV cache: one block takes {block_bytes} bytes, {int(budget)} available")
        return num_blocks

    # -- per-request state -----------------------------------------------------------------------------
    def _add_request(self, new: NewRequestData) -> None:
        generator = None
        if new.params.seed is not None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(new.params.seed)
        self.requests[new.handle] = _RequestState(new.params, generator)
        self.processors.add(new.handle, new.params, new.prompt_token_ids, new.eos_token_ids)
        if new.params.prompt_logprobs is not None:
            self.prompt_logprobs.add(new.handle, new.params.prompt_logprobs, new.prompt_token_ids)

    # -- one step --------------------------------------------------------------------------------------
    # Hot path: execute() is the step; its phases are separate methods so bench_host_overhead.py can time
    # each. _sampling_metadata is the one per-row Python loop of a step.
    @torch.inference_mode()
    def execute(self, batch: ExecuteBatch) -> BatchResult:
        self.apply_request_changes(batch)
        inputs = self.prepare_inputs(batch)
        hidden = self.forward(inputs)
        return self.sample(batch, hidden)

    def apply_request_changes(self, batch: ExecuteBatch) -> None:
        for handle in batch.finished_handles:
            self.requests.pop(handle, None)
            self.processors.remove(handle)
            self.prompt_logprobs.remove(handle)
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
        )
        return StepInputs(self._to_device(batch.input_ids), self._to_device(batch.positions), ctx)

    @torch.inference_mode()
    def forward(self, inputs: StepInputs) -> torch.Tensor:
        return self.model(inputs.input_ids, inputs.positions, inputs.ctx)

    @torch.inference_mode()
    def sample(self, batch: ExecuteBatch, hidden: torch.Tensor) -> BatchResult:
        prompt_chunks = self.prompt_logprobs.compute(batch, hidden, self.model.compute_logits)
        if len(batch.sample_handles) == 0:
            return BatchResult(batch.step, np.empty(0, dtype=np.int32), None, prompt_chunks)
        handles = batch.sample_handles.tolist()
        logits = self.model.compute_logits(hidden[self._to_device(batch.logits_indices)])
        metadata = self._sampling_metadata(handles, self.device)
        raw_logits = logits.clone() if metadata.max_num_logprobs >= 0 and self.processors.requests else None
        if not self.processors.apply(logits, handles):
            raw_logits = None
        out = self.sampler(logits, metadata, raw_logits)
        logprobs = None
        if out.logprobs is not None:
            lp = out.logprobs
            logprobs = SampleLogprobs(lp.token_ids.cpu().numpy(), lp.logprobs.cpu().numpy(), lp.ranks.cpu().numpy())
        sampled = out.sampled_token_ids.to(torch.int32).cpu().numpy()
        self.processors.record_sampled(handles, sampled.tolist())
        return BatchResult(batch.step, sampled, logprobs, prompt_chunks)

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(self.device, non_blocking=True)

    def _sampling_metadata(self, handles: list[int], device: torch.device) -> SamplingMetadata:
        params = [self.requests[h].params for h in handles]
        temperature = [p.temperature for p in params]
        top_k = [p.top_k for p in params]
        top_p = [p.top_p for p in params]
        min_p = [p.min_p for p in params]
        greedy = [p.greedy for p in params]
        generators = {row: self.requests[h].generator for row, h in enumerate(handles) if self.requests[h].generator}
        wanted = [p.logprobs for p in params if p.logprobs is not None]
        return SamplingMetadata(
            temperature=torch.tensor(temperature, dtype=torch.float32, device=device),
            top_k=torch.tensor(top_k, dtype=torch.int64, device=device),
            top_p=torch.tensor(top_p, dtype=torch.float32, device=device),
            min_p=torch.tensor(min_p, dtype=torch.float32, device=device),
            generators=generators,
            max_num_logprobs=max(wanted) if wanted else -1,
            all_greedy=all(greedy),
            all_random=not any(greedy),
            no_top_k=all(k <= 0 for k in top_k),
            no_top_p=all(p >= 1.0 for p in top_p),
            no_min_p=all(p <= 0.0 for p in min_p),
        )
