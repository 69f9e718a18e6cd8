"""TP>1: N spawned worker processes, one rank each, driven over one pipe per worker.

A step is pickled once and its bytes written to every pipe (a broadcast; benchmarks/bench_executor.py
measures what it costs per step); every rank runs the forward, rank 0 answers. While it waits the executor
also watches every worker's process sentinel, so a worker that dies mid-step raises WorkerDiedError at once
instead of leaving the step (and its requests) hanging; between steps a monitor thread does the same and
reports to the engine, which marks itself unhealthy.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import tempfile
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

import torch

from kvserve.config import EngineConfig
from kvserve.executor.base import WorkerDiedError
from kvserve.executor.worker import WorkerInfo, WorkerSpec, worker_main
from kvserve.messages import ExecuteBatch
from kvserve.model.model_config import ModelConfig
from kvserve.model.request_check import check_request
from kvserve.model.step_result import DoneResult
from kvserve.request import EngineRequest

logger = logging.getLogger(__name__)

_JOIN_TIMEOUT_S = 10.0  # a stopped worker's exit; then it is terminated, then killed


class MultiprocessExecutor:
    def __init__(
        self,
        config: EngineConfig,
        model_config: ModelConfig,
        model_dir: Path,
        device: torch.device,
        structured_outputs: bool,
    ) -> None:
        self.model_config = model_config
        self.structured_outputs = structured_outputs
        size = config.tensor_parallel_size
        backend = "nccl" if device.type == "cuda" else "gloo"
        # A file rendezvous: a TCP one needs a free port, which another process may take before rank 0 binds it.
        self._rendezvous = tempfile.TemporaryDirectory(prefix="kvserve-tp-")
        init_method = f"file://{self._rendezvous.name}/store"
        context = multiprocessing.get_context("spawn")
        self.conns: list[Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe()  # ends the monitor thread at shutdown
        self._monitor: threading.Thread | None = None
        for rank in range(size):
            parent, child = context.Pipe()
            spec = WorkerSpec(rank, size, init_method, backend, config, model_config, model_dir, structured_outputs)
            process = context.Process(target=worker_main, args=(spec, child), name=f"kvserve-tp{rank}", daemon=True)
            process.start()
            child.close()  # the worker's end lives in the worker only: its death closes the pipe
            self.conns.append(parent)
            self.processes.append(process)
        try:
            infos: list[WorkerInfo] = self._replies(range(size))
        except BaseException:
            self.shutdown()
            raise
        self.num_blocks = infos[0].num_blocks
        self.device = torch.device(infos[0].device_type)
        self.tasks = infos[0].tasks
        logger.info("%d tensor-parallel workers (%s) ready; pids %s", size, backend, [p.pid for p in self.processes])

    # -- the engine's side ------------------------------------------------------------------------------
    def check_request(self, request: EngineRequest) -> None:
        check_request(request, self.tasks, self.model_config, self.structured_outputs, None)

    def execute(self, batch: ExecuteBatch) -> DoneResult:
        """Waited for: rank 0 replies once its step's ids are on its host."""
        self._broadcast(("execute", batch))
        return DoneResult(self._replies([0])[0])

    def call(self, method: str, args: tuple[Any, ...], kwargs: dict[str, Any], *, internal: bool) -> list[Any]:
        self._broadcast(("call", method, args, kwargs, internal))
        return self._replies(range(len(self.conns)))

    def _broadcast(self, message: tuple) -> None:
        data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        for rank, conn in enumerate(self.conns):
            try:
                conn.send_bytes(data)
            except OSError as e:
                raise self._died(rank) from e

    def _replies(self, ranks: range | list[int]) -> list[Any]:
        """The replies of `ranks`, in rank order; the first error raises once they are all in. Another rank
        replies only with an error (a step that failed there), which raises at once, as does a worker's death."""
        replies: dict[int, tuple[str, Any]] = {}
        expected = set(ranks)
        sentinels = {p.sentinel: rank for rank, p in enumerate(self.processes)}
        while not expected <= replies.keys() and replies.keys() <= expected:
            ready = wait([*self.conns, *sentinels])
            for conn in ready:
                if isinstance(conn, Connection):
                    rank = self.conns.index(conn)
                    try:
                        replies[rank] = conn.recv()
                    except (EOFError, OSError) as e:
                        raise self._died(rank) from e
            dead = [sentinels[s] for s in ready if s in sentinels]
            if dead:
                raise self._died(dead[0])
        errors = [value for _, (kind, value) in sorted(replies.items()) if kind == "error"]
        if errors:
            raise errors[0]
        return [replies[rank][1] for rank in sorted(expected)]

    def _died(self, rank: int) -> WorkerDiedError:
        process = self.processes[rank]
        process.join(timeout=1.0)
        return WorkerDiedError(
            f"tensor-parallel worker rank {rank} (pid {process.pid}) died (exit code {process.exitcode})"
        )

    # -- lifetime ---------------------------------------------------------------------------------------
    def watch(self, on_failure: Callable[[BaseException], None]) -> None:
        def monitor() -> None:
            sentinels = {p.sentinel: rank for rank, p in enumerate(self.processes)}
            ready = wait([*sentinels, self._wake_r])
            if self._stopping:
                return
            for sentinel in ready:
                if sentinel in sentinels:
                    on_failure(self._died(sentinels[sentinel]))
                    return

        self._monitor = threading.Thread(target=monitor, name="kvserve-tp-monitor", daemon=True)
        self._monitor.start()

    def shutdown(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        os.write(self._wake_w, b"x")
        for conn in self.conns:
            try:
                conn.send_bytes(pickle.dumps(("stop",)))
            except OSError:
                pass  # already gone
        for process in self.processes:
            process.join(timeout=_JOIN_TIMEOUT_S)
            if process.is_alive():  # stuck in a collective with a dead peer, or in a step
                process.terminate()
                process.join(timeout=_JOIN_TIMEOUT_S)
            if process.is_alive():
                process.kill()
                process.join()
        for conn in self.conns:
            conn.close()
        if self._monitor is not None:
            self._monitor.join()
        os.close(self._wake_r)
        os.close(self._wake_w)
        self._rendezvous.cleanup()
