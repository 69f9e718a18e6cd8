"""AsyncEngine: starts the actors, turns generate() calls into messages and streams the outputs back.

engine.generate -> TokenizerActor -> SchedulerActor <-> RunnerActor (thread)
                                  -> DetokenizerActor -> OutputRouter -> RequestStream -> caller
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kvserve import _core
from kvserve.actors.base import Actor
from kvserve.actors.detokenizer import DetokenizerActor
from kvserve.actors.runner import RunnerActor, runner_thread
from kvserve.actors.scheduler import SchedulerActor
from kvserve.actors.tokenizer import TokenizerActor
from kvserve.config import EngineConfig
from kvserve.engine.output_router import OutputRouter, StatsListener
from kvserve.errors import EngineDeadError, ErrorInfo
from kvserve.messages import AbortRequest
from kvserve.model.loader import resolve_model_dir
from kvserve.model.model_config import ModelConfig, generation_defaults, read_generation_config
from kvserve.model.quantization import resolve_quantization
from kvserve.model.runner import ModelRunner
from kvserve.outputs import RequestOutput
from kvserve.request import EngineRequest
from kvserve.tokenizer import Tokenizer

logger = logging.getLogger(__name__)


def load_model_config(config: EngineConfig, model_dir: Path) -> ModelConfig:
    """The model's config; request defaults from --generation-config (auto: the model's, vllm: none, or a dir);
    --quantization on an unquantized checkpoint."""
    model_config = ModelConfig.from_directory(model_dir)
    if config.quantization is not None:
        quantization = resolve_quantization(config.quantization, model_config.quantization)
        model_config = dataclasses.replace(model_config, quantization=quantization)
    if config.generation_config == "auto":
        return model_config
    defaults = (
        {}
        if config.generation_config == "vllm"
        else generation_defaults(read_generation_config(config.generation_config))
    )
    return dataclasses.replace(model_config, generation_defaults=defaults)


def context_length(config: EngineConfig, model_config: ModelConfig, kv_capacity_tokens: int) -> int:
    """--max-model-len, or the model's own limit; either must fit the KV cache, or no request of that length
    could ever run. Asked for explicitly and too large: an error at start (as in vLLM). By default: capped."""
    if config.max_model_len is not None:
        if config.max_model_len > kv_capacity_tokens:
            raise ValueError(
                f"max_model_len ({config.max_model_len}) is larger than the number of tokens the KV cache can "
                f"hold ({kv_capacity_tokens}); give the cache more memory (--kv-cache-memory, "
                "--gpu-memory-utilization) or lower --max-model-len"
            )
        return config.max_model_len
    if model_config.max_position_embeddings > kv_capacity_tokens:
        logger.warning(
            "the model's context (%d tokens) exceeds what the KV cache holds; serving max_model_len=%d "
            "(give the cache more memory to serve longer contexts)",
            model_config.max_position_embeddings,
            kv_capacity_tokens,
        )
        return kv_capacity_tokens
    return model_config.max_position_embeddings


class AsyncEngine:
    def __init__(
        self,
        config: EngineConfig,
        model_config: ModelConfig,
        tokenizer: Tokenizer,
        runner: ModelRunner,
        thread: ThreadPoolExecutor,
        max_model_len: int,
    ) -> None:
        self.config = config
        self.model_config = model_config
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.eos_token_ids = tuple(
            dict.fromkeys(
                ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])
                + list(model_config.eos_token_ids)
            )
        )
        scheduler_config = _core.SchedulerConfig(
            num_blocks=runner.num_blocks,
            block_size=config.block_size,
            max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=config.max_num_batched_tokens or (8192 if runner.device.type == "cuda" else 2048),
            max_model_len=max_model_len,
            enable_prefix_caching=config.enable_prefix_caching,
            enable_chunked_prefill=config.enable_chunked_prefill,
            policy=_core.SchedulingPolicy.PRIORITY
            if config.scheduling_policy == "priority"
            else _core.SchedulingPolicy.FCFS,
        )
        self.router = OutputRouter()
        self.scheduler = SchedulerActor(scheduler_config)
        self.detokenizer = DetokenizerActor(tokenizer, self.scheduler, self.router)
        self.runner = RunnerActor(runner, thread, self.scheduler)
        self.scheduler.connect(self.runner, self.detokenizer, self.router)
        self.supported_tasks = runner.supported_tasks
        self.tokenizer_actor = TokenizerActor(
            tokenizer,
            max_model_len,
            model_config.vocab_size,
            self.eos_token_ids,
            runner.check_request,
            self.scheduler,
            self.detokenizer,
        )
        self.actors: list[Actor] = [self.tokenizer_actor, self.scheduler, self.runner, self.detokenizer, self.router]
        self.dead: EngineDeadError | None = None
        self.started_at = int(time.time())

    @classmethod
    async def start(cls, config: EngineConfig) -> AsyncEngine:
        """Loads the model (off the event loop, on the runner's thread: the only one that uses torch) and
        starts the actors."""
        thread = runner_thread()
        loop = asyncio.get_running_loop()
        model_dir = await loop.run_in_executor(thread, resolve_model_dir, config.model, config.revision)
        model_config = load_model_config(config, model_dir)
        tokenizer = Tokenizer.from_directory(config.tokenizer or model_dir)
        if config.max_model_len and config.max_model_len > model_config.max_position_embeddings:
            raise ValueError(
                f"max_model_len ({config.max_model_len}) is larger than the model's max_position_embeddings "
                f"({model_config.max_position_embeddings})"
            )
        runner = await loop.run_in_executor(thread, ModelRunner, config, model_config, model_dir)
        max_model_len = context_length(config, model_config, runner.num_blocks * config.block_size)
        if not config.enable_chunked_prefill and (config.max_num_batched_tokens or 0) < max_model_len:
            raise ValueError("without chunked prefill, max_num_batched_tokens must be at least max_model_len")
        engine = cls(config, model_config, tokenizer, runner, thread, max_model_len)
        for actor in engine.actors:
            actor.start(engine._on_actor_failure)
        return engine

    # -- requests -------------------------------------------------------------------------------------
    async def generate(self, request: EngineRequest) -> AsyncIterator[RequestOutput]:
        """Streams the request's outputs (deltas). The first output carries no tokens: it says the request
        passed validation and was admitted (errors before that are raised instead). Leaving the iteration
        early aborts the request. A prefill-only request's last output carries its pooled row."""
        self._check_alive()
        stream = self.router.open(request.request_id)
        self.tokenizer_actor.send(request)
        try:
            async for output in stream:
                yield output
        finally:
            self.router.close(request.request_id)
            if not stream.finished:
                self.abort(request.request_id)

    async def encode(self, request: EngineRequest) -> RequestOutput:
        """A prefill-only request's whole output (with its pooled row)."""
        if request.pooling is None:
            raise ValueError("encode() takes a request with pooling parameters")
        accepted, *later = [output async for output in self.generate(request)]
        for output in later:
            accepted.merge(output)
        return accepted

    def abort(self, request_id: str) -> None:
        """Stops a request and frees its KV blocks; unknown or finished ids are ignored."""
        if self.dead is None:
            self.tokenizer_actor.send(AbortRequest(request_id))

    # -- health and lifetime ----------------------------------------------------------------------------
    def _check_alive(self) -> None:
        if self.dead is not None:
            raise self.dead

    def add_stats_listener(self, listener: StatsListener) -> None:
        """Calls `listener` with each executed step's StepStats, on the event loop."""
        self.router.stats_listeners.append(listener)

    @property
    def is_healthy(self) -> bool:
        return self.dead is None

    def _on_actor_failure(self, actor: Actor, error: BaseException) -> None:
        if self.dead is not None:
            return
        info = ErrorInfo.of(error)
        self.dead = EngineDeadError(f"The engine failed in its {actor.name} actor: {info.message}")
        logger.error("engine is dead: %s", self.dead.message)
        self.router.fail_all(self.dead)

    async def shutdown(self) -> None:
        for actor in self.actors:
            await actor.stop()
