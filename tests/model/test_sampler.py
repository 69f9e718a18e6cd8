"""Sampler: greedy, filters (exact sets of reachable tokens), distributions, seeded reproducibility, logprobs."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch

from kvserve.model.logprobs import rank_logprobs
from kvserve.model.sampler import (
    NUCLEUS_CANDIDATES,
    Sampler,
    SamplingMetadata,
    _apply_min_p,
    _mask_outside_top_k_top_p,
    _top_candidates,
    build_sampling_metadata,
    greedy_argmax,
    row_topk,
)
from kvserve.sampling_params import GREEDY_TEMPERATURE

DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.cuda),
]


def make_metadata(
    temperature: list[float],
    *,
    top_k: list[int] | None = None,
    top_p: list[float] | None = None,
    min_p: list[float] | None = None,
    generators: dict[int, torch.Generator] | None = None,
    num_logprobs: int | list[int] = -1,
    device: str = "cpu",
) -> SamplingMetadata:
    """Builds the metadata the way the model runner does: from host arrays of the per-row parameters."""
    num_rows = len(temperature)
    return build_sampling_metadata(
        np.array(temperature, dtype=np.float32),
        np.array(top_k if top_k is not None else [0] * num_rows, dtype=np.int64),
        np.array(top_p if top_p is not None else [1.0] * num_rows, dtype=np.float32),
        np.array(min_p if min_p is not None else [0.0] * num_rows, dtype=np.float32),
        np.array([num_logprobs] * num_rows if isinstance(num_logprobs, int) else num_logprobs, dtype=np.int32),
        generators if generators is not None else {},
        lambda array: torch.from_numpy(np.ascontiguousarray(array)).to(device),
    )


def seeded(seed: int, device: str = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def reference_probs(
    logits: list[float], temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0
) -> list[float]:
    """The documented semantics in float64 Python, one row: temperature, min-p, top-k, top-p, renormalise.

    Assumes no tied probabilities when top-k or top-p is on, so their kept sets are unambiguous.
    """

    def normalised(weights: list[float]) -> list[float]:
        total = sum(weights)
        return [w / total for w in weights]

    scaled = [x / temperature for x in logits]
    peak = max(scaled)
    probs = normalised([math.exp(x - peak) for x in scaled])
    if min_p > 0.0:
        threshold = min_p * max(probs)
        probs = normalised([p if p >= threshold else 0.0 for p in probs])
    by_prob = sorted(range(len(probs)), key=lambda i: -probs[i])
    if 0 < top_k < len(probs):
        kept = set(by_prob[:top_k])
        probs = normalised([p if i in kept else 0.0 for i, p in enumerate(probs)])
    if top_p < 1.0:
        kept, mass = set(), 0.0
        for i in by_prob:
            kept.add(i)
            mass += probs[i]
            if mass >= top_p:
                break
        probs = normalised([p if i in kept else 0.0 for i, p in enumerate(probs)])
    return probs


def metadata_for_rows(row_params: list[dict[str, float]], **kwargs: Any) -> SamplingMetadata:
    """make_metadata from one dict per row; a missing parameter is disabled (temperature defaults to 1)."""
    return make_metadata(
        [params.get("temperature", 1.0) for params in row_params],
        top_k=[int(params.get("top_k", 0)) for params in row_params],
        top_p=[params.get("top_p", 1.0) for params in row_params],
        min_p=[params.get("min_p", 0.0) for params in row_params],
        **kwargs,
    )


def draw_counts(logits_row: torch.Tensor, num_draws: int, *, seeded_rows: bool, **params: float) -> torch.Tensor:
    """Token counts over `num_draws` independent draws: one batch of identical rows, one call."""
    logits = logits_row.expand(num_draws, -1).contiguous()
    generators = {row: seeded(row) for row in range(num_draws)} if seeded_rows else None
    metadata = metadata_for_rows([params] * num_draws, generators=generators)
    token_ids = Sampler()(logits, metadata).sampled_token_ids
    return torch.bincount(token_ids, minlength=logits.shape[1])


def logits_from_probs(probs: list[float]) -> torch.Tensor:
    return torch.tensor(probs, dtype=torch.float64).log().to(torch.float32)


@pytest.mark.parametrize("device", DEVICES)
def test_greedy_is_argmax(device: str) -> None:
    torch.manual_seed(0)
    logits = torch.randn(16, 1000, device=device)
    temperature = [0.0] * 8 + [GREEDY_TEMPERATURE / 2] * 8
    out = Sampler()(logits, make_metadata(temperature, top_k=[5] * 16, min_p=[0.5] * 16, device=device))
    assert out.sampled_token_ids.dtype == torch.int64
    assert out.sampled_token_ids.tolist() == logits.argmax(dim=-1).tolist()
    assert out.logprobs is None


@pytest.mark.parametrize("temperature", [0.05, 1.0, 10.0, 1000.0])
def test_top_k_one_is_greedy_at_any_temperature(temperature: float) -> None:
    torch.manual_seed(1)
    # Nearly flat rows: at high temperature any leak of a second token would show within 256 rows.
    logits = torch.randn(256, 50) * 0.01
    out = Sampler()(logits, make_metadata([temperature] * 256, top_k=[1] * 256))
    assert out.sampled_token_ids.tolist() == logits.argmax(dim=-1).tolist()


def test_tiny_top_p_keeps_only_the_top_token() -> None:
    torch.manual_seed(2)
    logits = torch.randn(256, 50) * 0.01
    out = Sampler()(logits, make_metadata([2.0] * 256, top_p=[1e-6] * 256))
    assert out.sampled_token_ids.tolist() == logits.argmax(dim=-1).tolist()


# Each case is built by hand so that the reachable set is unambiguous (no probability near a threshold).
# 4000 draws: the least likely kept token has probability >= 0.08 after renormalisation, so the chance
# that it never appears is below 0.92 ** 4000 ~ 1e-145; an excluded token appears with probability 0.
@pytest.mark.parametrize(
    ("probs", "params", "reachable"),
    [
        # min-p 0.25 of the top 0.4: the threshold is 0.1, so 0.09 and 0.08 go and 0.11 stays.
        ([0.4, 0.2, 0.12, 0.11, 0.09, 0.08], dict(min_p=0.25), {0, 1, 2, 3}),
        # min-p after temperature: at T = 0.5 probabilities go as p^2 -> [0.16, 0.04, 0.0144, ...] / Z, so
        # the threshold 0.2 * 0.16 = 0.032 keeps only tokens 0 and 1 (at T = 1 it would keep five).
        ([0.4, 0.2, 0.12, 0.11, 0.09, 0.08], dict(min_p=0.2, temperature=0.5), {0, 1}),
        # The boundary: a token exactly at min_p * max stays (min-p 1.0 keeps the tied top tokens).
        ([0.4, 0.2, 0.4], dict(min_p=1.0), {0, 2}),
        # Same logits, min-p disabled: every token is reachable.
        ([0.4, 0.2, 0.12, 0.11, 0.09, 0.08], dict(), {0, 1, 2, 3, 4, 5}),
        # top-k 3 picks the 3 most likely, wherever they sit in the vocabulary.
        ([0.1, 0.35, 0.05, 0.3, 0.2], dict(top_k=3), {1, 3, 4}),
        # top-p 0.6: 0.35 < 0.6, 0.35 + 0.3 reaches it; the third token is not needed.
        ([0.1, 0.35, 0.05, 0.3, 0.2], dict(top_p=0.6), {1, 3}),
        # top-p is measured after top-k renormalises: [0.4, 0.3, 0.2] / 0.9 -> 0.444, 0.778 >= 0.75.
        # (Unrenormalised 0.4 + 0.3 = 0.7 < 0.75 would also keep token 2.)
        ([0.4, 0.3, 0.2, 0.1], dict(top_k=3, top_p=0.75), {0, 1}),
        # top-p is measured after min-p renormalises: min-p 0.3 drops 0.1, then [0.4, 0.3, 0.2] / 0.9 as above.
        ([0.4, 0.3, 0.2, 0.1], dict(min_p=0.3, top_p=0.75), {0, 1}),
    ],
)
def test_filters_leave_exactly_the_expected_tokens(
    probs: list[float], params: dict[str, float], reachable: set[int]
) -> None:
    torch.manual_seed(3)
    logits = logits_from_probs(probs)
    expected = reference_probs(logits.tolist(), **params)
    assert {i for i, p in enumerate(expected) if p > 0} == reachable
    counts = draw_counts(logits, 4000, seeded_rows=False, **params)
    assert set(counts.nonzero().flatten().tolist()) == reachable


# Chi-square goodness of fit against the float64 reference. With the fixed seeds the test is deterministic;
# the bound p > 1e-4 means a correct sampler with an unlucky seed would fail 1 time in 10,000, while the
# bugs it guards against (temperature ignored, filters off by one, uniform instead of exponential noise,
# unrenormalised survivors) give statistics in the hundreds or more at 20,000 draws (p ~ 0).
@pytest.mark.parametrize("seeded_rows", [False, True])
@pytest.mark.parametrize(
    "params",
    [dict(temperature=0.7), dict(temperature=1.5, top_k=6, top_p=0.9, min_p=0.05)],
)
def test_empirical_distribution_matches_softmax(seeded_rows: bool, params: dict[str, float]) -> None:
    torch.manual_seed(4)
    logits = torch.tensor([2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, 0.8, -3.0])
    num_draws = 20_000
    counts = draw_counts(logits, num_draws, seeded_rows=seeded_rows, **params).tolist()
    expected = reference_probs(logits.tolist(), **params)
    support = [i for i, p in enumerate(expected) if p > 0]
    assert all(counts[i] == 0 for i in range(len(expected)) if i not in support)
    # Every expected count is >= 5 (the least likely kept token has p > 0.003), as the test requires.
    assert min(num_draws * expected[i] for i in support) >= 5
    statistic = sum((counts[i] - num_draws * expected[i]) ** 2 / (num_draws * expected[i]) for i in support)
    dof = len(support) - 1
    # The chi-square survival function is the regularised upper incomplete gamma Q(dof / 2, x / 2).
    p_value = torch.special.gammaincc(
        torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(statistic / 2, dtype=torch.float64)
    ).item()
    assert p_value > 1e-4, (statistic, counts, expected)


@pytest.mark.parametrize("device", DEVICES)
def test_seeded_row_reproduces_at_another_index_with_other_neighbours(device: str) -> None:
    vocab_size = 64
    target = torch.randn(vocab_size, generator=seeded(0)).mul_(2).to(device)
    target_params = dict(temperature=1.3, top_k=40, top_p=0.95, min_p=0.01)

    def run(rows: list[tuple[torch.Tensor, dict[str, float], int | None]], default_seed: int) -> list[list[int]]:
        torch.manual_seed(default_seed)
        generators = {row: seeded(seed, device) for row, (_, _, seed) in enumerate(rows) if seed is not None}
        logits = torch.stack([row_logits for row_logits, _, _ in rows])
        metadata = metadata_for_rows([params for _, params, _ in rows], generators=generators, device=device)
        sampler = Sampler()
        return [sampler(logits, metadata).sampled_token_ids.tolist() for _ in range(30)]

    noise = torch.randn(4, vocab_size, generator=seeded(1)).to(device)
    steps_a = run(
        [
            (target, target_params, 1234),
            (noise[0], dict(temperature=1.0), None),
            (noise[1], dict(temperature=0.0), None),
        ],
        default_seed=7,
    )
    steps_b = run(
        [
            (noise[2], dict(temperature=0.0), None),
            (noise[3], dict(temperature=2.0, top_p=0.5), 99),
            (noise[0], dict(temperature=0.8, top_k=3), None),
            (target, target_params, 1234),
        ],
        default_seed=8,
    )
    tokens_a = [step[0] for step in steps_a]
    tokens_b = [step[3] for step in steps_b]
    assert tokens_a == tokens_b
    # Guards against a vacuous pass: the seeded row really is random from step to step.
    assert len(set(tokens_a)) > 3


def test_seeded_row_draws_exactly_one_vector_of_exponentials_per_step() -> None:
    vocab_size = 37
    generator = seeded(5)
    metadata = make_metadata([1.0, 0.0, 1.0], generators={2: generator})
    Sampler()(torch.randn(3, vocab_size), metadata)
    replay = seeded(5)
    torch.empty(vocab_size).exponential_(generator=replay)
    assert torch.equal(generator.get_state(), replay.get_state())


@pytest.mark.parametrize("device", DEVICES)
def test_mixed_greedy_random_seeded_batch(device: str) -> None:
    torch.manual_seed(6)
    vocab_size = 200
    # Nearly flat rows, so that any randomness leaking into a greedy row would change its token.
    logits = (torch.randn(5, vocab_size) * 0.01).to(device)
    temperature = [0.0, 1.0, 1.0, GREEDY_TEMPERATURE / 10, 1.5]
    argmax = logits.argmax(dim=-1).tolist()

    def seeded_token_alone() -> int:
        alone = make_metadata([1.5], generators={0: seeded(42, device)}, device=device)
        return Sampler()(logits[4:5], alone).sampled_token_ids.item()

    seeded_alone = seeded_token_alone()
    for default_seed in range(20):
        torch.manual_seed(default_seed)
        metadata = make_metadata(temperature, top_k=[0, 1, 0, 0, 0], generators={4: seeded(42, device)}, device=device)
        token_ids = Sampler()(logits, metadata).sampled_token_ids.tolist()
        assert token_ids[0] == argmax[0] and token_ids[3] == argmax[3]
        assert token_ids[1] == argmax[1]  # top-k 1
        assert token_ids[4] == seeded_alone


def test_logprobs_are_raw_with_top_k_ordering_and_ranks() -> None:
    raw = torch.tensor([[1.0, 3.0, 2.0, 0.5, -1.0, 2.5], [0.0, -1.0, 4.0, 1.0, 1.5, 0.0]])
    processed = raw.clone()
    processed[0, 1] = float("-inf")  # e.g. a banned token: greedy row 0 must fall back to token 5
    # Row 1 is random with top-k 1 (so deterministic) at temperature 0.5: its logprobs must still be raw.
    metadata = make_metadata([0.0, 0.5], top_k=[0, 1], num_logprobs=3)
    out = Sampler()(processed, metadata, raw_logits=raw)

    def hand_logprobs(row: list[float]) -> list[float]:
        log_total = math.log(sum(math.exp(x) for x in row))
        return [x - log_total for x in row]

    lp0, lp1 = hand_logprobs(raw[0].tolist()), hand_logprobs(raw[1].tolist())
    assert out.sampled_token_ids.tolist() == [5, 2]
    assert out.logprobs is not None
    assert out.logprobs.token_ids.tolist() == [[5, 1, 5, 2], [2, 2, 4, 3]]
    expected = torch.tensor([[lp0[5], lp0[1], lp0[5], lp0[2]], [lp1[2], lp1[2], lp1[4], lp1[3]]])
    # float32 log_softmax of values within a few units: errors of a few ulps of ~1, far below 1e-6.
    torch.testing.assert_close(out.logprobs.logprobs, expected, rtol=0, atol=1e-6)
    assert out.logprobs.logprobs.dtype == torch.float32
    # Row 0's token 5 is beaten only by the banned token 1 in the raw logits.
    assert out.logprobs.ranks.tolist() == [2, 1]


def test_logprobs_k_zero_ties_and_the_processed_logits_as_default_source() -> None:
    logits = torch.tensor([[1.0, float("-inf"), 2.0, 0.5], [2.0, 2.0, 1.0, 0.0]])
    logits_tie_broken = logits.clone()
    logits_tie_broken[1, 0] = float("-inf")  # forces token 1, which ties token 0 in the logprob source
    out = Sampler()(logits_tie_broken, make_metadata([0.0, 0.0], num_logprobs=0), raw_logits=logits)
    assert out.logprobs is not None
    assert out.logprobs.token_ids.tolist() == [[2], [1]]
    assert out.logprobs.logprobs.shape == (2, 1)
    # A tie is not "strictly greater": token 1 keeps rank 1.
    assert out.logprobs.ranks.tolist() == [1, 1]

    out = Sampler()(logits, make_metadata([0.0, 0.0], num_logprobs=4))
    assert out.logprobs is not None
    log_total = math.log(math.exp(1.0) + math.exp(2.0) + math.exp(0.5))
    assert out.logprobs.token_ids[0].tolist() == [2, 2, 0, 3, 1]
    assert out.logprobs.logprobs[0, -1].item() == float("-inf")
    assert out.logprobs.logprobs[0, 0].item() == pytest.approx(2.0 - log_total, abs=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_logits(dtype: torch.dtype) -> None:
    torch.manual_seed(8)
    logits = torch.randn(64, 1000).to(dtype)
    as_float = logits.float()
    temperature = [0.0, 1.0] * 32
    metadata = make_metadata(temperature, top_k=[0, 3] * 32, generators={1: seeded(3)}, num_logprobs=2)
    out = Sampler()(logits, metadata)
    token_ids = out.sampled_token_ids
    assert token_ids[0::2].tolist() == as_float[0::2].argmax(dim=-1).tolist()
    # In the top 3, counting every token tied with the third (top-k keeps ties; half precision has many).
    third = as_float[1::2].topk(3, dim=-1).values[:, -1]
    assert (as_float[1::2].gather(1, token_ids[1::2].unsqueeze(1)).squeeze(1) >= third).all()
    assert out.logprobs is not None and out.logprobs.logprobs.dtype == torch.float32
    expected = as_float.log_softmax(dim=-1).gather(1, token_ids.unsqueeze(1)).squeeze(1)
    torch.testing.assert_close(out.logprobs.logprobs[:, 0], expected, rtol=0, atol=1e-6)


def test_logits_are_not_modified() -> None:
    torch.manual_seed(9)
    logits = torch.randn(8, 100)
    before = logits.clone()
    metadata = make_metadata([0.0, 1.0] * 4, top_k=[5] * 8, top_p=[0.8] * 8, min_p=[0.1] * 8, num_logprobs=1)
    Sampler()(logits, metadata)
    assert torch.equal(logits, before)


def test_empty_batch() -> None:
    out = Sampler()(torch.empty(0, 10), make_metadata([], num_logprobs=2))
    assert out.sampled_token_ids.shape == (0,)
    assert out.logprobs is None  # no row asked


def test_bad_input_raises_value_error() -> None:
    with pytest.raises(ValueError, match="top_k"):
        build_sampling_metadata(
            np.ones(2, dtype=np.float32),
            np.zeros(3, dtype=np.int64),
            np.ones(2, dtype=np.float32),
            np.zeros(2, dtype=np.float32),
            np.full(2, -1, dtype=np.int32),
            {},
            torch.from_numpy,
        )
    with pytest.raises(ValueError, match="outside the batch"):
        make_metadata([1.0, 1.0], generators={-1: seeded(0)})
    with pytest.raises(ValueError, match="num_logprobs"):
        make_metadata([1.0], num_logprobs=-2)
    with pytest.raises(ValueError, match="S = 2"):
        Sampler()(torch.randn(3, 10), make_metadata([1.0, 1.0]))
    with pytest.raises(ValueError, match="raw_logits"):
        Sampler()(torch.randn(2, 10), make_metadata([1.0, 1.0]), raw_logits=torch.randn(2, 11))
    with pytest.raises(ValueError, match="vocabulary size"):
        Sampler()(torch.randn(2, 10), make_metadata([1.0, 1.0], num_logprobs=11))


def full_sort_sample(logits: torch.Tensor, params: list[dict[str, float]], seeds: list[int]) -> list[int]:
    """The sampler before partial selection, row by row: the full sort's mask, then the exponential race
    on V exponentials drawn from the row's generator."""
    token_ids = []
    for row, (row_params, seed) in enumerate(zip(params, seeds)):
        scaled = logits[row : row + 1] / row_params.get("temperature", 1.0)
        if row_params.get("min_p", 0.0) > 0:
            _apply_min_p(scaled, torch.tensor([row_params["min_p"]]))
        top_k, top_p = torch.tensor([int(row_params.get("top_k", 0))]), torch.tensor([row_params.get("top_p", 1.0)])
        _mask_outside_top_k_top_p(scaled, top_k, top_p)
        probs = scaled.softmax(dim=-1)
        noise = torch.empty_like(probs[0]).exponential_(generator=seeded(seed)).clamp_(min=torch.finfo().tiny)
        token_ids.append(int((probs[0] / noise).argmax()))
    return token_ids


