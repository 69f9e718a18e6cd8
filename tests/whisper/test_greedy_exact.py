"""Whisper through the whole engine: greedy tokens equal transformers' generate on the same weights and audio,
for both tasks, a text prompt, time tokens, several requests batched together and audio longer than 30 s."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

import numpy as np
import pytest
import torch

from kvserve.audio.log_mel import CHUNK_SAMPLES, pad_chunk
from kvserve.config import EngineConfig
from kvserve.engine import AsyncEngine
from kvserve.model.whisper.prompt import WhisperPrompts
from kvserve.request import EncoderInput, EngineRequest
from kvserve.sampling_params import SamplingParams
from tests.engine_helpers import MiB, run_with_engine
from tests.whisper.tiny_whisper import tone

MAX_TOKENS = 24


@functools.cache
def _hf_model(model_dir: Path):
    import transformers

    return transformers.WhisperForConditionalGeneration.from_pretrained(model_dir).eval()


def hf_features(samples: np.ndarray) -> torch.Tensor:
    import transformers

    extractor = transformers.WhisperFeatureExtractor(feature_size=80)
    return extractor(samples, sampling_rate=16_000, return_tensors="pt").input_features


def hf_whisper_prompt(model_dir: Path, task: str, prompt_ids: list[int]) -> list[int]:
    """The decoder prompt Whisper's generate builds (language, task, <|notimestamps|>, prompt_ids)."""
    kwargs = {"prompt_ids": torch.tensor(prompt_ids)} if prompt_ids else {}
    with torch.no_grad():
        out = _hf_model(model_dir).generate(
            hf_features(np.zeros(16_000, np.float32)),
            language="en",
            task=task,
            max_new_tokens=1,
            return_dict_in_generate=True,
            **kwargs,
        )
    return out.sequences[0, :-1].tolist()


def hf_generate(model_dir: Path, samples: np.ndarray, decoder_prompt: list[int]) -> list[int]:
    """Greedy tokens of transformers' generate after `decoder_prompt`, with Whisper's suppress lists.

    The tokens come from the standard GenerationMixin.generate: Whisper's own generate wraps it in its
    long-form loop, which re-decodes from a "seek" after time tokens even in a short clip; a random model
    emits time tokens at random, which would send that loop through several passes.
    """
    import transformers

    model = _hf_model(model_dir)
    config = model.generation_config
    with torch.no_grad():
        out = transformers.GenerationMixin.generate(
            model,
            input_features=hf_features(samples),
            decoder_input_ids=torch.tensor([decoder_prompt]),
            max_new_tokens=MAX_TOKENS,
            do_sample=False,
            suppress_tokens=config.suppress_tokens,
            begin_suppress_tokens=config.begin_suppress_tokens,
        )
    return out[0, len(decoder_prompt) :].tolist()


def prompts_of(engine: AsyncEngine) -> WhisperPrompts:
    config = engine.model_config
    return WhisperPrompts.of(engine.tokenizer, config.hf_config, config.hf_generation_config)


async def transcribe(engine: AsyncEngine, request_id: str, samples: np.ndarray, prompt: list[int]) -> list[int]:
    request = EngineRequest(
        request_id,
        prompt,
        sampling=SamplingParams(temperature=0.0, max_tokens=MAX_TOKENS),
        encoder_input=EncoderInput(pad_chunk(samples), 1500),
    )
    return [t async for output in engine.generate(request) for t in output.token_ids]


CASES = [
    # (seconds, tone frequency, task, text prompt)
    (5.0, 440.0, "transcribe", ""),
    (12.5, 220.0, "translate", ""),
    (30.0, 880.0, "transcribe", "def main():"),
    (1.0, 300.0, "translate", "import os"),
]


