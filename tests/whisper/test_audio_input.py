"""Audio input: log-mel features equal transformers' WhisperFeatureExtractor; every upload format OpenAI
accepts decodes to 16 kHz mono; unreadable or empty bytes are a clear AudioDecodeError."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kvserve.audio.decode import AudioDecodeError, decode_audio, pcm16_to_float
from kvserve.audio.log_mel import CHUNK_SAMPLES, LogMel, pad_chunk
from tests.whisper.tiny_whisper import SAMPLE_RATE, encode_audio, tone


@pytest.mark.parametrize("num_mel_bins", [80, 128])
def test_log_mel_matches_the_feature_extractor(num_mel_bins):
    import transformers

    extractor = transformers.WhisperFeatureExtractor(feature_size=num_mel_bins)
    clips = [tone(3.0), tone(30.0, 1000.0, seed=1), np.zeros(SAMPLE_RATE, np.float32)]
    expected = extractor(clips, sampling_rate=SAMPLE_RATE, return_tensors="pt").input_features
    ours = LogMel(num_mel_bins, torch.device("cpu"))(torch.from_numpy(np.stack([pad_chunk(c) for c in clips])))
    assert ours.shape == expected.shape == (3, num_mel_bins, 3000)
    # Same float32 ops in the same order (STFT, power, filters, log10): equal to float32 rounding.
    torch.testing.assert_close(ours, expected, rtol=0, atol=1e-5)


def test_pad_chunk_refuses_more_than_30_seconds():
    assert pad_chunk(np.ones(10, np.float32)).shape == (CHUNK_SAMPLES,)
    with pytest.raises(ValueError):
        pad_chunk(np.ones(CHUNK_SAMPLES + 1, np.float32))


@pytest.mark.parametrize("fmt", ["wav", "flac", "mp3", "ogg", "webm", "m4a", "mp4"])
def test_every_upload_format_decodes_to_16k_mono(fmt):
    # A pure 440 Hz tone encoded at 44.1 kHz: the decoder must resample it to 16 kHz.
    source = 0.5 * np.sin(2 * np.pi * 440.0 * np.arange(2 * 44_100) / 44_100)
    samples = decode_audio(encode_audio(source.astype(np.float32), fmt, rate=44_100))
    assert samples.dtype == np.float32
    # Lossy codecs add priming and padding samples: the length is 2 s within 0.1 s.
    assert abs(len(samples) - 2 * SAMPLE_RATE) < 0.1 * SAMPLE_RATE
    # The decoded spectrum still peaks at 440 Hz (FFT bins of 0.56 Hz over 1.8 s).
    spectrum = np.abs(np.fft.rfft(samples[: 2 * SAMPLE_RATE - 3200]))
    peak_hz = np.argmax(spectrum) * SAMPLE_RATE / (2 * SAMPLE_RATE - 3200)
    assert abs(peak_hz - 440.0) < 1.0


def test_stereo_is_mixed_to_mono():
    import io

    import av

    left = tone(1.0, 300.0)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=SAMPLE_RATE)
        stream.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(
            (np.stack([left, left], axis=1) * 32767).astype(np.int16).reshape(1, -1), format="s16", layout="stereo"
        )
        frame.sample_rate = SAMPLE_RATE
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    samples = decode_audio(buffer.getvalue())
    assert len(samples) == SAMPLE_RATE
    np.testing.assert_allclose(samples, left, atol=2e-3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"this is not audio at all" * 10, "could not be decoded"),
        ("silence", "no audio samples"),
    ],
)
def test_bad_audio_is_refused(data, message):
    if data == "silence":  # a valid WAV header with zero samples
        import io
        import wave

        buffer = io.BytesIO()
        with wave.open(buffer, "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(SAMPLE_RATE)
        data = buffer.getvalue()
    with pytest.raises(AudioDecodeError, match=message):
        decode_audio(data)


def test_pcm16():
    pcm = np.array([0, 16384, -32768, 32767], dtype="<i2").tobytes()
    np.testing.assert_array_equal(pcm16_to_float(pcm), [0.0, 0.5, -1.0, 32767 / 32768])
    with pytest.raises(AudioDecodeError):
        pcm16_to_float(b"\x00")
