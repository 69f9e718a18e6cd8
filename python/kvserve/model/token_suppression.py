"""Tokens a model never samples, and tokens it never samples first: Whisper's generation config
(`suppress_tokens`, `begin_suppress_tokens`), applied as transformers' generate applies them (logits set to
-inf; the "begin" set only for a request's first sampled token).

These lists are the model's, the same for every request, so they are one model-level stage before the
per-request logits pipeline: one vectorised write per step, no per-row state in the persistent batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


class TokenSuppression:
    __slots__ = ("always", "first")

    def __init__(self, always: Sequence[int], first: Sequence[int], vocab_size: int, device: torch.device) -> None:
        # Ids outside the vocabulary can never be sampled: nothing to suppress.
        self.always = torch.tensor(sorted({t for t in always if 0 <= t < vocab_size}), dtype=torch.int64, device=device)
        self.first = torch.tensor(sorted({t for t in first if 0 <= t < vocab_size}), dtype=torch.int64, device=device)

    def apply(self, logits: torch.Tensor, num_output_tokens: np.ndarray) -> None:
        """logits [S, V], modified in place; num_output_tokens [S]: tokens each row sampled before this step."""
        if len(self.always):
            logits[:, self.always] = float("-inf")
        if len(self.first):
            rows = np.flatnonzero(num_output_tokens == 0)
            if len(rows):
                logits[torch.from_numpy(rows).to(logits.device).unsqueeze(1), self.first] = float("-inf")
