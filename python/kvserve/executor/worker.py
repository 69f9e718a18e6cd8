"""A tensor-parallel worker process: one rank's ModelRunner, driven over a pipe by the MultiprocessExecutor.

Protocol (pickled tuples; the executor pickles a message once and sends the same bytes to every rank):
  executor -> worker: ("execute", ExecuteBatch) | ("call", method, args, kwargs, internal) | ("stop",)
  worker -> executor: ("ready", WorkerInfo) once built; ("result", value) for every call and for rank 0's
  steps; ("error", exception) whenever a step or call raises. Other ranks answer a step only when it fails,
  so the per-step traffic is one broadcast and one reply.
A closed pipe (the engine's process is gone) ends the worker: no orphan outlives its engine.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import pickle
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import torch

from kvserve.config import EngineConfig
from kvserve.model.model_config import ModelConfig
from kvserve.model.registry import ModelTasks

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    rank: int
    size: int
    init_method: str  # file://DIR/store, the rendezvous of torch.distributed
    backend: str  # nccl | gloo
    engine_config: EngineConfig
    model_config: ModelConfig
    model_dir: Path
    structured_outputs: bool  # the engine could build grammars from this tokenizer: so does every rank


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    num_blocks: int
    device_type: str
    tasks: ModelTasks


def picklable(error: BaseException) -> BaseException:
    """`error` when it survives pickling, else a RuntimeError that says what it was."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:
        return RuntimeError(f"{type(error).__name__}: {error}")


def worker_main(spec: WorkerSpec, conn: Connection) -> None:
    """The process's entry point (spawned: it imports kvserve afresh)."""
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s rank{spec.rank} %(levelname)s %(name)s: %(message)s")
    try:
        runner = _build_runner(spec)
        info = WorkerInfo(runner.num_blocks, runner.device.type, runner.tasks)
        conn.send(("ready", info))
    except BaseException as e:
        conn.send(("error", picklable(e)))
        return
    try:
        _serve(spec.rank, runner, conn)
    finally:
        torch.distributed.destroy_process_group()


def _build_runner(spec: WorkerSpec) -> Any:
    from kvserve.engine.async_engine import grammar_compiler
    from kvserve.model.parallel import init_tensor_parallel
    from kvserve.model.runner import ModelRunner
    from kvserve.tokenizer import Tokenizer

    config = spec.engine_config
    if spec.backend == "nccl":
        torch.cuda.set_device(spec.rank)
        config = dataclasses.replace(config, device=f"cuda:{spec.rank}")
    else:  # the ranks share the machine's cores instead of each starting a full OpenMP team
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // spec.size))
    timeout_s = max(config.engine_step_timeout or 0.0, 600.0)
    init_tensor_parallel(spec.rank, spec.size, spec.init_method, spec.backend, timeout_s)
    grammars = None
    if spec.structured_outputs:
        grammars = grammar_compiler(Tokenizer.from_directory(config.tokenizer or spec.model_dir), spec.model_config)
    return ModelRunner(config, spec.model_config, spec.model_dir, grammars)


def _serve(rank: int, runner: Any, conn: Connection) -> None:
    while True:
        try:
            message = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):  # the engine's process closed the pipe or died
            return
        kind = message[0]
        if kind == "stop":
            return
        try:
            if kind == "execute":
                result = runner.execute(message[1])
                if rank == 0:
                    conn.send(("result", result))
            else:
                _, method, args, kwargs, internal = message
                conn.send(("result", runner.rpc_method(method, internal=internal)(*args, **kwargs)))
        except Exception as e:
            logger.exception("rank %d: %s failed", rank, kind)
            conn.send(("error", picklable(e)))
