"""A client that closes its connection aborts its request: the KV blocks are free within a second."""

from __future__ import annotations

import json
import socket
import time

import pytest

from kvserve.config import EngineConfig
from tests.api.in_process_server import InProcessServer
from tests.engine_helpers import MiB


@pytest.fixture(scope="module")
def live(tiny_model_dir):
    server = InProcessServer(EngineConfig(model=str(tiny_model_dir("llama")), kv_cache_memory=16 * MiB, block_size=4))
    yield server
    server.stop()


def raw_request(port: int, path: str, payload: dict) -> socket.socket:
    body = json.dumps(payload).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    return sock


def kv_state(live: InProcessServer) -> tuple[int, int, int, int]:
    def read():
        scheduler = live.engine.scheduler
        pool = scheduler.core.block_pool
        return pool.num_free_blocks, pool.num_blocks, scheduler.core.num_running, scheduler.num_aborted

    return live.call(read)


def wait_for(predicate, timeout: float) -> float:
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not reached within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - start


LONG = {"prompt": "hello " * 20, "max_tokens": 400, "min_tokens": 400, "ignore_eos": True}


def test_stream_disconnect_frees_blocks(live):
    aborted_before = kv_state(live)[3]
    sock = raw_request(live.port, "/v1/completions", {**LONG, "stream": True})
    received = b""
    while received.count(b"data:") < 5:
        received += sock.recv(65536)
    assert received.startswith(b"HTTP/1.1 200")
    free, total, running, _ = kv_state(live)
    assert running == 1 and free < total
    sock.close()
    elapsed = wait_for(lambda: kv_state(live)[0] == kv_state(live)[1], timeout=1.0)
    assert kv_state(live)[3] == aborted_before + 1, "the request must end by abort, not by finishing"
    assert elapsed < 1.0
    live.call(lambda: live.engine.scheduler.core.check_invariants())


def test_non_stream_disconnect_frees_blocks(live):
    aborted_before = kv_state(live)[3]
    sock = raw_request(live.port, "/v1/completions", LONG)
    wait_for(lambda: kv_state(live)[2] == 1, timeout=5.0)
    sock.close()
    wait_for(lambda: kv_state(live)[0] == kv_state(live)[1], timeout=1.0)
    assert kv_state(live)[3] == aborted_before + 1
    assert live.engine.is_healthy


def test_chat_without_a_template_is_a_clear_400(live):
    from tests.api.test_openai_sdk import post

    class Address:
        base_url = f"http://127.0.0.1:{live.port}"

    status, body = post(Address, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert status == 400 and "no chat template" in body["error"]["message"]


def test_an_error_after_the_stream_started_is_an_error_event_then_done(tiny_model_dir):
    server = InProcessServer(EngineConfig(model=str(tiny_model_dir("llama")), kv_cache_memory=16 * MiB))
    try:
        sock = raw_request(server.port, "/v1/completions", {**LONG, "stream": True})
        received = b""
        while received.count(b"data:") < 3:
            received += sock.recv(65536)

        def broken(batch):
            raise RuntimeError("device lost")

        server.call(lambda: setattr(server.engine.runner.executor.runner, "launch", broken))
        while b"[DONE]" not in received:
            received += sock.recv(65536)
        sock.close()
        events = [line for line in received.decode().split("\n") if line.startswith("data: ")]
        error = json.loads(events[-2].removeprefix("data: "))["error"]
        assert "device lost" in error["message"] and error["code"] == 500
        assert events[-1] == "data: [DONE]"
    finally:
        server.stop()
