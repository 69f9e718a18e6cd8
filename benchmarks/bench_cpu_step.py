"""The fixed cost of a CPU decode step: the model's forward, logits and argmax, timed in process.

One decode step of R requests, each with a context of `--context` tokens, is run repeatedly on a model
loaded as `kvserve serve` loads it (float32 on CPU); reported per step: wall time and the CPU time of the
calling thread (`time.thread_time`), which on a shared machine is the steadier figure (wall time includes
waiting for a core). `--compile` also runs the forward through `torch.compile` and reports its compile time,
its graph breaks and the same figures. `--profile` prints torch.profiler's table of the eager steps. For a
Llama-family model the fused C++ decode layers (model/cpu_decode.py) are also switched off in an
"eager-op-by-op" row: the A/B of that path in one run. Figures are the minimum over `--repeats` runs.

    .venv/bin/python benchmarks/bench_cpu_step.py MODEL_DIR_OR_GGUF [--requests 1 16] [--threads 1] [--compile]
        [--kv-cache-dtype float16]
"""

from __future__ import annotations

import argparse
import functools
import json
import time

from kvserve.openmp_waiting import configure_openmp_waiting  # noqa: E402

configure_openmp_waiting()  # as `kvserve serve` does, before torch loads

import torch  # noqa: E402


def decode_inputs(config, num_requests: int, context: int, block_size: int = 16, cache_dtype=torch.float32):
    """Token ids, positions and a ForwardContext for one decode token per request, on distinct blocks."""
    from kvserve.model.forward_context import ForwardContext

    width = -(-context // block_size)
    kv_caches = [
        torch.zeros(2, num_requests * width, block_size, config.num_key_value_heads, config.head_dim, dtype=cache_dtype)
        for _ in range(config.num_hidden_layers)
    ]
    tables = torch.arange(num_requests * width, dtype=torch.int32).view(num_requests, width)
    seq_lens = torch.full((num_requests,), context, dtype=torch.int32)
    last = context - 1
    slots = tables[:, last // block_size].long() * block_size + last % block_size
    query_start_loc = torch.arange(num_requests + 1, dtype=torch.int32)
    ctx = ForwardContext(slots, tables, seq_lens, query_start_loc, seq_lens.clone(), 1, context, kv_caches)
    ids = torch.randint(0, config.vocab_size, (num_requests,))
    return ids, torch.full((num_requests,), last, dtype=torch.int64), ctx


def decode_step(model, forward, ids, positions, ctx) -> torch.Tensor:
    return model.compute_logits(forward(ids, positions, ctx)).argmax(-1)


def timed(step, num_steps: int, repeats: int) -> dict[str, float]:
    """Per step, the minimum over `repeats` runs of `num_steps` steps (the least disturbed run on a shared
    machine)."""
    for _ in range(20):
        step()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.thread_time()
        for _ in range(num_steps):
            step()
        walls.append((time.perf_counter() - wall) / num_steps * 1e3)
        cpus.append((time.thread_time() - cpu) / num_steps * 1e3)
    return {"wall_ms": min(walls), "thread_cpu_ms": min(cpus)}


def layer_by_layer(model, ids, positions, ctx) -> torch.Tensor:
    """The forward with the fused C++ decode layers switched off: the op-by-op path, for A/B in one run."""
    fused, model._cpu_decode = model._cpu_decode, None
    try:
        return model.forward(ids, positions, ctx)
    finally:
        model._cpu_decode = fused


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a model directory or a .gguf file")
    parser.add_argument("--requests", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--context", type=int, default=200, help="tokens of context per request")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--kv-cache-dtype", choices=["float32", "float16", "bfloat16"], default="float32")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3, help="runs of --steps steps; the minimum is reported")
    parser.add_argument("--compile", action="store_true", help="also torch.compile the forward")
    parser.add_argument("--profile", action="store_true", help="torch.profiler table of the eager steps")
    args = parser.parse_args()

    from kvserve.model.loader import build_model, model_weights, resolve_model_dir
    from kvserve.model.model_config import ModelConfig

    torch.set_num_threads(args.threads)
    cache_dtype = getattr(torch, args.kv_cache_dtype)
    model_dir = resolve_model_dir(args.model)
    config = ModelConfig.from_directory(model_dir)
    weights = model_weights(model_dir, config, torch.device("cpu"))
    model = build_model(config, weights, torch.float32, torch.device("cpu"))
    forwards = {"eager": model.forward}
    if getattr(model, "_cpu_decode", None) is not None:  # a Llama-family model: also its op-by-op path
        forwards["eager-op-by-op"] = functools.partial(layer_by_layer, model)
    results = []
    with torch.inference_mode():
        if args.compile:
            from torch import _dynamo

            ids, positions, ctx = decode_inputs(config, args.requests[0], args.context, cache_dtype=cache_dtype)
            explained = _dynamo.explain(model.forward)(ids, positions, ctx)
            started = time.perf_counter()
            forwards["compiled"] = torch.compile(model.forward, dynamic=False)
            forwards["compiled"](ids, positions, ctx)
            compile_s = time.perf_counter() - started
            print(
                f"torch.compile: first call {compile_s:.1f} s, {explained.graph_count} graphs, "
                f"{explained.graph_break_count} graph breaks"
            )
            for reason in {str(b.reason).splitlines()[0] for b in explained.break_reasons}:
                print(f"  break: {reason[:150]}")
        for num_requests in args.requests:
            ids, positions, ctx = decode_inputs(config, num_requests, args.context, cache_dtype=cache_dtype)
            for name, forward in forwards.items():
                step = functools.partial(decode_step, model, forward, ids, positions, ctx)
                figures = {
                    "forward": name, "requests": num_requests, "kv_cache_dtype": args.kv_cache_dtype,
                    **timed(step, args.steps, args.repeats),
                }  # fmt: skip
                print(json.dumps(figures), flush=True)
                results.append(figures)
            if args.profile:
                from torch.profiler import ProfilerActivity, profile

                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    for _ in range(50):
                        decode_step(model, model.forward, ids, positions, ctx)
                print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
