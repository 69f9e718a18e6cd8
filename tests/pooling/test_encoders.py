"""BERT encoders through the whole engine against transformers on the same weights: the real
all-MiniLM-L6-v2 (mean pooling, normalised), tiny random classifiers and cross-encoders (token types for
pairs), a tiny ColBERT; batched and alone; no KV cache, no blocks kept."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

from kvserve.config import EngineConfig
from kvserve.errors import InvalidRequestError
from kvserve.request import EngineRequest, PoolingParams, TextPair, Truncation
from tests.engine_helpers import run_with_engine
from tests.pooling import encoder_models

TEXTS = [
    "A man is eating food.",
    "The quick brown fox jumps over the lazy dog, while the cat watches from the windowsill in silence.",
    "Paris",
    "Embeddings map sentences to vectors; similar meanings land close together in that space.",
    "naïve café résumé — unicode survives the WordPiece normaliser",
]


def encode_all(config: EngineConfig, prompts: list, params: PoolingParams, together: bool = True):
    async def body(engine):
        requests = [EngineRequest(f"r{i}", p, pooling=params) for i, p in enumerate(prompts)]
        if together:
            outputs = await asyncio.gather(*(engine.encode(r) for r in requests))
        else:
            outputs = [await engine.encode(r) for r in requests]
        await asyncio.sleep(0.05)  # the scheduler's bookkeeping of the last step
        core = engine.scheduler.core
        return outputs, engine.runner.executor.runner, core.block_pool.num_free_blocks, core.block_pool.num_blocks

    return run_with_engine(config, body)


@pytest.mark.parametrize("together", [True, False], ids=["batched", "alone"])
def test_minilm_embeddings_match_sentence_transformers_mean_pooling(minilm_dir, together):
    config = EngineConfig(model=str(minilm_dir))
    outputs, runner, num_free, num_blocks = encode_all(config, TEXTS, PoolingParams(), together)
    expected = encoder_models.hf_mean_pooled(minilm_dir, TEXTS).numpy()
    for output, reference in zip(outputs, expected):
        vector = output.pooled
        assert vector.shape == (384,) and vector.dtype == np.float32
        cosine = float(vector @ reference / (np.linalg.norm(vector) * np.linalg.norm(reference)))
        assert cosine >= 0.9999
        assert np.linalg.norm(vector) == pytest.approx(np.linalg.norm(reference), abs=1e-5)
        np.testing.assert_allclose(vector, reference, atol=2e-5)
    # An encoder keeps no KV cache, and every block it booked is free once its requests are done.
    assert runner.kv_caches == [] and not runner.tasks.uses_kv_cache
    assert num_free == num_blocks


def test_minilm_serves_its_sentence_transformers_length_and_truncates_on_request(minilm_dir):
    config = EngineConfig(model=str(minilm_dir))
    long_text = "word " * 400

    async def body(engine):
        assert engine.max_model_len == 256  # sentence_bert_config.json's max_seq_length, not the 512 positions
        with pytest.raises(InvalidRequestError, match="maximum context length is 256"):
            await engine.encode(EngineRequest("long", long_text, pooling=PoolingParams()))
        cut = await engine.encode(
            EngineRequest("cut", long_text, pooling=PoolingParams(), truncation=Truncation(-1, "right"))
        )
        return cut

    cut = run_with_engine(config, body)
    assert cut.num_prompt_tokens == 256
    ids = encoder_models.hf_tokenizer(minilm_dir)(long_text)["input_ids"][:256]
    with torch.no_grad():
        hidden = encoder_models._hf_encoder(minilm_dir)(torch.tensor([ids])).last_hidden_state[0]
    reference = torch.nn.functional.normalize(hidden.mean(0), dim=0).numpy()
    assert float(cut.pooled @ reference) >= 0.9999


def test_classifier_logits_and_pairs_match_transformers(classifier_dir):
    config = EngineConfig(model=str(classifier_dir))
    pairs = [TextPair("what is the capital of france?", t) for t in TEXTS[:3]]
    prompts = TEXTS + pairs
    outputs, runner, num_free, num_blocks = encode_all(
        config, prompts, PoolingParams(kind="classify", activation=False)
    )
    expected = torch.cat(
        [
            encoder_models.hf_logits(classifier_dir, TEXTS),
            encoder_models.hf_logits(classifier_dir, [p.first for p in pairs], [p.second for p in pairs]),
        ]
    )
    np.testing.assert_allclose(np.stack([o.pooled for o in outputs]), expected.numpy(), atol=1e-4)
    assert num_free == num_blocks
    probs, *_ = encode_all(config, TEXTS[:2], PoolingParams(kind="classify"))
    np.testing.assert_allclose(probs[0].pooled, torch.softmax(expected[0], -1).numpy(), atol=1e-5)


def test_cross_encoder_scores_are_sigmoids_of_pair_logits(cross_encoder_dir):
    config = EngineConfig(model=str(cross_encoder_dir))
    query = "how do vectors encode meaning?"
    outputs, *_ = encode_all(config, [TextPair(query, t) for t in TEXTS], PoolingParams(kind="classify"))
    logits = encoder_models.hf_logits(cross_encoder_dir, [query] * len(TEXTS), TEXTS)
    np.testing.assert_allclose(np.stack([o.pooled for o in outputs]), torch.sigmoid(logits).numpy(), atol=1e-5)


def test_colbert_token_embeddings_match_transformers(colbert_dir):
    config = EngineConfig(model=str(colbert_dir))
    outputs, *_ = encode_all(config, TEXTS[:3], PoolingParams())
    from safetensors.torch import load_file

    linear = load_file(colbert_dir / "model.safetensors")["linear.weight"]
    for output, text in zip(outputs, TEXTS[:3]):
        expected = torch.nn.functional.normalize(encoder_models.hf_token_states(colbert_dir, text) @ linear.T, dim=-1)
        assert output.pooled.shape == tuple(expected.shape)
        np.testing.assert_allclose(output.pooled, expected.numpy(), atol=1e-4)


def test_an_encoder_refuses_generation_and_other_pooling_kinds(minilm_dir):
    from kvserve.sampling_params import SamplingParams

    config = EngineConfig(model=str(minilm_dir))

    async def body(engine):
        with pytest.raises(InvalidRequestError, match="does not support generate"):
            async for _ in engine.generate(EngineRequest("g", "hi", sampling=SamplingParams(max_tokens=2))):
                pass
        with pytest.raises(InvalidRequestError, match="pooling kind 'classify'"):
            await engine.encode(EngineRequest("c", "hi", pooling=PoolingParams(kind="classify")))

    run_with_engine(config, body)
