"""kvserve on Ray Serve: a local Ray instance (loopback only), two replicas of the embedded SmolLM2, the
official openai SDK through Ray's HTTP proxy, and the Python API through Ray handles."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

# Read by Ray when it is imported (the first two) and by the processes ray.init starts: every Ray server binds
# loopback (a local-only instance, as Ray runs on macOS), no usage report, and the proxy answers its own
# errors (503 when the queue is full) in the API family's envelope. Only Ray reads RAY_* variables.
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] = "kvserve.integrations.ray_serve:proxy_middlewares"
pytest.importorskip("ray.serve", reason="needs the ray extra: pip install '.[ray]'")

import openai  # noqa: E402
import ray  # noqa: E402
from ray import serve  # noqa: E402

from kvserve.cli import DEFAULT_MODEL_NAME  # noqa: E402
from kvserve.errors import EngineDeadError  # noqa: E402
from kvserve.integrations.ray_serve import KvserveDeployment, build_app, serve_namespace  # noqa: E402
from kvserve.integrations.ray_serve.disconnect_on_cancel import DisconnectOnCancel  # noqa: E402
from kvserve.sampling_params import SamplingParams  # noqa: E402
from tests.api.server_process import free_port  # noqa: E402

pytestmark = pytest.mark.ray

NUM_REPLICAS = 2
MAX_ONGOING = 2  # per replica
MAX_QUEUED = 6  # in the proxy's router, for the whole deployment (a burst counts as queued until placed)
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
# A request that runs until it is stopped (the test ends it by disconnecting).
ENDLESS = {"max_tokens": 900, "min_tokens": 900, "ignore_eos": True}


@dataclass
class RayApp:
    base_url: str
    handle: Any

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base_url}/v1", api_key="unused", max_retries=0, timeout=120)

    def stats(self) -> list[Any]:
        """Each replica's ReplicaStats. A call takes one of the replica's max_ongoing_requests slots, so it
        waits while every slot is busy: ask when some are free."""
        return self.handle.broadcast("stats").results(timeout_s=30)


@pytest.fixture(scope="module")
def ray_app() -> Iterator[RayApp]:
    port = free_port()
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False)
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_app(
            {
                "kv_cache_memory": "64MiB",
                "max_model_len": 1024,
                "deployment": {
                    "num_replicas": NUM_REPLICAS,
                    "max_ongoing_requests": MAX_ONGOING,
                    "max_queued_requests": MAX_QUEUED,
                },
            }
        )
        handle = serve.run(app, name="kvserve", route_prefix="/")
        yield RayApp(f"http://127.0.0.1:{port}", handle)
    finally:
        serve.shutdown()
        ray.shutdown()


def send_chat(base_url: str, body: dict) -> socket.socket:
    """A chat request on a raw socket (a client that can go away mid-answer)."""
    host, port = base_url.removeprefix("http://").split(":")
    payload = json.dumps({"model": DEFAULT_MODEL_NAME, "messages": FRANCE, **body}).encode()
    sock = socket.create_connection((host, int(port)), timeout=60)
    sock.sendall(
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    return sock


def open_stream(base_url: str, body: dict) -> tuple[socket.socket, bytes]:
    """A streamed chat request, read until its first token arrived."""
    sock = send_chat(base_url, {**body, "stream": True})
    received = b""
    while received.count(b"data:") < 2:  # the role chunk, then a token
        received += sock.recv(65536)
    return sock, received


def wait_until_idle(app: RayApp, timeout: float) -> list[Any]:
    """Every replica's engine holds no request and no KV block; returns the stats that showed it."""
    deadline = time.monotonic() + timeout
    while True:
        stats = app.stats()
        if all(s.num_running == s.num_waiting == 0 and s.num_free_blocks == s.num_total_blocks for s in stats):
            return stats
        if time.monotonic() > deadline:
            raise AssertionError(f"the replicas are still busy after {timeout} s: {stats}")
        time.sleep(0.05)


def chat_reply(app: RayApp) -> str:
    reply = app.client().chat.completions.create(
        model=DEFAULT_MODEL_NAME, messages=FRANCE, max_tokens=24, temperature=0.0
    )
    return reply.choices[0].message.content


