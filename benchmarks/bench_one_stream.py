"""One stream through the engine (no HTTP): its TPOT against the time the runner thread spends in steps.

A single greedy request (`--prompt-len` tokens in, `--output-len` out, EOS ignored) runs through
`AsyncEngine.generate` `--repeats` times after a warm-up. The executor's `execute` is wrapped to time each
step on the runner thread (wall and that thread's CPU time). Reported per decode token: the TPOT the client
sees (from the request's own timestamps), the runner's time inside steps, and the gap between consecutive
steps (runner idle: the event loop's hop from the finished step through the scheduler actor to the next
ExecuteBatch, the detokenizer and the output router). Minimum over repeats.

    .venv/bin/python benchmarks/bench_one_stream.py MODEL [--threads 2] [--output-len 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model directory or a .gguf file")
    parser.add_argument("--threads", type=int, default=None, help="--cpu-threads (default: the affinity mask)")
    parser.add_argument("--prompt-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from kvserve.openmp_waiting import configure_openmp_waiting

    configure_openmp_waiting()  # as `kvserve serve` does, before torch loads

    from kvserve.config import EngineConfig
    from kvserve.engine import AsyncEngine
    from kvserve.executor.in_process import InProcessExecutor
    from kvserve.request import EngineRequest
    from kvserve.sampling_params import SamplingParams

    steps: list[tuple[float, float, float]] = []  # (start, end, thread CPU seconds) of each step
    execute = InProcessExecutor.execute

    def timed_execute(self, batch):
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return execute(self, batch)
        finally:
            steps.append((start, time.perf_counter(), time.thread_time() - cpu))

    InProcessExecutor.execute = timed_execute

    async def one_request(engine: AsyncEngine, request_id: str, max_tokens: int):
        params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
        prompt = [1000 + i % 2000 for i in range(args.prompt_len)]
        count, times = 0, None
        async for output in engine.generate(EngineRequest(request_id, prompt, sampling=params)):
            count, times = output.num_output_tokens, output.times
        return count, times

    async def run() -> list[dict[str, float]]:
        config = EngineConfig(
            model=args.model, device="cpu", max_num_seqs=4, max_model_len=args.prompt_len + args.output_len + 16,
            cpu_threads=args.threads,
        )  # fmt: skip
        engine = await AsyncEngine.start(config)
        results = []
        try:
            await one_request(engine, "warmup", 16)
            for i in range(args.repeats):
                steps.clear()
                count, times = await one_request(engine, f"timed-{i}", args.output_len)
                decode = [s for s in steps if s[1] > times.first_token]
                gaps = [b[0] - a[1] for a, b in zip(decode, decode[1:])]
                results.append(
                    {
                        "tpot_ms": 1e3 * (times.latest_token - times.first_token) / (count - 1),
                        "step_wall_ms": 1e3 * statistics.mean(e - s for s, e, _ in decode),
                        "step_thread_cpu_ms": 1e3 * statistics.mean(c for _, _, c in decode),
                        "gap_ms": 1e3 * statistics.mean(gaps) if gaps else 0.0,
                        "gap_median_ms": 1e3 * statistics.median(gaps) if gaps else 0.0,
                        "steps": len(decode),
                    }
                )
        finally:
            await engine.shutdown()
        return results

    results = asyncio.run(run())
    for r in results:
        print(json.dumps({k: round(v, 3) for k, v in r.items()}))
    best = min(results, key=lambda r: r["tpot_ms"])
    print("best:", json.dumps({k: round(v, 3) for k, v in best.items()}))


if __name__ == "__main__":
    main()
