"""A step's result while its device work may still be running: what an executor's `execute` returns.

With async scheduling the runner actor launches step N+1 before step N's sampled ids reach the host:
`ModelRunner.launch` enqueues the forward and the sampling, starts the host copy of the ids (and logprobs)
and returns; the actor waits for the copy off the runner thread (`wait`) while that thread launches the next
step, so the device never idles between two steps for the host. On CPU the work is done when launch
returns, and `ready()` says so, so the result is delivered without a thread hop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from kvserve.messages import BatchResult, PooledRows, PromptLogprobsChunk, SampleLogprobs
from kvserve.model.sampled_tokens import HostCopy


class StepResult(Protocol):
    def ready(self) -> bool:
        """Whether wait() returns without waiting for the device."""

    def wait(self) -> BatchResult:
        """The step's host-side result; raises the device's error if the step failed there."""


@dataclass(frozen=True, slots=True)
class DoneResult:
    """A result already on the host (a tensor-parallel rank 0's reply)."""

    result: BatchResult

    def ready(self) -> bool:
        return True

    def wait(self) -> BatchResult:
        return self.result


@dataclass(frozen=True, slots=True)
class PendingResult:
    """Sampled ids (and logprobs) in flight to the host; prompt logprobs and pooled rows are already there
    (the steps that produce them synchronise anyway)."""

    step: int
    copy: HostCopy  # [sampled ids] or [sampled ids, logprob token ids, logprobs, ranks]
    prompt_logprobs: tuple[PromptLogprobsChunk, ...]
    pooled: PooledRows | None

    def ready(self) -> bool:
        return self.copy.ready()

    def wait(self) -> BatchResult:
        sampled, *logprobs = self.copy.numpy()
        sample_logprobs = SampleLogprobs(*logprobs) if logprobs else None
        return BatchResult(self.step, sampled, sample_logprobs, self.prompt_logprobs, self.pooled)
