"""The openai SDK against `kvserve serve <tiny whisper>`: transcriptions and translations in every response
format, streamed and not, long audio in 30 s chunks, the realtime websocket, and bad input as 4xx."""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Iterator

import numpy as np
import openai
import pytest

from tests.api.server_process import ServerProcess
from tests.whisper.test_greedy_exact import hf_generate
from tests.whisper.tiny_whisper import SAMPLE_RATE, encode_audio, tone

MODEL = "tiny-whisper"
MAX_TOKENS = 12
# vLLM's extra form fields ride in extra_body; few tokens keep each request short.
EXTRA = {"max_completion_tokens": MAX_TOKENS}


@pytest.fixture(scope="session")
def whisper_server(whisper_dir) -> Iterator[ServerProcess]:
    process = ServerProcess(str(whisper_dir), "--served-model-name", MODEL, "--kv-cache-memory", "64MiB")
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="session")
def client(whisper_server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{whisper_server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="session")
def speech() -> np.ndarray:
    """5 s of test signal, quantised to 16 bits so that a WAV upload and realtime PCM16 carry equal samples."""
    return np.round(tone(5.0, 330.0) * 32767).astype(np.float32) / 32768


def expected_text(whisper_dir, samples: np.ndarray, task: str) -> str:
    """transformers' greedy tokens for this audio, decoded without special tokens, as the server's text."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(whisper_dir / "tokenizer.json"))
    ids = {t: tokenizer.token_to_id(f"<|{t}|>") for t in ("startoftranscript", "en", task, "notimestamps")}
    prompt = [ids["startoftranscript"], ids["en"], ids[task], ids["notimestamps"]]
    tokens = hf_generate(whisper_dir, samples, prompt)[:MAX_TOKENS]
    return tokenizer.decode(tokens, skip_special_tokens=True)


def test_transcription_json_and_text(client, whisper_dir, speech):
    wav = encode_audio(speech, "wav")
    expected = expected_text(whisper_dir, speech, "transcribe")
    result = client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav), extra_body=EXTRA)
    assert result.text == expected
    assert result.usage.type == "duration" and result.usage.seconds == 5
    text = client.audio.transcriptions.create(
        model=MODEL, file=("a.wav", wav), response_format="text", language="en", extra_body=EXTRA
    )
    assert text == expected


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the SDK marks audio.translations deprecated
def test_translation_json_and_text(client, whisper_dir, speech):
    wav = encode_audio(speech, "wav")
    expected = expected_text(whisper_dir, speech, "translate")
    assert expected != expected_text(whisper_dir, speech, "transcribe")  # the task token changes the output
    result = client.audio.translations.create(model=MODEL, file=("a.wav", wav), extra_body=EXTRA)
    assert result.text == expected
    assert (
        client.audio.translations.create(model=MODEL, file=("a.wav", wav), response_format="text", extra_body=EXTRA)
        == expected
    )


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("task", ["transcribe", "translate"])
def test_timed_formats(client, speech, task):
    wav = encode_audio(speech, "wav")
    create = client.audio.transcriptions.create if task == "transcribe" else client.audio.translations.create
    kwargs = {"timestamp_granularities": ["segment"]} if task == "transcribe" else {}
    verbose = create(model=MODEL, file=("a.wav", wav), response_format="verbose_json", extra_body=EXTRA, **kwargs)
    assert verbose.duration == "5.0" and verbose.language == "en"
    segments = verbose.segments
    assert verbose.text == "".join(s.text for s in segments)
    assert all(0.0 <= s.start <= s.end <= 5.0 for s in segments)
    assert [s.id for s in segments] == list(range(len(segments)))
    srt = create(model=MODEL, file=("a.wav", wav), response_format="srt", extra_body=EXTRA)
    vtt = create(model=MODEL, file=("a.wav", wav), response_format="vtt", extra_body=EXTRA)
    clock = r"\d\d:\d\d:\d\d[,.]\d\d\d --> \d\d:\d\d:\d\d[,.]\d\d\d"
    srt_cues = re.findall(rf"(\d+)\n({clock})\n", srt)
    assert [int(n) for n, _ in srt_cues] == list(range(1, len(segments) + 1))
    assert vtt.startswith("WEBVTT\n\n") and len(re.findall(clock, vtt)) == len(segments)
    if segments:
        first = segments[0]
        assert srt_cues[0][1].startswith(f"00:00:{int(first.start):02d},{round(first.start % 1 * 1000):03d}")


def stream_events(client: openai.OpenAI, task: str, **kwargs) -> list[dict]:
    """The SSE events of a streamed request. The SDK streams transcriptions itself; its translations.create
    has no `stream` argument, so a vLLM client sends it as a form field and reads the raw events."""
    if task == "transcribe":
        return [event.to_dict() for event in client.audio.transcriptions.create(stream=True, **kwargs)]
    kwargs["extra_body"] = {**kwargs.get("extra_body", {}), "stream": True}
    with client.audio.translations.with_streaming_response.create(**kwargs) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    return [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("task", ["transcribe", "translate"])
def test_streaming(client, speech, task):
    wav = encode_audio(speech, "wav")
    create = client.audio.transcriptions.create if task == "transcribe" else client.audio.translations.create
    whole = create(model=MODEL, file=("a.wav", wav), extra_body=EXTRA).text
    events = stream_events(
        client, task, model=MODEL, file=("a.wav", wav), extra_body={**EXTRA, "stream_include_usage": True}
    )
    kind = "transcription.chunk" if task == "transcribe" else "translation.chunk"
    assert {e["object"] for e in events} == {kind}
    assert len({e["id"] for e in events}) == 1 and events[0]["id"].startswith(
        "trsc-" if task == "transcribe" else "trsl-"
    )
    deltas, usage = events[:-1], events[-1]
    assert "".join(e["choices"][0]["delta"]["content"] for e in deltas) == whole
    assert deltas[-1]["choices"][0]["finish_reason"] == "length"
    assert all("finish_reason" not in e["choices"][0] for e in deltas[:-1])
    assert usage["choices"] == [] and usage["usage"] == {
        "prompt_tokens": 4,
        "completion_tokens": MAX_TOKENS,
        "total_tokens": 4 + MAX_TOKENS,
    }


def test_long_audio_is_transcribed_in_30_s_chunks(client, whisper_dir):
    samples = np.round(tone(45.0, 250.0, seed=3) * 32767).astype(np.float32) / 32768
    wav = encode_audio(samples, "wav")
    result = client.audio.transcriptions.create(model=MODEL, file=("a.wav", wav), extra_body=EXTRA)
    first = expected_text(whisper_dir, samples[: 30 * SAMPLE_RATE], "transcribe")
    second = expected_text(whisper_dir, samples[30 * SAMPLE_RATE :], "transcribe")
    assert result.text == first + second
    assert result.usage.seconds == 45
    events = stream_events(client, "transcribe", model=MODEL, file=("a.wav", wav), extra_body=EXTRA)
    assert "".join(e["choices"][0]["delta"]["content"] for e in events) == first + second
    assert sum(1 for e in events if e["choices"][0].get("finish_reason")) == 2


@pytest.mark.parametrize("fmt", ["mp3", "m4a", "ogg", "webm", "flac"])
def test_upload_formats(client, speech, fmt):
    result = client.audio.transcriptions.create(
        model=MODEL, file=(f"a.{fmt}", encode_audio(speech, fmt)), extra_body=EXTRA
    )
    # Decoding is tested against the signal in test_audio_input; here: accepted, and the duration billed
    # (lossy codecs add up to a few thousand priming and padding samples: 5 s rounds up to 5 or 6).
    assert isinstance(result.text, str) and result.usage.seconds in (5, 6)


@pytest.mark.parametrize(
    ("upload", "fields", "status", "param"),
    [
        (b"not audio" * 50, {}, 400, "file"),
        (b"", {}, 400, "file"),
        ("wav", {"language": "xx"}, 400, "language"),
        ("wav", {"stream_include_usage": "true"}, 400, "stream_include_usage"),
        ("wav", {"response_format": "verbose_json", "stream": "true"}, 400, "stream"),
        (
            "wav",
            {"response_format": "verbose_json", "timestamp_granularities[]": "word"},
            501,
            "timestamp_granularities",
        ),
        ("wav", {"model": "no-such-model"}, 404, "model"),
        ("wav", {"temperature": "3"}, 400, "temperature"),
        ("big", {}, 413, "file"),
    ],
)
def test_bad_requests(whisper_server, speech, upload, fields, status, param):
    import urllib.error
    import urllib.request
    import uuid

    data = {"wav": encode_audio(speech, "wav"), "big": b"\0" * (26 << 20)}.get(upload, upload)
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
        for k, v in {"model": MODEL, **fields}.items()
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{whisper_server.base_url}/v1/audio/transcriptions",
        data=b"".join(parts),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=60)
    assert caught.value.code == status
    error = json.loads(caught.value.read())["error"]
    assert error["code"] == status and error["param"] == param and error["message"]


def test_realtime_session(whisper_server, client, speech):
    import websockets

    expected = client.audio.transcriptions.create(
        model=MODEL, file=("a.wav", encode_audio(speech, "wav")), extra_body=EXTRA
    ).text
    pcm = (speech * 32768).astype("<i2").tobytes()
    url = whisper_server.base_url.replace("http", "ws") + "/v1/realtime"

    async def session() -> list[dict]:
        async with websockets.connect(url) as ws:
            events = [json.loads(await ws.recv())]
            await ws.send(json.dumps({"type": "session.update", "model": MODEL, "language": "en"}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit"}))  # empty: nothing to do
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": "not base64!"}))
            events.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"type": "no.such.event"}))
            events.append(json.loads(await ws.recv()))
            await ws.send(json.dumps({"type": "session.update", "language": "xx", "temperature": "hot"}))
            events.append(json.loads(await ws.recv()))
            for start in range(0, len(pcm), 16_000):
                chunk = base64.b64encode(pcm[start : start + 16_000]).decode()
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
            await ws.send(json.dumps({"type": "input_audio_buffer.commit", "final": True}))
            while events[-1]["type"] != "transcription.done":
                events.append(json.loads(await ws.recv()))
            return events

    events = asyncio.run(session())
    created, bad_audio, unknown, bad_language, *deltas, done = events
    assert created["type"] == "session.created" and created["id"].startswith("sess-")
    assert bad_audio["type"] == "error" and "base64" in bad_audio["error"]
    assert unknown["type"] == "error" and "no.such.event" in unknown["error"]
    assert bad_language["type"] == "error" and "Unsupported language" in bad_language["error"]
    assert all(d["type"] == "transcription.delta" for d in deltas)
    # No max_completion_tokens here: the full transcription starts with the upload's first tokens.
    assert done["text"] == "".join(d["delta"] for d in deltas) and done["text"].startswith(expected)
    assert done["usage"]["prompt_tokens"] == 4
