"""How kvserve's runner should use the cores: torch's intra-op threads and OpenMP's wait policy, measured.

For each variant (threads x OMP_WAIT_POLICY: unset means kvserve's default, a short GOMP_SPINCOUNT
(openmp_waiting.py); DEFAULT means libgomp's own, spinning ~300k iterations after each parallel region),
`kvserve serve` is started on one of compare_cpu.py's GGUF models with `--cpu-threads N` and the policy in its
environment (libgomp reads it when torch loads), then: one stream's median TPOT, 16 streams' output tok/s, and
the event loop's responsiveness under that load: GET /health every 20 ms while the 16 streams decode (median,
p99 and max latency). One table; `--json` writes every figure.

    .venv/bin/python benchmarks/bench_cpu_threads.py --model tiny
    .venv/bin/python benchmarks/bench_cpu_threads.py --model smollm2 --variants 1 2 2:DEFAULT 2:ACTIVE
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
import urllib.request
from pathlib import Path

from compare_cpu import (
    KVSERVE,
    ROOT,
    add_workload_args,
    bench_models,
    credit_exact_lengths,
    free_port,
    kvserve_command,
    probe_output_len,
    run_client,
    running_server,
)


class HealthProbe(threading.Thread):
    """GET /health every interval_s until stopped; keeps each answer's latency."""

    def __init__(self, base_url: str, interval_s: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.url, self.interval_s = f"{base_url}/health", interval_s
        self.latencies_ms: list[float] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            started = time.perf_counter()
            with urllib.request.urlopen(self.url, timeout=10) as response:
                response.read()
            self.latencies_ms.append((time.perf_counter() - started) * 1000)
            self.done.wait(self.interval_s)


def measure(variant: str, model, args: argparse.Namespace) -> dict:
    threads, _, policy = variant.partition(":")
    args.threads = int(threads)
    # `kvserve serve` sets a short spin unless the variable is set; an empty value is libgomp's own default
    # (spin a while, then sleep), with a warning in the server's log.
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if policy:
        env["OMP_WAIT_POLICY"] = "" if policy == "DEFAULT" else policy
    command = kvserve_command(model, free_port(), args)
    port = int(command[command.index("--port") + 1])
    label = f"{KVSERVE}-t{threads}{'-' + policy.lower() if policy else ''}"
    log_path = args.out_dir / f"{model.name}-{label}.log"
    with running_server(label, command, port, args.cpus, log_path, args.startup_timeout, env) as server:
        if probe_output_len(server.base_url, args.output_len) != args.output_len:
            raise SystemExit(f"{label}: EOS was not ignored")
        one = credit_exact_lengths(run_client(label, server.base_url, model, 1, args), args.output_len)
        probe = HealthProbe(server.base_url)
        probe.start()
        many = credit_exact_lengths(run_client(label, server.base_url, model, 16, args), args.output_len)
        probe.done.set()
        probe.join()
    latencies = sorted(probe.latencies_ms)
    figures = {
        "variant": variant,
        "tpot_ms_1": one["median_tpot_ms"],
        "tok_s_16": many["output_throughput"],
        "health_ms_median": statistics.median(latencies),
        "health_ms_p99": latencies[int(0.99 * (len(latencies) - 1))],
        "health_ms_max": latencies[-1],
        "health_probes": len(latencies),
    }
    print(json.dumps(figures), flush=True)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=["tiny", "smollm2"], default="tiny")
    parser.add_argument("--variants", nargs="+", default=["1", "2", "2:DEFAULT"], help="THREADS[:POLICY]")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results" / "cpu-threads")
    parser.add_argument("--json", type=Path)
    add_workload_args(parser)
    args = parser.parse_args()
    args.cpus = os.sched_getaffinity(0)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (model,) = bench_models([args.model], args.work_dir)
    rows = [measure(variant, model, args) for variant in args.variants]
    print("| threads:policy | 1 stream TPOT ms | 16 streams tok/s | /health median ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['tpot_ms_1']:.2f} | {r['tok_s_16']:.0f} | {r['health_ms_median']:.1f} | "
            f"{r['health_ms_p99']:.1f} | {r['health_ms_max']:.1f} |"
        )
    (args.json or args.out_dir / f"cpu_threads_{args.model}.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
