"""A text model's server answers the speech routes with a 400 naming the model (vLLM's message)."""

from __future__ import annotations

import openai
import pytest

from tests.whisper.tiny_whisper import encode_audio, tone


def test_transcription_needs_a_speech_model(client):
    with pytest.raises(openai.BadRequestError) as caught:
        client.audio.transcriptions.create(model="tiny-llama", file=("a.wav", encode_audio(tone(1.0), "wav")))
    assert caught.value.body["message"] == "The model does not support Transcriptions API"
    assert caught.value.body["param"] == "model"
