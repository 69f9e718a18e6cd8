"""A tiny random Whisper checkpoint, built offline: a byte-level BPE with Whisper's special tokens (languages,
tasks, <|notimestamps|>, 1501 time tokens) and a WhisperForConditionalGeneration from a small config, with
the generation_config.json fields generate reads (lang_to_id, task_to_id, suppress lists)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from tests.tiny_models import train_bpe

LANGUAGES = ["en", "de", "fr", "es", "it", "ja", "zh", "nl"]
BASE_VOCAB = 400
SAMPLE_RATE = 16_000


def whisper_special_tokens() -> list[str]:
    return [
        "<|endoftext|>",
        "<|startoftranscript|>",
        *(f"<|{code}|>" for code in LANGUAGES),
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nospeech|>",
        "<|notimestamps|>",
        *(f"<|{i * 0.02:.2f}|>" for i in range(1501)),
    ]


def build_tokenizer(directory: Path) -> dict[str, int]:
    """The test BPE plus Whisper's special tokens, saved as tokenizer.json; returns the special tokens' ids."""
    from tokenizers import AddedToken

    tokenizer = train_bpe(BASE_VOCAB, [])
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in whisper_special_tokens()])
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "WhisperTokenizer",
                "bos_token": "<|endoftext|>",
                "eos_token": "<|endoftext|>",
                "pad_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
            }
        )
    )
    return {t: tokenizer.token_to_id(t) for t in whisper_special_tokens()[:16]} | {
        "vocab_size": tokenizer.get_vocab_size(),
        "space": tokenizer.token_to_id("Ġ"),
    }


# The test model's shape; benchmarks also build whisper-tiny's (d_model 384, 4 + 4 layers, 6 heads, 51865 tokens:
# the ids past this tokenizer's decode to nothing).
TINY_DIMS = dict(
    d_model=64,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    encoder_ffn_dim=128,
    decoder_ffn_dim=128,
)
WHISPER_TINY_DIMS = dict(
    d_model=384,
    encoder_layers=4,
    decoder_layers=4,
    encoder_attention_heads=6,
    decoder_attention_heads=6,
    encoder_ffn_dim=1536,
    decoder_ffn_dim=1536,
    vocab_size=51865,
)


def build_tiny_whisper(directory: Path, num_mel_bins: int = 80, seed: int = 0, dims: dict | None = None) -> Path:
    import torch
    import transformers

    ids = build_tokenizer(directory)
    eos, sot = ids["<|endoftext|>"], ids["<|startoftranscript|>"]
    # Whisper suppresses a fixed list of non-speech symbols; here a few ids of this vocabulary, among them
    # tokens this random model likes (1, 45, 206, 536), so that suppression changes its greedy outputs.
    suppress = [1, 5, 9, 13, 45, 61, 100, 150, ids["<|startoflm|>"], ids["<|nospeech|>"]]
    begin_suppress = [ids["space"], eos, 206, 536]
    config = transformers.WhisperConfig(
        **{"vocab_size": ids["vocab_size"], **(dims or TINY_DIMS)},
        num_mel_bins=num_mel_bins,
        max_source_positions=1500,
        max_target_positions=448,
        init_std=0.2,
        pad_token_id=eos,
        bos_token_id=eos,
        eos_token_id=eos,
        decoder_start_token_id=sot,
        suppress_tokens=suppress,
        begin_suppress_tokens=begin_suppress,
    )
    torch.manual_seed(seed)
    model = transformers.WhisperForConditionalGeneration(config)
    model.save_pretrained(directory, safe_serialization=True)
    generation = transformers.GenerationConfig(
        decoder_start_token_id=sot,
        eos_token_id=eos,
        pad_token_id=eos,
        bos_token_id=eos,
        max_length=448,
        is_multilingual=True,
        lang_to_id={f"<|{code}|>": ids[f"<|{code}|>"] for code in LANGUAGES},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"],
        prev_sot_token_id=ids["<|startofprev|>"],
        suppress_tokens=suppress,
        begin_suppress_tokens=begin_suppress,
    )
    generation.save_pretrained(directory)
    (directory / "preprocessor_config.json").write_text(
        json.dumps({"feature_extractor_type": "WhisperFeatureExtractor", "feature_size": num_mel_bins})
    )
    return directory


def tone(seconds: float, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """A test signal: a tone with a vibrato and some noise, 16 kHz float32."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    rng = np.random.default_rng(seed)
    signal = 0.4 * np.sin(2 * np.pi * freq * t + 3 * np.sin(2 * np.pi * 2 * t)) + 0.05 * rng.standard_normal(len(t))
    return signal.astype(np.float32)


def encode_audio(samples: np.ndarray, fmt: str, rate: int = SAMPLE_RATE) -> bytes:
    """Samples (float32 mono) into a container with PyAV: wav, flac, mp3, ogg, webm, m4a or mp4."""
    import io

    import av

    codecs = {
        "wav": ("wav", "pcm_s16le", "s16"),
        "flac": ("flac", "flac", "s16"),
        "mp3": ("mp3", "libmp3lame", "fltp"),
        "ogg": ("ogg", "libopus", "flt"),
        "webm": ("webm", "libopus", "flt"),
        "m4a": ("ipod", "aac", "fltp"),
        "mp4": ("mp4", "aac", "fltp"),
    }
    container_format, codec, sample_format = codecs[fmt]
    out_rate = 48_000 if codec == "libopus" else rate
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=container_format) as container:
        stream = container.add_stream(codec, rate=out_rate)
        stream.layout = "mono"
        resampler = av.AudioResampler(format=sample_format, layout="mono", rate=out_rate)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = rate
        for piece in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(piece):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return buffer.getvalue()
