"""One realtime transcription session: its settings, its audio buffer, and what each client event does.

Client events (JSON text frames):
    session.update            {model?, language?, temperature?, prompt?}
    input_audio_buffer.append {audio: base64 of PCM16 little-endian, 16 kHz, mono}
    input_audio_buffer.commit {final?}: transcribe the audio appended since the last commit
Server events:
    session.created           {id, created}                       once, on connect
    transcription.delta       {delta}                             as the text grows
    transcription.done        {text, usage}                       per commit that had audio (or a final one)
    error                     {error, code}                       the session stays open

Whisper transcribes whole clips, so the buffer is transcribed at each commit (chunks of 30 s, as uploads are);
an empty non-final commit (clients send one to start) does nothing.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from kvserve.api.context import ServingContext
from kvserve.api.frontend.generations import close_all, open_all
from kvserve.api.frontend.sampling import SamplingFields, sampling_params
from kvserve.api.frontend.speech import SpeechInput, speech_requests, whisper_prompts
from kvserve.api.openai.protocol_base import now, random_id
from kvserve.api.openai.usage import usage
from kvserve.audio.decode import AudioDecodeError, pcm16_to_float
from kvserve.audio.log_mel import SAMPLE_RATE
from kvserve.errors import InvalidRequestError

# A session's buffer holds at most this much audio between commits (PCM16 at 16 kHz: 32 kB a second).
MAX_BUFFER_SECONDS = 15 * 60

Event = dict[str, Any]


class RealtimeSession:
    def __init__(self, ctx: ServingContext) -> None:
        whisper_prompts(ctx)  # refuses a model that cannot transcribe before the session opens
        self.ctx = ctx
        self.id = f"sess-{random_id()}"
        self.language: str | None = None
        self.temperature = 0.0
        self.prompt = ""
        self.buffer: list[np.ndarray] = []
        self.num_buffered = 0

    def created(self) -> Event:
        return {"type": "session.created", "id": self.id, "created": now()}

    async def handle(self, event: Event) -> AsyncIterator[Event]:
        """The server events one client event produces; InvalidRequestError for a bad one."""
        kind = event.get("type")
        if kind == "session.update":
            self._update(event)
        elif kind == "input_audio_buffer.append":
            self._append(event.get("audio"))
        elif kind == "input_audio_buffer.commit":
            async for out in self._commit(bool(event.get("final", False))):
                yield out
        else:
            raise InvalidRequestError(f"Unknown event type {kind!r}.", "type")

    def _update(self, event: Event) -> None:
        session = event.get("session") if isinstance(event.get("session"), dict) else event
        if session.get("model") is not None:
            self.ctx.model_name(session["model"])
        if session.get("language") is not None:
            try:
                self.language = whisper_prompts(self.ctx).check_language(session["language"])
            except ValueError as e:
                raise InvalidRequestError(str(e), "language") from None
        temperature = session.get("temperature")
        if temperature is not None:
            if not isinstance(temperature, (int, float)) or not 0.0 <= temperature <= 2.0:
                raise InvalidRequestError(
                    f"temperature must be a number in [0, 2], got {temperature!r}.", "temperature"
                )
            self.temperature = float(temperature)
        if session.get("prompt") is not None:
            self.prompt = str(session["prompt"])

    def _append(self, audio: object) -> None:
        if not isinstance(audio, str):
            raise InvalidRequestError("input_audio_buffer.append needs `audio`: base64 of PCM16 samples.", "audio")
        try:
            samples = pcm16_to_float(base64.b64decode(audio, validate=True))
        except (binascii.Error, AudioDecodeError) as e:
            raise InvalidRequestError(f"`audio` is not base64 PCM16: {e}", "audio") from None
        if self.num_buffered + len(samples) > MAX_BUFFER_SECONDS * SAMPLE_RATE:
            raise InvalidRequestError(f"The audio buffer holds at most {MAX_BUFFER_SECONDS} s; commit first.", "audio")
        self.buffer.append(samples)
        self.num_buffered += len(samples)

    async def _commit(self, final: bool) -> AsyncIterator[Event]:
        if not self.num_buffered:
            if final:
                yield {"type": "transcription.done", "text": "", "usage": None}
            return
        samples = np.concatenate(self.buffer)
        self.buffer.clear()
        self.num_buffered = 0
        ctx = self.ctx
        params = sampling_params(SamplingFields(temperature=self.temperature), ctx)
        speech = SpeechInput(samples, "transcribe", self.language, self.prompt)
        chunks = speech_requests(ctx, f"{self.id}-{random_id()}", speech, params)
        generations, accepted = await open_all(ctx.engine, [chunk.request for chunk in chunks])
        texts: list[str] = []
        num_output_tokens = 0
        try:
            for generation in generations:
                async for output in generation:
                    num_output_tokens += len(output.token_ids)
                    if output.text:
                        texts.append(output.text)
                        yield {"type": "transcription.delta", "delta": output.text}
        finally:
            await close_all(generations)
        num_prompt_tokens = sum(output.num_prompt_tokens for output in accepted)
        summary = usage(num_prompt_tokens, num_output_tokens, None).model_dump(exclude_none=True)
        yield {"type": "transcription.done", "text": "".join(texts), "usage": summary}
