"""Resident memory of `kvserve serve` on CPU, attributed by mapping, with compare_cpu.py's settings and load.

The server is started as compare_cpu.py starts it (`--max-num-seqs 16 --max-model-len 512`, a KV cache of
16 x 512 tokens given by `--kv-cache-memory` for the cache's element size, `--cpu-threads` = the cores),
driven by the same client (random prompts of --input-len tokens, exactly --output-len output tokens, 1 then
16 streams), then /proc/PID/smaps of every process in its group is read and each mapping's resident bytes
are put in one bucket:

  kv_cache        the per-layer KV tensors: anonymous mappings of exactly a layer's cache size (calloc'd)
  weights_file    the GGUF file's pages mapped from disk
  torch_so        libtorch*/libc10*/libgomp/... text and data (file-backed, shared objects under torch/)
  other_so        every other shared object (Python extensions, libpython, libc, tokenizers, xgrammar, ...)
  heap            [heap]: the main thread's malloc arena (brk), where CPython's small objects also live
  malloc_arenas   glibc's per-thread arenas: anonymous mappings aligned to 64 MiB (HEAP_MAX_SIZE)
  anon_other      every other anonymous mapping (large malloc/mmap blocks: torch tensors, pymalloc arenas,
                  thread stacks)
  other           the rest (other files, [stack], [vvar], ...)

    .venv/bin/python benchmarks/bench_default_model_cpu.py [--models smollm2 tiny] [--kv-cache-dtype float16]
        [--env MALLOC_ARENA_MAX=2] [--json out.json] [-- MORE_SERVE_ARGS]

--env sets variables of the server's environment, for A/B runs of allocator settings.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare_cpu  # noqa: E402  (the sibling script: models, server and client helpers)

BUCKETS = ("kv_cache", "weights_file", "torch_so", "other_so", "heap", "malloc_arenas", "anon_other", "other")
ARENA_ALIGN = 64 << 20  # glibc's HEAP_MAX_SIZE on 64-bit: non-main arenas are mmapped at this alignment
_HEADER = re.compile(r"^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$")


def group_pids(pgid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) == pgid:
                pids.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return sorted(pids)


def classify(start: int, end: int, path: str, kv_layer_bytes: int) -> str:
    size = end - start
    if path.endswith(".gguf"):
        return "weights_file"
    if ".so" in path:
        return "torch_so" if "/torch/" in path else "other_so"
    if path == "[heap]":
        return "heap"
    if path == "":
        # calloc of a layer's cache: one mmap of the tensor plus malloc's header, rounded up to pages.
        if kv_layer_bytes <= size <= kv_layer_bytes + 2 * 4096:
            return "kv_cache"
        if start % ARENA_ALIGN == 0 and size <= ARENA_ALIGN:
            return "malloc_arenas"
        return "anon_other"
    return "other"


def smaps_buckets(pid: int, kv_layer_bytes: int) -> dict[str, float]:
    """Resident MiB of one process by bucket (Rss of each mapping; shared pages count once per process)."""
    totals = dict.fromkeys(BUCKETS, 0.0)
    bucket = "other"
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            header = _HEADER.match(line)
            if header:
                start, end = int(header.group(1), 16), int(header.group(2), 16)
                bucket = classify(start, end, header.group(4).strip(), kv_layer_bytes)
            elif line.startswith("Rss:"):
                totals[bucket] += int(line.split()[1]) / 1024
    return totals


def rollup_mib(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, value = line.partition(":")
        if key in ("Rss", "Anonymous", "Pss"):
            fields[key.lower()] = int(value.split()[0]) / 1024
    return fields


def serve_command(model: compare_cpu.BenchModel, port: int, args: argparse.Namespace) -> list[str]:
    """compare_cpu's command line; `auto` leaves --kv-cache-dtype out (the cache in the model's float32)."""
    if args.kv_cache_dtype != "auto":
        return compare_cpu.kvserve_command(model, port, args)
    command = compare_cpu.kvserve_command(
        model, port, argparse.Namespace(**{**vars(args), "kv_cache_dtype": "float32"})
    )
    flag = command.index("--kv-cache-dtype")
    return command[:flag] + command[flag + 2 :]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=compare_cpu.MODELS, default=["smollm2"])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    compare_cpu.add_workload_args(parser, kv_cache_dtypes=("auto",))
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE for the server's environment")
    parser.add_argument("--out-dir", type=Path, default=compare_cpu.ROOT / "benchmarks" / "results" / "default-cpu")
    parser.add_argument("--json", type=Path)
    parser.add_argument("serve_args", nargs="*", help="more `kvserve serve` flags (after --)")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    args.cpus = os.sched_getaffinity(0)
    env = {**os.environ, **dict(item.split("=", 1) for item in args.env)}
    element = compare_cpu.KV_CACHE_DTYPES.get(args.kv_cache_dtype, ("f32", 4))[1]
    payload = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "commit": compare_cpu.git_commit(),
        "kv_cache_dtype": args.kv_cache_dtype,
        "env": args.env,
        "serve_args": args.serve_args,
        "models": {},
    }
    for model in compare_cpu.bench_models(args.models, args.work_dir):
        port = compare_cpu.free_port()
        command = serve_command(model, port, args) + args.serve_args
        layers = compare_cpu.kv_cache_shape(model.gguf)[0]
        layer_bytes = (
            args.max_num_seqs * args.max_model_len * compare_cpu.kv_bytes_per_token(model.gguf, element) // layers
        )
        log_path = args.out_dir / f"{model.name}-memory.log"
        runs = []
        with compare_cpu.running_server(
            "kvserve", command, port, args.cpus, log_path, args.startup_timeout, env
        ) as server:
            idle = rollup_mib(server.process.pid)
            compare_cpu.probe_output_len(server.base_url, args.output_len)
            for concurrency in args.concurrency:
                load = os.getloadavg()[0]
                result = compare_cpu.run_client("kvserve", server.base_url, model, concurrency, args)
                result = compare_cpu.credit_exact_lengths(result, args.output_len)
                runs.append({
                    "concurrency": concurrency, "output_tok_s": round(result["output_throughput"], 1),
                    "median_tpot_ms": round(result["median_tpot_ms"], 2), "failed": result["failed"],
                    "load_avg_1m_before": load,
                })  # fmt: skip
            pids = group_pids(server.process.pid)
            buckets = dict.fromkeys(BUCKETS, 0.0)
            rollup = {"rss": 0.0, "pss": 0.0, "anonymous": 0.0}
            for pid in pids:
                for key, value in smaps_buckets(pid, layer_bytes).items():
                    buckets[key] += value
                for key, value in rollup_mib(pid).items():
                    rollup[key] += value
        figures = {
            "processes": len(pids),
            "idle_rss_mib": round(idle["rss"], 1),
            "rss_mib": round(rollup["rss"], 1),
            "pss_mib": round(rollup["pss"], 1),
            "kv_cache_capacity_mib": round(layer_bytes * layers / 2**20, 1),
            "buckets_mib": {k: round(v, 1) for k, v in buckets.items()},
            "runs": runs,
        }
        payload["models"][model.name] = figures
        print(f"{model.name}: resident {figures['rss_mib']:.0f} MiB over {len(pids)} process(es), idle "
              f"{figures['idle_rss_mib']:.0f} MiB; KV capacity {figures['kv_cache_capacity_mib']:.0f} MiB")  # fmt: skip
        for key, value in figures["buckets_mib"].items():
            print(f"  {key:14s} {value:8.1f} MiB")
        for run in runs:
            print(f"  c={run['concurrency']}: {run['output_tok_s']} tok/s, TPOT {run['median_tpot_ms']} ms, "
                  f"load {run['load_avg_1m_before']:.1f}")  # fmt: skip
    print(json.dumps(payload, indent=1))
    if args.json:
        args.json.write_text(json.dumps(payload, indent=1))


if __name__ == "__main__":
    main()
