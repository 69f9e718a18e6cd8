"""AsyncEngine: starts the actors, turns generate() calls into messages and streams the outputs back.

engine.generate -> TokenizerActor -> SchedulerActor <-> RunnerActor (thread)
                                  -> DetokenizerActor -> OutputRouter -> RequestStream -> caller
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from kvserve import _core
from kvserve.actors.base import Actor
from kvserve.actors.detokenizer import DetokenizerActor
from kvserve.actors.runner import RunnerActor, runner_thread
from kvserve.actors.scheduler import SchedulerActor
from kvserve.actors.tokenizer import TokenizerActor
from kvserve.config import EngineConfig
from kvserve.engine.admission import AdmissionControl
from kvserve.engine.output_router import OutputListener, OutputRouter, RequestListener, StatsListener
from kvserve.engine.request_stream import RequestStream
from kvserve.errors import (
    EngineDeadError,
    ErrorInfo,
    InvalidRequestError,
    RequestTimeoutError,
    ServiceUnavailableError,
)
from kvserve.executor import Executor, start_executor
from kvserve.malloc_tuning import release_free_memory
from kvserve.messages import AbortRequest, PauseForSleep, RequestsScheduled, Resume, RunnerCall
from kvserve.model.loader import resolve_model_dir
from kvserve.model.model_config import ModelConfig, generation_defaults, read_generation_config
from kvserve.model.quantization import resolve_quantization
from kvserve.model.runner import default_max_num_batched_tokens
from kvserve.outputs import RequestOutput
from kvserve.request import EngineRequest, PreparedRequest
from kvserve.structured.compiler import GrammarCompiler, ll_tokenizer
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


def eos_token_ids(tokenizer: Tokenizer, model_config: ModelConfig) -> tuple[int, ...]:
    """The tokenizer's EOS, then the model's (generation_config.json), without repeats."""
    tokenizer_eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    return tuple(dict.fromkeys(tokenizer_eos + list(model_config.eos_token_ids)))


def grammar_compiler(tokenizer: Tokenizer, model_config: ModelConfig) -> GrammarCompiler | None:
    """Structured outputs for this tokenizer; None (with a warning) when llguidance cannot read it. The check
    builds llguidance's tokenizer once and drops it: the compiler builds its own on the first structured
    request (structured/compiler.py)."""
    make = functools.partial(ll_tokenizer, tokenizer, model_config.vocab_size, eos_token_ids(tokenizer, model_config))
    try:
        make()
    except Exception as e:  # a tokenizer llguidance cannot take only disables structured outputs
        logger.warning("structured outputs are disabled: llguidance cannot read this tokenizer (%s)", e)
        return None
    return GrammarCompiler(make)


class AsyncEngine:
    def __init__(
        self,
        config: EngineConfig,
        model_config: ModelConfig,
        tokenizer: Tokenizer,
        executor: Executor,
        thread: ThreadPoolExecutor,
        max_model_len: int,
        grammars: GrammarCompiler | None = None,
    ) -> None:
        self.config = config
        self.model_config = model_config
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.eos_token_ids = eos_token_ids(tokenizer, model_config)
        self.grammars = grammars  # None: structured outputs are refused by the runner's request check
        scheduler_config = _core.SchedulerConfig(
            num_blocks=executor.num_blocks,
            block_size=config.block_size,
            max_num_seqs=config.max_num_seqs,
            max_num_batched_tokens=default_max_num_batched_tokens(config, executor.device),
            max_model_len=max_model_len,
            # A model without a KV cache (an encoder) has nothing to reuse: its blocks only book tokens.
            enable_prefix_caching=config.enable_prefix_caching and executor.tasks.uses_kv_cache,
            enable_chunked_prefill=config.enable_chunked_prefill,
            policy=_core.SchedulingPolicy.PRIORITY
            if config.scheduling_policy == "priority"
            else _core.SchedulingPolicy.FCFS,
        )
        self.admission = AdmissionControl(config.max_num_queued_requests, config.max_num_queued_tokens)
        self.router = OutputRouter()
        self.router.handles(RequestsScheduled, lambda message: self.admission.leave(message.request_ids))
        # Idle, the engine hands back the memory its steps' temporaries left free in malloc (malloc_tuning.py).
        self.scheduler = SchedulerActor(
            scheduler_config, config.engine_step_timeout, config.async_scheduling, on_idle=release_free_memory
        )
        self.detokenizer = DetokenizerActor(tokenizer, self.scheduler, self.router)
        self.executor = executor
        self.runner = RunnerActor(executor, thread, self.scheduler, self.router)
        self.scheduler.connect(self.runner, self.detokenizer, self.router)
        self.supported_tasks = executor.tasks.tasks
        self.model_tasks = executor.tasks  # what the served model produces (--runner, pooling defaults)
        self.tokenizer_actor = TokenizerActor(
            tokenizer,
            max_model_len,
            model_config.vocab_size,
            self.eos_token_ids,
            executor.check_request,
            self.scheduler,
            self.detokenizer,
        )
        self.actors: list[Actor] = [self.tokenizer_actor, self.scheduler, self.runner, self.detokenizer, self.router]
        self.dead: EngineDeadError | None = None
        self.died = asyncio.Event()  # set with `dead`: the server exits non-zero so a supervisor restarts it
        self.num_timed_out = 0  # requests aborted at their deadline
        self.started_at = int(time.time())
        self.sleep_level = 0  # 0: awake; 1 or 2 while asleep (or waking)
        self._sleep_lock = asyncio.Lock()
        self._call_ids = itertools.count()

    @classmethod
    async def start(cls, config: EngineConfig) -> AsyncEngine:
        """Loads the model (off the event loop, on the runner's thread: the only one that uses torch; or in
        --tensor-parallel-size worker processes) and starts the actors."""
        thread = runner_thread(config.cpu_threads)
        try:
            return await cls._start_on(thread, config)
        except BaseException:
            thread.shutdown(wait=True)  # a model that fails to load leaves no thread behind
            raise

    @classmethod
    async def _start_on(cls, thread: ThreadPoolExecutor, config: EngineConfig) -> AsyncEngine:
        loop = asyncio.get_running_loop()
        model_dir = await loop.run_in_executor(thread, resolve_model_dir, config.model, config.revision)
        model_config = load_model_config(config, model_dir)
        tokenizer = Tokenizer.from_directory(config.tokenizer or model_dir)
        if config.max_model_len and config.max_model_len > model_config.max_position_embeddings:
            raise ValueError(
                f"max_model_len ({config.max_model_len}) is larger than the model's max_position_embeddings "
                f"({model_config.max_position_embeddings})"
            )
        grammars = grammar_compiler(tokenizer, model_config)
        executor = await loop.run_in_executor(thread, start_executor, config, model_config, model_dir, grammars)
        try:
            max_model_len = context_length(config, model_config, executor.num_blocks * config.block_size)
            if not config.enable_chunked_prefill and (config.max_num_batched_tokens or 0) < max_model_len:
                raise ValueError("without chunked prefill, max_num_batched_tokens must be at least max_model_len")
        except ValueError:
            executor.shutdown()
            raise
        engine = cls(config, model_config, tokenizer, executor, thread, max_model_len, grammars)
        for actor in engine.actors:
            actor.start(engine._on_actor_failure)
        # A worker that dies between steps fails the runner actor (and so the engine) at once.
        executor.watch(lambda error: loop.call_soon_threadsafe(engine.runner.fail, error))
        release_free_memory()  # what loading the tokenizer, the grammar check and the model left free
        return engine

    # -- requests -------------------------------------------------------------------------------------
    async def generate(self, request: EngineRequest) -> AsyncIterator[RequestOutput]:
        """Streams the request's outputs (deltas). The first output carries no tokens: it says the request
        passed validation and was admitted (errors before that are raised instead). Leaving the iteration
        early aborts the request. A prefill-only request's last output carries its pooled row.

        A full queue or a draining server refuses the request (ServiceUnavailableError) before it is
        tokenized; past its deadline it is aborted and the iteration raises RequestTimeoutError."""
        self._check_alive()
        if self.sleep_level:
            raise ServiceUnavailableError(
                "The engine is sleeping (POST /wake_up wakes it); it serves no requests until then."
            )
        if request.sampling is not None and request.sampling.structured is not None and self.grammars is not None:
            await self.grammars.compile(request.sampling.structured)  # before admission; a bad one is a 400
        request_id = request.request_id
        stream = self.router.open(request_id)
        submitted = False
        deadline: asyncio.TimerHandle | None = None
        try:
            self.admission.enter(request_id)
            self.tokenizer_actor.send(request)
            submitted = True
            for listener in self.router.request_listeners:
                listener.on_submitted(request)
            deadline = self._start_deadline(request, stream)
            accepted = False
            async for output in stream:
                if not accepted:
                    accepted = True
                    self.admission.tokenized(request_id, output.num_prompt_tokens)
                yield output
        finally:
            if deadline is not None:
                deadline.cancel()
            self.admission.leave([request_id])
            self.router.close(request_id)
            if submitted and not stream.finished:
                self.abort(request_id)

    def _start_deadline(self, request: EngineRequest, stream: RequestStream) -> asyncio.TimerHandle | None:
        """A timer that ends the request at arrival + its timeout (the request's own, else the engine's)."""
        timeout = request.timeout if request.timeout is not None else self.config.request_timeout
        if timeout is None:
            return None
        remaining = request.arrival_time + timeout - time.monotonic()
        return asyncio.get_running_loop().call_later(max(remaining, 0.0), self._expire, stream, timeout)

    def _expire(self, stream: RequestStream, timeout: float) -> None:
        if stream.finished:
            return
        self.num_timed_out += 1
        stream.put(
            RequestTimeoutError(f"The request did not finish within its timeout of {timeout:g} s and was aborted.")
        )
        self.abort(stream.request_id)  # frees its blocks now, whenever its consumer reads the error

    async def encode(self, request: EngineRequest) -> RequestOutput:
        """A prefill-only request's whole output (with its pooled row)."""
        if request.pooling is None:
            raise ValueError("encode() takes a request with pooling parameters")
        accepted, *later = [output async for output in self.generate(request)]
        for output in later:
            accepted.merge(output)
        return accepted

    def prepare(self, request: EngineRequest) -> PreparedRequest:
        """The request as the engine would run it (tokenized, truncated, max_tokens resolved, checked against
        the model), without running it: what the render routes return."""
        self._check_alive()
        return self.tokenizer_actor.prepare(request)

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

    def add_output_listener(self, listener: OutputListener) -> None:
        """Calls `listener` with every batch of request outputs (one delta per request and step, the final
        ones included), on the event loop, before they reach their streams."""
        self.router.output_listeners.append(listener)

    def add_request_listener(self, listener: RequestListener) -> None:
        """Tells `listener` of each request submitted and each one that failed, on the event loop."""
        self.router.request_listeners.append(listener)

    # -- runner calls: sleep mode and collective RPC ----------------------------------------------------
    def _runner_call(self, method: str, *args: Any, collective_rpc: bool = False, **kwargs: Any) -> RunnerCall:
        return RunnerCall(next(self._call_ids), method, args, kwargs, collective_rpc)

    def _expect_reply(self, call: RunnerCall) -> asyncio.Future:
        """The future of `call`'s reply; registered before the call is sent."""
        self._check_alive()
        return self.router.expect_reply(call.call_id)

    async def collective_rpc(self, method: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None) -> list:
        """Calls `method` of the model runner (on its thread, between steps); one result per worker (rank)."""
        call = self._runner_call(method, *args, collective_rpc=True, **(kwargs or {}))
        reply = self._expect_reply(call)
        self.runner.send(call)
        return await reply

    async def sleep(self, level: int = 1) -> dict[str, int]:
        """Releases the KV cache (level 1) and the weights (level 2; level 1 moves them to host memory).
        Requests in flight fail with a 503, as do new ones until wake_up(). Returns the bytes released."""
        if not self.config.enable_sleep_mode:
            raise InvalidRequestError("Sleep mode is not enabled: start the server with --enable-sleep-mode.")
        if level not in (1, 2):
            raise InvalidRequestError(f"level must be 1 or 2, got {level}.", "level")
        async with self._sleep_lock:
            if self.sleep_level:
                return {}  # already asleep: sleeping again changes nothing
            self.sleep_level = level
            call = self._runner_call("sleep", level)
            reply = self._expect_reply(call)
            self.scheduler.send(PauseForSleep(call))
            released = await reply
            logger.info("asleep at level %d; released %s bytes", level, released)
            return released

    async def wake_up(self, tags: Sequence[str] | None = None) -> None:
        """Restores the parts in `tags` ("weights", "kv_cache"; default both); serves again once all are."""
        async with self._sleep_lock:
            if not self.sleep_level:
                return
            call = self._runner_call("wake_up", None if tags is None else list(tags))
            reply = self._expect_reply(call)
            self.runner.send(call)
            if not await reply:
                self.scheduler.send(Resume())  # ahead of any new request, which comes through the tokenizer
                self.sleep_level = 0

    @property
    def is_sleeping(self) -> bool:
        return self.sleep_level != 0

    @property
    def is_healthy(self) -> bool:
        return self.dead is None

    @property
    def is_ready(self) -> bool:
        """Healthy and taking requests (not draining)."""
        return self.dead is None and self.admission.closed_reason is None

    @property
    def num_open_requests(self) -> int:
        return len(self.router.streams)

    async def drain(self, timeout: float) -> int:
        """Refuses new requests (503) and gives the open ones up to `timeout` seconds to finish; the rest end
        with a 503 error and are aborted. Returns how many were aborted."""
        self.admission.close("The server is shutting down and takes no new requests.")
        deadline = time.monotonic() + timeout
        while self.router.streams and self.dead is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        unfinished = list(self.router.streams.values())
        error = ServiceUnavailableError("The server shut down before the request finished; it was aborted.")
        for stream in unfinished:
            stream.put(error)
            self.abort(stream.request_id)
        if unfinished:
            logger.warning("shutdown: aborted %d unfinished requests", len(unfinished))
        return len(unfinished)

    def _on_actor_failure(self, actor: Actor, error: BaseException) -> None:
        if self.dead is not None:
            return
        info = ErrorInfo.of(error)
        self.dead = EngineDeadError(f"The engine failed in its {actor.name} actor: {info.message}")
        logger.error("engine is dead: %s", self.dead.message)
        self.router.fail_all(self.dead)
        self.died.set()

    async def shutdown(self) -> None:
        for actor in self.actors:
            if self.dead is None:
                await actor.stop()
            else:  # a dead engine's actors may be stuck in a step that never returns: do not wait for them
                actor.kill()
        await _in_own_thread(self.executor.shutdown)  # tensor-parallel workers stopped and joined
        if self.grammars is not None:
            self.grammars.shutdown()


async def _in_own_thread(fn: Callable[[], object]) -> None:
    """Awaits fn() run on a thread of its own. Unlike asyncio.to_thread this works while the interpreter exits
    (concurrent.futures refuses new work by then), which is when LLM's finalizer may shut an engine down."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if not done.done():
            done.set_result(None) if error is None else done.set_exception(error)

    def body() -> None:
        try:
            fn()
        except BaseException as error:  # handed to the awaiting task
            loop.call_soon_threadsafe(settle, error)
        else:
            loop.call_soon_threadsafe(settle, None)

    threading.Thread(target=body, name="kvserve-shutdown", daemon=True).start()
    await done
