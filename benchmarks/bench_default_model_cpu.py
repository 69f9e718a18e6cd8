"""The default model (SmolLM2-135M-Instruct Q4_1 GGUF) served by `kvserve serve` on CPU: resident memory
of the server, and decode speed at 1 and 16 streams, with compare_cpu.py's client and workload (random
prompts of --input-len tokens, exactly --output-len output tokens).

Resident memory is the server's VmRSS once it answers (idle), and its peak (VmHWM) after the load.

    .venv/bin/python benchmarks/bench_default_model_cpu.py [--concurrency 1 16] [--json out.json] [-- SERVE_ARGS]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare_cpu  # noqa: E402  (the sibling script: server and client helpers)

from kvserve.cli import embedded_model_path  # noqa: E402
from kvserve.model.gguf_loader import gguf_to_hf_directory  # noqa: E402


def memory_mib(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of a process, in MiB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--prompts-per-stream", type=int, default=2)
    parser.add_argument("--min-prompts", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    parser.add_argument("--out-dir", type=Path, default=compare_cpu.ROOT / "benchmarks" / "results" / "default-cpu")
    parser.add_argument("--json", type=Path)
    parser.add_argument("serve_args", nargs="*", help="more `kvserve serve` flags (after --)")
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    gguf = embedded_model_path()
    model = compare_cpu.ModelFiles(hf_dir=gguf_to_hf_directory(gguf), gguf=gguf, num_params=0)
    port = compare_cpu.free_port()
    command = [
        str(Path(sys.executable).with_name("kvserve")), "serve", str(gguf),
        "--host", "127.0.0.1", "--port", str(port),
        "--served-model-name", compare_cpu.SERVED_MODEL_NAME,
        "--uvicorn-log-level", "warning", *args.serve_args,
    ]  # fmt: skip
    results = []
    log_path = args.out_dir / "kvserve.log"
    with compare_cpu.running_server("kvserve", command, port, log_path, args.startup_timeout) as base_url:
        pid = server_pid(port)
        idle = memory_mib(pid)
        compare_cpu.probe_output_len(base_url, args.output_len)
        for concurrency in args.concurrency:
            result = compare_cpu.run_client("kvserve", base_url, model, concurrency, args)
            result = compare_cpu.credit_exact_lengths(result, args.output_len)
            results.append(
                {"concurrency": concurrency, "output_tok_s": result["output_throughput"],
                 "median_tpot_ms": result["median_tpot_ms"], "failed": result["failed"]}
            )  # fmt: skip
        loaded = memory_mib(pid)
    payload = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "commit": compare_cpu.git_commit(),
        "serve_args": args.serve_args,
        "rss_idle_mib": idle["VmRSS"],
        "rss_peak_mib": loaded["VmHWM"],
        "results": results,
    }
    print(json.dumps(payload, indent=1))
    if args.json:
        args.json.write_text(json.dumps(payload, indent=1))


def server_pid(port: int) -> int:
    """The process listening on `port` (the server, not the shell or launcher around it)."""
    inode_by_port = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            parts = line.split()
            if parts[3] == "0A":  # LISTEN
                inode_by_port[int(parts[1].rsplit(":", 1)[1], 16)] = parts[9]
    socket_name = f"socket:[{inode_by_port[port]}]"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(str(fd.readlink()) == socket_name for fd in (proc / "fd").iterdir()):
                return int(proc.name)
        except OSError:
            continue
    raise RuntimeError(f"no process listens on port {port}")


if __name__ == "__main__":
    main()
