"""`kvserve serve --tensor-parallel-size 2` on CPU: the openai SDK gets TP=1's greedy completion, the
collective RPC route answers per rank, and SIGTERM leaves no worker process behind."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from kvserve.llm import LLM
from kvserve.sampling_params import SamplingParams
from tests.api.server_process import ServerProcess

PROMPT = "def fibonacci(n):"


def worker_pids(pid: int) -> list[int]:
    """The spawned tensor-parallel workers among `pid`'s children (not multiprocessing's resource tracker)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except OSError:  # exited meanwhile
            continue
        if int(fields[1]) == pid and b"spawn_main" in cmdline and b"resource_tracker" not in cmdline:
            children.append(int(stat.parent.name))
    return children


def test_tp2_server_completes_like_tp1_and_stops_its_workers(tiny_model_dir):
    import openai

    model_dir = str(tiny_model_dir("llama"))
    with LLM(model_dir, kv_cache_memory=8 << 20, block_size=8) as tp1:
        params = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
        expected = tp1.generate(PROMPT, params, use_tqdm=False)[0].outputs[0].text
    server = ServerProcess(
        model_dir, "--tensor-parallel-size", "2", "--kv-cache-memory", "8MiB", "--block-size", "8",
        "--enable-dev-endpoints",
    )  # fmt: skip
    try:
        workers = worker_pids(server.process.pid)
        assert len(workers) == 2
        client = openai.OpenAI(base_url=f"{server.base_url}/v1", api_key="unused", max_retries=0, timeout=60)
        completion = client.completions.create(
            model=model_dir, prompt=PROMPT, max_tokens=16, temperature=0, extra_body={"ignore_eos": True}
        )
        assert completion.choices[0].text == expected
        request = urllib.request.Request(
            f"{server.base_url}/collective_rpc",
            data=json.dumps({"method": "memory_bytes"}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            results = json.load(response)["results"]
        assert len(results) == 2 and results[0]["kv_cache"] == results[1]["kv_cache"] > 0
    finally:
        assert server.stop() == 0, server.log()
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()], server.log_path.read_text()
