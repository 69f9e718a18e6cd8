"""BERT encoders: BertModel (embeddings), BertForSequenceClassification (classifiers, cross-encoders) and
HF_ColBERT (per-token embeddings for late interaction).

An encoder reads each request's whole prompt at once, with bidirectional attention over that request's own
tokens and nothing else, so it keeps no KV cache: a request is computed in the one step that pools it (the
core never chunks prefill-only requests, and prefix caching is off for models without a cache). The step's
requests are packed back to back ([T, hidden], spans from query_start_loc); attention pads them to
[R, L] for one batched scaled_dot_product_attention with a key mask, every other op runs on the packed rows.

    embeddings  word[id] + position[pos] + token_type[type] -> LayerNorm   (absolute positions 0..n-1)
    layer       x = LN(x + O(attn(QKV x)));  x = LN(x + Down(act(Up x)))    (post-norm)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from kvserve.model.forward_context import ForwardContext
from kvserve.model.model_config import ModelConfig
from kvserve.model.quantization import packed_weights
from kvserve.model.weights import WeightAssembler
from kvserve.request import PoolingType, TaskKind

_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}

# HF module names inside an encoder layer -> (our parameter stem, which third of the fused q|k|v).
_LAYER_WEIGHTS = {
    "attention.self.query": ("qkv", 0),
    "attention.self.key": ("qkv", 1),
    "attention.self.value": ("qkv", 2),
    "attention.output.dense": ("o", None),
    "attention.output.LayerNorm": ("attn_norm", None),
    "intermediate.dense": ("up", None),
    "output.dense": ("down", None),
    "output.LayerNorm": ("out_norm", None),
}
_EMBEDDING_WEIGHTS = {
    "embeddings.word_embeddings": "word_embeddings",
    "embeddings.position_embeddings": "position_embeddings",
    "embeddings.token_type_embeddings": "token_type_embeddings",
    "embeddings.LayerNorm": "embed_norm",
}


def _param(*shape: int) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape), requires_grad=False)


class _Padding:
    """Moves the step's packed rows [T, W] into the padded attention batch [R, L, W] and back.

    Built once per forward: each token's flat padded index (request * L + position in it), the key mask, and
    one zeroed buffer that every layer reuses. Layers overwrite only the real rows, so padding rows stay
    zero (finite: a masked key's value row is still multiplied by its zero weight).
    """

    def __init__(self, ctx: ForwardContext, num_tokens: int) -> None:
        starts = ctx.query_start_loc.long()
        lens = starts[1:] - starts[:-1]
        self.num_seqs, self.max_len = lens.shape[0], ctx.max_query_len
        device = starts.device
        seq_ids = torch.repeat_interleave(torch.arange(self.num_seqs, device=device), lens, output_size=num_tokens)
        offsets = torch.arange(num_tokens, device=device) - starts[seq_ids]
        self.flat_index = seq_ids * self.max_len + offsets  # [T]
        key_mask = torch.arange(self.max_len, device=device)[None, :] < lens[:, None]
        self.key_mask = key_mask.view(self.num_seqs, 1, 1, self.max_len)  # [R, 1, 1, L]: real keys
        self._buffer: torch.Tensor | None = None

    def pad(self, rows: torch.Tensor) -> torch.Tensor:
        if self._buffer is None:
            self._buffer = rows.new_zeros(self.num_seqs * self.max_len, rows.shape[-1])
        self._buffer.index_copy_(0, self.flat_index, rows)
        return self._buffer.view(self.num_seqs, self.max_len, rows.shape[-1])

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        return padded.reshape(self.num_seqs * self.max_len, -1).index_select(0, self.flat_index)


class EncoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, eps: float, activation: Callable[[torch.Tensor], torch.Tensor]) -> None:
        super().__init__()
        h = config.hidden_size
        self.num_heads, self.head_dim, self.eps, self.activation = (
            config.num_attention_heads,
            config.head_dim,
            eps,
            activation,
        )
        self.qkv_proj, self.qkv_bias = _param(3 * h, h), _param(3 * h)
        self.o_proj, self.o_bias = _param(h, h), _param(h)
        self.attn_norm_weight, self.attn_norm_bias = _param(h), _param(h)
        self.up_proj, self.up_bias = _param(config.intermediate_size, h), _param(config.intermediate_size)
        self.down_proj, self.down_bias = _param(h, config.intermediate_size), _param(h)
        self.out_norm_weight, self.out_norm_bias = _param(h), _param(h)

    def finish_loading(self) -> None:
        """On CPU the projections are packed for oneDNN (quantization/packed_weights.py): MiniLM-L6 shapes ran
        1.3x (512-4096 tokens) to 1.7x (64) faster than F.linear."""
        for name in ("qkv_proj", "o_proj", "up_proj", "down_proj"):
            weight = getattr(self, name)
            if packed_weights.packable(weight):
                setattr(self, name, packed_weights.packed_parameter(weight.data))

    def forward(self, hidden: torch.Tensor, padding: _Padding) -> torch.Tensor:
        num_seqs, max_len, width = padding.num_seqs, padding.max_len, hidden.shape[-1]
        linear = packed_weights.linear
        padded = padding.pad(linear(hidden, self.qkv_proj, self.qkv_bias))  # [R, L, 3 * hidden]
        q, k, v = padded.view(num_seqs, max_len, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        attn = F.scaled_dot_product_attention(q, k, v, attn_mask=padding.key_mask)  # [R, heads, L, head_dim]
        attn = padding.unpad(attn.transpose(1, 2))
        hidden = F.layer_norm(
            hidden + linear(attn, self.o_proj, self.o_bias),
            (width,),
            self.attn_norm_weight,
            self.attn_norm_bias,
            self.eps,
        )
        mlp = linear(self.activation(linear(hidden, self.up_proj, self.up_bias)), self.down_proj, self.down_bias)
        return F.layer_norm(hidden + mlp, (width,), self.out_norm_weight, self.out_norm_bias, self.eps)


class BertModel(nn.Module):
    """Final hidden states of every prompt token; pooled into embeddings by the runner."""

    supported_tasks: ClassVar[frozenset[TaskKind]] = frozenset({TaskKind.PREFILL_ONLY})
    pooling_kinds: ClassVar[frozenset[str]] = frozenset({"embed"})
    default_pooling: ClassVar[PoolingType] = "cls"  # BERT's [CLS]; a sentence-transformers config overrides it
    uses_kv_cache: ClassVar[bool] = False
    uses_token_type_ids: ClassVar[bool] = True
    # Checkpoint heads this class does not use (BertModel's own pooler, pre-training heads).
    _ignored_prefixes: ClassVar[tuple[str, ...]] = ("pooler.", "cls.")
    _head_weights: ClassVar[dict[str, str]] = {}  # checkpoint name -> parameter, for a subclass's head

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        hf = config.hf_config
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"BERT position_embedding_type {hf['position_embedding_type']!r} is not supported")
        act = hf.get("hidden_act", "gelu")
        if act not in _ACTIVATIONS:
            raise ValueError(f"BERT hidden_act {act!r} is not supported; supported: {', '.join(_ACTIVATIONS)}")
        self.config = config
        self.eps = float(hf.get("layer_norm_eps", 1e-12))
        h = config.hidden_size
        self.word_embeddings = _param(config.vocab_size, h)
        self.position_embeddings = _param(int(hf.get("max_position_embeddings", 512)), h)
        self.token_type_embeddings = _param(int(hf.get("type_vocab_size", 2)), h)
        self.embed_norm_weight, self.embed_norm_bias = _param(h), _param(h)
        self.layers = nn.ModuleList(
            EncoderLayer(config, self.eps, _ACTIVATIONS[act]) for _ in range(config.num_hidden_layers)
        )

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        """input_ids, positions: [T] (each request's whole prompt, packed); returns hidden states [T, hidden]."""
        token_types = ctx.token_type_ids if ctx.token_type_ids is not None else torch.zeros_like(input_ids)
        hidden = (
            F.embedding(input_ids, self.word_embeddings)
            + F.embedding(positions, self.position_embeddings)
            + F.embedding(token_types, self.token_type_embeddings)
        )
        hidden = F.layer_norm(hidden, (hidden.shape[-1],), self.embed_norm_weight, self.embed_norm_bias, self.eps)
        padding = _Padding(ctx, input_ids.shape[0])
        for layer in self.layers:
            hidden = layer(hidden, padding)
        return hidden

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        raise ValueError("an encoder model has no language-model head")

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Copies Hugging Face-named tensors (with or without the `bert.` prefix) into our parameters."""
        h = self.config.hidden_size
        assembler = WeightAssembler(self)
        for name, tensor in weights:
            target = self._target(name.removeprefix("bert."))
            if target is None:
                continue
            stem, third = target
            assembler.copy(stem, tensor, 0 if third is None else third * h)
        assembler.finish()

    def _target(self, name: str) -> tuple[str, int | None] | None:
        """Our parameter name for a checkpoint tensor (and the q|k|v third), or None for one we skip."""
        if name.endswith("position_ids") or name.startswith(self._ignored_prefixes):
            return None
        module, _, kind = name.rpartition(".")
        kind = {"gamma": "weight", "beta": "bias"}.get(kind, kind)  # LayerNorm names of old checkpoints
        if module in _EMBEDDING_WEIGHTS:
            stem = _EMBEDDING_WEIGHTS[module]
            return (stem if stem != "embed_norm" else f"embed_norm_{kind}"), None
        parts = module.split(".")
        if parts[:2] == ["encoder", "layer"] and ".".join(parts[3:]) in _LAYER_WEIGHTS:
            stem, third = _LAYER_WEIGHTS[".".join(parts[3:])]
            suffix = kind if stem.endswith("norm") else ("proj" if kind == "weight" else "bias")
            return f"layers.{parts[2]}.{stem}_{suffix}", third
        # A head's weights; an unknown name goes to the assembler as is, which reports it.
        return self._head_weights.get(f"{module}.{kind}", f"{module}.{kind}"), None


class BertForSequenceClassification(BertModel):
    """BERT with its pooler (tanh dense over [CLS]) and a linear classifier: classifiers, and cross-encoders
    (one label: the relevance of a query/document pair)."""

    pooling_kinds: ClassVar[frozenset[str]] = frozenset({"classify"})
    default_pooling: ClassVar[PoolingType] = "cls"
    _ignored_prefixes: ClassVar[tuple[str, ...]] = ("cls.",)
    _head_weights: ClassVar[dict[str, str]] = {
        "pooler.dense.weight": "pooler_dense",
        "pooler.dense.bias": "pooler_bias",
        "classifier.weight": "classifier",
        "classifier.bias": "classifier_bias",
    }

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        h, num_labels = config.hidden_size, num_labels_of(config)
        self.pooler_dense, self.pooler_bias = _param(h, h), _param(h)
        self.classifier, self.classifier_bias = _param(num_labels, h), _param(num_labels)

    def classify(self, pooled: torch.Tensor) -> torch.Tensor:
        """pooled: [N, hidden] [CLS] states; returns float32 logits [N, num_labels]."""
        return F.linear(
            torch.tanh(F.linear(pooled, self.pooler_dense, self.pooler_bias)), self.classifier, self.classifier_bias
        ).float()


class ColBERTModel(BertModel):
    """ColBERT (`HF_ColBERT` checkpoints): BERT's token states projected by `linear` to the late-interaction
    dimension; pooled "all" (one normalised vector per token) and scored by MaxSim."""

    pooling_kinds: ClassVar[frozenset[str]] = frozenset({"embed"})
    default_pooling: ClassVar[PoolingType] = "all"
    _head_weights: ClassVar[dict[str, str]] = {"linear.weight": "linear"}

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        dim = int(config.hf_config.get("dim", 128))
        self.linear = _param(dim, config.hidden_size)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, ctx: ForwardContext) -> torch.Tensor:
        return F.linear(super().forward(input_ids, positions, ctx), self.linear)


def num_labels_of(config: ModelConfig) -> int:
    id2label = config.hf_config.get("id2label")
    return len(id2label) if id2label else int(config.hf_config.get("num_labels", 2))


def labels_of(config: ModelConfig) -> list[str]:
    """Class names by index, from id2label (transformers' LABEL_i when a config has none)."""
    id2label = config.hf_config.get("id2label") or {}
    return [str(id2label.get(str(i), id2label.get(i, f"LABEL_{i}"))) for i in range(num_labels_of(config))]