TRUNCATIONS = [
    dict(top_k=1),
    dict(top_k=40),
    dict(top_k=40, top_p=0.8),
    dict(top_p=0.9),
    dict(top_p=0.5, temperature=0.7),
    dict(top_p=0.999, temperature=3.0),  # a nucleus far past the candidates: the full sort decides
    dict(top_k=3000),  # top-k past NUCLEUS_CANDIDATES
    dict(top_k=20, min_p=0.05, temperature=1.3),
    dict(top_p=0.7, min_p=0.1),
    dict(temperature=0.9),  # no truncation in a batch with truncated rows
]


@pytest.mark.parametrize("seed", range(3))
def test_partial_selection_picks_the_full_sorts_tokens_for_the_same_seeds(seed: int) -> None:
    # Logits like a trained model's (a few large, a long tail) and, every fourth row, flat ones whose
    # nucleus is most of the vocabulary. Each row seeded: same seed, same token as the full sort, since
    # both keep exactly the same tokens with the same probabilities and use the same draws per token.
    vocab_size, num_rows = 5000, 80
    gen = seeded(100 + seed)
    logits = torch.randn(num_rows, vocab_size, generator=gen) * 3
    logits[::4] = torch.randn(num_rows // 4, vocab_size, generator=gen) * 0.01
    params = [TRUNCATIONS[row % len(TRUNCATIONS)] for row in range(num_rows)]
    seeds = [1000 * seed + row for row in range(num_rows)]
    metadata = metadata_for_rows(params, generators={row: seeded(s) for row, s in enumerate(seeds)})
    token_ids = Sampler()(logits, metadata).sampled_token_ids.tolist()
    assert token_ids == full_sort_sample(logits, params, seeds)


@pytest.mark.parametrize("case", range(len(TRUNCATIONS) - 1))
def test_candidates_keep_exactly_the_full_sorts_tokens_and_probabilities(case: int) -> None:
    params = TRUNCATIONS[case]
    gen = seeded(7)
    vocab_size = 5000
    logits = torch.randn(64, vocab_size, generator=gen) * torch.linspace(0.01, 6, 64).unsqueeze(1)
    # Ties at the top-k cutoff inside and across the candidates' edge: the full sort keeps every tied token.
    logits[0, :100] = 50.0
    logits[1, :3] = 50.0
    scaled = logits / params.get("temperature", 1.0)
    if params.get("min_p", 0.0) > 0:
        _apply_min_p(scaled, torch.full((64,), params["min_p"]))
    top_k = torch.full((64,), int(params.get("top_k", 0))) if "top_k" in params else None
    top_p = torch.full((64,), params.get("top_p", 1.0)) if "top_p" in params else None
    reference = scaled.clone()
    _mask_outside_top_k_top_p(reference, top_k, top_p)
    whole_row_mass = "top_p" in params and "top_k" not in params
    num_candidates = NUCLEUS_CANDIDATES if whole_row_mass else int(params["top_k"])
    candidates, candidate_ids, exact = _top_candidates(scaled, top_k, top_p, num_candidates, whole_row_mass)
    assert exact.any()
    for row in torch.nonzero(exact).flatten().tolist():
        kept = candidate_ids[row][candidates[row] > float("-inf")]
        assert sorted(kept.tolist()) == torch.nonzero(reference[row] > float("-inf")).flatten().tolist()
        # float32 softmax over the same values, summed in another order: a few ulps.
        torch.testing.assert_close(
            candidates[row].softmax(-1), reference[row].softmax(-1)[candidate_ids[row]], rtol=1e-5, atol=1e-7
        )
    # Where the candidates do not decide a row, the nucleus or a tie reaches past them.
    for row in torch.nonzero(~exact).flatten().tolist():
        num_kept = int((reference[row] > float("-inf")).sum())
        assert num_kept >= candidates.shape[1]


def test_greedy_argmax_matches_torch_on_ties_infinities_and_nan() -> None:
    logits = torch.randn(6, 300)
    logits[1, [5, 9]] = 100.0  # a tie: the first
    logits[2] = float("-inf")  # all masked: 0
    logits[3, 7] = float("nan")  # nan counts as the maximum
    logits[4, [11, 200]] = float("inf")
    assert greedy_argmax(logits).tolist() == logits.argmax(dim=-1).tolist()


@pytest.mark.parametrize("width", [1, 7, 8, 13, 4099])
def test_greedy_argmax_across_threads_widths_and_strided_rows(width: int) -> None:
    """Enough rows to split over threads, widths off the kernel's 8 lanes, rows that are views with a
    longer stride, and the special values in the vectorised body and in the tail."""
    generator = torch.Generator().manual_seed(width)
    storage = torch.randn(300, width + 5, generator=generator)
    logits = storage[:, :width]  # row stride width + 5
    logits[1] = float("-inf")
    logits[2, -1] = float("nan")
    logits[3, 0] = float("nan")
    logits[4, :] = 1.0  # all tied: the first
    logits[5, -1] = float("inf")
    logits[6, width // 2] = float("nan")
    logits[6, 0] = float("inf")
    with torch.inference_mode():
        threads = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            ours = greedy_argmax(logits)
        finally:
            torch.set_num_threads(threads)
    assert ours.dtype == torch.int64
    assert ours.tolist() == logits.argmax(dim=-1).tolist()


def test_logprobs_only_for_the_rows_that_ask() -> None:
    torch.manual_seed(11)
    logits = torch.randn(5, 50)
    metadata = make_metadata([0.0, 1.0, 0.0, 0.5, 0.0], top_k=[0, 5, 0, 0, 0], num_logprobs=[-1, 2, 4, -1, 0])
    assert metadata.logprob_rows is not None and metadata.logprob_rows.tolist() == [1, 2, 4]
    out = Sampler()(logits, metadata)
    assert out.logprobs is not None
    expected = rank_logprobs(logits, out.sampled_token_ids, 4)
    for row in (1, 2, 4):
        assert out.logprobs.token_ids[row].tolist() == expected.token_ids[row].tolist()
        assert out.logprobs.ranks[row] == expected.ranks[row]
        torch.testing.assert_close(out.logprobs.logprobs[row], expected.logprobs[row], rtol=0, atol=0)
    # The same from the raw rows alone, as the logits pipeline passes them.
    out_raw = Sampler()(logits + 1.0, metadata, raw_logits=logits[[1, 2, 4]])
    assert out_raw.logprobs is not None
    assert (
        out_raw.logprobs.token_ids[[1, 2, 4]].tolist()
        == rank_logprobs(logits[[1, 2, 4]], out_raw.sampled_token_ids[[1, 2, 4]], 4).token_ids.tolist()
    )


@pytest.mark.parametrize(("width", "k"), [(1, 1), (13, 5), (40, 40), (4099, 1), (4099, 50), (4099, 256)])
def test_row_topk_equals_a_stable_full_sort(width: int, k: int) -> None:
    """Values and ids of the stable descending sort's first k: NaN first, ties by lower id, on strided rows
    split over threads, with ties and special values in the vectorised body and in the tail."""
    generator = torch.Generator().manual_seed(width + k)
    storage = torch.randn(300, width + 3, generator=generator)
    logits = storage[:, :width]
    logits[1] = float("-inf")
    logits[2, -1] = float("nan")
    logits[3, ::3] = 2.5  # many ties at the top
    logits[4] = 1.0  # all tied
    logits[5, [0, width // 2]] = float("nan")
    logits[6] = (logits[6] * 4).round()  # ties everywhere
    logits[7, -1] = float("inf")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        values, ids = row_topk(logits, k)
    finally:
        torch.set_num_threads(threads)
    expected = logits.sort(dim=-1, descending=True, stable=True)
    assert torch.equal(ids, expected.indices[:, :k])
    torch.testing.assert_close(values, expected.values[:, :k], rtol=0, atol=0, equal_nan=True)
