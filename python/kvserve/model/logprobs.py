"""Logprob ranking, the one function behind sampled-token logprobs and prompt logprobs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from kvserve.messages import SampleLogprobs


@dataclass(frozen=True, slots=True)
class LogprobsTensors:
    token_ids: torch.Tensor  # [N, 1 + k] int64: column 0 the given token, then the top k by logprob
    logprobs: torch.Tensor  # [N, 1 + k] float32
    ranks: torch.Tensor  # [N] int64: 1 + number of tokens with a strictly greater logprob than the given one

    def to_numpy(self) -> SampleLogprobs:
        return SampleLogprobs(
            self.token_ids.cpu().numpy().astype(np.int64, copy=False),
            self.logprobs.cpu().numpy(),
            self.ranks.cpu().numpy(),
        )

    @staticmethod
    def cat(parts: list[LogprobsTensors]) -> LogprobsTensors:
        return LogprobsTensors(
            torch.cat([p.token_ids for p in parts]),
            torch.cat([p.logprobs for p in parts]),
            torch.cat([p.ranks for p in parts]),
        )


def rank_logprobs(logits: torch.Tensor, token_ids: torch.Tensor, num_top: int) -> LogprobsTensors:
    """log_softmax of logits [N, V] (in float32), the logprob and rank of token_ids [N], and the top num_top.

    A tie with the given token is not "strictly greater", so a token tied for first has rank 1.
    """
    logprobs = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
    given = token_ids.to(torch.int64).unsqueeze(1)
    given_logprobs = logprobs.gather(1, given)
    ranks = (logprobs > given_logprobs).sum(dim=-1).add_(1)
    top_logprobs, top_token_ids = logprobs.topk(num_top, dim=-1)
    return LogprobsTensors(
        token_ids=torch.cat((given, top_token_ids), dim=1),
        logprobs=torch.cat((given_logprobs, top_logprobs), dim=1),
        ranks=ranks,
    )
