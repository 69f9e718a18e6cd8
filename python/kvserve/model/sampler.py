"""Sampler: the processed logits of the rows to sample this step -> token ids, plus raw logprobs on request.

Stages (c) temperature and truncation and (d) sampling of the logits pipeline (model/logits_pipeline.py).

One row per request that reaches the end of its known tokens this step. The work is proportional to what the
rows ask for; the batch is split by row class once, on the host (`build_sampling_metadata`):

    greedy rows (temperature < 1e-5)   an argmax of the logits as given, nothing else
    random rows                        logits / temperature -> min-p -> top-k -> top-p -> exponential race
    logprob rows                       log_softmax and the top n, for the rows that asked only

Truncation (top-k, top-p) is a partial selection: the top K candidates of each row (`row_topk`), K the largest top-k
asked (or `NUCLEUS_CANDIDATES` for a top-p row without one). Top-p needs the nucleus' mass against the whole
row, which one logsumexp over the row gives; a row whose nucleus or whose cutoff ties reach past its K
candidates is re-done by the full sort (`_mask_outside_top_k_top_p`), so every row samples from exactly the
set of tokens the full sort keeps, with the same renormalised probabilities.

Logprobs are "raw": log_softmax of the logits before temperature and filtering (of `raw_logits` when given,
i.e. before the bias, penalty and constraint stages too), so they do not depend on the sampling parameters.

The [R, V] temporaries of random rows live in a `Workspace` the Sampler keeps between steps (two float32
buffers): fresh ones of 50 MB would be mapped and page-faulted anew each step.

The race's Exp(1) draws come on the CPU from a counter-based kernel (model/random_draws.py), a seeded
request's from its own stream, elsewhere from torch's generators. On the CPU, rows that only scale by
temperature race in one C++ pass over their logits (`exponential_race`), with no [R, V] temporaries.

Hot path: this runs every step on the device that holds the logits. Everything is batched over rows and
vocabulary; the only per-row Python loops are over the few seeded rows (their draws, in `_random_sample`,
`_race` and `exponential_race`). The host-side values in `SamplingMetadata` pick the paths; the one device
value read back is whether any truncated row needs the full sort (only in steps with top-k or top-p rows).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from kvserve import _core
from kvserve.model.logprobs import LogprobsTensors, rank_logprobs
from kvserve.model.random_draws import PhiloxStream, exponential_race, fill_exponentials, fits_exponential_race

# Shared with SamplingParams.greedy, so the runner's host flags and the per-row test here agree.
from kvserve.sampling_params import GREEDY_TEMPERATURE

# Candidates per row for top-p without top-k: the nucleus of a trained model's distribution at usual
# temperatures is a few dozen tokens; flatter rows fall back to the full sort.
NUCLEUS_CANDIDATES = 256


@dataclass(frozen=True, slots=True)
class RandomRows:
    """The rows that sample at random, as a sub-batch of R rows; every tensor is on the logits' device."""

    rows: torch.Tensor | None  # [R] int64 rows of the batch; None when every row samples at random
    temperature: torch.Tensor  # [R] float32, each >= GREEDY_TEMPERATURE
    min_p: torch.Tensor | None  # [R] float32; None when no row uses min-p
    top_k: torch.Tensor | None  # [R] int64, 0 = off; None when no row uses top-k
    top_p: torch.Tensor | None  # [R] float32, 1.0 = off; None when no row uses top-p
    # Host: positions (in R) of the rows that use top-k or top-p; candidates per truncated row (the largest
    # top-k, or NUCLEUS_CANDIDATES when a top-p row has no top-k); whether such a row needs its whole
    # row's mass (top-p without top-k).
    truncated: np.ndarray
    num_candidates: int
    whole_row_mass: bool
    # Position in R -> the request's own generator (random_draws.seeded_stream). Each sampler call draws
    # exactly one vector of V exponentials from it, whatever path the row takes and wherever it sits in the batch.
    generators: dict[int, torch.Generator | PhiloxStream]


