"""What the runner actor drives: one model runner (TP=1) or a group of tensor-parallel workers."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch

from kvserve.messages import ExecuteBatch
from kvserve.model.registry import ModelTasks
from kvserve.model.step_result import StepResult
from kvserve.request import EngineRequest


class WorkerDiedError(RuntimeError):
    """A tensor-parallel worker process ended while the engine needed it."""


class Executor(Protocol):
    """Steps and calls run on the runner actor's one thread, one at a time; the rest is read-only facts."""

    num_blocks: int  # KV blocks, the same on every rank: the scheduler's pool
    device: torch.device  # of rank 0 (its type decides the engine's defaults)
    tasks: ModelTasks

    def check_request(self, request: EngineRequest) -> None:
        """Raises ValueError when the model cannot serve `request`; called in the engine's process."""

    def execute(self, batch: ExecuteBatch) -> StepResult:
        """Runs one step on every rank; rank 0's result, which may still be on its way from the device."""

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], *, internal: bool) -> list[Any]:
        """Calls a model-runner method on every rank (internal: the engine's own calls, such as sleep);
        returns the per-rank results in rank order, or raises the first rank's error."""

    def watch(self, on_failure: Callable[[BaseException], None]) -> None:
        """Calls `on_failure` (from another thread) when a worker dies outside a step or call."""

    def shutdown(self) -> None:
        """Stops the workers (if any) and waits for them; idempotent."""
