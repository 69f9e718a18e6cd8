"""Whisper's log-mel spectrogram in torch, computed exactly as transformers' WhisperFeatureExtractor does.

The extractor pads (or cuts) each clip to 30 s of 16 kHz samples, takes a centred STFT (n_fft 400, hop 160,
periodic Hann window), keeps the power of all but the last frame (3000 frames), projects it on Slaney-style
mel filters (0-8 kHz, Slaney normalisation), then clamps at 1e-10, takes log10, floors each clip at its
maximum minus 8 and maps x -> (x + 4) / 4.
"""

from __future__ import annotations

import numpy as np
import torch

SAMPLE_RATE = 16_000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
CHUNK_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480000: what the encoder sees per request
NUM_FRAMES = CHUNK_SAMPLES // HOP_LENGTH  # 3000
MAX_MEL_FREQUENCY = 8000.0


def _hz_to_mel(freq: np.ndarray) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    min_log_hz, min_log_mel, logstep = 1000.0, 15.0, 27.0 / np.log(6.4)
    mels = 3.0 * freq / 200.0
    above = freq >= min_log_hz
    return np.where(above, min_log_mel + np.log(np.maximum(freq, min_log_hz) / min_log_hz) * logstep, mels)


def _mel_to_hz(mels: np.ndarray) -> np.ndarray:
    min_log_hz, min_log_mel, logstep = 1000.0, 15.0, np.log(6.4) / 27.0
    freq = 200.0 * mels / 3.0
    above = mels >= min_log_mel
    return np.where(above, min_log_hz * np.exp(logstep * (mels - min_log_mel)), freq)


def mel_filters(num_mel_bins: int) -> np.ndarray:
    """[1 + N_FFT // 2, num_mel_bins] triangular filters, Slaney-normalised (each has unit area in Hz)."""
    num_freqs = 1 + N_FFT // 2
    fft_freqs = np.linspace(0, SAMPLE_RATE // 2, num_freqs)
    mel_points = np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(MAX_MEL_FREQUENCY)), num_mel_bins + 2)
    filter_freqs = _mel_to_hz(mel_points)
    filter_diff = np.diff(filter_freqs)
    slopes = filter_freqs[None, :] - fft_freqs[:, None]  # [F, M + 2]
    down = -slopes[:, :-2] / filter_diff[:-1]
    up = slopes[:, 2:] / filter_diff[1:]
    filters = np.maximum(0.0, np.minimum(down, up))
    enorm = 2.0 / (filter_freqs[2 : num_mel_bins + 2] - filter_freqs[:num_mel_bins])
    return filters * enorm[None, :]


def pad_chunk(samples: np.ndarray) -> np.ndarray:
    """One clip of at most 30 s, zero-padded to exactly 30 s (the extractor's padding="max_length")."""
    if len(samples) > CHUNK_SAMPLES:
        raise ValueError(f"a chunk holds at most {CHUNK_SAMPLES} samples, got {len(samples)}")
    return np.pad(samples.astype(np.float32, copy=False), (0, CHUNK_SAMPLES - len(samples)))


class LogMel:
    """Batched log-mel features on one device; the filters and window are built once."""

    def __init__(self, num_mel_bins: int, device: torch.device) -> None:
        self.filters = torch.from_numpy(mel_filters(num_mel_bins)).to(device, torch.float32)  # [F, M]
        self.window = torch.hann_window(N_FFT, dtype=torch.float32, device=device)

    def __call__(self, waveforms: torch.Tensor) -> torch.Tensor:
        """waveforms [B, CHUNK_SAMPLES] float32 -> features [B, num_mel_bins, NUM_FRAMES] float32."""
        stft = torch.stft(waveforms, N_FFT, HOP_LENGTH, window=self.window, return_complex=True)
        power = stft[..., :-1].abs() ** 2  # [B, F, NUM_FRAMES]
        mel = self.filters.T @ power
        log_spec = torch.clamp(mel, min=1e-10).log10()
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - 8.0)
        return (log_spec + 4.0) / 4.0
