from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.server_process import ServerProcess


@pytest.fixture(scope="session")
def server(tiny_model_dir) -> Iterator[ServerProcess]:
    """A server on the tiny Llama with the options most tests need."""
    process = ServerProcess(
        str(tiny_model_dir("llama")),
        "--served-model-name",
        "tiny-llama",
        "tiny-alias",
        "--kv-cache-memory",
        "64MiB",
        "--max-model-len",
        "256",
        "--block-size",
        "8",
        "--enable-prompt-tokens-details",
    )
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="session")
def client(server):
    import openai

    return openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=60)