@dataclass(frozen=True, slots=True)
class SamplingMetadata:
    num_rows: int
    random: RandomRows | None  # None: every row is greedy
    greedy_rows: torch.Tensor | None  # [G] int64 when greedy and random rows mix; else None
    # -1: no row wants logprobs; n >= 0: the sampled token's logprob plus the top n (n = max over rows).
    max_num_logprobs: int
    logprob_rows: torch.Tensor | None  # [L] int64 rows that want logprobs; None when all rows do (or none)


def build_sampling_metadata(
    temperature: np.ndarray,  # [S] float32
    top_k: np.ndarray,  # [S] int64; <= 0 or >= vocab size disables top-k for the row
    top_p: np.ndarray,  # [S] float32 in (0, 1]; 1.0 disables
    min_p: np.ndarray,  # [S] float32 in [0, 1]; 0.0 disables
    num_logprobs: np.ndarray,  # [S] int; -1: the row wants no logprobs
    generators: dict[int, torch.Generator | PhiloxStream],  # batch row -> the request's generator
    to_device: Callable[[np.ndarray], torch.Tensor],
) -> SamplingMetadata:
    """The step's split by row class and its host-side flags, from the host copies of the parameters.

    Flags use np.count_nonzero: on a few hundred rows it costs a fraction of .any()/.all()/.max().
    """
    num_rows = len(temperature)
    for name, column in (("top_k", top_k), ("top_p", top_p), ("min_p", min_p), ("num_logprobs", num_logprobs)):
        if column.shape != (num_rows,):
            raise ValueError(f"{name} must have shape [{num_rows}], got {list(column.shape)}")
    if num_rows and num_logprobs.min() < -1:
        raise ValueError(f"num_logprobs must be -1 or >= 0, got {int(num_logprobs.min())}")
    bad_rows = [row for row in generators if not 0 <= row < num_rows]
    if bad_rows:
        raise ValueError(f"generator rows {bad_rows} are outside the batch of {num_rows} rows")

    is_random = temperature >= GREEDY_TEMPERATURE
    num_random = np.count_nonzero(is_random)
    random = greedy_rows = None
    if num_random:
        rows = None if num_random == num_rows else np.flatnonzero(is_random)
        random = _random_rows(temperature, top_k, top_p, min_p, rows, generators, to_device)
        if rows is not None:
            greedy_rows = to_device(np.flatnonzero(~is_random))
    wants = num_logprobs >= 0
    num_wanting = np.count_nonzero(wants)
    return SamplingMetadata(
        num_rows=num_rows,
        random=random,
        greedy_rows=greedy_rows,
        max_num_logprobs=int(num_logprobs.max()) if num_wanting else -1,
        logprob_rows=to_device(np.flatnonzero(wants)) if 0 < num_wanting < num_rows else None,
    )


def _random_rows(
    temperature: np.ndarray,
    top_k: np.ndarray,
    top_p: np.ndarray,
    min_p: np.ndarray,
    rows: np.ndarray | None,
    generators: dict[int, torch.Generator | PhiloxStream],
    to_device: Callable[[np.ndarray], torch.Tensor],
) -> RandomRows:
    if rows is not None:
        temperature, top_k, top_p, min_p = temperature[rows], top_k[rows], top_p[rows], min_p[rows]
        # Seeded greedy rows draw nothing: their generators are left out.
        positions = np.searchsorted(rows, list(generators)).tolist()
        seeded = {
            pos: gen for pos, (row, gen) in zip(positions, generators.items()) if pos < len(rows) and rows[pos] == row
        }
    else:
        seeded = generators
    uses_top_k, uses_top_p = top_k > 0, top_p < 1.0
    truncated = np.flatnonzero(uses_top_k | uses_top_p)
    whole_row_mass = bool(np.count_nonzero(uses_top_p & ~uses_top_k))
    max_top_k = int(top_k[truncated].max()) if len(truncated) else 0
    return RandomRows(
        rows=None if rows is None else to_device(rows),
        temperature=to_device(temperature),
        min_p=to_device(min_p) if np.count_nonzero(min_p > 0.0) else None,
        top_k=to_device(top_k) if np.count_nonzero(uses_top_k) else None,
        top_p=to_device(top_p) if np.count_nonzero(uses_top_p) else None,
        truncated=truncated,
        num_candidates=max(max_top_k, NUCLEUS_CANDIDATES) if whole_row_mass else max_top_k,
        whole_row_mass=whole_row_mass,
        generators=seeded,
    )


