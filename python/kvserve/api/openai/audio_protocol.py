"""Request and response models of /v1/audio/transcriptions and /v1/audio/translations (vLLM's fields).

The request arrives as multipart form fields (strings); pydantic converts them. `timestamp_granularities`
comes as repeated `timestamp_granularities[]` fields, as the openai SDK sends lists in forms.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from kvserve.api.openai.protocol_base import Int64, RequestModel, UsageInfo

AudioResponseFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]


class SpeechRequest(RequestModel):
    """Fields both routes share; the translation route takes the subset OpenAI and vLLM document."""

    model: str | None = None
    language: str | None = None
    prompt: str = ""
    response_format: AudioResponseFormat = "json"
    timestamp_granularities: list[Literal["word", "segment"]] = Field(default_factory=list)
    stream: bool = False
    stream_include_usage: bool = False
    stream_continuous_usage_stats: bool = False
    temperature: float = 0.0
    seed: Int64 | None = None
    max_completion_tokens: int | None = None
    to_language: str | None = None


class TranscriptionRequest(SpeechRequest):
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    frequency_penalty: float | None = 0.0
    presence_penalty: float | None = 0.0
    repetition_penalty: float | None = None


class TranslationRequest(SpeechRequest):
    pass


class TranscriptionUsageAudio(BaseModel):
    type: Literal["duration"] = "duration"
    seconds: int


class TranscriptionResponse(BaseModel):
    text: str
    usage: TranscriptionUsageAudio


class TranslationResponse(BaseModel):
    text: str


class SpeechSegment(BaseModel):
    id: int
    seek: int
    start: float
    end: float
    text: str
    tokens: list[int]
    temperature: float
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None


class SpeechResponseVerbose(BaseModel):
    task: Literal["transcribe", "translate"]
    duration: str
    language: str
    text: str
    segments: list[SpeechSegment] | None = None
    words: list[dict] | None = None


class SpeechStreamDelta(BaseModel):
    content: str


class SpeechStreamChoice(BaseModel):
    delta: SpeechStreamDelta
    finish_reason: str | None = None
    stop_reason: int | str | None = None


class SpeechStreamResponse(BaseModel):
    """`transcription.chunk` (id trsc-...) or `translation.chunk` (id trsl-...)."""

    id: str
    object: Literal["transcription.chunk", "translation.chunk"]
    created: int
    model: str
    choices: list[SpeechStreamChoice]
    usage: UsageInfo | None = None
