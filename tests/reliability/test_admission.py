"""Admission control: a full queue is a 503 with Retry-After in the family's envelope, before any work."""

from __future__ import annotations

import asyncio
import json

import pytest
from quart import Quart

from kvserve.api.envelopes import ANTHROPIC, OPENAI, ErrorReport
from kvserve.api.errors import error_response
from kvserve.api.families import ApiFamilies, ApiFamily
from kvserve.engine.admission import AdmissionControl
from kvserve.errors import ServiceUnavailableError
from tests.reliability.helpers import (
    LONG,
    all_blocks_free,
    live_server,
    open_stream,
    post,
    read_until,
    request,
    wait_for,
)


def test_counts_requests_and_tokens_until_scheduled():
    admission = AdmissionControl(max_num_queued_requests=3, max_num_queued_tokens=100)
    admission.enter("a")
    admission.enter("b")
    admission.tokenized("a", 60)
    admission.tokenized("b", 50)
    assert (admission.num_queued_requests, admission.num_queued_tokens) == (2, 110)
    with pytest.raises(ServiceUnavailableError, match="110 prompt tokens are queued"):
        admission.check(1)
    admission.leave(["a"])
    admission.leave(["a"])  # leaving twice (scheduled, then finished) counts once
    assert (admission.num_queued_requests, admission.num_queued_tokens) == (1, 50)
    with pytest.raises(ServiceUnavailableError, match="adds 3"):
        admission.check(3)  # n counts as n: all or none
    admission.check(2)
    admission.tokenized("gone", 10)  # scheduled before its tokens were reported: not counted
    assert admission.num_queued_tokens == 50 and admission.num_rejected == 4
    admission.close("shutting down")
    with pytest.raises(ServiceUnavailableError, match="shutting down"):
        admission.check(1)


@pytest.fixture(scope="module")
def live(long_context_model):
    server = live_server(long_context_model, max_num_seqs=1, max_num_queued_requests=2)
    yield server
    server.stop()


def test_full_queue_is_503_with_retry_after(live):
    engine = live.engine
    rejected_before = engine.admission.num_rejected
    running = open_stream(live.port, "/v1/completions", LONG)
    read_until(running, b"data:")
    queued = [open_stream(live.port, "/v1/completions", LONG) for _ in range(2)]
    wait_for(lambda: live.call(lambda: engine.admission.num_queued_requests) == 2, timeout=10)

    status, headers, body = post(live.port, "/v1/completions", {"prompt": "x", "max_tokens": 2})
    assert status == 503 and headers["Retry-After"] == "1"
    assert body["error"]["type"] == "ServiceUnavailableError" and body["error"]["code"] == 503
    assert "2 requests are queued" in body["error"]["message"]
    status, _, body = post(live.port, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})
    assert status == 503
    assert live.call(lambda: engine.admission.num_rejected) == rejected_before + 2
    exposition = request(live.port, "GET", "/metrics")[2].decode()
    assert f'kvserve:num_requests_rejected_total{{engine="0",model_name="tiny"}} {rejected_before + 2}.0' in exposition
    assert 'kvserve:num_requests_queued{engine="0",model_name="tiny"} 2.0' in exposition

    for sock in (running, *queued):
        sock.close()
    wait_for(lambda: all_blocks_free(live) and live.call(lambda: engine.num_open_requests) == 0, timeout=10)
    assert live.call(lambda: (engine.admission.num_queued_requests, engine.admission.num_queued_tokens)) == (0, 0)
    assert post(live.port, "/v1/completions", {"prompt": "x", "max_tokens": 2})[0] == 200


def test_n_counts_as_n_before_rendering(live):
    # An idle server with room for 2 queued requests refuses n=3 whole: no choice runs.
    status, headers, body = post(
        live.port, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "n": 3, "temperature": 1}
    )
    assert status == 503 and "adds 3" in body["error"]["message"] and "Retry-After" in headers
    status, _, body = post(live.port, "/v1/completions", {"prompt": ["a", "b"], "n": 2, "temperature": 1})
    assert status == 503 and "adds 4" in body["error"]["message"]
    assert post(live.port, "/v1/completions", {"prompt": ["a", "b"], "max_tokens": 2})[0] == 200


def test_token_bound(long_context_model):
    server = live_server(long_context_model, max_num_seqs=1, max_num_queued_tokens=20)
    try:
        running = open_stream(server.port, "/v1/completions", LONG)
        read_until(running, b"data:")
        waiting = open_stream(server.port, "/v1/completions", {**LONG, "prompt": [7] * 30})
        wait_for(lambda: server.call(lambda: server.engine.admission.num_queued_tokens) == 30, timeout=10)
        status, _, body = post(server.port, "/v1/completions", {"prompt": "x", "max_tokens": 2})
        assert status == 503 and "30 prompt tokens are queued (limit 20)" in body["error"]["message"]
        running.close()
        waiting.close()
        wait_for(lambda: all_blocks_free(server), timeout=10)
        assert server.call(lambda: server.engine.admission.num_queued_tokens) == 0
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("path", "envelope"),
    [("/v1/messages", ANTHROPIC), ("/v1/completions", OPENAI)],
)
def test_503_in_each_familys_envelope(path, envelope):
    app = Quart("envelopes")
    ApiFamilies(
        default=ApiFamily("openai", OPENAI), others=(ApiFamily("anthropic", ANTHROPIC, (), ("/v1/messages",)),)
    ).install(app)

    async def answer():
        async with app.test_request_context(path, method="POST"):
            response = error_response(ErrorReport.of(ServiceUnavailableError("The server is overloaded.")))
            return response, await response.get_data()

    response, data = asyncio.run(answer())
    assert response.status_code == 503 and response.headers["Retry-After"] == "1"
    body = json.loads(data)
    if envelope is ANTHROPIC:
        assert body == {"type": "error", "error": {"type": "overloaded_error", "message": "The server is overloaded."}}
    else:
        assert body["error"]["code"] == 503 and body["error"]["type"] == "ServiceUnavailableError"
