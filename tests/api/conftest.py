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


# A ChatML template that renders tools, assistant tool calls and tool results (as Qwen's does, shortened).
TOOLS_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n# Tools\n{%- for tool in tools %}\n{{ tool.function.name }}{%- endfor %}"
    "<|im_end|>\n{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role == 'assistant' and message.tool_calls is defined %}<|im_start|>assistant\n"
    "{%- for call in message.tool_calls %}<tool_call>\n"
    '{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}\n</tool_call>'
    "{%- endfor %}<|im_end|>\n"
    "{%- elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message.content }}\n"
    "</tool_response><|im_end|>\n"
    "{%- else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{%- endif %}"
    "{%- endfor %}{%- if add_generation_prompt %}<|im_start|>assistant\n{%- endif %}"
)


@pytest.fixture(scope="session")
def tools_server(tiny_model_dir, tmp_path_factory) -> Iterator[ServerProcess]:
    """A server that reads tool calls (hermes) and reasoning (qwen3) and keeps Responses (the store on)."""
    template = tmp_path_factory.mktemp("template") / "tools.jinja"
    template.write_text(TOOLS_TEMPLATE)
    process = ServerProcess(
        str(tiny_model_dir("llama")),
        "--served-model-name",
        "tiny-tools",
        "--kv-cache-memory",
        "64MiB",
        "--max-model-len",
        "512",
        "--chat-template",
        str(template),
        "--enable-auto-tool-choice",
        "--tool-call-parser",
        "hermes",
        "--reasoning-parser",
        "qwen3",
        "--enable-responses-store",
    )
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="session")
def tools_client(tools_server):
    import openai

    return openai.OpenAI(base_url=f"{tools_server.base_url}/v1", api_key="unused", max_retries=0, timeout=120)
