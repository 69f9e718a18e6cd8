"""The persistent batch: the sampling state of every request the runner holds, indexed by its batch slot.

The core gives each request a slot in [0, num_slots) for its lifetime (reused lowest-first after it ends).
Each per-slot parameter is a column (a numpy array indexed by slot), written once when the request arrives
and reset when it leaves; a step's sampling metadata is a gather of the columns by `ExecuteBatch.sample_slots`
plus host-side flags computed with numpy on the gathered values. Variable-length options (bias, allowed
ids, bad words, stop ids banned before min_tokens) are per-slot arrays, read only for rows that use them.

Rows with a structured-output grammar keep an llguidance matcher per slot (kvserve.structured.matchers, which
explains why preemption needs no rollback): its mask joins the allowed-ids mask in the constraint stage, and it
advances with each sampled token.

Token histories (prompt, then outputs) are kept only for slots with penalties or bad words, in one
[capacity, width] array that grows by doubling; penalty counts are rebuilt per step from it for those rows
alone, so no full-vocabulary tensor outlives a step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kvserve.model.random_draws import PhiloxStream, seeded_stream
from kvserve.model.sampler import SamplingMetadata, build_sampling_metadata
from kvserve.model.token_bitmask import TokenBitmask, bitmask_width, pack_allowed_ids
from kvserve.request import PreparedRequest
from kvserve.sampling_params import SamplingParams
from kvserve.structured.matchers import GrammarMatchers

# Feature bits per slot: a step asks `features[sample_slots]` which optional work any of its rows needs.
SEEDED = 1
PENALTIES = 2
LOGIT_BIAS = 4
ALLOWED_IDS = 8
BAD_WORDS = 16
MIN_TOKENS = 32
GRAMMAR = 64
PROCESSORS = PENALTIES | LOGIT_BIAS | ALLOWED_IDS | BAD_WORDS | MIN_TOKENS | GRAMMAR
MASKED = ALLOWED_IDS | GRAMMAR
KEEPS_HISTORY = PENALTIES | BAD_WORDS

# Per-slot columns: name -> (dtype, the value of an empty slot).
_COLUMNS: dict[str, tuple[type, float]] = {
    "temperature": (np.float32, 1.0),
    "top_k": (np.int64, 0),
    "top_p": (np.float32, 1.0),
    "min_p": (np.float32, 0.0),
    "presence_penalty": (np.float32, 0.0),
    "frequency_penalty": (np.float32, 0.0),
    "repetition_penalty": (np.float32, 1.0),
    "num_logprobs": (np.int32, -1),
    "min_tokens": (np.int32, 0),
    "num_prompt_tokens": (np.int32, 0),
    "num_output_tokens": (np.int32, 0),
    "features": (np.uint8, 0),
}

_INITIAL_CAPACITY = 16


@dataclass(frozen=True, slots=True)
class Penalties:
    """Rows with presence, frequency or repetition penalties, and their counts rebuilt for this step."""

    rows: torch.Tensor  # [N] int64
    output_counts: torch.Tensor  # [N, V] float32: occurrences among the row's outputs
    seen: torch.Tensor | None  # [N, V] bool: in the prompt or the outputs; None when no row has repetition
    presence: torch.Tensor  # [N] float32
    frequency: torch.Tensor  # [N] float32
    repetition: torch.Tensor  # [N] float32


@dataclass(frozen=True, slots=True)
class ProcessorInputs:
    """What the logits stages need this step; a part is None when no row of the step uses it."""

    penalties: Penalties | None
    bias: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None  # (rows, token ids, values), flat
    bitmask: TokenBitmask | None  # allowed_token_ids and grammars as bitmask rows
    bans: tuple[torch.Tensor, torch.Tensor] | None  # (rows, token ids), flat: bad words, EOS/stop before min


@dataclass(frozen=True, slots=True)
class StepSampling:
    metadata: SamplingMetadata
    processors: ProcessorInputs | None  # None: no row uses a logits processor


class InputBatch:
    temperature: np.ndarray
    top_k: np.ndarray
    top_p: np.ndarray
    min_p: np.ndarray
    presence_penalty: np.ndarray
    frequency_penalty: np.ndarray
    repetition_penalty: np.ndarray
    num_logprobs: np.ndarray
    min_tokens: np.ndarray
    num_prompt_tokens: np.ndarray
    num_output_tokens: np.ndarray
    features: np.ndarray

    def __init__(
        self,
        vocab_size: int,
        device: torch.device,
        capacity: int = _INITIAL_CAPACITY,
        grammars: GrammarMatchers | None = None,
    ) -> None:
        self.vocab_size = vocab_size
        self.device = device
        self.capacity = capacity
        self.grammars = grammars  # None: this batch takes no structured-output requests
        for name, (dtype, empty) in _COLUMNS.items():
            setattr(self, name, np.full(capacity, empty, dtype=dtype))
        self.requests: list[PreparedRequest | None] = [None] * capacity
        self.generators: list[torch.Generator | PhiloxStream | None] = [None] * capacity
        self.bias: list[tuple[np.ndarray, np.ndarray] | None] = [None] * capacity
        self.allowed_ids: list[np.ndarray | None] = [None] * capacity
        self.banned_until_min: list[np.ndarray | None] = [None] * capacity
        self.history = np.zeros((capacity, 0), dtype=np.int32)  # prompt then outputs, KEEPS_HISTORY slots only

    # -- rows added and removed ------------------------------------------------------------------------
    def add(self, slot: int, prepared: PreparedRequest) -> None:
        params = prepared.request.sampling
        if params is not None:
            self._check_token_ids(params)  # before any change, so a refused request leaves no state behind
        if slot >= self.capacity:
            self._grow(max(2 * self.capacity, slot + 1))
        self.remove(slot)
        self.requests[slot] = prepared
        self.num_prompt_tokens[slot] = len(prepared.prompt_token_ids)
        if params is None:  # prefill-only: it never samples
            return
        self.temperature[slot] = params.temperature
        self.top_k[slot] = params.top_k
        self.top_p[slot] = params.top_p
        self.min_p[slot] = params.min_p
        self.presence_penalty[slot] = params.presence_penalty
        self.frequency_penalty[slot] = params.frequency_penalty
        self.repetition_penalty[slot] = params.repetition_penalty
        self.num_logprobs[slot] = -1 if params.logprobs is None else params.logprobs
        self.min_tokens[slot] = params.min_tokens
        self.features[slot] = self._add_options(slot, params, prepared.eos_token_ids)
        if self.features[slot] & KEEPS_HISTORY:
            self._reserve_history(len(prepared.prompt_token_ids))
            self.history[slot, : len(prepared.prompt_token_ids)] = prepared.prompt_token_ids

    def _add_options(self, slot: int, params: SamplingParams, eos_token_ids: tuple[int, ...]) -> int:
        features = 0
        if params.seed is not None:
            self.generators[slot] = seeded_stream(params.seed, self.device)
            features |= SEEDED
        if params.has_penalties:
            features |= PENALTIES
        if params.logit_bias:
            ids, values = zip(*params.logit_bias)
            self.bias[slot] = (np.array(ids, dtype=np.int64), np.array(values, dtype=np.float32))
            features |= LOGIT_BIAS
        if params.allowed_token_ids is not None:
            self.allowed_ids[slot] = np.array(params.allowed_token_ids, dtype=np.int64)
            features |= ALLOWED_IDS
        if params.bad_words_token_ids:
            features |= BAD_WORDS
        if params.structured is not None:
            self.grammars.add(slot, params.structured)
            features |= GRAMMAR
        if params.min_tokens:
            eos = () if params.ignore_eos else eos_token_ids
            # Ids outside the vocabulary can never be sampled, so there is nothing to ban.
            self.banned_until_min[slot] = np.array(
                sorted(t for t in {*eos, *params.stop_token_ids} if t < self.vocab_size), dtype=np.int64
            )
            features |= MIN_TOKENS
        return features

    def _check_token_ids(self, params: SamplingParams) -> None:
        named = {
            "logit_bias": [t for t, _ in params.logit_bias],
            "allowed_token_ids": params.allowed_token_ids or (),
            "bad_words": [t for word in params.bad_words_token_ids for t in word],
        }
        for name, ids in named.items():
            if any(not 0 <= t < self.vocab_size for t in ids):
                raise ValueError(f"{name} has token ids outside the vocabulary of {self.vocab_size}")
        if params.structured is not None and self.grammars is None:
            raise ValueError("this runner has no grammar backend for structured outputs")

    def remove(self, slot: int) -> None:
        if slot >= self.capacity:
            return
        if self.features[slot] & GRAMMAR:
            self.grammars.remove(slot)
        for name, (_, empty) in _COLUMNS.items():
            getattr(self, name)[slot] = empty
        for column in (self.requests, self.generators, self.bias, self.allowed_ids, self.banned_until_min):
            column[slot] = None

    def _grow(self, capacity: int) -> None:
        extra = capacity - self.capacity
        for name, (dtype, empty) in _COLUMNS.items():
            setattr(self, name, np.concatenate([getattr(self, name), np.full(extra, empty, dtype=dtype)]))
        for column in (self.requests, self.generators, self.bias, self.allowed_ids, self.banned_until_min):
            column.extend([None] * extra)
        self.history = np.pad(self.history, ((0, extra), (0, 0)))
        self.capacity = capacity

    def _reserve_history(self, num_tokens: int) -> None:
        width = self.history.shape[1]
        if num_tokens > width:
            self.history = np.pad(self.history, ((0, 0), (0, max(num_tokens, 2 * width) - width)))

    def needs_sampled_ids(self, slots: np.ndarray) -> bool:
        """Whether record_sampled needs the step's token ids (grammars and token histories read them)."""
        return bool((self.features[slots] & (GRAMMAR | KEEPS_HISTORY)).any())

    def record_sampled(self, slots: np.ndarray, token_ids: np.ndarray | None) -> None:
        """After a step: the token each sampled row got (slots are unique within a step); token_ids may be None
        when needs_sampled_ids(slots) is false."""
        self.num_output_tokens[slots] += 1
        if token_ids is None:
            return
        features = self.features[slots]
        for row in np.flatnonzero(features & GRAMMAR).tolist():
            self.grammars.accept(int(slots[row]), int(token_ids[row]))
        keeps = (features & KEEPS_HISTORY) != 0
        if keeps.any():
            kept = slots[keeps]
            ends = self.num_prompt_tokens[kept] + self.num_output_tokens[kept]
            self._reserve_history(int(ends.max()))
            self.history[kept, ends - 1] = token_ids[keeps]

    # -- one step: gathers by sample slot ---------------------------------------------------------------
    # Hot path: everything here is a numpy gather over the step's rows (and the split by row class in
    # build_sampling_metadata); the only per-row Python loops are over rows that use a feature (seeded rows,
    # rows with bias, allowed ids, bad words or min_tokens).
    def step_sampling(self, slots: np.ndarray) -> StepSampling:
        features = self.features[slots]
        used = int(np.bitwise_or.reduce(features)) if np.count_nonzero(features) else 0
        generators = {}
        if used & SEEDED:
            generators = {int(r): self.generators[slots[r]] for r in np.flatnonzero(features & SEEDED)}
        metadata = build_sampling_metadata(
            self.temperature[slots],
            self.top_k[slots],
            self.top_p[slots],
            self.min_p[slots],
            self.num_logprobs[slots],
            generators,
            self._to_device,
        )
        processors = self._processor_inputs(slots, features) if used & PROCESSORS else None
        return StepSampling(metadata, processors)

    def _processor_inputs(self, slots: np.ndarray, features: np.ndarray) -> ProcessorInputs:
        return ProcessorInputs(
            penalties=self._penalties(slots, np.flatnonzero(features & PENALTIES)),
            bias=self._bias(slots, np.flatnonzero(features & LOGIT_BIAS)),
            bitmask=self._bitmask(slots, features),
            bans=self._bans(slots, np.flatnonzero(features & BAD_WORDS), np.flatnonzero(features & MIN_TOKENS)),
        )

    def _penalties(self, slots: np.ndarray, rows: np.ndarray) -> Penalties | None:
        if not len(rows):
            return None
        picked = slots[rows]
        num_prompt = self.num_prompt_tokens[picked][:, None]
        num_tokens = num_prompt + self.num_output_tokens[picked][:, None]
        tokens = self.history[picked, : int(num_tokens.max())]
        columns = np.arange(tokens.shape[1])[None, :]
        # Flat indices into a [N, V] block: row * V + token id.
        flat = tokens + (np.arange(len(rows)) * self.vocab_size)[:, None]
        is_output = (columns >= num_prompt) & (columns < num_tokens)
        size = len(rows) * self.vocab_size
        output_ids = self._to_device(flat[is_output])
        counts = torch.zeros(size, dtype=torch.float32, device=self.device)
        counts.index_add_(0, output_ids, torch.ones_like(output_ids, dtype=torch.float32))
        repetition = self.repetition_penalty[picked]
        seen = None
        if (repetition != 1.0).any():
            seen = torch.zeros(size, dtype=torch.bool, device=self.device)
            seen[self._to_device(flat[columns < num_prompt])] = True
            seen[output_ids] = True
            seen = seen.view(len(rows), self.vocab_size)
        return Penalties(
            rows=self._to_device(rows),
            output_counts=counts.view(len(rows), self.vocab_size),
            seen=seen,
            presence=self._to_device(self.presence_penalty[picked]),
            frequency=self._to_device(self.frequency_penalty[picked]),
            repetition=self._to_device(repetition),
        )

    def _bias(self, slots: np.ndarray, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
        if not len(rows):
            return None
        per_row = [self.bias[slot] for slot in slots[rows].tolist()]
        row_ids = np.repeat(rows, [len(ids) for ids, _ in per_row])
        ids = np.concatenate([ids for ids, _ in per_row])
        values = np.concatenate([values for _, values in per_row])
        return self._to_device(row_ids), self._to_device(ids), self._to_device(values)

    def _bitmask(self, slots: np.ndarray, features: np.ndarray) -> TokenBitmask | None:
        rows = np.flatnonzero(features & MASKED)
        if not len(rows):
            return None
        picked, used = slots[rows], features[rows]
        allowed_rows, grammar_rows = np.flatnonzero(used & ALLOWED_IDS), np.flatnonzero(used & GRAMMAR)
        if len(grammar_rows) == len(rows):  # the common case: only grammars, their masks as they come
            words = self.grammars.fill(picked.tolist())
        else:
            words = np.full((len(rows), bitmask_width(self.vocab_size)), -1, dtype=np.int32)
            if len(allowed_rows):
                allowed = [self.allowed_ids[slot] for slot in picked[allowed_rows].tolist()]
                words[allowed_rows] = pack_allowed_ids(allowed, self.vocab_size)
            if len(grammar_rows):
                words[grammar_rows] &= self.grammars.fill(picked[grammar_rows].tolist())
        return TokenBitmask(self._to_device(rows), self._to_device(words))

    def _bans(
        self, slots: np.ndarray, bad_word_rows: np.ndarray, min_token_rows: np.ndarray
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        ban_rows: list[int] = []
        ban_ids: list[int] = []
        for row in bad_word_rows.tolist():
            slot = int(slots[row])
            start = int(self.num_prompt_tokens[slot])
            outputs = self.history[slot, start : start + int(self.num_output_tokens[slot])]
            for word in self.requests[slot].request.sampling.bad_words_token_ids:
                # The word's last token is banned when the outputs end with the rest of it.
                prefix = word[:-1]
                if len(prefix) <= len(outputs) and (
                    not prefix or outputs[len(outputs) - len(prefix) :].tolist() == list(prefix)
                ):
                    ban_rows.append(row)
                    ban_ids.append(word[-1])
        for row in min_token_rows.tolist():
            slot = int(slots[row])
            if self.num_output_tokens[slot] < self.min_tokens[slot]:
                banned = self.banned_until_min[slot]
                ban_rows.extend([row] * len(banned))
                ban_ids.extend(banned.tolist())
        if not ban_rows:
            return None
        return self._to_device(np.array(ban_rows, dtype=np.int64)), self._to_device(np.array(ban_ids, dtype=np.int64))

    def _to_device(self, array: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(array))
        # On the CPU the gathered array is the tensor: `.to()` would cost a dispatch (~5 us) per column and step.
        return tensor if self.device.type == "cpu" else tensor.to(self.device, non_blocking=True)