def test_batched_requests_match_transformers(whisper_dir):
    """All cases run concurrently (encoders and decodes batched); with 16-token blocks the 1500 cross
    positions end mid-block (93 full blocks and 12 slots)."""
    audios = [tone(seconds, freq, seed=i) for i, (seconds, freq, _, _) in enumerate(CASES)]

    async def body(engine: AsyncEngine) -> list[tuple[list[int], list[int]]]:
        prompts = prompts_of(engine)
        decoder_prompts = [
            prompts.decoder_prompt("en", task, prompts.previous_text_ids(engine.tokenizer, text))
            for _, _, task, text in CASES
        ]
        outputs = await asyncio.gather(
            *(transcribe(engine, f"r{i}", audio, p) for i, (audio, p) in enumerate(zip(audios, decoder_prompts)))
        )
        return list(zip(decoder_prompts, outputs))

    config = EngineConfig(model=str(whisper_dir), kv_cache_memory=16 * MiB, block_size=16)
    results = run_with_engine(config, body)
    for (seconds, _, task, text), audio, (decoder_prompt, ours) in zip(CASES, audios, results):
        previous = decoder_prompt[:-4]  # <|startofprev|> and the text, before sot, language, task, notimestamps
        assert hf_whisper_prompt(whisper_dir, task, previous) == decoder_prompt
        assert ours == hf_generate(whisper_dir, audio, decoder_prompt), (seconds, task, text)


def test_time_tokens_match_transformers(whisper_dir):
    """With timestamps the prompt ends at the task token; the model then writes <|t|> tokens itself."""
    audio = tone(8.0, 500.0)

    async def body(engine: AsyncEngine) -> tuple[list[int], list[int]]:
        prompt = prompts_of(engine).decoder_prompt("en", "transcribe", [], timestamps=True)
        return prompt, await transcribe(engine, "t", audio, prompt)

    prompt, ours = run_with_engine(EngineConfig(model=str(whisper_dir), kv_cache_memory=16 * MiB), body)
    # generate's time-token prompt is its plain one without <|notimestamps|> (its timestamped output keeps no
    # prompt to compare with)
    assert hf_whisper_prompt(whisper_dir, "transcribe", [])[:-1] == prompt
    assert ours == hf_generate(whisper_dir, audio, prompt)


def test_suppressed_tokens_are_exercised(whisper_dir):
    """The suppress lists of the test model change greedy outputs, so the exact tests above cover them."""
    import transformers

    model = _hf_model(whisper_dir)
    prompt = [model.generation_config.decoder_start_token_id]
    with torch.no_grad():
        free = transformers.GenerationMixin.generate(
            model,
            input_features=hf_features(tone(5.0)),
            decoder_input_ids=torch.tensor([prompt]),
            max_new_tokens=MAX_TOKENS,
            do_sample=False,
            suppress_tokens=None,
            begin_suppress_tokens=None,
        )[0, 1:].tolist()
    suppressed = set(model.generation_config.suppress_tokens)
    assert suppressed & set(free) or free[0] in model.generation_config.begin_suppress_tokens


def test_preemption_reruns_the_encoder(whisper_dir):
    """A KV cache too small for all requests at once: preempted requests give back their cross blocks and
    rerun their encoder when resumed; outputs stay token-exact."""
    audios = [tone(4.0 + i, 300.0 + 50 * i, seed=i) for i in range(4)]
    # A request holds 94 cross blocks (1500 / 16) and 1, later 2, decoder blocks; 16 KiB a block (2 layers of
    # keys and values, 16 tokens, 4 heads of 16 floats). 191 blocks admit two requests, which then cannot
    # both take their second decoder block.
    config = EngineConfig(model=str(whisper_dir), kv_cache_memory=191 * 2 * 2 * 16 * 64 * 4, block_size=16)
    preemptions = []

    async def body(engine: AsyncEngine) -> tuple[list[int], list[list[int]]]:
        engine.add_stats_listener(lambda stats: preemptions.append(stats.num_preemptions))
        prompt = prompts_of(engine).decoder_prompt("en", "transcribe", [])
        outputs = await asyncio.gather(*(transcribe(engine, f"p{i}", a, prompt) for i, a in enumerate(audios)))
        return prompt, outputs

    prompt, results = run_with_engine(config, body)
    assert sum(preemptions) > 0
    for audio, ours in zip(audios, results):
        assert ours == hf_generate(whisper_dir, audio, prompt)


def test_encoder_input_of_the_wrong_shape_is_refused(whisper_dir):
    async def body(engine: AsyncEngine) -> None:
        request = EngineRequest(
            "bad", [1, 2], sampling=SamplingParams(), encoder_input=EncoderInput(np.zeros(CHUNK_SAMPLES - 1), 1500)
        )
        with pytest.raises(Exception, match="30 s at 16 kHz"):
            async for _ in engine.generate(request):
                pass

    run_with_engine(EngineConfig(model=str(whisper_dir), kv_cache_memory=16 * MiB), body)
