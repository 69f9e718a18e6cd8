"""The benchmark end to end: against a fake SSE server with known timings, against a real kvserve, and its
datasets, result file and plots."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from kvserve.bench.client import SSEDecoder
from kvserve.bench.datasets import load_tokenizer, prefix_repetition_requests, random_requests, sharegpt_requests
from kvserve.bench.plots import plot_sweep
from kvserve.bench.serve import build_parser, run_benchmark
from tests.api.server_process import ServerProcess

# The fake server's script for each request: the first chunk FIRST_CHUNK_S after the request, then a chunk
# every CHUNK_GAP_S; the third chunk carries two tokens, so usage counts one token more than there are
# chunks. The usage chunk comes TAIL_S after the last token chunk and must not count in E2EL.
FIRST_CHUNK_S = 0.050
CHUNK_GAP_S = 0.020
NUM_CHUNKS = 5
COMPLETION_TOKENS = NUM_CHUNKS + 1
TAIL_S = 0.100
PROMPT_TOKENS = 77

# Expected per-request values in ms. TPOT divides the decode time by tokens, not chunks.
TTFT_MS = FIRST_CHUNK_S * 1000
ITL_MS = CHUNK_GAP_S * 1000
E2EL_MS = TTFT_MS + (NUM_CHUNKS - 1) * ITL_MS
TPOT_MS = (E2EL_MS - TTFT_MS) / (COMPLETION_TOKENS - 1)
# Tolerances. asyncio.sleep never returns early and the client's clock starts before it sends, so times
# can only come out late, except for 1 ms of timer granularity. Each of the server's sleeps wakes a little
# late (about 1 ms measured on a loaded 2-core box; WAKE_LATE_MS allows 3), and once in a while the
# process is not scheduled for longer (another process, a GC pause; LATE_MS allows 15 ms once per
# stream). Medians over 6 requests keep one badly delayed request from failing the test. The exact
# relations between a request's numbers (TPOT, E2EL from TTFT and ITLs) are checked without tolerance.
EARLY_MS = 1.0
WAKE_LATE_MS = 3.0
LATE_MS = 15.0
TTFT_LATE_MS = LATE_MS + WAKE_LATE_MS
E2EL_LATE_MS = LATE_MS + NUM_CHUNKS * WAKE_LATE_MS


def _sse(payload: dict | str) -> bytes:
    return b"data: " + (payload if isinstance(payload, str) else json.dumps(payload)).encode() + b"\n\n"


def _choice(chat: bool, index: int) -> dict:
    text = f" w{index}" * (2 if index == 2 else 1)
    if not chat:
        return {"index": 0, "text": text, "finish_reason": None}
    delta = {"role": "assistant", "content": text} if index == 0 else {"content": text}
    return {"index": 0, "delta": delta, "finish_reason": None}


MODE = web.AppKey("mode", str)
ROOT = web.AppKey("root", str)
BODIES = web.AppKey("bodies", list)


async def _models(request: web.Request) -> web.Response:
    return web.json_response({"object": "list", "data": [{"id": "fake-model", "root": request.app[ROOT]}]})


async def _generate(request: web.Request) -> web.StreamResponse:
    app = request.app
    app[BODIES].append(await request.json())
    number = len(app[BODIES])
    if app[MODE] == "fail_even" and number % 2 == 0:
        return web.json_response({"error": {"message": "no capacity", "type": "ServerError"}}, status=503)
    chat = request.path.endswith("/chat/completions")
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    await asyncio.sleep(FIRST_CHUNK_S)
    for index in range(NUM_CHUNKS):
        if index:
            await asyncio.sleep(CHUNK_GAP_S)
        if app[MODE] == "error_event" and index == 2:
            await response.write(_sse({"error": {"message": "engine died", "type": "InternalServerError"}}))
            await response.write(_sse("[DONE]"))
            return response
        await response.write(_sse({"object": "chunk", "choices": [_choice(chat, index)]}))
    await asyncio.sleep(TAIL_S)
    usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": COMPLETION_TOKENS}
    await response.write(_sse({"object": "chunk", "choices": [], "usage": usage}))
    await response.write(_sse("[DONE]"))
    return response


async def _bench_fake(mode: str, root: Path, flags: list[str]) -> tuple[dict, list[dict]]:
    """Runs the benchmark against the fake server on a free port; (result, request bodies received)."""
    app = web.Application()
    app[MODE], app[ROOT], app[BODIES] = mode, str(root), []
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/completions", _generate)
    app.router.add_post("/v1/chat/completions", _generate)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    try:
        args = build_parser().parse_args(["--base-url", f"http://{host}:{port}", "--disable-tqdm", *flags])
        result = await run_benchmark(args)
    finally:
        await runner.cleanup()
    return result, app[BODIES]


# Three warm-ups open the three connections, so no request's TTFT pays for a TCP handshake.
FAKE_FLAGS = [
    *("--num-prompts", "6", "--random-input-len", "16", "--random-output-len", "5"),
    *("--max-concurrency", "3", "--num-warmups", "3"),
]


@pytest.mark.parametrize("backend", ["openai", "openai-chat"])
def test_fake_server_timings(backend, tokenizer_dir, tmp_path):
    flags = [
        *FAKE_FLAGS,
        "--backend",
        backend,
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,99",
        "--save-result",
        "--result-dir",
        str(tmp_path / "results"),
        "--result-filename",
        "run.json",
        "--plot-dir",
        str(tmp_path / "plots"),
        "--label",
        "fake",
    ]
    # No --tokenizer: the prompts are sized with the tokenizer at the server's model root.
    result, bodies = asyncio.run(_bench_fake("ok", tokenizer_dir, flags))

    assert (result["completed"], result["failed"], result["model_id"]) == (6, 0, "fake-model")
    assert len(bodies) == 3 + 6 and bodies[0] == bodies[1] == bodies[2] == bodies[3]  # warm-ups: the first prompt
    tokenizer = load_tokenizer(str(tokenizer_dir))
    for body in bodies:
        assert body["model"] == "fake-model" and body["stream"] is True
        assert body["stream_options"] == {"include_usage": True}
        # Greedy by default; the random dataset always asks to ignore EOS (as vLLM's client does).
        assert body["temperature"] == 0.0 and body["ignore_eos"] is True
        if backend == "openai":
            prompt, max_tokens = body["prompt"], body["max_tokens"]
        else:
            [message] = body["messages"]
            assert message["role"] == "user"
            prompt, max_tokens = message["content"], body["max_completion_tokens"]
        assert max_tokens == 5 and len(tokenizer.encode(prompt)) == 16

    # Token counts come from the usage chunk, the prompt's too.
    assert result["output_lens"] == [COMPLETION_TOKENS] * 6
    assert result["input_lens"] == [PROMPT_TOKENS] * 6
    assert result["total_input_tokens"] == 6 * PROMPT_TOKENS
    assert result["total_output_tokens"] == 6 * COMPLETION_TOKENS
    # One ITL sample per gap between chunks with choices, however many tokens a chunk holds.
    assert [len(itl) for itl in result["itls"]] == [NUM_CHUNKS - 1] * 6

    # Per request, E2EL ends at the last token chunk (TTFT plus the gaps; not at the usage chunk TAIL_S
    # later), and TPOT spreads E2EL - TTFT over the usage's tokens, not over the chunks.
    for ttft, itl, e2el, tpot in zip(result["ttfts"], result["itls"], result["e2els"], result["tpots"]):
        assert e2el == pytest.approx(ttft + sum(itl), rel=1e-9)
        assert tpot == pytest.approx((e2el - ttft) / (COMPLETION_TOKENS - 1), rel=1e-9)

    assert TTFT_MS - EARLY_MS <= result["median_ttft_ms"] <= TTFT_MS + TTFT_LATE_MS
    assert E2EL_MS - EARLY_MS <= result["median_e2el_ms"] <= E2EL_MS + E2EL_LATE_MS
    # Gaps are differences of arrival times: a late arrival shortens the next gap as it lengthens its own.
    assert ITL_MS - LATE_MS <= result["median_itl_ms"] <= ITL_MS + LATE_MS
    assert ITL_MS - LATE_MS <= result["mean_itl_ms"] <= ITL_MS + LATE_MS
    # E2EL - TTFT spans the 4 gap sleeps: off by at most one LATE_MS plus their wake-ups, spread over 5 tokens.
    tpot_error_ms = (LATE_MS + (NUM_CHUNKS - 1) * WAKE_LATE_MS) / (COMPLETION_TOKENS - 1)
    assert TPOT_MS - tpot_error_ms <= result["median_tpot_ms"] <= TPOT_MS + tpot_error_ms
    assert result["max_concurrent_requests"] == 3
    assert result["request_throughput"] == pytest.approx(6 / result["duration"])
    assert result["output_throughput"] == pytest.approx(6 * COMPLETION_TOKENS / result["duration"])

    saved = json.loads((tmp_path / "results" / "run.json").read_text())
    assert saved.keys() == result.keys()
    assert saved["p50_ttft_ms"] == result["p50_ttft_ms"] and saved["errors"] == [""] * 6
    for metric in ("ttft", "tpot", "e2el"):
        png = tmp_path / "plots" / f"fake-{metric}_cdf.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fake_server_http_errors_count_as_failed(tokenizer_dir):
    flags = ["--num-prompts", "4", "--random-input-len", "8", "--random-output-len", "5", "--max-concurrency", "1"]
    result, _ = asyncio.run(_bench_fake("fail_even", tokenizer_dir, flags))
    assert (result["completed"], result["failed"]) == (2, 2)
    assert result["errors"][0] == "" and result["errors"][2] == ""
    for error in (result["errors"][1], result["errors"][3]):
        assert error.startswith("HTTP 503 Service Unavailable:") and "no capacity" in error
    assert result["output_lens"] == [COMPLETION_TOKENS, 0, COMPLETION_TOKENS, 0]
    assert result["total_output_tokens"] == 2 * COMPLETION_TOKENS
    assert result["total_input_tokens"] == 2 * PROMPT_TOKENS
    assert result["tpots"][1] is None and result["tpots"][3] is None and result["tpots"][0] > 0


def test_fake_server_error_event_counts_as_failed(tokenizer_dir):
    flags = ["--num-prompts", "2", "--random-input-len", "8", "--random-output-len", "5"]
    result, _ = asyncio.run(_bench_fake("error_event", tokenizer_dir, flags))
    assert (result["completed"], result["failed"]) == (0, 2)
    assert all(error == "StreamError: error event: engine died" for error in result["errors"])
    assert (result["total_output_tokens"], result["mean_ttft_ms"], result["max_concurrent_requests"]) == (0, 0.0, 0)


def test_sse_decoder_reassembles_events_split_anywhere():
    stream = 'data: {"a": 1}\r\n\r\n: ping\n\ndata: {"b":\ndata: "é"}\n\nevent: x\ndata: [DONE]\n\ndata: tail'.encode()
    for cut in range(len(stream)):
        decoder = SSEDecoder()
        # Cutting inside "é" (two bytes in UTF-8) must not garble it.
        events = decoder.feed(stream[:cut]) + decoder.feed(stream[cut:]) + decoder.close()
        assert events == ['{"a": 1}', '{"b":\n"é"}', "[DONE]", "tail"], cut


# --- Against a real kvserve -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tiny_model_dir) -> Iterator[ServerProcess]:
    process = ServerProcess(
        str(tiny_model_dir("llama")),
        "--served-model-name",
        "tiny-llama",
        "--kv-cache-memory",
        "64MiB",
        "--max-model-len",
        "256",
        "--block-size",
        "8",
    )
    yield process
    assert process.stop() == 0, process.log()


REAL_FLAGS = ["--num-prompts", "8", "--ignore-eos", "--max-concurrency", "4", "--disable-tqdm"]


@pytest.mark.parametrize(
    ("backend", "dataset_flags", "prompt_len"),
    [
        ("openai", ["--random-input-len", "32", "--random-output-len", "8"], 32),
        ("openai-chat", ["--random-input-len", "32", "--random-output-len", "8"], None),
        (
            "openai",
            [
                "--dataset-name",
                "prefix_repetition",
                "--prefix-repetition-prefix-len",
                "24",
                "--prefix-repetition-suffix-len",
                "8",
                "--prefix-repetition-num-prefixes",
                "2",
                "--prefix-repetition-output-len",
                "8",
            ],
            32,
        ),
    ],
)
def test_real_server(server, backend, dataset_flags, prompt_len):
    args = build_parser().parse_args(["--base-url", server.base_url, "--backend", backend, *REAL_FLAGS, *dataset_flags])
    result = asyncio.run(run_benchmark(args))
    assert (result["completed"], result["failed"]) == (8, 0), result["errors"]
    assert result["model_id"] == "tiny-llama"
    assert result["output_lens"] == [8] * 8 and result["total_output_tokens"] == 64
    if prompt_len is not None:
        # The server's prompt_tokens agree with the dataset's exact lengths.
        assert result["input_lens"] == [prompt_len] * 8
    else:
        # The chat template wraps the 32-token message.
        assert all(n > 32 for n in result["input_lens"])
    for name in ("ttft", "tpot", "itl", "e2el"):
        assert result[f"mean_{name}_ms"] > 0 and result[f"p99_{name}_ms"] > 0, name
    assert result["output_throughput"] > 0 and result["request_throughput"] > 0
    assert 1 <= result["max_concurrent_requests"] <= 4


# --- Datasets --------------------------------------------------------------------------------------------


def test_random_prompts_have_exact_lengths(tokenizer_dir):
    tokenizer = load_tokenizer(str(tokenizer_dir))
    requests = random_requests(tokenizer, 40, input_len=48, output_len=8, range_ratio=0.0, seed=1)
    assert [len(tokenizer.encode(r.prompt)) for r in requests] == [48] * 40
    assert {(r.prompt_len, r.output_len) for r in requests} == {(48, 8)}
    assert len({r.prompt for r in requests}) == 40
    assert requests == random_requests(tokenizer, 40, input_len=48, output_len=8, range_ratio=0.0, seed=1)

    ranged = random_requests(tokenizer, 200, input_len=40, output_len=10, range_ratio=0.5, seed=2)
    assert all(len(tokenizer.encode(r.prompt)) == r.prompt_len for r in ranged)
    assert {r.prompt_len for r in ranged} <= set(range(20, 61)) and {r.output_len for r in ranged} <= set(range(5, 16))
    assert min(r.prompt_len for r in ranged) < 30 and max(r.prompt_len for r in ranged) > 50


def test_prefix_repetition_prompts_share_prefixes(tokenizer_dir):
    tokenizer = load_tokenizer(str(tokenizer_dir))
    # 7 // 2 = 3 prompts per prefix: the remainder is dropped, as in vLLM.
    requests = prefix_repetition_requests(
        tokenizer, 7, prefix_len=20, suffix_len=6, num_prefixes=2, output_len=4, seed=0
    )
    assert len(requests) == 6
    token_ids = [tokenizer.encode(r.prompt) for r in requests]
    assert [len(ids) for ids in token_ids] == [26] * 6 and {r.prompt_len for r in requests} == {26}
    assert {r.output_len for r in requests} == {4}
    groups = Counter(tuple(ids[:20]) for ids in token_ids)
    assert sorted(groups.values()) == [3, 3]
    assert len({tuple(ids[20:]) for ids in token_ids}) == 6


def test_sharegpt_file(tokenizer_dir, tmp_path):
    tokenizer = load_tokenizer(str(tokenizer_dir))
    question = "How do I sort a list of numbers in Python from the largest to the smallest?"
    answer = "Call sorted(numbers, reverse=True), or numbers.sort(reverse=True) to sort it in place."
    entries = [
        {"id": "kept", "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}]},
        {"id": "one turn", "conversations": [{"from": "human", "value": question}]},
        {"id": "short prompt", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": answer}]},
        {"id": "short answer", "conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": "ok"}]},
        {"id": "no conversations"},
    ]
    path = tmp_path / "sharegpt.json"
    path.write_text(json.dumps(entries))

    requests = sharegpt_requests(tokenizer, str(path), num_requests=3, seed=0, output_len=None)
    # One conversation passes the filters; the file is short, so it is repeated up to num_requests.
    assert [r.prompt for r in requests] == [question] * 3
    assert {(r.prompt_len, r.output_len) for r in requests} == {
        (len(tokenizer.encode(question)), len(tokenizer.encode(answer)))
    }
    # A fixed output length replaces the answers' lengths and their minimum: "ok" is kept too.
    fixed = sharegpt_requests(tokenizer, str(path), num_requests=2, seed=0, output_len=7)
    assert sorted(r.output_len for r in fixed) == [7, 7] and {r.prompt for r in fixed} == {question}
    assert len(sharegpt_requests(tokenizer, str(path), num_requests=10, seed=0, output_len=7)) == 10


def test_plot_sweep_writes_pngs(tmp_path):
    def run(label: str, concurrency: int, throughput: float, ttft: float) -> dict:
        return {
            "label": label,
            "max_concurrency": concurrency,
            "max_concurrent_requests": concurrency,
            "output_throughput": throughput,
            "median_ttft_ms": ttft,
            "p99_ttft_ms": 2 * ttft,
        }

    results = [
        run(label, c, c * scale, 10.0 * c) for label, scale in (("kvserve", 90.0), ("vllm", 100.0)) for c in (1, 4, 2)
    ]
    paths = plot_sweep(results, tmp_path / "sweep")
    assert [p.name for p in paths] == ["sweep_output_throughput.png", "sweep_ttft.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)
