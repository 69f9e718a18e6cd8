"""A step's forward in micro-batches: the plan against a token-by-token model of it, and a runner that splits
its steps against one that does not (and against transformers)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from kvserve.model.micro_batches import MICRO_BATCH_TOKENS, plan_pieces
from kvserve.request import PoolingParams
from kvserve.sampling_params import SamplingParams
from tests.model.batches import RunnerDriver, prepared
from tests.model.hf_reference import hf_greedy_recomputed as hf_greedy
from tests.model.test_runner_steps import TOLERANCE, make_runner


@st.composite
def steps(draw):
    """query_start_loc and seq_lens of a step: requests of 0..40 new tokens after 0..30 cached ones."""
    q_lens = draw(st.lists(st.integers(0, 40), min_size=1, max_size=8))
    cached = draw(st.lists(st.integers(0, 30), min_size=len(q_lens), max_size=len(q_lens)))
    query_start_loc = np.concatenate([[0], np.cumsum(q_lens)]).astype(np.int32)
    return query_start_loc, (np.array(q_lens) + np.array(cached)).astype(np.int32)


@given(steps(), st.integers(1, 50))
def test_pieces_cover_the_step_and_give_each_token_its_context(step, max_tokens):
    query_start_loc, seq_lens = step
    # The model: token t of request r sits at position seq_len - q_len + i and sees positions <= its own.
    owners, positions = [], []
    for r, (begin, end) in enumerate(zip(query_start_loc[:-1], query_start_loc[1:])):
        owners += [r] * (end - begin)
        positions += range(seq_lens[r] - (end - begin), seq_lens[r])
    pieces = plan_pieces(query_start_loc, seq_lens, max_tokens)
    covered = []
    for piece in pieces:
        tokens = range(piece.tokens.start, piece.tokens.stop)
        assert 0 < len(tokens) <= max_tokens
        covered += tokens
        requests = range(piece.requests.start, piece.requests.stop)
        assert piece.query_start_loc[0] == 0 and piece.query_start_loc[-1] == len(tokens)
        assert piece.max_query_len == max(np.diff(piece.query_start_loc))
        for i, r in enumerate(requests):
            own = [t for t in tokens if owners[t] == r]
            lo, hi = piece.query_start_loc[i], piece.query_start_loc[i + 1]
            assert [tokens[j] for j in range(lo, hi)] == own
            if own:  # its context ends at its last position in the piece
                assert piece.seq_lens[i] == positions[own[-1]] + 1
        assert {owners[t] for t in tokens} <= set(requests)
    assert covered == list(range(int(query_start_loc[-1])))


def test_a_step_that_fits_is_one_piece():
    query_start_loc = np.array([0, 1, 300, 512], dtype=np.int32)
    (piece,) = plan_pieces(query_start_loc, np.array([40, 299, 212], dtype=np.int32), 512)
    assert piece.tokens == slice(0, 512) and piece.requests == slice(0, 3)
    assert piece.seq_lens.tolist() == [40, 299, 212] and piece.max_query_len == 299


GREEDY = SamplingParams(max_tokens=8, temperature=0.0, ignore_eos=True, logprobs=2, prompt_logprobs=2)


def run(model_dir, micro_batch_tokens: int | None):
    """Prompts of 7, 31 and 11 tokens, a mean-pooled one of 13, then decode steps: the prompts' step is split
    across requests when micro_batch_tokens is small."""
    runner = make_runner(model_dir)
    runner.micro_batch_tokens = micro_batch_tokens
    driver = RunnerDriver(runner)
    rng = np.random.default_rng(3)
    prompts = [rng.integers(3, 384, n).tolist() for n in (7, 31, 11)]
    for slot, prompt in enumerate(prompts):
        driver.add(slot, prepared(f"r{slot}", prompt, GREEDY))
    driver.add(3, prepared("pool", rng.integers(3, 384, 13).tolist(), PoolingParams(pooling="mean")))
    results = [driver.step()[1] for _ in range(8)]
    return prompts, [driver.rows[slot].token_ids[len(prompt) :] for slot, prompt in enumerate(prompts)], results


@pytest.mark.parametrize("architecture", ["llama", "qwen3", "mistral-sliding"])
def test_a_split_forward_gives_the_whole_steps_outputs(tiny_model_dir, architecture):
    model_dir = tiny_model_dir(architecture)
    assert make_runner(model_dir).micro_batch_tokens == MICRO_BATCH_TOKENS  # a CPU decoder splits long steps
    prompts, whole_tokens, whole = run(model_dir, None)
    _, split_tokens, split = run(model_dir, 2)  # decode steps of 3 rows split too
    assert split_tokens == whole_tokens
    for prompt, tokens in zip(prompts, split_tokens):
        assert tokens == hf_greedy(model_dir, prompt, 8)
    first_whole, first_split = whole[0], split[0]
    torch.testing.assert_close(first_split.pooled.values[0], first_whole.pooled.values[0], **TOLERANCE)
    assert len(first_split.prompt_logprobs) == len(first_whole.prompt_logprobs) == 3
    for a, b in zip(first_split.prompt_logprobs, first_whole.prompt_logprobs):
        assert a.first_position == b.first_position
        np.testing.assert_array_equal(a.logprobs.token_ids[:, 0], b.logprobs.token_ids[:, 0])
        np.testing.assert_allclose(a.logprobs.logprobs, b.logprobs.logprobs, **TOLERANCE)
    for a, b in zip(split, whole):
        np.testing.assert_allclose(a.logprobs.logprobs, b.logprobs.logprobs, **TOLERANCE)


def test_the_first_step_after_split_ones_hands_free_memory_back(tiny_model_dir, monkeypatch):
    trims = []
    monkeypatch.setattr("kvserve.model.runner.release_free_memory", lambda: trims.append(1))
    runner = make_runner(tiny_model_dir("llama"))
    runner.micro_batch_tokens = 4
    driver = RunnerDriver(runner)
    driver.add(0, prepared("a", list(range(3, 12)), GREEDY))
    driver.step()  # 9 prompt tokens, in pieces
    driver.add(1, prepared("b", list(range(3, 9)), GREEDY))
    driver.step()  # a decode row and 6 prompt tokens, in pieces
    assert len(trims) == 0
    driver.step()  # two decode rows, one piece: the trim
    assert len(trims) == 1
    driver.step()
    assert len(trims) == 1
