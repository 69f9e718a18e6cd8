"""KvserveDeployment: a Ray Serve replica that owns one AsyncEngine and serves kvserve's Quart app.

HTTP reaches the replica through Ray's proxy as ASGI (`@serve.ingress()`, the app built once the engine is
up), so routes, SSE streams, error envelopes and client disconnects behave as under `kvserve serve`.
Python callers get the same engine through handles:

    handle = serve.get_app_handle("kvserve")
    out = await handle.chat.remote([{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=32))
    async for delta in handle.options(stream=True).generate.remote("Once", SamplingParams(), stream=True):
        print(delta.outputs[0].text, end="")

A streamed call needs both `handle.options(stream=True)` (Ray's side) and `stream=True` (which result the
method returns); leaving the stream early aborts the request in the engine, as a disconnect does.
"""

from __future__ import annotations

import argparse
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ray import serve

from kvserve.api.app import create_app
from kvserve.cli import engine_config_from_args, settings_factory
from kvserve.engine import AsyncEngine
from kvserve.errors import InvalidRequestError
from kvserve.integrations.ray_serve.disconnect_on_cancel import DisconnectOnCancel
from kvserve.llm import EmbeddingOutput, GenerationOutput, Prompt, collect
from kvserve.messages import StepStats
from kvserve.request import EngineRequest, PoolingParams
from kvserve.sampling_params import SamplingParams

# Ray's replica health probe: a dead engine fails it within a period, and Ray replaces the replica.
HEALTH_CHECK_PERIOD_S = 10.0
HEALTH_CHECK_TIMEOUT_S = 30.0
# A replica stopping (scale-down, redeploy) lets its streams finish for this long before they are cut.
GRACEFUL_SHUTDOWN_TIMEOUT_S = 60.0

GenerationResult = GenerationOutput | AsyncIterator[GenerationOutput]


@dataclass(frozen=True, slots=True)
class ReplicaStats:
    """What one replica's engine holds now, and what it has done (for `handle.broadcast("stats")`)."""

    num_running: int
    num_waiting: int
    num_free_blocks: int
    num_total_blocks: int
    num_finished: int  # requests that ran to their end (length, EOS, stop ids, pooled)
    num_aborted: int  # requests stopped early: disconnects, abandoned streams, stop strings
    healthy: bool


@serve.deployment(
    health_check_period_s=HEALTH_CHECK_PERIOD_S,
    health_check_timeout_s=HEALTH_CHECK_TIMEOUT_S,
    graceful_shutdown_timeout_s=GRACEFUL_SHUTDOWN_TIMEOUT_S,
)
@serve.ingress()
class KvserveDeployment:
    async def __init__(self, args: argparse.Namespace) -> None:
        """`args`: `kvserve serve`'s parsed flags (see build_app); the engine loads its model here."""
        self.engine = await AsyncEngine.start(engine_config_from_args(args))
        self.settings = settings_factory(args)(self.engine)
        self._num_finished = 0
        self.engine.add_stats_listener(self._count_finished)

    def __serve_build_asgi_app__(self) -> DisconnectOnCancel:
        app = create_app(self.engine, self.settings)
        # Ray runs the app's ASGI lifespan: its shutdown (the replica stopping) stops the engine.
        app.after_serving(self.engine.shutdown)
        return DisconnectOnCancel(app)

    def check_health(self) -> None:
        """Ray's health probe: raising marks the replica unhealthy (then replaced), as /health answers 503."""
        if self.engine.dead is not None:
            raise RuntimeError(self.engine.dead.message)

    # -- the Python API through handles -------------------------------------------------------------------
    async def generate(
        self, prompt: Prompt, sampling_params: SamplingParams | None = None, *, stream: bool = False
    ) -> GenerationResult:
        """A text or token-id prompt: its GenerationOutput, or with stream=True its deltas."""
        request = EngineRequest(_request_id(), prompt, sampling=sampling_params or SamplingParams())
        return self._stream(prompt, request) if stream else await self._complete(prompt, request)

    async def chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        sampling_params: SamplingParams | None = None,
        *,
        stream: bool = False,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
    ) -> GenerationResult:
        """OpenAI-style messages rendered by the server's chat template (the one /v1/chat/completions uses)."""
        template = self.settings.chat_template
        if template is None:
            raise InvalidRequestError("the model has no chat template; serve it with chat_template=...")
        prompt = template.render(
            messages,
            add_generation_prompt=add_generation_prompt,
            continue_final_message=continue_final_message,
            tools=tools,
            chat_template_kwargs=chat_template_kwargs,
        )
        # The template writes the special tokens itself (as the chat API does).
        request = EngineRequest(
            _request_id(), prompt, sampling=sampling_params or SamplingParams(), add_special_tokens=False
        )
        return self._stream(prompt, request) if stream else await self._complete(prompt, request)

    async def embed(self, prompt: Prompt, pooling_params: PoolingParams | None = None) -> EmbeddingOutput:
        """A pooling model's embedding of one prompt."""
        request = EngineRequest(_request_id(), prompt, pooling=pooling_params or PoolingParams(kind="embed"))
        return EmbeddingOutput.of(await self.engine.encode(request))

    async def stats(self) -> ReplicaStats:
        scheduler = self.engine.scheduler
        pool = scheduler.core.block_pool
        return ReplicaStats(
            num_running=scheduler.core.num_running,
            num_waiting=scheduler.core.num_waiting,
            num_free_blocks=pool.num_free_blocks,
            num_total_blocks=pool.num_blocks,
            num_finished=self._num_finished,
            num_aborted=scheduler.num_aborted,
            healthy=self.engine.is_healthy,
        )

    # -- plumbing ---------------------------------------------------------------------------------------
    async def _complete(self, prompt: Prompt, request: EngineRequest) -> GenerationOutput:
        return GenerationOutput.of(prompt, await collect(self.engine, request))

    async def _stream(self, prompt: Prompt, request: EngineRequest) -> AsyncIterator[GenerationOutput]:
        async for output in self.engine.generate(request):
            if output.token_ids or output.finished:  # the first output only says the request was admitted
                yield GenerationOutput.of(prompt, output)

    def _count_finished(self, stats: StepStats) -> None:
        self._num_finished += stats.num_finished


def _request_id() -> str:
    return f"ray-{uuid.uuid4().hex}"
