"""The default model (SmolLM2-135M-Instruct, Q4_1 GGUF) served from its blocks against the same weights
dequantized to float32 at load: greedy decoding of 20 prompts, 64 tokens each, in one engine per path.

The two paths compute the same products in different orders (the kernels' tolerance is derived in
tests/core/test_quant_kernels.py), so greedy choices may differ only where the top two logits are nearly
tied: the first position where a prompt's outputs part must be such a near tie (top-2 gap <= 1e-3 on the
float32 path), and at least 95% of all positions agree.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest

from kvserve.cli import embedded_model_path
from kvserve.engine import async_engine
from kvserve.llm import LLM, GenerationOutput
from kvserve.sampling_params import SamplingParams

PROMPTS = [
    "The capital of France is",
    "Write a haiku about the sea.",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "Explain photosynthesis in one sentence.",
    "1, 2, 3, 4, 5,",
    "The quick brown fox",
    "List three fruits:",
    "In machine learning, overfitting means",
    "Translate 'good morning' into Spanish:",
    "The largest planet in our solar system is",
    "import numpy as np\n",
    "A recipe for pancakes needs",
    "Water boils at",
    "My favourite book is",
    "The meaning of life is",
    "SELECT * FROM users WHERE",
    "Dear hiring manager,",
    "The tallest mountain on Earth is",
]
NUM_TOKENS = 64
NEAR_TIE = 1e-3


def _greedy(**engine_args: object) -> list[GenerationOutput]:
    params = SamplingParams(temperature=0.0, max_tokens=NUM_TOKENS, ignore_eos=True, logprobs=2)
    with LLM(str(embedded_model_path()), max_num_seqs=len(PROMPTS), max_model_len=256, **engine_args) as llm:
        return llm.generate(PROMPTS, params, use_tqdm=False)


@pytest.fixture(scope="module")
def stored() -> list[GenerationOutput]:
    return _greedy()


@pytest.fixture(scope="module")
def dequantized() -> Iterator[list[GenerationOutput]]:
    original = async_engine.load_model_config

    def without_stored_formats(*args: object) -> object:
        return dataclasses.replace(original(*args), quantization=None)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(async_engine, "load_model_config", without_stored_formats)
        yield _greedy()


def test_greedy_agrees_with_the_float32_path(
    stored: list[GenerationOutput], dequantized: list[GenerationOutput]
) -> None:
    agreeing = 0
    for prompt, ours, reference in zip(PROMPTS, stored, dequantized):
        ours_ids, reference_ids = ours.outputs[0].token_ids, reference.outputs[0].token_ids
        assert len(ours_ids) == len(reference_ids) == NUM_TOKENS
        agreeing += sum(a == b for a, b in zip(ours_ids, reference_ids))
        parted = next((i for i, (a, b) in enumerate(zip(ours_ids, reference_ids)) if a != b), None)
        if parted is not None:
            top = reference.outputs[0].logprobs[parted].top
            gap = top[0].logprob - top[1].logprob
            assert gap <= NEAR_TIE, f"{prompt!r} parts at token {parted} where the top-2 gap is {gap:.2e}"
    assert agreeing >= 0.95 * NUM_TOKENS * len(PROMPTS)