@dataclass(frozen=True, slots=True)
class SamplerOutput:
    sampled_token_ids: torch.Tensor  # [S] int64
    logprobs: LogprobsTensors | None  # None when max_num_logprobs == -1; [S] rows, zero where not asked


class Sampler:
    """Holds no request state, only a workspace; the caller's `logits` and `raw_logits` are never modified."""

    __slots__ = ("_workspace",)

    def __init__(self) -> None:
        self._workspace = Workspace()

    def __call__(
        self,
        logits: torch.Tensor,  # [S, V] float32, bfloat16 or float16, after the logits processors
        metadata: SamplingMetadata,
        raw_logits: torch.Tensor | None = None,  # [S, V] (or [L, V]: the logprob rows) before the processors
    ) -> SamplerOutput:
        if logits.dim() != 2 or logits.shape[0] != metadata.num_rows:
            raise ValueError(f"logits must be [S, V] with S = {metadata.num_rows} rows, got {list(logits.shape)}")
        if raw_logits is not None and raw_logits.shape[1:] != logits.shape[1:]:
            raise ValueError(f"raw_logits shape {list(raw_logits.shape)} differs from logits {list(logits.shape)}")
        if metadata.max_num_logprobs > logits.shape[1]:
            raise ValueError(
                f"max_num_logprobs {metadata.max_num_logprobs} exceeds the vocabulary size {logits.shape[1]}"
            )
        sampled_token_ids = _sample(logits, metadata, self._workspace)
        logprobs = None
        if metadata.max_num_logprobs >= 0:
            logprobs = _logprobs(logits, raw_logits, sampled_token_ids, metadata)
        return SamplerOutput(sampled_token_ids=sampled_token_ids, logprobs=logprobs)


def greedy_argmax(logits: torch.Tensor) -> torch.Tensor:
    """Row-wise argmax (the first maximum, NaN counting as the maximum, as torch.argmax).

    On the CPU, a C++ kernel splits the rows over torch's threads (the 50 MB of 256 rows x 49k logits are
    more than one core streams at memory speed); torch's CPU argmax (2.13) is an order of magnitude slower
    on 49k-wide rows, and numpy's runs on one core.
    """
    if logits.device.type == "cpu" and logits.dtype == torch.float32 and logits.shape[1] > 0 and logits.stride(1) == 1:
        rows = logits.shape[0]
        out = torch.empty(rows, dtype=torch.int64)
        _core.cpu.row_argmax(
            out.data_ptr(), logits.data_ptr(), rows, logits.shape[1], logits.stride(0), torch.get_num_threads()
        )
        return out
    return logits.argmax(dim=-1)


def row_topk(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Each row's k largest values and their token ids, in descending order (torch.topk's `sorted=True`; NaN
    first; among equal values the lower id first).

    On the CPU a C++ kernel keeps a heap of each row's best k while it scans the row, skipping the blocks of
    values that cannot enter, with rows split over torch's threads; torch's CPU topk (2.13) copies every row
    into (value, index) pairs first and costs ~30x more at 256 rows x 49k.
    """
    rows, cols = logits.shape
    if logits.device.type != "cpu" or logits.dtype != torch.float32 or logits.stride(1) != 1 or not 0 < k <= cols:
        return logits.topk(k, dim=-1)
    values = torch.empty(rows, k)
    token_ids = torch.empty(rows, k, dtype=torch.int64)
    _core.cpu.row_topk(
        values.data_ptr(), token_ids.data_ptr(), logits.data_ptr(), rows, cols, logits.stride(0), k,
        torch.get_num_threads(),
    )  # fmt: skip
    return values, token_ids


class Workspace:
    """Two [rows, V] float32 buffers kept between steps on the CPU: the scaled logits and the noise of random
    rows.

    Fresh tensors of that size (50 MB at 256 x 49,152) are above glibc's largest mmap threshold, so each
    would be mapped and page-faulted anew every step, which costs more than the arithmetic on them.
    """

    __slots__ = ("_buffers",)

    def __init__(self) -> None:
        self._buffers: list[torch.Tensor | None] = [None, None]

    def take(self, index: int, like: torch.Tensor) -> torch.Tensor:
        """Buffer `index` as float32 of `like`'s shape and device (contents undefined)."""
        rows, width = like.shape
        if like.device.type != "cpu":  # CUDA's caching allocator reuses freed blocks; no memory held here
            return torch.empty(rows, width, dtype=torch.float32, device=like.device)
        buffer = self._buffers[index]
        if buffer is None or buffer.device != like.device or buffer.shape[1] != width or buffer.shape[0] < rows:
            buffer = torch.empty(max(rows, 1), width, dtype=torch.float32, device=like.device)
            self._buffers[index] = buffer
        return buffer[:rows]


