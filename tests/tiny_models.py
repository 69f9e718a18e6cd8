"""Tiny random-weight models and a byte-level BPE tokenizer, built offline from transformers configs.

Each model directory looks like a Hugging Face checkpoint (config.json, generation_config.json,
model.safetensors, tokenizer.json, tokenizer_config.json) and is built once per test session.
"""

from __future__ import annotations

import json
import shutil
import sysconfig
from pathlib import Path

VOCAB_SIZE = 384
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS_TOKEN = "<|im_end|>"

# A ChatML template, the format SmolLM2 and Qwen use.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

# Small enough to build in well under a second; initializer_range 0.2 keeps logits far from flat, so
# greedy decoding does not collapse onto one token and near-ties are rare.
_COMMON = dict(
    vocab_size=VOCAB_SIZE,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    initializer_range=0.2,
    rms_norm_eps=1e-6,
)

ARCHITECTURES: dict[str, tuple[str, dict]] = {
    "llama": ("LlamaConfig", dict(tie_word_embeddings=False)),
    "llama-tied-llama3-rope": (
        "LlamaConfig",
        dict(
            tie_word_embeddings=True,
            rope_parameters=dict(
                rope_type="llama3",
                rope_theta=10000.0,
                factor=8.0,
                low_freq_factor=1.0,
                high_freq_factor=4.0,
                original_max_position_embeddings=64,
            ),
        ),
    ),
    "llama-bias": ("LlamaConfig", dict(attention_bias=True, mlp_bias=True)),
    "mistral-sliding": ("MistralConfig", dict(sliding_window=24)),
    "qwen2": ("Qwen2Config", dict(tie_word_embeddings=True)),
    "qwen3": ("Qwen3Config", dict(head_dim=32, tie_word_embeddings=False)),
}


def train_bpe(vocab_size: int, special_tokens: list[str]):
    """A byte-level BPE (a `tokenizers.Tokenizer`) trained on Python's own stdlib sources (no network)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts = [p.read_text(errors="ignore") for p in sorted(stdlib.glob("*.py"))[:40]]
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer)
    return tokenizer


def train_tokenizer(directory: Path) -> Path:
    """The test tokenizer (train_bpe with the chat special tokens), saved HF-style."""
    tokenizer = train_bpe(VOCAB_SIZE, SPECIAL_TOKENS)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": None,
                "eos_token": EOS_TOKEN,
                "pad_token": "<|endoftext|>",
                "chat_template": CHATML_TEMPLATE,
            }
        )
    )
    return directory


def build_model(name: str, directory: Path, tokenizer_dir: Path, **overrides) -> Path:
    """Saves the tiny model `name` (a key of ARCHITECTURES) with the test tokenizer into `directory`."""
    import torch
    import transformers

    config_class, extra = ARCHITECTURES[name]
    eos_id = json.loads((tokenizer_dir / "tokenizer.json").read_text())["added_tokens"][2]["id"]
    config = getattr(transformers, config_class)(**{**_COMMON, **extra, **overrides}, eos_token_id=eos_id)
    torch.manual_seed(sum(map(ord, name)))
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.save_pretrained(directory, safe_serialization=True)
    transformers.GenerationConfig(eos_token_id=eos_id).save_pretrained(directory)
    for file in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / file, directory / file)
    return directory
