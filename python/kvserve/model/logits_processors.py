"""Logits processors, applied to the rows being sampled before the sampler, in vLLM's order:

    allowed_token_ids -> bad_words -> min_tokens (EOS and stop ids banned) -> logit_bias -> penalties

Requests that use none of them hold no state here, so a batch without them costs one dict lookup per row.
Everything is batched over the rows that need it: masks and counts are [V] tensors kept per request, so no
step loops over the vocabulary in Python.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from kvserve.sampling_params import SamplingParams


@dataclass(slots=True)
class _RequestState:
    params: SamplingParams
    num_output_tokens: int = 0
    banned_until_min: torch.Tensor | None = None  # EOS and stop ids while fewer than min_tokens are out
    disallowed: torch.Tensor | None = None  # [V] bool: outside allowed_token_ids
    bias_ids: torch.Tensor | None = None
    bias_values: torch.Tensor | None = None
    output_counts: torch.Tensor | None = None  # [V] float32, for presence/frequency penalties
    seen: torch.Tensor | None = None  # [V] bool, prompt and output tokens, for the repetition penalty
    output_ids: list[int] | None = None  # for bad words


def uses_processors(params: SamplingParams) -> bool:
    return bool(
        params.min_tokens
        or params.has_penalties
        or params.logit_bias
        or params.allowed_token_ids is not None
        or params.bad_words_token_ids
    )


class LogitsProcessors:
    def __init__(self, vocab_size: int, device: torch.device) -> None:
        self.vocab_size = vocab_size
        self.device = device
        self.requests: dict[int, _RequestState] = {}

    def add(
        self, handle: int, params: SamplingParams, prompt_token_ids: list[int], eos_token_ids: tuple[int, ...]
    ) -> None:
        if not uses_processors(params):
            return
        state = _RequestState(params)
        device, vocab = self.device, self.vocab_size
        if params.min_tokens:
            eos = () if params.ignore_eos else eos_token_ids
            banned = sorted(t for t in {*eos, *params.stop_token_ids} if t < vocab)
            state.banned_until_min = torch.tensor(banned, dtype=torch.int64, device=device)
        if params.allowed_token_ids is not None:
            state.disallowed = torch.ones(vocab, dtype=torch.bool, device=device)
            state.disallowed[list(params.allowed_token_ids)] = False
        if params.logit_bias:
            ids, values = zip(*params.logit_bias)
            state.bias_ids = torch.tensor(ids, dtype=torch.int64, device=device)
            state.bias_values = torch.tensor(values, dtype=torch.float32, device=device)
        if params.presence_penalty or params.frequency_penalty:
            state.output_counts = torch.zeros(vocab, dtype=torch.float32, device=device)
        if params.repetition_penalty != 1.0:
            state.seen = torch.zeros(vocab, dtype=torch.bool, device=device)
            state.seen[torch.tensor(prompt_token_ids, dtype=torch.int64, device=device)] = True
        if params.bad_words_token_ids:
            state.output_ids = []
        self.requests[handle] = state

    def remove(self, handle: int) -> None:
        self.requests.pop(handle, None)

    def record_sampled(self, handles: list[int], token_ids: list[int]) -> None:
        if not self.requests:
            return
        for handle, token in zip(handles, token_ids):
            state = self.requests.get(handle)
            if state is None:
                continue
            state.num_output_tokens += 1
            if state.output_counts is not None:
                state.output_counts[token] += 1.0
            if state.seen is not None:
                state.seen[token] = True
            if state.output_ids is not None:
                state.output_ids.append(token)

    def apply(self, logits: torch.Tensor, handles: list[int]) -> bool:
        """Processes logits [S, V] (float32) in place for rows whose request uses processors.

        @return whether any row was changed.
        """
        if not self.requests:
            return False
        rows = [(row, state) for row, handle in enumerate(handles) if (state := self.requests.get(handle))]
        if not rows:
            return False
        self._mask_disallowed(logits, rows)
        self._ban_tokens(logits, rows)
        self._add_bias(logits, rows)
        self._penalize(logits, rows)
        return True

    def _mask_disallowed(self, logits: torch.Tensor, rows: list[tuple[int, _RequestState]]) -> None:
        masked = [(row, s.disallowed) for row, s in rows if s.disallowed is not None]
        if masked:
            index = torch.tensor([row for row, _ in masked], device=logits.device)
            logits[index] = logits[index].masked_fill(torch.stack([mask for _, mask in masked]), float("-inf"))

    def _ban_tokens(self, logits: torch.Tensor, rows: list[tuple[int, _RequestState]]) -> None:
        """Bad words whose last token would complete them, and EOS/stop ids before min_tokens."""
        ban_rows: list[int] = []
        ban_ids: list[int] = []
        tensors: list[tuple[int, torch.Tensor]] = []
        for row, state in rows:
            params = state.params
            if state.output_ids is not None:
                history = state.output_ids
                for word in params.bad_words_token_ids:
                    prefix = word[:-1]
                    if len(prefix) <= len(history) and (
                        not prefix or history[len(history) - len(prefix) :] == list(prefix)
                    ):
                        ban_rows.append(row)
                        ban_ids.append(word[-1])
            if state.banned_until_min is not None and state.num_output_tokens < params.min_tokens:
                tensors.append((row, state.banned_until_min))
        for row, ids in tensors:
            ban_rows.extend([row] * len(ids))
            ban_ids.extend(ids.tolist())
        if ban_rows:
            logits[torch.tensor(ban_rows, device=logits.device), torch.tensor(ban_ids, device=logits.device)] = float(
                "-inf"
            )

    def _add_bias(self, logits: torch.Tensor, rows: list[tuple[int, _RequestState]]) -> None:
        biased = [(row, s) for row, s in rows if s.bias_ids is not None]
        if not biased:
            return
        row_index = torch.cat([torch.full_like(s.bias_ids, row) for row, s in biased])
        token_index = torch.cat([s.bias_ids for _, s in biased])
        values = torch.cat([s.bias_values for _, s in biased])
        logits.index_put_((row_index, token_index), values, accumulate=True)

    def _penalize(self, logits: torch.Tensor, rows: list[tuple[int, _RequestState]]) -> None:
        repeated = [(row, s) for row, s in rows if s.seen is not None]
        if repeated:
            index = torch.tensor([row for row, _ in repeated], device=logits.device)
            penalty = torch.tensor([s.params.repetition_penalty for _, s in repeated], device=logits.device)
            seen = torch.stack([s.seen for _, s in repeated])
            block = logits[index]
            # vLLM/HF: a seen token's positive logit is divided by the penalty, a negative one multiplied.
            scaled = torch.where(block > 0, block / penalty[:, None], block * penalty[:, None])
            logits[index] = torch.where(seen, scaled, block)
        counted = [(row, s) for row, s in rows if s.output_counts is not None]
        if counted:
            index = torch.tensor([row for row, _ in counted], device=logits.device)
            counts = torch.stack([s.output_counts for _, s in counted])
            frequency = torch.tensor([s.params.frequency_penalty for _, s in counted], device=logits.device)
            presence = torch.tensor([s.params.presence_penalty for _, s in counted], device=logits.device)
            logits[index] -= frequency[:, None] * counts + presence[:, None] * (counts > 0)
