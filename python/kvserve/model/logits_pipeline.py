"""The logits pipeline of one step, as explicit stages over the rows being sampled:

    (a) logit bias, then penalties (repetition; frequency and presence)
    (b) constraints: the packed token bitmask (allowed_token_ids today, grammars later), then bans (the last
        token of a bad word whose prefix the outputs end with; EOS and stop ids before min_tokens)
    (c) temperature and truncation (min-p, top-k, top-p)      } the Sampler
    (d) sampling (greedy argmax or the exponential race)       }

vLLM applies its masks (allowed ids, bad words, min_tokens) before bias and penalties. Running them after
gives the same logits: a masked logit is -inf, and -inf plus a finite bias, times or divided by a positive
penalty, or minus a finite penalty stays -inf; the other logits never see the masks.

Logprobs are "raw": computed from the logits before stage (a). Stages (a) and (b) touch only the rows that use
them; a step where no row does skips both (and the copy kept for raw logprobs, which holds only the rows
that want logprobs).
"""

from __future__ import annotations

import torch

from kvserve.model.input_batch import Penalties, ProcessorInputs, StepSampling
from kvserve.model.sampler import Sampler, SamplerOutput
from kvserve.model.token_bitmask import apply_token_bitmask


def apply_bias_and_penalties(logits: torch.Tensor, inputs: ProcessorInputs) -> None:
    if inputs.bias is not None:
        rows, token_ids, values = inputs.bias
        logits.index_put_((rows, token_ids), values, accumulate=True)
    if inputs.penalties is not None:
        _penalize(logits, inputs.penalties)


def _penalize(logits: torch.Tensor, penalties: Penalties) -> None:
    block = logits[penalties.rows]
    if penalties.seen is not None:
        repetition = penalties.repetition.unsqueeze(1)
        # vLLM/HF: a seen token's positive logit is divided by the penalty, a negative one multiplied.
        scaled = torch.where(block > 0, block / repetition, block * repetition)
        block = torch.where(penalties.seen, scaled, block)
    counts = penalties.output_counts
    block = block - (penalties.frequency.unsqueeze(1) * counts + penalties.presence.unsqueeze(1) * (counts > 0))
    logits[penalties.rows] = block


def apply_constraints(logits: torch.Tensor, inputs: ProcessorInputs) -> None:
    if inputs.bitmask is not None:
        apply_token_bitmask(logits, inputs.bitmask)
    if inputs.bans is not None:
        logits[inputs.bans] = float("-inf")


class LogitsPipeline:
    """Stateless: all per-request state is the persistent batch's; `logits` is modified in place."""

    __slots__ = ("sampler",)

    def __init__(self) -> None:
        self.sampler = Sampler()

    def __call__(self, logits: torch.Tensor, step: StepSampling) -> SamplerOutput:
        processors = step.processors
        if processors is None:
            return self.sampler(logits, step.metadata)
        # Raw logprobs need the logits before the stages: a copy of the rows that want them, only.
        raw_logits = None
        if step.metadata.max_num_logprobs >= 0:
            rows = step.metadata.logprob_rows
            raw_logits = logits.clone() if rows is None else logits[rows]
        apply_bias_and_penalties(logits, processors)
        apply_constraints(logits, processors)
        return self.sampler(logits, step.metadata, raw_logits)
