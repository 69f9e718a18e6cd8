"""A generative model's server refuses the pooling routes (501) and /invocations lists its own shapes."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import orjson

from kvserve.api.app import create_app
from kvserve.api.settings import ServerSettings
from kvserve.model.llama import LlamaForCausalLM
from kvserve.model.registry import ModelTasks


def call(path: str, body: dict) -> tuple[int, dict]:
    # The gate and the dispatcher read only what the model serves, so a stand-in engine is enough (with the
    # few attributes the app's metrics read when it is built).
    engine = SimpleNamespace(
        model_tasks=ModelTasks.of(LlamaForCausalLM),
        model_config=None,
        max_model_len=16,
        sleep_level=0,
        add_stats_listener=lambda listener: None,
        add_output_listener=lambda listener: None,
        add_request_listener=lambda listener: None,
    )
    settings = ServerSettings(served_model_names=("m",), model_root="m", chat_template=None)
    app = create_app(engine, settings)

    async def run() -> tuple[int, dict]:
        response = await app.test_client().post(path, json=body)
        return response.status_code, orjson.loads(await response.get_data())

    return asyncio.run(run())


def test_pooling_routes_on_a_generative_model_are_501():
    for path, name in [
        ("/v1/embeddings", "Embeddings API"),
        ("/v2/embed", "Embeddings API"),
        ("/score", "Score API"),
        ("/v1/rerank", "Rerank API"),
        ("/classify", "Classification API"),
        ("/pooling", "Pooling API"),
    ]:
        status, body = call(path, {"input": "x"})
        assert (status, body["error"]["message"], body["error"]["type"]) == (
            501,
            f"The model does not support {name}",
            "NotImplementedError",
        )


def test_invocations_names_the_generative_shapes_when_none_matches():
    status, body = call("/invocations", {"input": "an embeddings body"})
    assert status == 400
    expected = (
        "Cannot find suitable handler for request. Expected one of: ['ChatCompletionRequest', 'CompletionRequest']"
    )
    assert body["error"]["message"] == expected
