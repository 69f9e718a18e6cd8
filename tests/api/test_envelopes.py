"""Each family's error envelope, byte for byte, and the routing of errors to the family serving a path."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from quart import Blueprint, Response

from kvserve.api.app import API_FAMILIES, create_app
from kvserve.api.envelopes import ANTHROPIC, COHERE, OPENAI, ErrorReport, anthropic_error_type
from kvserve.api.families import ApiFamilies, ApiFamily
from kvserve.api.settings import ServerSettings
from kvserve.api.streaming import stream_response
from kvserve.errors import InvalidRequestError, KvserveError

REPORT = ErrorReport("bad 'n'", 400, "BadRequestError", "n")


def test_openai_body_and_stream_error():
    body = b'{"error":{"message":"bad \'n\'","type":"BadRequestError","param":"n","code":400}}'
    assert OPENAI.body(REPORT) == body
    assert OPENAI.stream_error(REPORT) == b"data: " + body + b"\n\ndata: [DONE]\n\n"


@pytest.mark.parametrize(
    "status, error_type",
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (403, "permission_error"),
        (404, "not_found_error"),
        (405, "invalid_request_error"),
        (408, "timeout_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (501, "api_error"),
        (503, "overloaded_error"),
        (529, "overloaded_error"),
    ],
)
def test_anthropic_error_types_by_status(status, error_type):
    assert anthropic_error_type(status) == error_type


def test_anthropic_body_and_stream_error():
    body = b'{"type":"error","error":{"type":"invalid_request_error","message":"bad \'n\'"}}'
    assert ANTHROPIC.body(REPORT) == body
    assert ANTHROPIC.stream_error(REPORT) == b"event: error\ndata: " + body + b"\n\n"


def test_cohere_body_and_stream_error():
    assert COHERE.body(REPORT) == b'{"message":"bad \'n\'"}'
    assert COHERE.stream_error(REPORT) == (
        b'event: message-end\ndata: {"type":"message-end","delta":{"error":"bad \'n\'","finish_reason":"ERROR"}}\n\n'
    )


def test_reports_of_kvserve_and_unexpected_errors():
    assert ErrorReport.of(InvalidRequestError("no", "stop")) == ErrorReport("no", 400, "BadRequestError", "stop")
    report = ErrorReport.unexpected(RuntimeError("device lost"))
    assert report == ErrorReport("Internal server error: RuntimeError: device lost", 500, "InternalServerError")


# -- families: a stand-in family in Anthropic's envelope plugged in beside OpenAI's, handlers untouched ----
# (under its own prefix: the real /v1/messages routes need the engine, which these apps do not have)
messages_bp = Blueprint("test_messages", __name__)


@messages_bp.post("/v1/stand-in")
async def refuse() -> Response:
    raise InvalidRequestError("max_tokens is required", "max_tokens")


@messages_bp.post("/v1/stand-in/stream")
async def fail_midway() -> Response:
    async def events() -> AsyncIterator[bytes]:
        yield b"event: message_start\ndata: {}\n\n"
        raise KvserveError("engine stopped")

    return stream_response(events())


@messages_bp.get("/v1/stand-in/crash")
async def crash() -> Response:
    raise ZeroDivisionError("oops")


FAMILIES = ApiFamilies(
    default=API_FAMILIES.default, others=(ApiFamily("anthropic", ANTHROPIC, (messages_bp,), ("/v1/stand-in",)),)
)


def call(method: str, path: str, families: ApiFamilies = FAMILIES) -> tuple[int, bytes]:
    settings = ServerSettings(served_model_names=("m",), model_root="m", chat_template=None)
    app = create_app(None, settings, families)  # none of these routes reaches the engine

    async def run() -> tuple[int, bytes]:
        client = app.test_client()
        response = await client.open(path, method=method, json={} if method == "POST" else None)
        return response.status_code, await response.get_data()

    return asyncio.run(run())


def anthropic(status: int, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {"type": anthropic_error_type(status), "message": message}})


def test_a_family_route_error_is_in_its_envelope():
    assert call("POST", "/v1/stand-in") == (400, anthropic(400, "max_tokens is required"))


def test_an_unexpected_error_in_a_family_route_is_a_500_in_its_envelope():
    status, body = call("GET", "/v1/stand-in/crash")
    assert (status, orjson.loads(body)["error"]["type"]) == (500, "api_error")


def test_an_error_after_the_stream_started_is_the_family_error_event():
    status, body = call("POST", "/v1/stand-in/stream")
    assert status == 200
    error_event = b"event: error\ndata: " + anthropic(500, "engine stopped") + b"\n\n"
    assert body == b"event: message_start\ndata: {}\n\n" + error_event


def test_unknown_routes_and_methods_take_the_envelope_of_the_matching_prefix():
    assert call("GET", "/v1/stand-in/nowhere")[0] == 404
    assert orjson.loads(call("GET", "/v1/stand-in/nowhere")[1])["error"]["type"] == "not_found_error"
    status, body = call("GET", "/v1/stand-in")
    assert (status, orjson.loads(body)["error"]["type"]) == (405, "invalid_request_error")


def test_other_paths_keep_the_openai_envelope():
    status, body = call("GET", "/v1/nowhere")
    assert status == 404
    error = orjson.loads(body)["error"]
    assert (error["type"], error["code"], error["param"]) == ("NotFoundError", 404, None)
    status, body = call("GET", "/v1/completions")
    assert (status, orjson.loads(body)["error"]["type"]) == (405, "MethodNotAllowed")