def _sample(logits: torch.Tensor, metadata: SamplingMetadata, workspace: Workspace) -> torch.Tensor:
    random = metadata.random
    if random is None:
        return greedy_argmax(logits)
    if random.rows is None:
        return _random_sample(logits, random, workspace)
    token_ids = torch.empty(metadata.num_rows, dtype=torch.int64, device=logits.device)
    token_ids[metadata.greedy_rows] = greedy_argmax(logits[metadata.greedy_rows])
    token_ids[random.rows] = _random_sample(logits[random.rows], random, workspace)
    return token_ids


def _logprobs(
    logits: torch.Tensor, raw_logits: torch.Tensor | None, token_ids: torch.Tensor, metadata: SamplingMetadata
) -> LogprobsTensors:
    rows = metadata.logprob_rows
    if rows is None:
        return rank_logprobs(raw_logits if raw_logits is not None else logits, token_ids, metadata.max_num_logprobs)
    if raw_logits is not None and raw_logits.shape[0] == metadata.num_rows:
        raw_logits = raw_logits[rows]
    source = raw_logits if raw_logits is not None else logits[rows]
    wanted = rank_logprobs(source, token_ids[rows], metadata.max_num_logprobs)
    # Rows aligned with the batch; the rows that did not ask are zeros nobody reads.
    width = wanted.token_ids.shape[1]
    full = LogprobsTensors(
        token_ids=token_ids.new_zeros(metadata.num_rows, width),
        logprobs=wanted.logprobs.new_zeros(metadata.num_rows, width),
        ranks=wanted.ranks.new_zeros(metadata.num_rows),
    )
    full.token_ids[rows], full.logprobs[rows], full.ranks[rows] = wanted.token_ids, wanted.logprobs, wanted.ranks
    return full


def _random_sample(logits: torch.Tensor, random: RandomRows, workspace: Workspace) -> torch.Tensor:
    if random.min_p is None and len(random.truncated) == 0 and fits_exponential_race(logits, random.generators):
        # Every row races over its whole vocabulary: one C++ pass a row, no [R, V] temporaries.
        return exponential_race(logits, random.temperature, random.generators)
    # Into the workspace, in float32 whatever the logits' dtype: the in-place work below never reaches the
    # caller's logits.
    scaled = torch.div(logits, random.temperature.unsqueeze(1), out=workspace.take(0, logits))
    if random.min_p is not None:
        _apply_min_p(scaled, random.min_p, workspace)
    # Each seeded row's V exponentials, drawn once whatever path its row takes (see RandomRows.generators).
    noise = {pos: _exponentials(scaled, generator) for pos, generator in random.generators.items()}
    num_rows, truncated = scaled.shape[0], random.truncated
    if len(truncated) == 0:
        return _race(scaled, None, noise, workspace)
    if len(truncated) == num_rows:
        return _truncated_sample(scaled, random, random.top_k, random.top_p, noise, workspace)
    # Rows without truncation sample from the whole row, the others from their candidates.
    plain = np.setdiff1d(np.arange(num_rows), truncated, assume_unique=True)
    plain_rows, truncated_rows = (torch.from_numpy(r).to(scaled.device) for r in (plain, truncated))
    token_ids = torch.empty(num_rows, dtype=torch.int64, device=scaled.device)
    token_ids[plain_rows] = _race(scaled[plain_rows], None, _noise_of(noise, plain), workspace)
    token_ids[truncated_rows] = _truncated_sample(
        scaled[truncated_rows],
        random,
        None if random.top_k is None else random.top_k[truncated_rows],
        None if random.top_p is None else random.top_p[truncated_rows],
        _noise_of(noise, truncated),
        workspace,
    )
    return token_ids


