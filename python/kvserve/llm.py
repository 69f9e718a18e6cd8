"""`kvserve.LLM`: offline batch inference in one process, in the shape vLLM users know.

    llm = LLM("path/to/model", max_model_len=2048)
    for out in llm.generate(["Hello, my name is"], SamplingParams(max_tokens=32, temperature=0)):
        print(out.outputs[0].text)

The engine runs on its own event loop in a background thread; each call submits every prompt at once (so
they batch) and returns the results in input order.
"""

from __future__ import annotations

import asyncio
import numbers
import threading
import weakref
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from kvserve.config import EngineConfig
from kvserve.engine import AsyncEngine
from kvserve.outputs import PositionLogprobs, RequestOutput
from kvserve.request import EngineRequest, PoolingParams
from kvserve.sampling_params import SamplingParams
from kvserve.text.chat_template import ChatTemplate, load_chat_template

T = TypeVar("T")
Prompt = str | list[int]
# What generate / embed take: a Prompt, or vLLM's TextPrompt / TokensPrompt dict.
PromptInput = Prompt | Mapping[str, Any]
Conversation = Sequence[Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None
    stop_reason: str | int | None
    logprobs: list[PositionLogprobs] | None


@dataclass(frozen=True, slots=True)
class GenerationOutput:
    """One prompt's result (vLLM's RequestOutput): `outputs[0].text` is the generated text."""

    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    num_cached_tokens: int
    finished: bool = True

    @classmethod
    def of(cls, prompt: Prompt, result: RequestOutput) -> GenerationOutput:
        """A whole result, or one delta of a stream (`finished` says which)."""
        completion = CompletionOutput(
            index=0,
            text=result.text,
            token_ids=result.token_ids,
            finish_reason=result.finish_reason,
            stop_reason=result.stop_reason,
            logprobs=result.logprobs,
        )
        return cls(
            request_id=result.request_id,
            prompt=prompt if isinstance(prompt, str) else None,
            prompt_token_ids=result.prompt_token_ids,
            outputs=[completion],
            num_cached_tokens=result.num_cached_tokens,
            finished=result.finished,
        )


@dataclass(frozen=True, slots=True)
class EmbeddingData:
    embedding: list[float]


@dataclass(frozen=True, slots=True)
class EmbeddingOutput:
    """One prompt's embedding (vLLM's EmbeddingRequestOutput): `outputs.embedding`."""

    request_id: str
    prompt_token_ids: list[int]
    outputs: EmbeddingData

    @classmethod
    def of(cls, result: RequestOutput) -> EmbeddingOutput:
        return cls(result.request_id, result.prompt_token_ids, EmbeddingData(np.asarray(result.pooled).tolist()))


class LLM:
    def __init__(self, model: str | None = None, *, chat_template: str | None = None, **engine_args: Any) -> None:
        """`model`: a directory, a .gguf file or a Hugging Face repo id (default: the embedded SmolLM2).
        `engine_args`: EngineConfig's fields (max_model_len, dtype, kv_cache_memory, max_num_seqs, ...)."""
        if model is None:
            from kvserve.cli import embedded_model_path

            model = str(embedded_model_path())
        config = EngineConfig(model=model, **engine_args)
        self._engine_loop = _EngineLoop()
        # Shuts the engine down when the LLM is collected or, at the latest, when the interpreter exits (its
        # actors would otherwise be torn down mid-wait and print their tracebacks).
        self._close = weakref.finalize(self, self._engine_loop.close)
        self._engine: AsyncEngine | None = None
        try:
            self._engine = self._engine_loop.engine = self._run(AsyncEngine.start(config))
        except BaseException:
            self.shutdown()  # a model that fails to load leaves no loop thread behind
            raise
        source = load_chat_template(chat_template) if chat_template else self._engine.tokenizer.chat_template
        special = self._engine.tokenizer.special_tokens
        self._chat_template = None if source is None else ChatTemplate(source, special_tokens=special)
        self._next_id = 0

    # -- the public calls -------------------------------------------------------------------------------
    def generate(
        self,
        prompts: PromptInput | Sequence[PromptInput],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        use_tqdm: bool = True,
    ) -> list[GenerationOutput]:
        """Text or token-id prompts; one SamplingParams for all, or one per prompt."""
        return self._generate(_as_prompt_list(prompts), sampling_params, add_special_tokens=True, use_tqdm=use_tqdm)

    def chat(
        self,
        messages: Conversation | Sequence[Conversation],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
        *,
        chat_template: str | None = None,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
        use_tqdm: bool = True,
    ) -> list[GenerationOutput]:
        """One conversation (a list of OpenAI-style messages) or several, rendered by the chat template."""
        conversations = [messages] if messages and isinstance(messages[0], Mapping) else list(messages)
        template = self._template(chat_template)
        prompts: list[Prompt] = [
            template.render(
                conversation,
                add_generation_prompt=add_generation_prompt,
                continue_final_message=continue_final_message,
                tools=tools,
                chat_template_kwargs=chat_template_kwargs,
            )
            for conversation in conversations
        ]
        # The template writes the special tokens itself (as the chat API does).
        return self._generate(prompts, sampling_params, add_special_tokens=False, use_tqdm=use_tqdm)

    def embed(
        self,
        prompts: PromptInput | Sequence[PromptInput],
        pooling_params: PoolingParams | None = None,
        *,
        use_tqdm: bool = True,
    ) -> list[EmbeddingOutput]:
        """Pooled hidden states, for models that serve prefill-only requests."""
        params = pooling_params or PoolingParams(kind="embed")
        requests = [EngineRequest(self._request_id(), p, pooling=params) for p in _as_prompt_list(prompts)]
        results = self._run_all([self._engine.encode(r) for r in requests], use_tqdm)
        return [EmbeddingOutput.of(r) for r in results]

    def collective_rpc(self, method: str, args: Sequence[Any] = (), kwargs: dict[str, Any] | None = None) -> list[Any]:
        """Calls a model-runner method (e.g. "memory_bytes") on every tensor-parallel rank, between steps;
        returns the per-rank results in rank order, as vLLM's LLM.collective_rpc does."""
        return self._run(self._engine.collective_rpc(method, args, kwargs))

    def shutdown(self) -> None:
        self._close()
        self._engine = None

    def __enter__(self) -> LLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- plumbing ---------------------------------------------------------------------------------------
    def _template(self, override: str | None) -> ChatTemplate:
        if override is not None:
            return ChatTemplate(load_chat_template(override), special_tokens=self._engine.tokenizer.special_tokens)
        if self._chat_template is None:
            raise ValueError("this model has no chat template; pass chat_template=")
        return self._chat_template

    def _request_id(self) -> str:
        self._next_id += 1
        return f"llm-{self._next_id}"

    def _generate(
        self,
        prompts: list[Prompt],
        sampling_params: SamplingParams | Sequence[SamplingParams] | None,
        *,
        add_special_tokens: bool,
        use_tqdm: bool,
    ) -> list[GenerationOutput]:
        if sampling_params is None or isinstance(sampling_params, SamplingParams):
            params = [sampling_params or SamplingParams()] * len(prompts)
        else:
            params = list(sampling_params)
            if len(params) != len(prompts):
                raise ValueError(f"got {len(params)} sampling params for {len(prompts)} prompts")
        requests = [
            EngineRequest(self._request_id(), prompt, sampling=p, add_special_tokens=add_special_tokens)
            for prompt, p in zip(prompts, params)
        ]
        results = self._run_all([collect(self._engine, r) for r in requests], use_tqdm)
        return [GenerationOutput.of(prompt, result) for prompt, result in zip(prompts, results)]

    def _run_all(self, calls: list[Awaitable[T]], use_tqdm: bool) -> list[T]:
        """Runs every call at once on the engine's loop; results in input order, a progress bar as they end."""
        progress = _progress_bar(len(calls)) if use_tqdm else None

        async def tracked(call: Awaitable[T]) -> T:
            result = await call
            if progress is not None:
                progress.update(1)
            return result

        async def all_calls() -> list[T]:
            return list(await asyncio.gather(*(tracked(c) for c in calls)))

        try:
            return self._run(all_calls())
        finally:
            if progress is not None:
                progress.close()

    def _run(self, coroutine: Awaitable[T]) -> T:
        return self._engine_loop.run(coroutine)


class _EngineLoop:
    """The event loop thread the engine runs on, and the engine once started."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kvserve-llm", daemon=True)
        self.thread.start()
        self.engine: AsyncEngine | None = None

    def run(self, coroutine: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result()

    def close(self) -> None:
        """Shuts the engine down, then stops and closes the loop."""
        if self.engine is not None:
            self.run(self.engine.shutdown())
            self.engine = None
        if self.loop.is_running():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
        if not self.loop.is_closed():
            self.loop.close()


async def collect(engine: AsyncEngine, request: EngineRequest) -> RequestOutput:
    """A generate request's whole output: its deltas merged."""
    accepted, *later = [output async for output in engine.generate(request)]
    for output in later:
        accepted.merge(output)
    return accepted


def _as_prompt_list(prompts: PromptInput | Sequence[PromptInput]) -> list[Prompt]:
    """One prompt or a list of them, each a string, a list of token ids, or vLLM's TextPrompt /
    TokensPrompt dict ({"prompt": text} / {"prompt_token_ids": ids}); ValueError for anything else."""
    if isinstance(prompts, (str, Mapping)) or (len(prompts) and isinstance(prompts[0], numbers.Integral)):
        prompts = [prompts]  # type: ignore[list-item]
    return [_as_prompt(p) for p in prompts]  # type: ignore[union-attr]


def _as_prompt(prompt: PromptInput) -> Prompt:
    if isinstance(prompt, Mapping):
        keys = set(prompt) & {"prompt", "prompt_token_ids"}
        if len(keys) != 1:
            raise ValueError(f"a dict prompt takes one of 'prompt' and 'prompt_token_ids', got {sorted(prompt)}")
        prompt = prompt[keys.pop()]
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, Sequence | np.ndarray) and all(
        isinstance(t, numbers.Integral) and not isinstance(t, bool) for t in prompt
    ):
        return [int(t) for t in prompt]
    raise ValueError(f"a prompt is a string or a list of token ids, got {type(prompt).__name__}")


def _progress_bar(total: int) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="Processed prompts", unit="prompt", dynamic_ncols=True)
