"""Sampler: the processed logits of the rows to sample this step -> token ids, plus raw logprobs on request.

One row per request that reaches the end of its known tokens this step. Per random row, in this order:

    logits / temperature -> min-p -> top-k -> top-p (on the renormalised survivors) -> exponential race

Greedy rows (temperature < 1e-5) take the argmax of the logits as given. Logprobs are "raw": log_softmax
of the logits before temperature and filtering (of `raw_logits` when given, i.e. before the logits
processors too), so they do not depend on the sampling parameters.

Hot path: this runs every step on the device that holds the logits. Everything is batched over rows and
vocabulary; the only per-row Python loop is over the few seeded rows in `_exponential_noise`, and nothing
reads a device value back on the host (the host-side flags in `SamplingMetadata` pick the fast paths).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kvserve.model.logprobs import LogprobsTensors, rank_logprobs

# Shared with SamplingParams.greedy, so the runner's host flags and the per-row test here agree.
from kvserve.sampling_params import GREEDY_TEMPERATURE


@dataclass(slots=True)
class SamplingMetadata:
    """Per-row sampling parameters of one step, S rows; every tensor lives on the logits' device.

    Validation looks only at shapes and host values: reading a device value would cost a sync per step.
    """

    temperature: torch.Tensor  # [S] float32; < GREEDY_TEMPERATURE means greedy
    top_k: torch.Tensor  # [S] int64; <= 0 or >= vocab size disables top-k for the row
    top_p: torch.Tensor  # [S] float32 in (0, 1]; 1.0 disables
    min_p: torch.Tensor  # [S] float32 in [0, 1]; 0.0 disables
    # Row index -> the request's own generator, on the logits' device. Each sampler call that is not
    # all-greedy draws exactly one vector of V exponentials from it, wherever the row sits in the batch.
    generators: dict[int, torch.Generator]
    # -1: no row wants logprobs; k >= 0: the sampled token's logprob plus the top k (k = max over rows).
    max_num_logprobs: int
    all_greedy: bool
    all_random: bool
    no_top_k: bool
    no_top_p: bool
    no_min_p: bool

    def __post_init__(self) -> None:
        num_rows = self.temperature.shape[0] if self.temperature.dim() == 1 else -1
        for name in ("temperature", "top_k", "top_p", "min_p"):
            shape = tuple(getattr(self, name).shape)
            if shape != (num_rows,):
                raise ValueError(f"SamplingMetadata.{name} must have shape [{num_rows}], got {list(shape)}")
        if self.max_num_logprobs < -1:
            raise ValueError(f"max_num_logprobs must be -1 or >= 0, got {self.max_num_logprobs}")
        if self.all_greedy and self.all_random and num_rows > 0:
            raise ValueError("a non-empty batch cannot be both all_greedy and all_random")
        bad_rows = [row for row in self.generators if not 0 <= row < num_rows]
        if bad_rows:
            raise ValueError(f"generator rows {bad_rows} are outside the batch of {num_rows} rows")


@dataclass(frozen=True, slots=True)
class SamplerOutput:
    sampled_token_ids: torch.Tensor  # [S] int64
    logprobs: LogprobsTensors | None  # None when max_num_logprobs == -1


class Sampler:
    """Stateless; the caller's `logits` and `raw_logits` are never modified."""

    __slots__ = ()

    def __call__(
        self,
        logits: torch.Tensor,  # [S, V] float32, bfloat16 or float16, after the logits processors
        metadata: SamplingMetadata,
        raw_logits: torch.Tensor | None = None,  # [S, V] before the logits processors
    ) -> SamplerOutput:
        if logits.dim() != 2 or logits.shape[0] != metadata.temperature.shape[0]:
            raise ValueError(
                f"logits must be [S, V] with S = {metadata.temperature.shape[0]} rows, got {list(logits.shape)}"
            )
        if raw_logits is not None and raw_logits.shape != logits.shape:
            raise ValueError(f"raw_logits shape {list(raw_logits.shape)} differs from logits {list(logits.shape)}")
        if metadata.max_num_logprobs > logits.shape[1]:
            raise ValueError(
                f"max_num_logprobs {metadata.max_num_logprobs} exceeds the vocabulary size {logits.shape[1]}"
            )

        sampled_token_ids = _sample(logits, metadata)
        # After sampling, so the [S, V] float32 logprobs do not add to the sampling math's peak memory.
        logprobs = None
        if metadata.max_num_logprobs >= 0:
            source = raw_logits if raw_logits is not None else logits
            logprobs = rank_logprobs(source, sampled_token_ids, metadata.max_num_logprobs)
        return SamplerOutput(sampled_token_ids=sampled_token_ids, logprobs=logprobs)


