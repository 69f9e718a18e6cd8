"""POST /v1/chat/completions/render and /v1/completions/render: the engine requests the generation routes
would submit (prompt token ids after templating, resolved sampling parameters), without running them."""

from __future__ import annotations

from tests.api.http_calls import call, call_json

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]


def prompt_tokens_served(server) -> float:
    _, _, body = call(server.base_url, "GET", "/metrics")
    line = next(line for line in body.decode().splitlines() if line.startswith("kvserve:prompt_tokens_total"))
    return float(line.rsplit(" ", 1)[1])


def test_chat_render_is_the_templated_prompt_and_resolved_params(server):
    served_before = prompt_tokens_served(server)
    status, rendered = call_json(
        server.base_url, "POST", "/v1/chat/completions/render", {"model": "tiny-alias", "messages": MESSAGES}
    )
    assert status == 200, rendered
    status, tokenized = call_json(server.base_url, "POST", "/tokenize", {"model": "tiny-llama", "messages": MESSAGES})
    assert rendered["token_ids"] == tokenized["tokens"]
    params = rendered["sampling_params"]
    # Nothing asked: up to the context (256 tokens), OpenAI's sampling defaults.
    assert params["max_tokens"] == 256 - len(rendered["token_ids"])
    assert (params["temperature"], params["top_p"], params["n"]) == (1.0, 1.0, 1)
    assert rendered["model"] == "tiny-llama" and rendered["request_id"].startswith("chatcmpl-")
    assert rendered["stream"] is False and rendered["features"] is None
    assert prompt_tokens_served(server) == served_before  # nothing ran

    status, rendered = call_json(
        server.base_url,
        "POST",
        "/v1/chat/completions/render",
        {
            "messages": MESSAGES,
            "max_tokens": 7,
            "temperature": 0.3,
            "seed": 11,
            "n": 2,
            "stop": ["\n"],
            "logit_bias": {"5": 2.5},
            "stream": True,
            "cache_salt": "salt",
        },
    )
    assert status == 200, rendered
    params = rendered["sampling_params"]
    assert (params["max_tokens"], params["temperature"], params["seed"], params["n"]) == (7, 0.3, 11, 2)
    assert params["stop"] == ["\n"] and params["logit_bias"] == {"5": 2.5}
    assert rendered["stream"] is True and rendered["cache_salt"] == "salt"


def test_completion_render_is_one_request_per_prompt(server):
    status, rendered = call_json(
        server.base_url, "POST", "/v1/completions/render", {"prompt": ["Once upon", "a time"], "max_tokens": 4}
    )
    assert status == 200, rendered
    tokenized = [call_json(server.base_url, "POST", "/tokenize", {"prompt": p})[1] for p in ("Once upon", "a time")]
    assert [r["token_ids"] for r in rendered] == [t["tokens"] for t in tokenized]
    assert [r["sampling_params"]["max_tokens"] for r in rendered] == [4, 4]

    status, rendered = call_json(
        server.base_url, "POST", "/v1/completions/render", {"prompt": [1, 2, 3], "truncate_prompt_tokens": 2}
    )
    assert status == 200 and rendered[0]["token_ids"] == [2, 3]


def test_render_errors_are_the_routes_errors(server):
    too_long = {"prompt": list(range(300)), "max_tokens": 4}
    rendered = call_json(server.base_url, "POST", "/v1/completions/render", too_long)
    generated = call_json(server.base_url, "POST", "/v1/completions", too_long)
    assert rendered[0] == generated[0] == 400
    assert rendered[1]["error"]["message"] == generated[1]["error"]["message"]
    status, body = call_json(server.base_url, "POST", "/v1/chat/completions/render", {"messages": []})
    assert status == 400 and body["error"]["param"] == "messages"
    status, body = call_json(server.base_url, "POST", "/v1/completions/render", {"model": "nope", "prompt": "x"})
    assert status == 404
