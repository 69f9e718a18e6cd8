"""The persistent batch against a straightforward per-request computation, over random add/remove sequences.

Random requests with random sampling parameters go into random free slots, leave, and others take their
slots; sampled rows come in random order. After every step the gathered metadata and the processed logits
must equal what each request's own parameters and token history give, computed row by row.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch

from kvserve.model.input_batch import InputBatch
from kvserve.model.logits_pipeline import apply_bias_and_penalties, apply_constraints
from kvserve.model.sampler import NUCLEUS_CANDIDATES
from kvserve.sampling_params import SamplingParams
from tests.model.batches import prepared

VOCAB_SIZE = 40
NUM_SLOTS = 12
EOS = (1, 2)


@dataclass(slots=True)
class Live:
    params: SamplingParams
    prompt: list[int]
    outputs: list[int] = field(default_factory=list)


def random_params(rng: random.Random) -> SamplingParams:
    def maybe(value):
        return value if rng.random() < 0.3 else None

    tokens = lambda n: tuple(rng.sample(range(VOCAB_SIZE), n))  # noqa: E731
    options = dict(
        temperature=rng.choice([0.0, 0.5, 1.0, 1.7]),
        top_k=rng.choice([0, 0, 3, 50]),
        top_p=rng.choice([1.0, 0.9]),
        min_p=rng.choice([0.0, 0.1]),
        seed=maybe(rng.randrange(1000)),
        logprobs=maybe(rng.randrange(5)),
        presence_penalty=maybe(rng.uniform(-2, 2)),
        frequency_penalty=maybe(rng.uniform(-2, 2)),
        repetition_penalty=maybe(rng.uniform(0.5, 2.0)),
        logit_bias=maybe(tuple((t, rng.uniform(-5, 5)) for t in tokens(3))),
        allowed_token_ids=maybe(tokens(rng.randint(1, 30))),
        bad_words_token_ids=maybe(tuple(tokens(rng.randint(1, 3)) for _ in range(2))),
        min_tokens=maybe(rng.randint(1, 4)),
        stop_token_ids=maybe(tokens(2)),
        ignore_eos=rng.random() < 0.2,
    )
    return SamplingParams(max_tokens=100, **{k: v for k, v in options.items() if v is not None})


def reference_logits(logits: torch.Tensor, live: Live) -> torch.Tensor:
    """One row processed from the request's own parameters and history, the way vLLM describes each step."""
    p, row = live.params, logits.clone()
    for token, bias in p.logit_bias:
        row[token] += torch.tensor(bias, dtype=torch.float32)
    if p.repetition_penalty != 1.0:
        seen = torch.zeros(VOCAB_SIZE, dtype=torch.bool)
        seen[live.prompt + live.outputs] = True
        penalty = torch.tensor(p.repetition_penalty, dtype=torch.float32)
        row = torch.where(seen, torch.where(row > 0, row / penalty, row * penalty), row)
    if p.presence_penalty or p.frequency_penalty:
        counts = torch.bincount(torch.tensor(live.outputs, dtype=torch.int64), minlength=VOCAB_SIZE).float()
        frequency = torch.tensor(p.frequency_penalty, dtype=torch.float32)
        presence = torch.tensor(p.presence_penalty, dtype=torch.float32)
        row = row - (frequency * counts + presence * (counts > 0))
    if p.allowed_token_ids is not None:
        disallowed = torch.ones(VOCAB_SIZE, dtype=torch.bool)
        disallowed[list(p.allowed_token_ids)] = False
        row[disallowed] = float("-inf")
    for word in p.bad_words_token_ids:
        if len(word) == 1 or live.outputs[-(len(word) - 1) :] == list(word[:-1]):
            row[word[-1]] = float("-inf")
    if len(live.outputs) < p.min_tokens:
        row[[t for t in {*(() if p.ignore_eos else EOS), *p.stop_token_ids}]] = float("-inf")
    return row


