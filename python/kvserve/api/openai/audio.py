"""POST /v1/audio/transcriptions and /v1/audio/translations (OpenAI's speech to text, vLLM's fields).

multipart form -> decoded 16 kHz samples -> one engine request per 30 s chunk (api/frontend/speech.py) ->
the chunks' texts in order, as json, text, verbose_json, srt or vtt, or as `transcription.chunk` /
`translation.chunk` SSE events. Formats with times (verbose_json, srt, vtt) ask the model for time tokens.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from typing import Literal

import numpy as np
import pydantic
from quart import Blueprint, Response, request

from kvserve.api.context import ServingContext
from kvserve.api.errors import validation_error
from kvserve.api.frontend.generations import Generation, close_all, collect, open_all
from kvserve.api.frontend.sampling import SamplingFields, sampling_params
from kvserve.api.frontend.speech import SpeechChunk, SpeechInput, speech_requests, whisper_prompts
from kvserve.api.frontend.validation import NotImplementedFeature, require
from kvserve.api.openai.audio_formats import TimedText, timed_segments, to_srt, to_vtt
from kvserve.api.openai.audio_protocol import (
    SpeechRequest,
    SpeechResponseVerbose,
    SpeechSegment,
    SpeechStreamChoice,
    SpeechStreamDelta,
    SpeechStreamResponse,
    TranscriptionRequest,
    TranscriptionResponse,
    TranscriptionUsageAudio,
    TranslationRequest,
    TranslationResponse,
)
from kvserve.api.openai.protocol_base import now, random_id
from kvserve.api.openai.usage import usage
from kvserve.api.responses import json_response
from kvserve.api.sse import DONE, sse_event
from kvserve.api.streaming import stream_response
from kvserve.audio.decode import AudioDecodeError, decode_audio
from kvserve.errors import InvalidRequestError, KvserveError
from kvserve.outputs import RequestOutput

# OpenAI's limit on uploaded audio.
MAX_AUDIO_FILE_BYTES = 25 * 1024 * 1024

Task = Literal["transcribe", "translate"]

bp = Blueprint("openai_audio", __name__)


class AudioTooLargeError(KvserveError):
    status_code = 413
    error_type = "RequestEntityTooLarge"


@bp.post("/v1/audio/transcriptions")
async def create_transcription() -> Response:
    return await _speech_to_text("transcribe", TranscriptionRequest)


@bp.post("/v1/audio/translations")
async def create_translation() -> Response:
    return await _speech_to_text("translate", TranslationRequest)


async def read_audio_form(model: type[SpeechRequest]) -> tuple[SpeechRequest, bytes]:
    """The form's fields as `model`, and the uploaded file's bytes."""
    if request.mimetype != "multipart/form-data":
        raise InvalidRequestError(
            f"Unsupported Content-Type {request.mimetype or '(none)'!r}: audio requests are multipart/form-data."
        )
    form, files = await request.form, await request.files
    fields: dict[str, object] = {key: form.get(key) for key in form if not key.startswith("timestamp_granularities")}
    fields["timestamp_granularities"] = form.getlist("timestamp_granularities[]") + form.getlist(
        "timestamp_granularities"
    )
    try:
        body = model.model_validate(fields)
    except pydantic.ValidationError as e:
        raise validation_error(e) from None
    upload = files.get("file")
    require(upload is not None, "file: a multipart `file` field with the audio is required.", "file")
    data = upload.read()
    if len(data) > MAX_AUDIO_FILE_BYTES:
        raise AudioTooLargeError(
            f"The audio file is {len(data)} bytes; the maximum is {MAX_AUDIO_FILE_BYTES} bytes.", "file"
        )
    return body, data


async def decode_upload(data: bytes) -> np.ndarray:
    """Decoding runs off the event loop (FFmpeg releases the GIL); bad audio is a 400 naming `file`."""
    try:
        return await asyncio.to_thread(decode_audio, data)
    except AudioDecodeError as e:
        raise InvalidRequestError(str(e), "file") from None


async def _speech_to_text(task: Task, form_model: type[SpeechRequest]) -> Response:
    body, data = await read_audio_form(form_model)
    ctx = ServingContext.current()
    model = ctx.model_name(body.model)
    prompts = whisper_prompts(ctx)
    fmt = body.response_format
    for option in ("stream_include_usage", "stream_continuous_usage_stats"):
        require(
            body.stream or not getattr(body, option), "Stream options can only be defined when `stream=True`.", option
        )
    require(not (body.stream and fmt != "json" and fmt != "text"), f"{fmt} does not support streaming.", "stream")
    if fmt == "verbose_json" and "word" in body.timestamp_granularities:
        raise NotImplementedFeature(
            "Word timestamps are not supported; use segment timestamps.", "timestamp_granularities"
        )
    if task == "translate":
        require(body.to_language in (None, "en"), "Whisper translates to English only (to_language=en).", "to_language")
    samples = await decode_upload(data)
    timestamps = fmt in ("verbose_json", "srt", "vtt")
    speech = SpeechInput(samples, task, body.language, body.prompt, timestamps)
    params = sampling_params(_sampling_fields(body), ctx)
    request_id = f"{'trsc' if task == 'transcribe' else 'trsl'}-{random_id()}"
    chunks = speech_requests(ctx, request_id, speech, params)
    generations, accepted = await open_all(ctx.engine, [chunk.request for chunk in chunks])
    if body.stream:
        num_prompt_tokens = sum(output.num_prompt_tokens for output in accepted)
        return stream_response(_stream(task, body, request_id, model, generations, num_prompt_tokens))
    results = await collect(generations, accepted)
    language = prompts.check_language(body.language)
    if fmt in ("json", "text"):
        text = "".join(result.text for result in results)
        if fmt == "text":
            return Response(text, content_type="text/plain; charset=utf-8")
        if task == "translate":
            return json_response(TranslationResponse(text=text))
        seconds = math.ceil(speech.duration)
        return json_response(TranscriptionResponse(text=text, usage=TranscriptionUsageAudio(seconds=seconds)))
    timed = _segments(ctx, prompts.no_timestamps + 1, chunks, results)
    if fmt == "srt":
        return Response(to_srt(timed), content_type="text/plain; charset=utf-8")
    if fmt == "vtt":
        return Response(to_vtt(timed), content_type="text/plain; charset=utf-8")
    return json_response(
        SpeechResponseVerbose(
            task=task,
            duration=str(speech.duration),
            language=language,
            text="".join(t.text for t in timed),
            segments=[
                SpeechSegment(
                    id=i,
                    seek=round(t.start * 100),
                    start=t.start,
                    end=t.end,
                    text=t.text,
                    tokens=t.token_ids,
                    temperature=body.temperature,
                    compression_ratio=t.compression_ratio,
                )
                for i, t in enumerate(timed)
            ],
        )
    )


def _sampling_fields(body: SpeechRequest) -> SamplingFields:
    extra = {}
    if isinstance(body, TranscriptionRequest):
        extra = dict(
            top_p=body.top_p,
            top_k=body.top_k,
            min_p=body.min_p,
            repetition_penalty=body.repetition_penalty,
            presence_penalty=body.presence_penalty,
            frequency_penalty=body.frequency_penalty,
        )
    return SamplingFields(temperature=body.temperature, seed=body.seed, max_tokens=body.max_completion_tokens, **extra)


def _segments(
    ctx: ServingContext, timestamp_begin: int, chunks: list[SpeechChunk], results: list[RequestOutput]
) -> list[TimedText]:
    tokenizer = ctx.engine.tokenizer
    timed: list[TimedText] = []
    for chunk, result in zip(chunks, results):
        timed += timed_segments(
            result.token_ids, chunk.start, chunk.end, timestamp_begin, tokenizer.all_special_ids, tokenizer.decode
        )
    return timed


async def _stream(
    task: Task,
    body: SpeechRequest,
    request_id: str,
    model: str,
    generations: list[Generation],
    prompt_tokens: int,
) -> AsyncIterator[bytes]:
    """The chunks' deltas in audio order (later chunks run meanwhile; their outputs wait in their streams).
    Usage counts the decoder prompts as prompt tokens, as vLLM does."""
    created = now()
    kind = "transcription.chunk" if task == "transcribe" else "translation.chunk"
    completion_tokens = 0

    def event(choices: list[SpeechStreamChoice], with_usage: bool) -> bytes:
        chunk = SpeechStreamResponse(id=request_id, object=kind, created=created, model=model, choices=choices)
        if with_usage:
            chunk.usage = usage(prompt_tokens, completion_tokens, None)
        return sse_event(chunk.model_dump(exclude_none=True))

    try:
        for generation in generations:
            async for output in generation:
                completion_tokens += len(output.token_ids)
                if not (output.text or output.finished):
                    continue
                choice = SpeechStreamChoice(delta=SpeechStreamDelta(content=output.text))
                if output.finished:
                    choice.finish_reason, choice.stop_reason = output.finish_reason, output.stop_reason
                yield event([choice], body.stream_continuous_usage_stats)
        if body.stream_include_usage:
            yield event([], True)
    finally:
        await close_all(generations)
    yield DONE
