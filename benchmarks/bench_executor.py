"""Per-step cost of the executor: TP=1 (the runner in the engine's process) against TP=2 (two worker
processes over gloo, each step's ExecuteBatch pickled once and written to one pipe per worker).

On a model small enough that its forward is cheap, the step time of TP=2 minus TP=1 is what tensor
parallelism adds per step on this machine: the broadcast, the reply, and the collectives (two all-reduces
per layer, one embedding all-reduce and one logits all-gather). The broadcast is also measured alone: the
decode batches the engine really sent, pickled, written to a pipe, read and unpickled by another process
that answers with a few bytes ("pipes", what the executor does); and, for the choice, the same through a
shared-memory buffer that the readers poll ("shm").

TP=1 runs with as many torch threads as each TP=2 rank gets (cores / 2) unless --torch-threads says
otherwise: on a small oversubscribed VM torch's default OpenMP team makes TP=1 itself many times slower
(each parallel op waits at its barrier), which would hide the figure this measures.

    python benchmarks/bench_executor.py [--batch-sizes 1 16 64] [--steps 64] [--torch-threads N] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import pickle
import platform
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path

from bench_throughput import build_random_llama


def engine_steps(model: Path, tp: int, batch_size: int, steps: int, capture: list | None = None) -> float:
    """Median seconds per decode step with `batch_size` requests running (steady state, after prefill)."""
    from kvserve.config import EngineConfig
    from kvserve.engine import AsyncEngine
    from kvserve.request import EngineRequest
    from kvserve.sampling_params import SamplingParams

    config = EngineConfig(
        model=str(model), tensor_parallel_size=tp, kv_cache_memory=64 << 20, enable_prefix_caching=False
    )

    async def main() -> float:
        engine = await AsyncEngine.start(config)
        try:
            if capture is not None:  # the batches the scheduler sends, for the transport measurement
                execute = engine.executor.execute
                engine.executor.execute = lambda batch: capture.append(batch) or execute(batch)
            stamps: list[float] = []
            engine.add_stats_listener(lambda stats: stamps.append(time.perf_counter()))
            params = SamplingParams(max_tokens=steps + 8, temperature=0.0, ignore_eos=True)

            async def one(i: int) -> None:
                async for _ in engine.generate(EngineRequest(f"r{i}", [1 + i % 50] * 16, sampling=params)):
                    pass

            await asyncio.gather(*(one(i) for i in range(batch_size)))
            gaps = [b - a for a, b in zip(stamps[4:], stamps[5:])]  # decode steps, past prefill
            return statistics.median(gaps)
        finally:
            await engine.shutdown()

    return asyncio.run(main())


def _echo(conn: Connection) -> None:
    while True:
        data = conn.recv_bytes()
        if not data:
            return
        pickle.loads(data)
        conn.send_bytes(b"ok")


def broadcast_cost(batches: list, num_workers: int, repeats: int = 200) -> tuple[float, int]:
    """(median seconds to pickle a batch, write it to `num_workers` pipes and read one answer; its bytes)."""
    context = multiprocessing.get_context("spawn")
    pipes = [context.Pipe() for _ in range(num_workers)]
    workers = [context.Process(target=_echo, args=(child,), daemon=True) for _, child in pipes]
    for worker in workers:
        worker.start()
    times = []
    for i in range(repeats):
        batch = batches[i % len(batches)]
        start = time.perf_counter()
        data = pickle.dumps(("execute", batch), protocol=pickle.HIGHEST_PROTOCOL)
        for parent, _ in pipes:
            parent.send_bytes(data)
        for parent, _ in pipes:
            parent.recv_bytes()
        times.append(time.perf_counter() - start)
    for (parent, _), worker in zip(pipes, workers):
        parent.send_bytes(b"")
        worker.join()
    return statistics.median(times), len(data)


_SEQ, _LEN, _ACKS, _DATA = 0, 8, 16, 64  # shared-memory ring header: byte offsets


def _shm_reader(name: str, index: int) -> None:
    """Polls the sequence number (yielding the core between polls), unpickles each new message, acks it."""
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(name=name)
    header = shm.buf.cast("q")
    seen = 0
    while True:
        while header[_SEQ // 8] == seen:
            time.sleep(0)
        seen = header[_SEQ // 8]
        if seen < 0:
            break
        pickle.loads(shm.buf[_DATA : _DATA + header[_LEN // 8]])
        header[_ACKS // 8 + index] = seen
    del header
    shm.close()


def shm_broadcast_cost(batches: list, num_workers: int, repeats: int = 200) -> float:
    """The alternative to pipes: one shared buffer that readers poll (no system call per message), the
    writer waiting for every reader's ack. Median seconds per message."""
    from multiprocessing import shared_memory

    shm = shared_memory.SharedMemory(create=True, size=1 << 20)
    header = shm.buf.cast("q")
    header[_SEQ // 8] = 0
    context = multiprocessing.get_context("spawn")
    readers = [context.Process(target=_shm_reader, args=(shm.name, i), daemon=True) for i in range(num_workers)]
    for reader in readers:
        reader.start()
    times = []
    for i in range(repeats):
        start = time.perf_counter()
        data = pickle.dumps(("execute", batches[i % len(batches)]), protocol=pickle.HIGHEST_PROTOCOL)
        shm.buf[_DATA : _DATA + len(data)] = data
        header[_LEN // 8] = len(data)
        header[_SEQ // 8] = i + 1
        while any(header[_ACKS // 8 + r] != i + 1 for r in range(num_workers)):
            time.sleep(0)
        times.append(time.perf_counter() - start)
    header[_SEQ // 8] = -1
    for reader in readers:
        reader.join()
    del header
    shm.close()
    shm.unlink()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--torch-threads", type=int, help="TP=1's torch threads (default: what a TP=2 rank gets)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    import torch

    threads = args.torch_threads or max(1, multiprocessing.cpu_count() // 2)
    torch.set_num_threads(threads)

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model = build_random_llama(Path(tmp), args.hidden, args.layers, vocab=2048)
        for batch_size in args.batch_sizes:
            captured: list = []
            tp1 = engine_steps(model, 1, batch_size, args.steps, captured)
            tp2 = engine_steps(model, 2, batch_size, args.steps)
            decode = [b for b in captured if len(b.input_ids) == batch_size and not len(b.new_requests)]
            pipe_s, message_bytes = broadcast_cost(decode or captured, num_workers=2)
            shm_s = shm_broadcast_cost(decode or captured, num_workers=2)
            rows.append(
                dict(
                    batch_size=batch_size,
                    tp1_step_ms=tp1 * 1e3,
                    tp2_step_ms=tp2 * 1e3,
                    tp2_added_ms=(tp2 - tp1) * 1e3,
                    broadcast_ms=pipe_s * 1e3,
                    shm_broadcast_ms=shm_s * 1e3,
                    message_bytes=message_bytes,
                )
            )
    print(f"Llama hidden {args.hidden}, {args.layers} layers, float32, CPU, {threads} torch thread(s) per rank")
    print(f"{'batch':>5} {'TP=1 ms':>8} {'TP=2 ms':>8} {'added ms':>9} {'pipes ms':>9} {'shm ms':>7} {'bytes':>7}")
    for r in rows:
        print(
            f"{r['batch_size']:>5} {r['tp1_step_ms']:>8.2f} {r['tp2_step_ms']:>8.2f} {r['tp2_added_ms']:>9.2f} "
            f"{r['broadcast_ms']:>9.3f} {r['shm_broadcast_ms']:>7.3f} {r['message_bytes']:>7}"
        )
    if args.json:
        meta = dict(machine=platform.processor() or platform.machine(), cpus=multiprocessing.cpu_count())
        config = dict(hidden=args.hidden, layers=args.layers, torch_threads=threads)
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(dict(meta, **config, rows=rows), indent=2))


if __name__ == "__main__":
    main()
