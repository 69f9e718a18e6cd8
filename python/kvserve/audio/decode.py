"""Uploaded audio -> 16 kHz mono float32 samples, with PyAV.

PyAV's wheels bundle FFmpeg, so one dependency reads every container and codec OpenAI accepts (wav, mp3,
m4a/mp4 with AAC, ogg with Vorbis or Opus, webm, flac) on Linux, macOS and Windows without a system FFmpeg.
soundfile (libsndfile) reads wav, flac, ogg and mp3 but no AAC or webm, so it cannot be the only reader.
FFmpeg's resampler converts the rate to 16 kHz; channels are then averaged (as librosa and transformers' audio
utilities mix to mono; FFmpeg's own stereo downmix scales by 1/sqrt(2) instead of 1/2).
"""

from __future__ import annotations

import io

import numpy as np

from kvserve.audio.log_mel import SAMPLE_RATE


class AudioDecodeError(ValueError):
    """The bytes are not audio PyAV can read, or they hold no samples."""


def decode_audio(data: bytes) -> np.ndarray:
    """All audio of the first audio stream as float32 samples in [-1, 1] at 16 kHz, mono."""
    if not data:
        raise AudioDecodeError("The audio file is empty.")
    # Imported on the first upload: FFmpeg's libraries take ~20 MiB resident, which a server that never
    # transcribes should not pay.
    import av

    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            if not container.streams.audio:
                raise AudioDecodeError("The file has no audio stream.")
            stream = container.streams.audio[0]
            resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)  # planar: [channels, samples]
            pieces = [
                out.to_ndarray().mean(axis=0) for frame in container.decode(stream) for out in resampler.resample(frame)
            ]
            pieces += [out.to_ndarray().mean(axis=0) for out in resampler.resample(None)]
    except AudioDecodeError:
        raise
    except (av.FFmpegError, ValueError, EOFError) as e:
        raise AudioDecodeError(f"The audio file could not be decoded: {e}") from None
    samples = np.concatenate(pieces).astype(np.float32, copy=False) if pieces else np.empty(0, np.float32)
    if samples.size == 0:
        raise AudioDecodeError("The audio file holds no audio samples.")
    return samples


def pcm16_to_float(data: bytes) -> np.ndarray:
    """Little-endian signed 16-bit PCM (the realtime API's input format) -> float32 samples in [-1, 1)."""
    if len(data) % 2:
        raise AudioDecodeError("PCM16 audio must have an even number of bytes.")
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