def _noise_of(noise: dict[int, torch.Tensor], rows: np.ndarray) -> dict[int, torch.Tensor]:
    """The seeded draws of a sub-batch made of `rows`, keyed by position in it."""
    return {i: noise[row] for i, row in enumerate(rows.tolist()) if row in noise} if noise else {}


def _truncated_sample(
    scaled: torch.Tensor,
    random: RandomRows,
    top_k: torch.Tensor | None,
    top_p: torch.Tensor | None,
    noise: dict[int, torch.Tensor],
    workspace: Workspace,
) -> torch.Tensor:
    """Samples rows that all use top-k or top-p (`top_k`, `top_p`: theirs): from their candidates, or by
    the full sort where those do not decide the row."""
    candidates, candidate_ids, exact = _top_candidates(
        scaled, top_k, top_p, random.num_candidates, random.whole_row_mass, workspace
    )
    token_ids = _race(candidates, candidate_ids, noise, None)
    inexact = torch.nonzero(~exact).flatten()
    if len(inexact):  # reads back one device value; rare with a trained model's distributions
        full = scaled[inexact]
        _mask_outside_top_k_top_p(
            full, None if top_k is None else top_k[inexact], None if top_p is None else top_p[inexact]
        )
        token_ids[inexact] = _race(full, None, _noise_of(noise, inexact.cpu().numpy()), workspace)
    return token_ids


