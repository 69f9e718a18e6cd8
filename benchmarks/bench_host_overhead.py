"""Host time per decode step, split by phase, with the model forward replaced by a no-op.

The engine's own code runs for each phase, as the actors run it, with `--load-format noop`: zero hidden
states and zero logits of the real shapes, no KV cache. So what remains is the framework:

  schedule   C++ schedule() and the ExecuteBatch message built from its arrays
  prepare    the runner's request bookkeeping and its input tensors (one copy per array)
  forward    the no-op model (zeros): the floor of a runner call
  sample     logits of the sampled rows, sampling metadata and the sampler (greedy, the model's vocabulary);
             on a GPU its kernels run on the device, here on the CPU, so it is reported apart
  update     C++ update() and the TokenDeltas message
  detok      the detokenizer actor: incremental detokenization, stop checks, RequestOutputs
  sse        the chat route's stream chunk per token (its plain-delta path: a dict, orjson, SSE framing)

at 1, 16, 64 and 256 running requests (all decoding). Targets: schedule + update < 100 us and host total
< 1 ms per step at 256 requests; the SSE layer < 0.1 ms per streamed token.

    python benchmarks/bench_host_overhead.py [--model DIR_OR_GGUF] [--steps 200] [--statistic min] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import numpy as np

PHASES = ("schedule", "prepare", "forward", "sample", "update", "detok", "sse")


class _Collector:
    """Stands in for the output router: keeps what the detokenizer sends."""

    def __init__(self) -> None:
        self.outputs: list = []

    def send(self, message) -> None:
        self.outputs.extend(getattr(message, "outputs", ()))


def measure(model: str, num_requests: int, steps: int, statistic: str = "median") -> dict[str, float]:
    from kvserve import _core
    from kvserve.actors.detokenizer import DetokenizerActor
    from kvserve.actors.scheduler import SchedulerActor
    from kvserve.api.openai.stream_chunks import chat_content_event
    from kvserve.config import EngineConfig
    from kvserve.engine.async_engine import load_model_config
    from kvserve.model.loader import resolve_model_dir
    from kvserve.model.runner import ModelRunner
    from kvserve.request import EngineRequest, PreparedRequest
    from kvserve.sampling_params import SamplingParams
    from kvserve.tokenizer import Tokenizer

    config = EngineConfig(model=model, load_format="noop", kv_cache_memory=1 << 30, max_num_seqs=num_requests)
    model_dir = resolve_model_dir(model)
    model_config = load_model_config(config, model_dir)
    tokenizer = Tokenizer.from_directory(model_dir)
    runner = ModelRunner(config, model_config, model_dir)

    scheduler = SchedulerActor(
        _core.SchedulerConfig(
            num_blocks=65536, max_num_seqs=num_requests, max_num_batched_tokens=8192, max_model_len=8192
        )
    )
    collector = _Collector()
    detokenizer = DetokenizerActor(tokenizer, scheduler, collector)
    scheduler.connect(runner=_Collector(), detokenizer=detokenizer, router=_Collector())

    rng = np.random.default_rng(0)
    params = SamplingParams(max_tokens=4096, temperature=0.0, ignore_eos=True)
    for i in range(num_requests):
        prompt = rng.integers(100, 20000, 64).tolist()
        prepared = PreparedRequest(EngineRequest(f"r{i}", prompt, sampling=params), prompt, 4096, ())
        detokenizer.on_register(prepared)
        scheduler.on_add(prepared)

    totals = {phase: [] for phase in PHASES}
    clock = time.perf_counter_ns
    created = int(time.time())
    for step in range(steps + 5):  # the first steps prefill; they are not counted
        t0 = clock()
        scheduler.start_step()
        batch = scheduler.in_flight[0].batch
        t1 = clock()
        runner.apply_request_changes(batch)
        inputs = runner.prepare_inputs(batch)
        t2 = clock()
        hidden = runner.forward(inputs)
        t3 = clock()
        result = runner.sample(batch, hidden)
        t4 = clock()
        messages = scheduler.apply_result(result)
        t5 = clock()
        collector.outputs.clear()
        for message in messages:
            detokenizer.on_deltas(message)
        t6 = clock()
        for output in collector.outputs:
            chat_content_event("chatcmpl-bench", created, "bench", 0, output.text)
        t7 = clock()
        if step >= 5 and batch.max_query_len == 1:
            for phase, (a, b) in zip(PHASES, [(t0, t1), (t1, t2), (t2, t3), (t3, t4), (t4, t5), (t5, t6), (t6, t7)]):
                totals[phase].append((b - a) / 1e3)
    # min: each phase's fastest step, what an unloaded machine does; on a VM that other work shares it is
    # the figure that repeats (the median moves with the load).
    reduce = min if statistic == "min" else statistics.median
    result = {phase: reduce(values) for phase, values in totals.items()}
    result["sse_per_token"] = result["sse"] / num_requests
    result["host_total"] = sum(result[p] for p in PHASES if p not in ("forward", "sample"))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model directory or .gguf (default: the embedded SmolLM2)")
    parser.add_argument("--batch-sizes", default="1,16,64,256")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's own choice)")
    parser.add_argument("--statistic", choices=("median", "min"), default="median", help="per phase, over steps")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args()
    if args.model is None:
        from kvserve.cli import embedded_model_path

        args.model = str(embedded_model_path())

    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    rows = {int(n): measure(args.model, int(n), args.steps, args.statistic) for n in args.batch_sizes.split(",")}
    print(f"host time per decode step (us, {args.statistic} of {args.steps} steps), --load-format noop")
    header = f"{'requests':>9}" + "".join(f"{p:>10}" for p in PHASES) + f"{'sse/token':>11}{'host total':>12}"
    print(header)
    for n, r in rows.items():
        print(
            f"{n:>9}"
            + "".join(f"{r[p]:>10.1f}" for p in PHASES)
            + f"{r['sse_per_token']:>11.2f}{r['host_total']:>12.1f}"
        )
    print("host total = schedule + prepare + update + detok + sse (forward and sampling are device work on a GPU)")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"benchmark": "host_overhead", "machine": platform.machine(), "args": vars(args), "results": rows},
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
