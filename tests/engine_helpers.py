"""Driving an AsyncEngine from synchronous tests, and the transformers reference."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

from kvserve.config import EngineConfig
from kvserve.engine import AsyncEngine
from kvserve.outputs import RequestOutput
from kvserve.request import EngineRequest
from kvserve.sampling_params import SamplingParams

T = TypeVar("T")
MiB = 1 << 20


def run_with_engine(config: EngineConfig, body: Callable[[AsyncEngine], Awaitable[T]]) -> T:
    async def main() -> T:
        engine = await AsyncEngine.start(config)
        try:
            return await asyncio.wait_for(body(engine), timeout=120)
        finally:
            await engine.shutdown()

    return asyncio.run(main())


async def generate(engine: AsyncEngine, prompt: str | list[int], params: SamplingParams, request_id: str, **kw):
    """All outputs of one request, merged into (token ids, text, final output)."""
    token_ids: list[int] = []
    text = ""
    final: RequestOutput | None = None
    async for output in engine.generate(EngineRequest(request_id, prompt, sampling=params, **kw)):
        token_ids += output.token_ids
        text += output.text
        final = output
    return token_ids, text, final


@functools.cache
def _hf_model(model_dir: Path):
    import transformers

    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32").eval()
    model.generation_config.eos_token_id = None  # generate merges it back into any config we pass
    return model


def hf_greedy(model_dir: Path, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """transformers' greedy generate, never stopping early."""
    import torch
    import transformers

    model = _hf_model(model_dir)
    config = transformers.GenerationConfig(
        do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=None, pad_token_id=0
    )
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt_ids]), generation_config=config)
    return out[0, len(prompt_ids) :].tolist()
