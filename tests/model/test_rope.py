"""RoPE against transformers' rotary embeddings, bit for bit.

Each case is a config.json fragment read by both `rope_parameters_from_hf_config` and the transformers config
class, so the parser and the math are checked together. Every comparison is exact (rtol=0, atol=0):
`kvserve.model.rope` performs the same float32 / activation-dtype operations in the same order as transformers, so
any difference is a bug, and an ulp of drift in RoPE is enough to flip a greedy token in a long generation.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import transformers
from transformers.models.gpt_neox import modeling_gpt_neox
from transformers.models.llama import modeling_llama

from kvserve.model.rope import RopeParameters, RotaryEmbedding, rope_parameters_from_hf_config
from kvserve.ops import reference

NUM_HEADS = 4
NUM_KV_HEADS = 2

# Llama-family classes ignore partial_rotary_factor in the default type and rotate the whole head in
# `apply_rotary_pos_emb`, so partial rotary is checked against GPT-NeoX, which honours it in both places.
# "llama_partial" reads the legacy layout with LlamaConfig (GPTNeoXConfig ignores top-level rope_theta and
# partial_rotary_factor) and rotates with GPT-NeoX's apply.
REFERENCES: dict[str, tuple[Any, Any, Any]] = {
    "llama": (transformers.LlamaConfig, modeling_llama.LlamaRotaryEmbedding, modeling_llama.apply_rotary_pos_emb),
    "gpt_neox": (
        transformers.GPTNeoXConfig,
        modeling_gpt_neox.GPTNeoXRotaryEmbedding,
        modeling_gpt_neox.apply_rotary_pos_emb,
    ),
    "llama_partial": (
        transformers.LlamaConfig,
        modeling_llama.LlamaRotaryEmbedding,
        modeling_gpt_neox.apply_rotary_pos_emb,
    ),
}


@dataclass(frozen=True, slots=True)
class Case:
    name: str
    # config.json entries besides the attention sizes, which `config_json` adds.
    rope_config: dict[str, Any]
    head_dim: int
    num_positions: int
    reference: str = "llama"


CASES = [
    # Positions past max_position_embeddings make the cos/sin table grow.
    Case(
        "default",
        {"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0}, "max_position_embeddings": 256},
        64,
        600,
    ),
    Case(
        "default-legacy-qwen", {"rope_theta": 1000000.0, "rope_scaling": None, "max_position_embeddings": 512}, 128, 512
    ),
    Case("default-theta-omitted", {"max_position_embeddings": 128}, 32, 128),
    Case(
        "linear-legacy",
        {"rope_theta": 10000.0, "rope_scaling": {"type": "linear", "factor": 4.0}, "max_position_embeddings": 512},
        64,
        1024,
    ),
    Case(
        "linear",
        {
            "rope_parameters": {"rope_type": "linear", "rope_theta": 500000.0, "factor": 2.5},
            "max_position_embeddings": 512,
        },
        64,
        700,
    ),
    # original 256 puts the smoothing band of llama3 (wavelengths 64..256) inside a 64-dim head's spectrum.
    Case(
        "llama3",
        {
            "rope_parameters": {
                "rope_type": "llama3",
                "rope_theta": 500000.0,
                "factor": 8.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 256,
            },
            "max_position_embeddings": 2048,
        },
        64,
        2048,
    ),
    Case(
        "llama3-legacy-rope_type-key",
        {
            "rope_theta": 500000.0,
            "rope_scaling": {
                "rope_type": "llama3",
                "factor": 6.0,
                "low_freq_factor": 1.0,
                "high_freq_factor": 4.0,
                "original_max_position_embeddings": 512,
            },
            "max_position_embeddings": 4096,
        },
        128,
        1500,
    ),
    Case(
        "yarn",
        {
            "rope_parameters": {
                "rope_type": "yarn",
                "rope_theta": 1000000.0,
                "factor": 4.0,
                "original_max_position_embeddings": 256,
            },
            "max_position_embeddings": 1024,
        },
        64,
        1500,
    ),
    Case(
        "yarn-legacy-qwen",
        {
            "rope_theta": 1000000.0,
            "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128},
            "max_position_embeddings": 512,
        },
        128,
        600,
    ),
    Case(
        "yarn-mscale-no-truncate",
        {
            "rope_parameters": {
                "rope_type": "yarn",
                "rope_theta": 10000.0,
                "factor": 40.0,
                "original_max_position_embeddings": 64,
                "mscale": 1.0,
                "mscale_all_dim": 0.707,
                "beta_fast": 32,
                "beta_slow": 1,
                "truncate": False,
            },
            "max_position_embeddings": 2560,
        },
        64,
        700,
    ),
    Case(
        "yarn-attention-factor-betas",
        {
            "rope_parameters": {
                "rope_type": "yarn",
                "rope_theta": 10000.0,
                "factor": 2.0,
                "original_max_position_embeddings": 256,
                "attention_factor": 1.25,
                "beta_fast": 16.0,
                "beta_slow": 2.0,
            },
            "max_position_embeddings": 512,
        },
        64,
        600,
    ),
    # DeepSeek-V3 style: the factor is implied by the two context lengths.
    Case(
        "yarn-implicit-factor",
        {
            "rope_parameters": {
                "rope_type": "yarn",
                "rope_theta": 10000.0,
                "factor": None,
                "original_max_position_embeddings": 256,
            },
            "max_position_embeddings": 1024,
        },
        64,
        300,
    ),
    # transformers lets a top-level original_max_position_embeddings beat the one yarn would default to.
    Case(
        "yarn-top-level-original",
        {
            "rope_theta": 10000.0,
            "rope_scaling": {"type": "yarn", "factor": 2.0},
            "original_max_position_embeddings": 100,
            "max_position_embeddings": 1024,
        },
        64,
        400,
    ),
    Case(
        "dynamic-within-original",
        {"rope_scaling": {"type": "dynamic", "factor": 2.0}, "max_position_embeddings": 512},
        64,
        300,
    ),
    Case(
        "dynamic-beyond-original",
        {
            "rope_parameters": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0},
            "max_position_embeddings": 256,
        },
        64,
        700,
    ),
    # A factor that is not a power of two exposes every float32 rounding of the rescaled NTK base.
    Case(
        "dynamic-inexact-factor-long",
        {"rope_scaling": {"type": "dynamic", "factor": 3.3}, "max_position_embeddings": 300},
        64,
        451,
    ),
    Case(
        "partial-default",
        {
            "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25},
            "max_position_embeddings": 256,
        },
        64,
        300,
        "gpt_neox",
    ),
    Case(
        "partial-yarn",
        {
            "rope_parameters": {
                "rope_type": "yarn",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.5,
                "factor": 4.0,
                "original_max_position_embeddings": 128,
            },
            "max_position_embeddings": 512,
        },
        128,
        600,
        "gpt_neox",
    ),
    Case(
        "partial-dynamic-beyond-original",
        {
            "rope_parameters": {
                "rope_type": "dynamic",
                "rope_theta": 10000.0,
                "partial_rotary_factor": 0.5,
                "factor": 2.0,
            },
            "max_position_embeddings": 256,
        },
        64,
        500,
        "gpt_neox",
    ),
    Case(
        "partial-linear-legacy",
        {
            "rope_theta": 500000.0,
            "partial_rotary_factor": 0.5,
            "rope_scaling": {"type": "linear", "factor": 2.0},
            "max_position_embeddings": 256,
        },
        64,
        300,
        "llama_partial",
    ),
]


def config_json(case_config: dict[str, Any], head_dim: int, reference: str = "llama") -> dict[str, Any]:
    sizes: dict[str, Any] = {"hidden_size": NUM_HEADS * head_dim, "num_attention_heads": NUM_HEADS}
    if reference != "gpt_neox":
        sizes |= {"num_key_value_heads": NUM_KV_HEADS, "head_dim": head_dim}
    return sizes | case_config


def hf_rotate(
    config: dict[str, Any], reference: str, positions: torch.Tensor, query: torch.Tensor, key: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """transformers' rotation of one request whose tokens sit at positions, by a freshly built (stateless)
    rotary module."""
    config_cls, rotary_cls, apply_rotary = REFERENCES[reference]
    # transformers fills defaults into the nested rope dicts in place.
    rotary = rotary_cls(config_cls(**copy.deepcopy(config)))
    cos, sin = rotary(query, positions[None, :].to(torch.int64))
    # transformers' layout is [batch, heads, tokens, head_dim]; ours is [tokens, heads, head_dim].
    q, k = apply_rotary(query.transpose(0, 1)[None], key.transpose(0, 1)[None], cos, sin)
    return q[0].transpose(0, 1), k[0].transpose(0, 1)


def random_qk(num_tokens: int, head_dim: int, dtype: torch.dtype, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    query = torch.randn(num_tokens, NUM_HEADS, head_dim, generator=generator).to(dtype)
    key = torch.randn(num_tokens, NUM_KV_HEADS, head_dim, generator=generator).to(dtype)
    return query, key


def assert_bit_exact(actual: tuple[torch.Tensor, ...], expected: tuple[torch.Tensor, ...]) -> None:
    for got, want in zip(actual, expected, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_matches_transformers(case: Case, dtype: torch.dtype) -> None:
    config = config_json(case.rope_config, case.head_dim, case.reference)
    rotary = RotaryEmbedding(rope_parameters_from_hf_config(config, case.head_dim))
    # Shuffled, so nothing may assume positions arrive in order.
    positions = torch.randperm(case.num_positions, generator=torch.Generator().manual_seed(1))
    query, key = random_qk(case.num_positions, case.head_dim, dtype)

    actual = rotary(positions, query, key)

    assert all(out.dtype == dtype for out in actual)
    assert_bit_exact(actual, hf_rotate(config, case.reference, positions, query, key))


DYNAMIC_CONFIG = config_json(
    {"rope_parameters": {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 2.0}, "max_position_embeddings": 256},
    64,
)


def test_dynamic_batch_gives_each_request_its_own_length() -> None:
    # Two requests beyond the original 256 positions with different lengths, one within it.
    lengths = [700, 300, 200]
    rotary = RotaryEmbedding(rope_parameters_from_hf_config(DYNAMIC_CONFIG, 64))
    positions = torch.cat([torch.arange(length) for length in lengths])
    seq_lens = torch.cat([torch.full((length,), length, dtype=torch.int32) for length in lengths])
    query, key = random_qk(len(positions), 64, torch.float32)

    batched = rotary(positions, query, key, seq_lens)

    start = 0
    for length in lengths:
        rows = slice(start, start + length)
        alone = hf_rotate(DYNAMIC_CONFIG, "llama", positions[rows], query[rows], key[rows])
        assert_bit_exact((batched[0][rows], batched[1][rows]), alone)
        start += length
    # Without seq_lens the batch is one 700-token request, which must change the shorter long request.
    as_one_request = rotary(positions, query, key)
    assert not torch.equal(as_one_request[0][700:1000], batched[0][700:1000])


def test_dynamic_decode_step_uses_each_request_length() -> None:
    # One decode token per request: transformers sees position_ids [[length - 1]], so seq_len = length.
    lengths = [700, 301, 256, 40]
    rotary = RotaryEmbedding(rope_parameters_from_hf_config(DYNAMIC_CONFIG, 64))
    positions = torch.tensor(lengths) - 1
    query, key = random_qk(len(lengths), 64, torch.float32)

    batched = rotary(positions, query, key, torch.tensor(lengths))

    for row in range(len(lengths)):
        alone = hf_rotate(DYNAMIC_CONFIG, "llama", positions[row : row + 1], query[row : row + 1], key[row : row + 1])
        assert_bit_exact((batched[0][row : row + 1], batched[1][row : row + 1]), alone)


def test_cos_sin_cast_once_equals_call() -> None:
    # yarn, so the attention scaling inside cos/sin is part of what is cast.
    case = next(case for case in CASES if case.name == "yarn")
    rotary = RotaryEmbedding(
        rope_parameters_from_hf_config(config_json(case.rope_config, case.head_dim), case.head_dim)
    )
    positions = torch.arange(300, dtype=torch.int32)
    query, key = random_qk(300, case.head_dim, torch.bfloat16)

    cos, sin = rotary.cos_sin(positions, dtype=torch.bfloat16)

    assert cos.shape == sin.shape == (300, case.head_dim // 2)
    assert_bit_exact(reference.rotary_embedding(query, key, cos, sin), rotary(positions, query, key))


def test_empty_batch() -> None:
    rotary = RotaryEmbedding(RopeParameters("default", 10000.0, rotary_dim=8, max_position_embeddings=16))
    query, key = random_qk(0, 8, torch.float32)

    rotated = rotary(torch.empty(0, dtype=torch.int64), query, key)

    assert [tuple(out.shape) for out in rotated] == [(0, NUM_HEADS, 8), (0, NUM_KV_HEADS, 8)]


@pytest.mark.parametrize(
    ("rope_config", "head_dim", "match"),
    [
        ({"rope_scaling": {"type": "su", "short_factor": [1.0], "long_factor": [1.0]}}, 64, "'su' is not supported"),
        (
            {"rope_parameters": {"rope_type": "longrope", "factor": 2.0}},
            64,
            "supported: default, linear, dynamic, yarn, llama3",
        ),
        ({"rope_parameters": {"full_attention": {"rope_type": "default"}}}, 64, "per layer type"),
        ({"rope_scaling": {"type": "default", "mrope_section": [16, 24, 24]}}, 64, "mrope_section"),
        ({"rope_scaling": {"type": "linear"}}, 64, "requires factor"),
        ({"rope_scaling": {"type": "dynamic", "factor": None}}, 64, "requires factor"),
        ({"rope_scaling": {"type": "llama3", "factor": 8.0, "high_freq_factor": 4.0}}, 64, "requires low_freq_factor"),
        (
            {"rope_scaling": {"type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 4.0}},
            64,
            "high_freq_factor",
        ),
        ({"rope_scaling": {"type": "yarn", "factor": 2.0, "beta_slow": -1.0}}, 64, "beta_slow"),
        ({"rope_scaling": {"type": "linear", "factor": 0.0}}, 64, "factor"),
        ({"rope_theta": -1.0}, 64, "rope_theta"),
        ({"partial_rotary_factor": 0.3}, 64, "rotary_dim must be even"),
        ({"partial_rotary_factor": 1.5}, 64, "partial_rotary_factor"),
        ({"rope_scaling": {"type": "dynamic", "factor": 2.0}}, 2, "rotary_dim must be at least 4"),
        ({"max_position_embeddings": None}, 64, "max_position_embeddings"),
        ({}, 0, "head_dim"),
    ],
)
def test_bad_hf_config_raises(rope_config: dict[str, Any], head_dim: int, match: str) -> None:
    config = {"max_position_embeddings": 512} | rope_config
    with pytest.raises(ValueError, match=match):
        rope_parameters_from_hf_config(config, head_dim)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"rope_type": "ntk"}, "supported: default, linear, dynamic, yarn, llama3"),
        ({"rotary_dim": 0}, "rotary_dim"),
        ({"rotary_dim": 7}, "rotary_dim must be even"),
        ({"max_position_embeddings": 0}, "max_position_embeddings"),
        ({"original_max_position_embeddings": 0}, "original_max_position_embeddings"),
        ({"rope_theta": float("inf")}, "rope_theta"),
        ({"factor": True}, "factor"),
        ({"attention_factor": -1.0}, "attention_factor"),
        ({"mscale": float("nan")}, "mscale"),
        ({"truncate": "yes"}, "truncate"),
    ],
)
def test_bad_rope_parameters_raise(overrides: dict[str, Any], match: str) -> None:
    fields = {"rope_type": "yarn", "rope_theta": 10000.0, "rotary_dim": 64, "max_position_embeddings": 512} | overrides
    with pytest.raises(ValueError, match=match):
        RopeParameters(**fields)


def test_bad_inputs_raise() -> None:
    rotary = RotaryEmbedding(rope_parameters_from_hf_config(DYNAMIC_CONFIG, 64))
    query, key = random_qk(3, 64, torch.float32)
    positions = torch.tensor([0, 1, 2])
    with pytest.raises(ValueError, match="positions must be a 1-D int32/int64 tensor"):
        rotary(positions.float(), query, key)
    with pytest.raises(ValueError, match="non-negative"):
        rotary(torch.tensor([0, -1, 2]), query, key)
    with pytest.raises(ValueError, match="seq_lens shape"):
        rotary(positions, query, key, torch.tensor([3, 3]))
    with pytest.raises(ValueError, match="smaller than its request's seq_len"):
        rotary(positions, query, key, torch.tensor([3, 2, 2]))
    with pytest.raises(ValueError, match="head_dim 32 is smaller than rotary_dim 64"):
        rotary(positions, query[..., :32], key[..., :32])
