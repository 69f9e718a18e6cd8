"""The official `openai` SDK (sync and async) against a real kvserve process."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request

import openai
import pytest

from tests.engine_helpers import hf_greedy

GREEDY = dict(temperature=0.0, extra_body={"ignore_eos": True, "return_token_ids": True})


def post(server, path: str, payload: bytes | dict, content_type: str = "application/json") -> tuple[int, dict]:
    data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(f"{server.base_url}{path}", data=data, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def get(server, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"{server.base_url}{path}", timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_completion_is_greedy_exact_with_usage(client, tiny_model_dir):
    prompt_ids = list(range(40, 70))
    result = client.completions.create(model="tiny-llama", prompt=prompt_ids, max_tokens=12, **GREEDY)
    choice = result.choices[0]
    assert result.id.startswith("cmpl-") and result.object == "text_completion" and result.model == "tiny-llama"
    assert choice.token_ids == hf_greedy(tiny_model_dir("llama"), prompt_ids, 12)
    assert choice.finish_reason == "length" and choice.index == 0
    usage = result.usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (30, 12, 42)
    assert usage.prompt_tokens_details.cached_tokens == 0


def test_text_prompt_stream_matches_non_stream(client):
    kwargs = dict(model="tiny-llama", prompt="def fibonacci(n):", max_tokens=16, **GREEDY)
    full = client.completions.create(**kwargs)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == full.choices[0].text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 16
    assert all(c.usage is None for c in chunks[:-1])


def test_several_prompts_and_n_choices(client, server):
    result = client.completions.create(
        model="tiny-alias",
        prompt=["first prompt", "second"],
        n=2,
        max_tokens=5,
        temperature=1.0,
        seed=7,
        extra_body={"ignore_eos": True},
    )
    assert [c.index for c in result.choices] == [0, 1, 2, 3]
    assert result.usage.completion_tokens == 20
    tokenized = [post(server, "/tokenize", {"prompt": p})[1]["count"] for p in ("first prompt", "second")]
    assert result.usage.prompt_tokens == sum(tokenized)


def test_chat_completion_and_stream_agree(client):
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hi."}]
    kwargs = dict(
        model="tiny-llama", messages=messages, max_tokens=10, temperature=0.0, extra_body={"ignore_eos": True}
    )
    full = client.chat.completions.create(**kwargs)
    assert full.id.startswith("chatcmpl-") and full.object == "chat.completion"
    message = full.choices[0].message
    assert message.role == "assistant" and message.content
    assert full.usage.completion_tokens == 10 and full.choices[0].finish_reason == "length"
    chunks = list(client.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kwargs))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == message.content
    assert chunks[-1].usage.total_tokens == full.usage.total_tokens


def test_async_client_runs_requests_concurrently(server):
    async def main():
        async with openai.AsyncOpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0) as client:
            return await requests(client)

    async def requests(async_client):
        results = await asyncio.gather(
            *(
                async_client.chat.completions.create(
                    model="tiny-llama",
                    messages=[{"role": "user", "content": f"question {i}"}],
                    max_tokens=6,
                    extra_body={"ignore_eos": True},
                )
                for i in range(6)
            )
        )
        stream = await async_client.completions.create(model="tiny-llama", prompt="x", max_tokens=4, stream=True)
        pieces = [chunk async for chunk in stream]
        return results, pieces

    results, pieces = asyncio.run(main())
    assert all(r.usage.completion_tokens == 6 for r in results)
    assert len({r.id for r in results}) == 6
    assert pieces[-1].choices[0].finish_reason in ("length", "stop")


def test_models_endpoint(client, tiny_model_dir):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert ids == ["tiny-llama", "tiny-alias"]
    card = models.data[0].model_dump()
    assert (
        card["max_model_len"] == 256 and card["owned_by"] == "kvserve" and card["root"] == str(tiny_model_dir("llama"))
    )
    assert client.models.retrieve("tiny-alias").id == "tiny-alias"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("other")


def test_unknown_model_is_404_naming_the_parameter(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.completions.create(model="gpt-4", prompt="hi", max_tokens=2)
    error = info.value.body
    assert error["param"] == "model" and error["type"] == "NotFoundError" and error["code"] == 404
    assert "The model `gpt-4` does not exist." == error["message"]


def test_prompt_longer_than_the_context_is_400(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model="tiny-llama", prompt=[5] * 300, max_tokens=4)
    assert "context length is only 256 tokens" in info.value.body["message"]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="tiny-llama", messages=[{"role": "user", "content": "word " * 400}], max_tokens=4
        )
    assert info.value.status_code == 400


def test_chat_max_tokens_below_one_is_400_naming_it(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=-3)
    assert info.value.body["message"] == "max_tokens must be at least 1, got -3."
    assert info.value.body["param"] == "max_tokens"


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ({"prompt": "x", "temperature": 5}, "temperature"),
        ({"prompt": "x", "max_tokens": "many"}, "max_tokens"),
        ({"prompt": "x", "n": 0}, "n must be at least 1"),
        ({}, "prompt"),
        ({"prompt": "x", "stream_options": {"include_usage": True}}, "stream=True"),
    ],
)
def test_invalid_fields_are_400_not_422(server, payload, fragment):
    status, body = post(server, "/v1/completions", payload)
    assert status == 400, body
    assert fragment in body["error"]["message"] and body["error"]["type"] == "BadRequestError"
    assert body["error"]["code"] == 400


def test_bad_bodies_are_400(server):
    assert post(server, "/v1/completions", b"{not json")[0] == 400
    assert post(server, "/v1/completions", b"prompt=x", "application/x-www-form-urlencoded")[0] == 400
    assert post(server, "/v1/chat/completions", b"[1, 2]")[0] == 400
    status, body = post(server, "/v1/chat/completions", {"messages": "hello"})
    assert status == 400 and "messages" in body["error"]["message"]


def test_tokenize_round_trip(server):
    status, body = post(server, "/tokenize", {"prompt": "print('hello')", "return_token_strs": True})
    assert status == 200 and body["count"] == len(body["tokens"]) == len(body["token_strs"])
    assert body["max_model_len"] == 256
    status, detok = post(server, "/detokenize", {"tokens": body["tokens"]})
    assert status == 200 and detok["prompt"] == "print('hello')"
    status, chat = post(server, "/tokenize", {"messages": [{"role": "user", "content": "hi"}]})
    assert status == 200 and chat["count"] > body["count"] // 2
    assert post(server, "/detokenize", {"tokens": [10**7]})[0] == 400


def test_health_ping_version(server):
    assert get(server, "/health") == (200, b"")
    assert get(server, "/ping")[0] == 200
    assert post(server, "/ping", b"", "application/json")[0] == 200
    status, body = get(server, "/version")
    assert status == 200 and json.loads(body)["version"]
    status, body = get(server, "/no/such/route")
    assert status == 404 and json.loads(body)["error"]["code"] == 404


def test_sigint_shuts_down_cleanly(tiny_model_dir):
    import signal

    from tests.api.server_process import ServerProcess

    process = ServerProcess(str(tiny_model_dir("llama")), "--kv-cache-memory", "8MiB")
    assert process.stop(signal.SIGINT) == 0, process.log()


def test_an_unsupported_model_fails_at_start_with_a_clear_message(tiny_model_dir, tmp_path):
    import json
    import shutil
    import subprocess
    import sys

    model = tmp_path / "gpt2"
    shutil.copytree(tiny_model_dir("llama"), model)
    config = json.loads((model / "config.json").read_text())
    (model / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHeadModel"]}))
    done = subprocess.run(
        [sys.executable, "-m", "kvserve.cli", "serve", str(model), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "'GPT2LMHeadModel' is not supported; supported: " in done.stderr
    assert "LlamaForCausalLM, MistralForCausalLM" in done.stderr
    assert "Traceback" not in done.stderr
