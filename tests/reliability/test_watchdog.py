"""Failure detection: a step that raises or outlives --engine-step-timeout kills the engine; every waiting
request fails with an error (none hangs) and the server returns a non-zero exit code."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from kvserve.api.server import run_server
from kvserve.api.settings import ServerSettings
from kvserve.config import EngineConfig
from kvserve.model.runner import ModelRunner
from tests.api.server_process import free_port
from tests.engine_helpers import MiB
from tests.reliability.helpers import post, request


@pytest.mark.parametrize("failure", ["stall", "raise"])
def test_a_broken_step_fails_every_request_and_exits_non_zero(tiny_model_dir, monkeypatch, failure):
    broken = threading.Event()
    launch = ModelRunner.launch

    def breakable(self, batch):
        if broken.is_set():
            if failure == "raise":
                raise RuntimeError("device lost")
            time.sleep(3)  # far past the 0.5 s step timeout
        return launch(self, batch)

    monkeypatch.setattr(ModelRunner, "launch", breakable)
    model = str(tiny_model_dir("llama"))
    config = EngineConfig(model=model, kv_cache_memory=16 * MiB, engine_step_timeout=0.5)
    port = free_port()

    def settings(engine) -> ServerSettings:
        return ServerSettings(served_model_names=("tiny",), model_root=model, chat_template=None)

    async def main():
        server = asyncio.create_task(run_server(config, settings, "127.0.0.1", port, "warning"))
        while True:
            try:
                if (await asyncio.to_thread(request, port, "GET", "/health", timeout=1))[0] == 200:
                    break
            except OSError:
                await asyncio.sleep(0.1)
        assert (await asyncio.to_thread(post, port, "/v1/completions", {"prompt": "x", "max_tokens": 2}))[0] == 200
        broken.set()
        payload = {"prompt": "hello", "max_tokens": 300, "min_tokens": 300, "ignore_eos": True}
        started = time.monotonic()
        answers = await asyncio.gather(*(asyncio.to_thread(post, port, "/v1/completions", payload) for _ in range(3)))
        waited = time.monotonic() - started
        return answers, waited, await asyncio.wait_for(server, 30)

    answers, waited, exit_code = asyncio.run(main())
    assert exit_code == 1
    expected = "did not finish within the 0.5 s step timeout" if failure == "stall" else "device lost"
    for status, _, body in answers:
        assert status == 500 and body["error"]["type"] == "EngineDeadError", body
        assert expected in body["error"]["message"]
    assert waited < 2.5  # failed by the watchdog, not by the stalled step's end
