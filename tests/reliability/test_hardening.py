"""Input hardening: every known class of hostile input is a 4xx, and the server keeps serving with its KV
cache intact: out-of-range numbers and lists, a huge n, huge or many headers, an oversized body, chat
templates that try to leave the sandbox, template syntax in content, and malformed tool schemas."""

from __future__ import annotations

import json
import socket

import pytest

from tests.reliability.helpers import all_blocks_free, live_server, post, request, wait_for

CHAT = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
COMPLETION = {"prompt": "hi", "max_tokens": 2}
HUGE = 10**30

# Fields of completions and chat with values that must be refused: (field, value), for both routes.
BAD_VALUES = [
    *(
        (field, value)
        for field in ("n", "max_tokens", "min_tokens", "top_k", "prompt_logprobs")
        for value in (HUGE, -HUGE)
    ),
    ("n", 10**9),
    ("n", 0),
    ("max_tokens", 10**12),
    ("max_tokens", -1),
    ("min_tokens", -1),
    ("seed", 2**64),
    ("priority", 2**64),
    ("truncate_prompt_tokens", HUGE),
    ("truncate_prompt_tokens", -2),
    ("stop", ["x"] * 10_000),
    ("stop", [""]),
    ("stop_token_ids", [10**9]),
    ("stop_token_ids", [HUGE]),
    ("stop_token_ids", list(range(70_000))),
    ("allowed_token_ids", []),
    ("allowed_token_ids", [-1]),
    ("bad_words", ["x"] * 10_000),
    ("logit_bias", {str(i): 1 for i in range(5000)}),
    ("logit_bias", {"not-a-token": 1}),
    ("logit_bias", {"99999999": 1}),
    ("temperature", -1),
    ("temperature", 1e6),
    ("top_p", 0),
    ("min_p", 2),
    ("repetition_penalty", 0),
    ("presence_penalty", 3),
    ("frequency_penalty", -3),
    ("cache_salt", ""),
    ("request_id", "x" * 5000),
    ("user", "x" * 5000),
]
CHAT_BAD_VALUES = [
    ("top_logprobs", HUGE),
    ("top_logprobs", 10**6),
    ("max_completion_tokens", HUGE),
    ("messages", [{"role": "user", "content": "x"}] * 20_000),
    ("tools", [{"type": "function"}] * 5000),
    ("tools", [1, "x"]),
]
COMPLETION_BAD_VALUES = [
    ("logprobs", HUGE),
    ("logprobs", 10**6),
    ("prompt", [HUGE]),
    ("prompt", [10**6]),
    ("prompt", [-1]),
    ("prompt", ["a"] * 1000),
]
# Numbers JSON cannot hold exactly: 1e999 parses as infinity, which no float field accepts.
NON_FINITE = ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty")

SANDBOX_ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "{{ self._TemplateReference__context }}",
    "{{ messages.__class__.__base__.__subclasses__() }}",
    "{{ lipsum.__globals__['os'].popen('id').read() }}",
    "{% set x = messages.append(1) %}",
    "{{ 'x' * 10**12 }}",
    "{{ 9 ** 999999999 }}",
    "{% for i in range(10**9) %}{% endfor %}",
    "{% for m in messages %}{{ raise_exception('no') }}{% endfor %}",
    "{% include '/etc/passwd' %}",
    "{% import 'os' as os %}",
]

TOOL_TEMPLATE = (
    "{% for tool in tools %}{{ tool.function.name }}: {{ tool.function.parameters | tojson }}\n{% endfor %}"
    "{% for m in messages %}{{ m.content }}{% endfor %}"
)
MALFORMED_TOOLS = [
    [{"type": "function", "function": "not an object"}],
    [{"type": "function"}],
    [{"type": "function", "function": {"name": {"$ref": "#"}, "parameters": {"type": "object", "properties": "x"}}}],
    [{"type": "function", "function": {"name": "f", "parameters": {"$ref": "#/definitions/loop"}}}],
    [{"type": "function", "function": {"name": "f", "parameters": {"items": [1, None, {"a": float("1e300")}]}}}],
    [{}],
]


@pytest.fixture(scope="module")
def live(tiny_model_dir):
    server = live_server(
        tiny_model_dir("llama"),
        settings={"trust_request_chat_template": True, "max_request_body_bytes": 1 << 20},
    )
    yield server
    server.stop()


def assert_still_serving(live) -> None:
    assert live.engine.is_healthy
    assert post(live.port, "/v1/completions", COMPLETION)[0] == 200
    wait_for(lambda: all_blocks_free(live), timeout=2)
    live.call(lambda: live.engine.scheduler.core.check_invariants())