def check_metadata(batch: InputBatch, slots: list[int], lives: list[Live]) -> None:
    step = batch.step_sampling(np.array(slots, dtype=np.int32))
    m = step.metadata
    params = [live.params for live in lives]
    greedy = [row for row, p in enumerate(params) if p.greedy]
    random_rows = [row for row, p in enumerate(params) if not p.greedy]
    assert m.num_rows == len(params)
    if not random_rows:
        assert m.random is None and m.greedy_rows is None
    else:
        r = m.random
        assert r is not None
        assert (r.rows is None) == (not greedy)
        if greedy:
            assert m.greedy_rows.tolist() == greedy and r.rows.tolist() == random_rows
        picked = [params[row] for row in random_rows]
        assert r.temperature.tolist() == [np.float32(p.temperature) for p in picked]
        for name, off, value in (("top_k", 0, int), ("top_p", 1.0, np.float32), ("min_p", 0.0, np.float32)):
            column = getattr(r, name)
            values = [value(getattr(p, name)) for p in picked]
            assert column is None if all(v == off for v in values) else column.tolist() == values
        assert r.truncated.tolist() == [i for i, p in enumerate(picked) if p.top_k > 0 or p.top_p < 1.0]
        max_top_k = max([p.top_k for p in picked if p.top_k > 0 or p.top_p < 1.0], default=0)
        assert r.whole_row_mass == any(p.top_p < 1.0 and p.top_k <= 0 for p in picked)
        assert r.num_candidates == (max(max_top_k, NUCLEUS_CANDIDATES) if r.whole_row_mass else max_top_k)
        seeded = [i for i, p in enumerate(picked) if p.seed is not None]
        assert sorted(r.generators) == seeded
        for i in seeded:
            assert r.generators[i] is batch.generators[slots[random_rows[i]]]
    wanting = [row for row, p in enumerate(params) if p.logprobs is not None]
    assert m.max_num_logprobs == max((p.logprobs for p in params if p.logprobs is not None), default=-1)
    if 0 < len(wanting) < len(params):
        assert m.logprob_rows.tolist() == wanting
    else:
        assert m.logprob_rows is None


@pytest.mark.parametrize("seed", range(8))
def test_persistent_batch_matches_per_request_computation(seed: int) -> None:
    rng = random.Random(seed)
    batch = InputBatch(VOCAB_SIZE, torch.device("cpu"), capacity=2)  # small, so slots beyond it grow it
    live: dict[int, Live] = {}
    for step in range(40):
        for slot in [s for s in live if rng.random() < 0.2]:
            batch.remove(slot)
            del live[slot]
        free = [s for s in range(NUM_SLOTS) if s not in live]
        for slot in rng.sample(free, rng.randint(0, len(free))):
            request = Live(random_params(rng), [rng.randrange(VOCAB_SIZE) for _ in range(rng.randint(1, 9))])
            batch.add(slot, prepared(f"s{step}-{slot}", request.prompt, request.params, EOS))
            live[slot] = request
        slots = rng.sample(sorted(live), rng.randint(0, len(live)))
        lives = [live[s] for s in slots]
        check_metadata(batch, slots, lives)

        logits = torch.randn(len(slots), VOCAB_SIZE, generator=torch.Generator().manual_seed(step))
        processed = logits.clone()
        step_sampling = batch.step_sampling(np.array(slots, dtype=np.int32))
        if step_sampling.processors is not None:
            apply_bias_and_penalties(processed, step_sampling.processors)
            apply_constraints(processed, step_sampling.processors)
        for row, request in enumerate(lives):
            torch.testing.assert_close(processed[row], reference_logits(logits[row], request), rtol=0, atol=0)

        sampled = [rng.randrange(VOCAB_SIZE) for _ in slots]
        batch.record_sampled(np.array(slots, dtype=np.int32), np.array(sampled, dtype=np.int32))
        for request, token in zip(lives, sampled):
            request.outputs.append(token)
    assert batch.capacity >= NUM_SLOTS


def test_token_ids_outside_the_vocabulary_are_refused_without_a_trace() -> None:
    batch = InputBatch(VOCAB_SIZE, torch.device("cpu"))
    bad = SamplingParams(allowed_token_ids=(3, VOCAB_SIZE))
    with pytest.raises(ValueError, match="allowed_token_ids"):
        batch.add(0, prepared("r", [1], bad))
    assert batch.requests[0] is None
