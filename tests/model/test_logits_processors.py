"""Each logits stage (bias, penalties, constraints) against a hand computation on fixed logits."""

from __future__ import annotations

import math

import numpy as np
import torch

from kvserve.model.input_batch import InputBatch
from kvserve.model.logits_pipeline import apply_bias_and_penalties, apply_constraints
from kvserve.sampling_params import SamplingParams
from tests.model.batches import prepared

INF = math.inf


def run(
    rows: list[tuple[SamplingParams, list[int], list[int]]], logits: list[list[float]], eos=(0,)
) -> list[list[float]]:
    """rows: (params, prompt ids, output ids so far); returns the processed logits."""
    batch = InputBatch(vocab_size=len(logits[0]), device=torch.device("cpu"))
    for slot, (params, prompt, outputs) in enumerate(rows):
        batch.add(slot, prepared(f"r{slot}", prompt, params, eos))
        for token in outputs:
            batch.record_sampled(np.array([slot]), np.array([token], dtype=np.int32))
    tensor = torch.tensor(logits, dtype=torch.float32)
    step = batch.step_sampling(np.arange(len(rows), dtype=np.int32))
    if step.processors is not None:
        apply_bias_and_penalties(tensor, step.processors)
        apply_constraints(tensor, step.processors)
    return tensor.tolist()


def test_repetition_penalty_divides_positive_and_multiplies_negative_seen_logits():
    params = SamplingParams(repetition_penalty=2.0)
    out = run([(params, [0, 1], [4])], [[2.0, -1.0, 0.5, 3.0, -4.0]])
    assert out == [[1.0, -2.0, 0.5, 3.0, -8.0]]


def test_frequency_and_presence_penalties_count_outputs_only():
    params = SamplingParams(frequency_penalty=0.5, presence_penalty=1.0)
    out = run([(params, [1, 1, 1], [2, 2, 3])], [[0.0, 0.0, 0.0, 0.0]])
    assert out == [[0.0, 0.0, -2.0, -1.5]]


def test_logit_bias_adds_per_token():
    params = SamplingParams(logit_bias=((1, 5.0), (3, -100.0)))
    assert run([(params, [0], [])], [[1.0, 1.0, 1.0, 1.0]]) == [[1.0, 6.0, 1.0, -99.0]]


def test_allowed_token_ids_mask_everything_else():
    params = SamplingParams(allowed_token_ids=(1, 2))
    assert run([(params, [0], [])], [[1.0, 2.0, 3.0, 4.0]]) == [[-INF, 2.0, 3.0, -INF]]


def test_bad_words_ban_the_token_that_would_complete_them():
    params = SamplingParams(bad_words_token_ids=((5,), (3, 4)))
    logits = [[0.0] * 6]
    assert run([(params, [0], [1])], logits) == [[0.0, 0.0, 0.0, 0.0, 0.0, -INF]]
    assert run([(params, [0], [1, 3])], logits) == [[0.0, 0.0, 0.0, 0.0, -INF, -INF]]


def test_min_tokens_bans_eos_and_stop_ids_until_reached():
    params = SamplingParams(min_tokens=2, stop_token_ids=(3,))
    logits = [[1.0, 1.0, 1.0, 1.0]]
    assert run([(params, [1], [2])], logits) == [[-INF, 1.0, 1.0, -INF]]
    assert run([(params, [1], [2, 2])], logits) == [[1.0, 1.0, 1.0, 1.0]]
    ignoring = SamplingParams(min_tokens=2, stop_token_ids=(3,), ignore_eos=True)
    assert run([(ignoring, [1], [])], logits) == [[1.0, 1.0, 1.0, -INF]]


def test_rows_without_processors_are_untouched_in_a_mixed_batch():
    plain = SamplingParams()
    biased = SamplingParams(logit_bias=((0, 1.0),), repetition_penalty=2.0)
    out = run([(plain, [0], []), (biased, [0], []), (plain, [1], [])], [[1.0, 2.0]] * 3)
    # bias first (0 -> 2.0), then the repetition penalty on the seen token 0 (2.0 / 2).
    assert out == [[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]]


def test_plain_requests_skip_the_processor_stages():
    batch = InputBatch(vocab_size=4, device=torch.device("cpu"))
    batch.add(0, prepared("r", [1, 2], SamplingParams(temperature=0.7, top_k=3), (0,)))
    assert batch.history.shape[1] == 0  # no token history kept without penalties or bad words
    assert batch.step_sampling(np.array([0], dtype=np.int32)).processors is None