def _sample(logits: torch.Tensor, metadata: SamplingMetadata) -> torch.Tensor:
    if metadata.all_greedy:
        return logits.argmax(dim=-1)
    random_token_ids = _random_sample(logits, metadata)
    if metadata.all_random:
        return random_token_ids
    # Greedy rows also went through the random path (one batched pass beats splitting the batch); their
    # draws are discarded here, so randomness never reaches them.
    greedy_token_ids = logits.argmax(dim=-1)
    return torch.where(metadata.temperature < GREEDY_TEMPERATURE, greedy_token_ids, random_token_ids)


def _random_sample(logits: torch.Tensor, metadata: SamplingMetadata) -> torch.Tensor:
    # Greedy rows divide by 1 instead of ~0: their result is discarded, but inf/nan logits are not wanted.
    temperature = torch.where(metadata.temperature < GREEDY_TEMPERATURE, 1.0, metadata.temperature)
    # A fresh float32 tensor (type promotion with the float32 temperature), so the in-place masking below
    # never reaches the caller's logits, whatever their dtype.
    scaled = logits / temperature.to(torch.float32).unsqueeze(1)
    if not metadata.no_min_p:
        _apply_min_p(scaled, metadata.min_p)
    if not (metadata.no_top_k and metadata.no_top_p):
        _apply_top_k_top_p(
            scaled,
            None if metadata.no_top_k else metadata.top_k,
            None if metadata.no_top_p else metadata.top_p,
        )
    probs = scaled.softmax(dim=-1)
    # Exponential race: argmax_i p_i / q_i with q_i ~ Exp(1) picks token i with probability p_i. Unlike
    # torch.multinomial it needs no host sync, and each seeded row consumes a fixed number of draws.
    noise = _exponential_noise(probs, metadata.generators)
    return probs.div_(noise).argmax(dim=-1)


def _apply_min_p(scaled: torch.Tensor, min_p: torch.Tensor) -> None:
    """Masks, in place, the tokens whose probability is below min_p times the row's top probability."""
    probs = scaled.softmax(dim=-1)
    threshold = probs.amax(dim=-1, keepdim=True) * min_p.unsqueeze(1)
    scaled.masked_fill_(probs < threshold, float("-inf"))


def _apply_top_k_top_p(scaled: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None) -> None:
    """Masks, in place, the tokens outside each row's top k, then outside its top-p nucleus.

    Both filters keep a prefix of the row sorted by logit, so each reduces to one cutoff logit per row and
    a single mask on the unsorted logits: no scatter back. Tokens tied with the cutoff are all kept.
    """
    vocab_size = scaled.shape[-1]
    sorted_logits = scaled.sort(dim=-1, descending=True).values
    cutoff = sorted_logits[:, -1:]  # each row's smallest logit: without top-k, only top-p may raise it
    if top_k is not None:
        k = torch.where((top_k <= 0) | (top_k >= vocab_size), vocab_size, top_k)
        cutoff = sorted_logits.gather(1, (k - 1).unsqueeze(1))
        # Top-p is measured on the distribution renormalised over the top-k survivors.
        sorted_logits.masked_fill_(sorted_logits < cutoff, float("-inf"))
    if top_p is not None:
        # inf, not 1.0, for disabled rows: float32 cumsum can reach 1.0 before the last tokens with mass.
        p = torch.where(top_p >= 1.0, float("inf"), top_p).unsqueeze(1)
        cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
        # The smallest prefix whose mass reaches p: every position still short of p, plus the next one.
        num_kept = (cumulative < p).sum(dim=-1, keepdim=True).add_(1).clamp_(max=vocab_size)
        # The maximum guards top-k: if rounding leaves the survivors' mass short of p, the nucleus would
        # run into the masked -inf tail.
        cutoff = torch.maximum(cutoff, sorted_logits.gather(1, num_kept - 1))
    scaled.masked_fill_(scaled < cutoff, float("-inf"))


def _exponential_noise(probs: torch.Tensor, generators: dict[int, torch.Generator]) -> torch.Tensor:
    noise = torch.empty_like(probs)
    if len(generators) < noise.shape[0]:
        noise.exponential_()
    # The one per-row loop of the step, over seeded rows only: each draws from its own generator, so its
    # tokens do not depend on its row index or on its neighbours.
    for row, generator in generators.items():
        noise[row].exponential_(generator=generator)
    # An exact 0 draw would make a masked token's 0 / 0 = nan, and argmax takes nan as the maximum.
    return noise.clamp_(min=torch.finfo(noise.dtype).tiny)