def test_out_of_range_fields_are_400(live):
    cases = [("/v1/completions", COMPLETION, f, v) for f, v in BAD_VALUES + COMPLETION_BAD_VALUES]
    cases += [("/v1/chat/completions", CHAT, f, v) for f, v in BAD_VALUES + CHAT_BAD_VALUES]
    failures = []
    for path, base, field, value in cases:
        status, _, body = post(live.port, path, {**base, field: value})
        if status != 400 or body.get("error", {}).get("code") != 400:
            failures.append((path, field, str(value)[:40], status, str(body)[:200]))
    for field in NON_FINITE:
        raw = json.dumps(COMPLETION)[:-1] + f', "{field}": 1e999}}'
        status, _, body = post(live.port, "/v1/completions", raw.encode())
        if status != 400:
            failures.append(("/v1/completions", field, "1e999", status, str(body)[:200]))
    assert not failures, "\n".join(map(str, failures))
    assert_still_serving(live)


def test_huge_n(live):
    for n in (129, 10**9, HUGE):
        status, _, body = post(live.port, "/v1/completions", {**COMPLETION, "n": n, "temperature": 1})
        assert status == 400 and body["error"]["param"] == "n", body
    assert_still_serving(live)


def test_huge_header_is_refused(live):
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (1 << 20) + b"\r\n\r\n"
    answer = send_body(live.port, head, ())
    # hypercorn stops reading past its header buffer: a 4xx or a closed connection, never a 2xx or 5xx.
    assert answer == b"" or answer.split(b" ", 2)[1].startswith(b"4"), answer[:100]
    assert_still_serving(live)


def test_too_many_headers_is_431_in_the_envelope(live):
    headers = {f"X-H{i}": "v" for i in range(150)}
    status, _, body = request(live.port, "POST", "/v1/completions", json.dumps(COMPLETION).encode(), headers)
    error = json.loads(body)["error"]
    assert status == 431 and error["code"] == 431 and "at most 100" in error["message"]
    assert_still_serving(live)


def send_body(port: int, head: bytes, chunks) -> bytes:
    """Sends a request whose body may be refused part-way (the server answers and closes: the rest of the body
    meets a broken pipe, as a real client's would); returns what the server answered."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(head)
            for chunk in chunks:
                sock.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        received = b""
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return received


def test_oversized_body_is_413_in_the_envelope(live):
    size = 2 << 20
    for head, chunks in (
        (f"Content-Length: {size}\r\n\r\n", (b"x" * (64 << 10) for _ in range(size >> 16))),
        # Without a Content-Length (chunked), the limit holds while the body streams in.
        ("Transfer-Encoding: chunked\r\n\r\n", (b"10000\r\n" + b"x" * (1 << 16) + b"\r\n" for _ in range(40))),
    ):
        request_head = f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{head}"
        answer = send_body(live.port, request_head.encode(), chunks)
        status_line, _, rest = answer.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 413"), answer[:300]
        error = json.loads(rest.partition(b"\r\n\r\n")[2])["error"]
        assert error["type"] == "RequestEntityTooLarge" and error["code"] == 413
    assert_still_serving(live)


@pytest.mark.parametrize("template", SANDBOX_ESCAPES)
def test_request_templates_stay_in_the_sandbox(live, template):
    status, _, body = post(live.port, "/v1/chat/completions", {**CHAT, "chat_template": template})
    assert status == 400, body
    assert "uid=" not in json.dumps(body) and "root:" not in json.dumps(body)
    assert_still_serving(live)


def test_template_syntax_in_content_is_text(live):
    content = "{{ 7 * 7 }}{% for i in range(3) %}loop{% endfor %}"
    status, _, tokens = post(live.port, "/tokenize", {"messages": [{"role": "user", "content": content}]})
    assert status == 200
    status, _, text = post(live.port, "/detokenize", {"tokens": tokens["tokens"]})
    assert status == 200 and content in text["prompt"] and "49" not in text["prompt"]


@pytest.mark.parametrize("tools", MALFORMED_TOOLS)
def test_malformed_tool_schemas_never_500(live, tools):
    payload = {**CHAT, "tools": tools, "chat_template": TOOL_TEMPLATE}
    status, _, body = post(live.port, "/v1/chat/completions", payload)
    assert status in (200, 400), body
    status, _, body = post(live.port, "/tokenize", {"messages": CHAT["messages"], "tools": tools})
    assert status in (200, 400), body
    assert_still_serving(live)


def test_deeply_nested_tool_schema_is_400(live):
    nested = "[" * 100_000 + "]" * 100_000
    raw = json.dumps({**CHAT, "tools": []})[:-1] + f', "extra": {nested}}}'
    assert post(live.port, "/v1/chat/completions", raw.encode())[0] == 400
    assert_still_serving(live)


def test_values_at_the_edges_are_served(live):
    """Large but legal values reach the engine and it copes (no 5xx, no dead engine)."""
    for field, value in (
        ("top_k", 10**6),
        ("seed", -1),
        ("seed", 2**63 - 1),
        ("min_tokens", 2),
        ("logit_bias", {"5": 1e300}),
    ):
        status, _, body = post(live.port, "/v1/completions", {**COMPLETION, field: value})
        assert status == 200, (field, body)
    assert_still_serving(live)