def _top_candidates(
    scaled: torch.Tensor,
    top_k: torch.Tensor | None,
    top_p: torch.Tensor | None,
    num_candidates: int,
    whole_row_mass: bool = True,
    workspace: Workspace | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each row's K best tokens, with the ones outside its top-k and top-p masked to -inf: candidate
    logits [R, K] and token ids [R, K], and [R] whether they hold exactly the tokens the full sort keeps.

    A row is not exact when its nucleus needs more than K tokens, or when a token outside the candidates
    ties its cutoff (the full sort keeps every token tied with the cutoff).
    """
    vocab_size = scaled.shape[1]
    k_max = min(vocab_size, num_candidates)
    values, token_ids = row_topk(scaled, k_max)  # sorted, descending
    cutoff = values.new_full((values.shape[0], 1), float("-inf"))
    settled = torch.zeros_like(cutoff, dtype=torch.bool)  # rows whose top-p cannot reach past the candidates
    if top_k is not None:
        k = top_k.unsqueeze(1)
        settled = (k > 0) & (k < vocab_size)
        cutoff = torch.where(settled, values.gather(1, k.clamp(1, k_max) - 1), cutoff)
    masked = values.masked_fill(values < cutoff, float("-inf"))
    if top_p is not None:
        p = top_p.unsqueeze(1)
        # Top-p is measured on the distribution renormalised over the top-k survivors, which all lie among
        # the candidates (or the row is not exact anyway); without top-k, over the whole row.
        log_total = masked.logsumexp(-1, keepdim=True)
        if whole_row_mass:  # some top-p row has no top-k
            weights, peak = _relative_weights(scaled, workspace)
            row_total = weights.sum(dim=-1, keepdim=True).log_().add_(peak)
            log_total = row_total if top_k is None else torch.where(settled, log_total, row_total)
        cumulative = (masked - log_total).exp_().cumsum(dim=-1)
        # The smallest prefix whose mass reaches p: every position still short of p, plus the next one.
        num_kept = (cumulative < p).sum(dim=-1, keepdim=True).add_(1)
        off = p >= 1.0
        settled = settled | off | (num_kept <= k_max)
        # The maximum guards top-k: if rounding leaves the survivors' mass short of p, the nucleus would
        # run into the masked -inf tail.
        nucleus_cutoff = masked.gather(1, num_kept.clamp_(max=k_max) - 1)
        cutoff = torch.where(off, cutoff, torch.maximum(cutoff, nucleus_cutoff))
    exact = settled.squeeze(1)
    if k_max < vocab_size:
        # Tokens outside the candidates are at most the last candidate: only a row whose last candidate
        # is kept (and finite: -inf tokens have no mass) can have a token outside that ties its cutoff;
        # count those rows' kept tokens in full.
        last = values[:, -1]
        risky = torch.nonzero(exact & (last >= cutoff[:, 0]) & (last > float("-inf"))).flatten()
        if len(risky):
            in_row = (scaled[risky] >= cutoff[risky]).sum(dim=-1)
            exact[risky] = in_row == (values[risky] >= cutoff[risky]).sum(dim=-1)
    return values.masked_fill_(values < cutoff, float("-inf")), token_ids, exact


def _race(
    logits: torch.Tensor,
    token_ids: torch.Tensor | None,
    seeded_noise: dict[int, torch.Tensor],
    workspace: Workspace | None,
) -> torch.Tensor:
    """Samples each row of `logits` [R, C] in proportion to its softmax; C = V, or the candidates of
    `token_ids` [R, C].

    Exponential race: argmax_i p_i / q_i with q_i ~ Exp(1) picks token i with probability p_i. Unlike
    torch.multinomial it needs no host sync, and a seeded row uses its own token's draw wherever the token
    sits among the candidates, so it picks what it would pick from the whole row. With a workspace, `logits`
    (then float32, and the caller's no more) become the probabilities in place and the noise goes into the
    workspace: no new [R, V] tensor.
    """
    if workspace is None:
        probs, noise = logits.softmax(dim=-1), torch.empty_like(logits)
    else:
        probs = logits.sub_(logits.amax(dim=-1, keepdim=True)).exp_()
        probs.div_(probs.sum(dim=-1, keepdim=True))
        noise = workspace.take(1, probs)
    if len(seeded_noise) < noise.shape[0]:
        fill_exponentials(noise)
    # The one per-row loop of the step, over seeded rows only.
    for row, draws in seeded_noise.items():
        noise[row] = draws if token_ids is None else draws[token_ids[row]]
    # An exact 0 draw would make a masked token's 0 / 0 = nan, and argmax takes nan as the maximum.
    noise.clamp_(min=torch.finfo(noise.dtype).tiny)
    choice = greedy_argmax(probs.div_(noise))
    return choice if token_ids is None else token_ids.gather(1, choice.unsqueeze(1)).squeeze(1)


def _exponentials(scaled: torch.Tensor, generator: torch.Generator | PhiloxStream) -> torch.Tensor:
    if isinstance(generator, PhiloxStream):
        return generator.exponentials(scaled.shape[1]).to(scaled.dtype)
    return torch.empty(scaled.shape[1], dtype=scaled.dtype, device=scaled.device).exponential_(generator=generator)


def _relative_weights(scaled: torch.Tensor, workspace: Workspace | None) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(scaled - row max), 1 at each row's maximum (in the workspace's second buffer when given), and the
    row max [R, 1]."""
    peak = scaled.amax(dim=-1, keepdim=True)
    out = None if workspace is None else workspace.take(1, scaled)
    return torch.sub(scaled, peak, out=out).exp_(), peak


def _apply_min_p(scaled: torch.Tensor, min_p: torch.Tensor, workspace: Workspace | None = None) -> None:
    """Masks, in place, the tokens whose probability is below min_p times the row's top probability: the
    ratio of two probabilities is the exp of their logits' difference, so no softmax is needed."""
    weights, _ = _relative_weights(scaled, workspace)
    scaled.masked_fill_(weights < min_p.unsqueeze(1), float("-inf"))


def _mask_outside_top_k_top_p(scaled: torch.Tensor, top_k: torch.Tensor | None, top_p: torch.Tensor | None) -> None:
    """The full sort: masks, in place, the tokens outside each row's top k, then outside its top-p nucleus.

    The exact path for rows whose candidates do not decide them, and the reference the candidates are
    tested against. Both filters keep a prefix of the row sorted by logit, so each reduces to one cutoff
    logit per row and a single mask on the unsorted logits. Tokens tied with the cutoff are all kept.
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
        num_kept = (cumulative < p).sum(dim=-1, keepdim=True).add_(1).clamp_(max=vocab_size)
        cutoff = torch.maximum(cutoff, sorted_logits.gather(1, num_kept - 1))
    scaled.masked_fill_(scaled < cutoff, float("-inf"))
