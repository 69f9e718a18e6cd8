"""Speech to text, in neutral terms: audio samples and a task become one engine request per 30 s chunk.

Every chunk is its own encoder-decoder request (the encoder sees exactly 30 s), all submitted together so
they share steps; their texts are joined in order. Each chunk's request carries its padded samples as the
encoder input (the model computes the log-mel features on its own device) and the Whisper decoder prompt.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kvserve.api.context import ServingContext
from kvserve.audio.log_mel import CHUNK_SAMPLES, SAMPLE_RATE, pad_chunk
from kvserve.errors import InvalidRequestError
from kvserve.model.whisper.prompt import Task, WhisperPrompts
from kvserve.request import EncoderInput, EngineRequest, TaskKind
from kvserve.sampling_params import SamplingParams

if TYPE_CHECKING:  # annotations only: the API modules import (and are tested with fakes) without the engine
    from kvserve.engine import AsyncEngine


@dataclass(frozen=True, slots=True)
class SpeechInput:
    samples: np.ndarray  # 16 kHz mono float32
    task: Task
    language: str | None
    prompt: str = ""
    timestamps: bool = False  # ask for <|t.tt|> tokens (segments with times)

    @property
    def duration(self) -> float:
        return len(self.samples) / SAMPLE_RATE


@dataclass(frozen=True, slots=True)
class SpeechChunk:
    request: EngineRequest
    start: float  # seconds into the audio
    end: float


@functools.lru_cache(maxsize=4)
def _prompts_of(engine: AsyncEngine) -> WhisperPrompts:
    config = engine.model_config
    return WhisperPrompts.of(engine.tokenizer, config.hf_config, config.hf_generation_config)


def whisper_prompts(ctx: ServingContext) -> WhisperPrompts:
    """The served model's prompt tokens; a 400 when the model does not transcribe."""
    if TaskKind.ENCODER_DECODER not in ctx.engine.supported_tasks:
        raise InvalidRequestError("The model does not support Transcriptions API", "model")
    return _prompts_of(ctx.engine)


def speech_requests(
    ctx: ServingContext, request_id: str, speech: SpeechInput, params: SamplingParams
) -> list[SpeechChunk]:
    prompts = whisper_prompts(ctx)
    try:
        language = prompts.check_language(speech.language)
    except ValueError as e:
        raise InvalidRequestError(str(e), "language") from None
    if speech.task == "translate" and not prompts.multilingual:
        raise InvalidRequestError("This model is English-only: it cannot translate.", "model")
    previous = prompts.previous_text_ids(ctx.engine.tokenizer, speech.prompt)
    decoder_prompt = prompts.decoder_prompt(language, speech.task, previous, speech.timestamps)
    num_encoder_tokens = int(ctx.engine.model_config.hf_config["max_source_positions"])
    chunks = []
    for index, begin in enumerate(range(0, len(speech.samples), CHUNK_SAMPLES)):
        samples = speech.samples[begin : begin + CHUNK_SAMPLES]
        request = EngineRequest(
            f"{request_id}-{index}",
            decoder_prompt,
            sampling=params,
            encoder_input=EncoderInput(pad_chunk(samples), num_encoder_tokens),
        )
        chunks.append(SpeechChunk(request, begin / SAMPLE_RATE, (begin + len(samples)) / SAMPLE_RATE))
    return chunks