# -- HTTP through Ray's proxy ----------------------------------------------------------------------------------
def test_concurrent_chats_are_served_by_both_replicas(ray_app):
    finished_before = [s.num_finished for s in ray_app.stats()]
    assert [m.id for m in ray_app.client().models.list().data] == [DEFAULT_MODEL_NAME]
    concurrency = MAX_QUEUED  # more than the replicas take at once: some wait in Ray's router, none refused
    with ThreadPoolExecutor(concurrency) as pool:
        replies = list(pool.map(lambda _: chat_reply(ray_app), range(concurrency)))
    assert len(set(replies)) == 1 and "Paris" in replies[0], replies  # greedy: one answer, on either replica
    finished = [after - before for after, before in zip([s.num_finished for s in ray_app.stats()], finished_before)]
    assert sum(finished) == concurrency and all(n > 0 for n in finished), finished


def test_streaming_chat_matches_the_whole_answer(ray_app):
    stream = ray_app.client().chat.completions.create(
        model=DEFAULT_MODEL_NAME, messages=FRANCE, max_tokens=24, temperature=0.0, stream=True
    )
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == chat_reply(ray_app)


def test_a_client_disconnect_aborts_the_request_in_the_engine(ray_app):
    aborted_before = sum(s.num_aborted for s in ray_app.stats())
    sock, received = open_stream(ray_app.base_url, ENDLESS)
    with sock:
        assert received.startswith(b"HTTP/1.1 200")
        assert sum(s.num_running for s in ray_app.stats()) == 1
    stats = wait_until_idle(ray_app, timeout=10)
    assert sum(s.num_aborted for s in stats) == aborted_before + 1


def test_a_client_that_leaves_before_a_whole_answer_aborts_it(ray_app):
    aborted_before = sum(s.num_aborted for s in ray_app.stats())
    with send_chat(ray_app.base_url, ENDLESS):
        deadline = time.monotonic() + 30
        while sum(s.num_running for s in ray_app.stats()) != 1:
            assert time.monotonic() < deadline, "the request never started"
            time.sleep(0.05)
    stats = wait_until_idle(ray_app, timeout=10)
    assert sum(s.num_aborted for s in stats) == aborted_before + 1


def test_a_full_queue_is_503_in_openai_envelope(ray_app):
    aborted_before = sum(s.num_aborted for s in ray_app.stats())
    # Every replica slot holds a request that streams tokens (so it runs in an engine)...
    streams = [open_stream(ray_app.base_url, ENDLESS)[0] for _ in range(NUM_REPLICAS * MAX_ONGOING)]
    try:
        with ThreadPoolExecutor(MAX_QUEUED) as pool:
            # ...then Ray's router holds as many as it may (no replica has room)...
            queued = [pool.submit(chat_reply, ray_app) for _ in range(MAX_QUEUED)]
            time.sleep(1.0)
            assert not any(f.done() for f in queued)
            # ...and refuses the next one.
            with pytest.raises(openai.APIStatusError) as refused:
                chat_reply(ray_app)
            assert refused.value.status_code == 503
            error = refused.value.body
            assert error["code"] == 503 and error["type"] == "ServiceUnavailableError"
            assert "backpressure" in error["message"] and error["param"] is None
            for sock in streams:  # room again: the queued requests run
                sock.close()
            assert all("Paris" in f.result(timeout=120) for f in queued)
    finally:
        for sock in streams:
            sock.close()
    stats = wait_until_idle(ray_app, timeout=10)
    assert sum(s.num_aborted for s in stats) == aborted_before + len(streams)


def test_an_unknown_path_is_kvserves_404(ray_app):
    request = urllib.request.Request(f"{ray_app.base_url}/v1/nothing-here", method="GET")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(request, timeout=30)
    assert missing.value.code == 404
    assert json.loads(missing.value.read())["error"]["type"] == "NotFoundError"


# -- the Python API through handles -------------------------------------------------------------------------
def test_handle_chat_and_generate_match_http(ray_app):
    params = SamplingParams(max_tokens=24, temperature=0.0)
    whole = ray_app.handle.chat.remote(FRANCE, params).result()
    assert whole.finished and whole.outputs[0].text == chat_reply(ray_app)
    assert whole.outputs[0].finish_reason == "stop"
    deltas = list(ray_app.handle.options(stream=True).chat.remote(FRANCE, params, stream=True))
    assert "".join(d.outputs[0].text for d in deltas) == whole.outputs[0].text
    assert [d.finished for d in deltas] == [False] * (len(deltas) - 1) + [True]
    # The chat prompt's token ids, sent to generate, give the same tokens.
    by_ids = ray_app.handle.generate.remote(whole.prompt_token_ids, params).result()
    assert by_ids.outputs[0].token_ids == whole.outputs[0].token_ids and by_ids.prompt is None


