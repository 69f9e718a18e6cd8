"""Llama-shaped models for the GPU benchmarks, built from configs with random weights (no download), and the
device's measured copy bandwidth that the batch-1 decode roofline is read against."""

from __future__ import annotations

import json
from pathlib import Path

# Llama-3.2-1B and Llama-3-8B as their config.json files describe them (architecture only).
PRESETS: dict[str, dict] = {
    "llama-3.2-1b": dict(
        hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
        head_dim=64, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0, max_position_embeddings=131072,
        rope_scaling=dict(rope_type="llama3", factor=32.0, low_freq_factor=1.0, high_freq_factor=4.0,
                          original_max_position_embeddings=8192),
    ),
    "llama-3-8b": dict(
        hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        head_dim=128, vocab_size=128256, tie_word_embeddings=False, rope_theta=500000.0, max_position_embeddings=8192,
    ),
}  # fmt: skip


def hf_config(preset: str):
    import transformers

    return transformers.LlamaConfig(**PRESETS[preset], rms_norm_eps=1e-5, architectures=["LlamaForCausalLM"])


def write_model_dir(preset: str, directory: Path) -> Path:
    """config.json and a placeholder tokenizer: enough for kvserve's --load-format dummy (random weights)."""
    hf_config(preset).save_pretrained(directory)
    write_placeholder_tokenizer(directory, PRESETS[preset]["vocab_size"])
    return directory


def write_placeholder_tokenizer(directory: Path, vocab: int) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    tokenizer = Tokenizer(models.BPE(vocab={f"t{i}": i for i in range(vocab)}, merges=[]))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.BPEDecoder()
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(json.dumps({"eos_token": None}))


def decode_bytes(preset: str, element_size: int = 2) -> int:
    """Weight bytes one decode step must read: every layer, the final norm and the LM head. The input
    embedding is a row gather (not counted) unless it is the tied LM head."""
    c = PRESETS[preset]
    h, i, d = c["hidden_size"], c["intermediate_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * d, c["num_key_value_heads"] * d
    per_layer = h * (q + 2 * kv) + q * h + 3 * h * i + 2 * h
    return element_size * (c["num_hidden_layers"] * per_layer + h + c["vocab_size"] * h)


def copy_bandwidth(num_bytes: int = 1 << 30, repeats: int = 20) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write counted), median of CUDA-event timings."""
    import statistics

    import torch

    src = torch.empty(num_bytes, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    times = []
    for _ in range(repeats + 3):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    del src, dst
    torch.cuda.empty_cache()
    return 2 * num_bytes / statistics.median(times[3:])


def device_name() -> str:
    import torch

    return torch.cuda.get_device_name()
