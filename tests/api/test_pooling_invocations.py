"""SageMaker's /invocations on the generative tiny Llama: chat and completion bodies reach their routes; a
pooling body is a 400 naming the shapes this model accepts, and the pooling routes themselves are 501."""

from __future__ import annotations

from tests.pooling.http import post


def test_invocations_dispatches_chat_and_completion_bodies(server):
    status, chat = post(
        server.base_url,
        "/invocations",
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0},
    )
    assert status == 200 and chat["object"] == "chat.completion" and chat["usage"]["completion_tokens"] == 3
    status, completion = post(server.base_url, "/invocations", {"prompt": "def f(", "max_tokens": 2, "temperature": 0})
    assert status == 200 and completion["object"] == "text_completion"
    status, direct = post(server.base_url, "/v1/completions", {"prompt": "def f(", "max_tokens": 2, "temperature": 0})
    assert completion["choices"][0]["text"] == direct["choices"][0]["text"]


def test_pooling_bodies_and_routes_on_a_generative_model(server):
    status, error = post(server.base_url, "/invocations", {"input": "embed me"})
    assert status == 400
    assert error["error"]["message"] == (
        "Cannot find suitable handler for request. Expected one of: ['ChatCompletionRequest', 'CompletionRequest']"
    )
    status, error = post(server.base_url, "/v1/embeddings", {"input": "embed me"})
    assert (status, error["error"]["message"]) == (501, "The model does not support Embeddings API")