def test_leaving_a_handle_stream_aborts_the_request(ray_app):
    aborted_before = sum(s.num_aborted for s in ray_app.stats())
    params = SamplingParams(max_tokens=900, min_tokens=900, ignore_eos=True)
    stream = ray_app.handle.options(stream=True).generate.remote("Once upon a time", params, stream=True)
    first = next(iter(stream))
    assert not first.finished and first.outputs[0].token_ids
    stream.cancel()
    stats = wait_until_idle(ray_app, timeout=10)
    assert sum(s.num_aborted for s in stats) == aborted_before + 1


def test_handle_embed(ray_app):
    first = ray_app.handle.embed.remote("The capital of France is Paris.").result()
    again = ray_app.handle.embed.remote("The capital of France is Paris.").result()
    vector = first.outputs.embedding
    assert len(vector) == 576 and abs(sum(x * x for x in vector) - 1.0) < 1e-4  # SmolLM2's hidden size, L2 norm
    assert again.outputs.embedding == pytest.approx(vector, abs=1e-5)


# -- without a Ray cluster ------------------------------------------------------------------------------------
def test_serve_namespace_takes_the_clis_flags():
    args = serve_namespace(
        {
            "model": "/models/m",
            "max_model_len": "1024",
            "kv-cache-memory": "64MiB",
            "enable_prefix_caching": "false",
            "enable_force_include_usage": True,
            "served_model_name": ["a", "b"],
            "max_num_seqs": 8,
        }
    )
    assert args.model == "/models/m" and args.max_model_len == 1024 and args.kv_cache_memory == 64 << 20
    assert args.enable_prefix_caching is False and args.enable_force_include_usage is True
    assert args.served_model_name == ["a", "b"] and args.max_num_seqs == 8


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"no_such_flag": 1}, "not a `kvserve serve` flag"),
        ({"port": 8000}, "Ray Serve's to set"),
        ({"dtype": "int3"}, "invalid choice"),
        ({"kv_cache_memory": "lots"}, "not a size"),
    ],
)
def test_serve_namespace_refuses_bad_flags(options, message):
    with pytest.raises(ValueError, match=message):
        serve_namespace(options)


def test_the_example_config_is_a_serve_config_of_kvserve_flags():
    import yaml
    from ray.serve.schema import ServeDeploySchema

    import kvserve.integrations.ray_serve as ray_serve

    text = (Path(ray_serve.__file__).parent / "example.yaml").read_text()
    (application,) = ServeDeploySchema.model_validate(yaml.safe_load(text)).applications
    assert application.import_path == "kvserve.integrations.ray_serve:build_app"
    assert serve_namespace(application.args).kv_cache_memory == 1 << 30
    (deployment,) = application.deployments
    assert deployment.name == KvserveDeployment.name
    assert deployment.autoscaling_config["max_replicas"] > deployment.autoscaling_config["min_replicas"]


def test_a_cancelled_call_reaches_the_app_as_a_disconnect():
    """Ray may cancel a request's ASGI call instead of sending http.disconnect: the app must hear of it."""
    heard: list[dict] = []

    async def app(scope, receive, send):  # as Quart: the request's body, then waits for a disconnect
        heard.append(await receive())
        heard.append(await receive())

    async def main() -> None:
        messages: asyncio.Queue = asyncio.Queue()
        messages.put_nowait({"type": "http.request", "body": b"{}", "more_body": False})
        call = asyncio.ensure_future(DisconnectOnCancel(app)({"type": "http"}, messages.get, None))
        await asyncio.sleep(0.05)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call

    asyncio.run(main())
    assert heard == [{"type": "http.request", "body": b"{}", "more_body": False}, {"type": "http.disconnect"}]


def test_check_health_fails_once_the_engine_is_dead():
    replica = KvserveDeployment.func_or_class
    replica.check_health(SimpleNamespace(engine=SimpleNamespace(dead=None)))
    with pytest.raises(RuntimeError, match="runner actor"):
        replica.check_health(SimpleNamespace(engine=SimpleNamespace(dead=EngineDeadError("in its runner actor"))))
