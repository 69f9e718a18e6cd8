"""SIGTERM drains: readiness and new requests turn 503 at once, in-flight requests finish within
--shutdown-timeout (the rest end with a 503 error event), and the process exits 0."""

from __future__ import annotations

import json
import signal

from tests.api.server_process import ServerProcess
from tests.reliability.helpers import open_stream, post, read_until, request, sse_data


def serve(model_dir, shutdown_timeout: float) -> ServerProcess:
    return ServerProcess(
        str(model_dir),
        "--kv-cache-memory",
        "32MiB",
        "--shutdown-timeout",
        str(shutdown_timeout),
        "--log-level",
        "warning",
    )


def stream_request(max_tokens: int) -> dict:
    return {"prompt": "hello " * 4, "max_tokens": max_tokens, "min_tokens": max_tokens, "ignore_eos": True}


def test_sigterm_drains_in_flight_requests_then_exits_0(long_context_model):
    server = serve(long_context_model, shutdown_timeout=60)
    sock = open_stream(server.port, "/v1/completions", stream_request(1500))
    received = read_until(sock, b"data:")
    server.process.send_signal(signal.SIGTERM)
    # Still listening, but no longer ready nor taking requests.
    assert request(server.port, "GET", "/health")[0] == 503
    assert request(server.port, "GET", "/health/ready")[0] == 503
    status, headers, body = post(server.port, "/v1/completions", {"prompt": "x", "max_tokens": 2})
    assert status == 503 and headers["Retry-After"] == "1"
    assert "shutting down" in body["error"]["message"] and body["error"]["code"] == 503
    # The request in flight runs to its end.
    events = sse_data(read_until(sock, b"data: [DONE]", received))
    sock.close()
    assert events[-1] == "[DONE]"
    assert json.loads(events[-2])["choices"][0]["finish_reason"] == "length"
    server.process.wait(30)
    assert server.stop() == 0, server.log_path.read_text()


def test_requests_left_at_the_shutdown_timeout_are_aborted(long_context_model):
    server = serve(long_context_model, shutdown_timeout=0.5)
    sock = open_stream(server.port, "/v1/completions", stream_request(8000))
    received = read_until(sock, b"data:")
    server.process.send_signal(signal.SIGTERM)
    events = sse_data(read_until(sock, b"data: [DONE]", received))
    sock.close()
    assert events[-1] == "[DONE]"
    error = json.loads(events[-2])["error"]
    assert error["code"] == 503 and "shut down before the request finished" in error["message"]
    server.process.wait(30)
    assert server.stop() == 0, server.log_path.read_text()
    assert "aborted 1 unfinished requests" in server.log_path.read_text()
