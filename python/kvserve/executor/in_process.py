"""TP=1: the ModelRunner in the engine's own process, called directly on the runner actor's thread."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kvserve.messages import ExecuteBatch
from kvserve.model.runner import ModelRunner
from kvserve.model.step_result import StepResult
from kvserve.request import EngineRequest


class InProcessExecutor:
    """No extra process and no serialization: a step is a method call on the runner."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.num_blocks = runner.num_blocks
        self.device = runner.device
        self.tasks = runner.tasks

    def check_request(self, request: EngineRequest) -> None:
        self.runner.check_request(request)

    def execute(self, batch: ExecuteBatch) -> StepResult:
        return self.runner.launch(batch)

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], *, internal: bool) -> list[Any]:
        return [self.runner.rpc_method(method, internal=internal)(*args, **kwargs)]

    def watch(self, on_failure: Callable[[BaseException], None]) -> None:
        """Nothing to watch: a failing step raises in the actor itself."""

    def shutdown(self) -> None:
        """The runner goes with the engine's process."""
