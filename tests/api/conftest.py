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


OPS_API_KEYS = ("ops-key-1", "ops-key-2")
OPS_ORIGIN = "https://app.example"


@pytest.fixture(scope="session")
def ops_server(tiny_model_dir) -> Iterator[ServerProcess]:
    """A server with the operational options on: API keys, dev endpoints and sleep mode, load tracking,
    request ids, vLLM's metric names, offline docs, one CORS origin and a root path."""
    process = ServerProcess(
        str(tiny_model_dir("llama")),
        "--served-model-name",
        "tiny-ops",
        "--kv-cache-memory",
        "96MiB",
        "--max-model-len",
        "256",
        "--block-size",
        "8",
        *(arg for key in OPS_API_KEYS for arg in ("--api-key", key)),
        "--enable-dev-endpoints",
        "--enable-sleep-mode",
        "--enable-server-load-tracking",
        "--enable-request-id-headers",
        "--metrics-prefix",
        "vllm",
        "--enable-offline-docs",
        "--allowed-origins",
        f'["{OPS_ORIGIN}"]',
        "--root-path",
        "/api",
    )
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="session")
def ops_client(ops_server):
    import openai

    return openai.OpenAI(base_url=f"{ops_server.base_url}/v1", api_key=OPS_API_KEYS[0], max_retries=0, timeout=60)
