"""Sleep mode through the dev endpoints: generation before and after each level, 503s while asleep, and
the memory really released: the runner's tensor storage (collective_rpc memory_bytes) and the server
process's resident memory (VmRSS).

On CPU, level 1's "weights to host memory" moves nothing (they are there already): it releases the KV cache
only; level 2 releases the weights too. The RSS check covers the KV cache (96 MiB: a 48 MiB tensor per
layer, above glibc's largest mmap threshold, so it is always mapped and unmapped whole). The CPU cache's
pages become resident only when first written (model/cpu_kv_cache.py), so what sleep must give back is what
those mappings held resident, read from /proc/PID/smaps; the weights' release is shown by tensor storage,
since their small tensors come from malloc arenas that need not return pages to the system.
"""

from __future__ import annotations

import pytest

from tests.api.conftest import OPS_API_KEYS
from tests.api.http_calls import call, call_json

AUTH = {"Authorization": f"Bearer {OPS_API_KEYS[0]}"}
MiB = 1 << 20
PROMPT = {"model": "tiny-ops", "prompt": [5, 6, 7, 8, 9], "max_tokens": 8, "temperature": 0.0, "ignore_eos": True}


def kv_cache_mappings(pid: int, tensor_bytes: int) -> list[tuple[int, int]]:
    """(layers, resident bytes) of each anonymous mapping that holds KV tensors: each tensor is a mapping of its
    own, opted out of huge pages (VmFlags "nh"), which the kernel merges with an adjacent one of the same kind."""
    found, size, resident, anonymous = [], 0, 0, False
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header: range, perms, offset, dev, inode[, path]
                start, end = (int(part, 16) for part in fields[0].split("-"))
                size, anonymous = end - start, len(fields) == 5
            elif fields[0] == "Rss:":
                resident = int(fields[1]) * 1024
            elif fields[0] == "VmFlags:" and anonymous and "nh" in fields[1:] and size >= tensor_bytes:
                found.append((size // tensor_bytes, resident))
    return found


def generate(server) -> tuple[int, object]:
    return call_json(server.base_url, "POST", "/v1/completions", PROMPT, headers=AUTH)


def memory(server) -> dict[str, int]:
    status, body = call_json(server.base_url, "POST", "/collective_rpc", {"method": "memory_bytes"}, headers=AUTH)
    assert status == 200, body
    (result,) = body["results"]
    return result


def is_sleeping(server) -> bool:
    status, body = call_json(server.base_url, "GET", "/is_sleeping", headers=AUTH)
    assert status == 200
    return body["is_sleeping"]


def post(server, path: str) -> int:
    return call(server.base_url, "POST", path, headers=AUTH)[0]


@pytest.mark.parametrize("level", [1, 2])
def test_sleep_releases_memory_and_wakes_to_the_same_outputs(ops_server, level):
    status, before = generate(ops_server)
    assert status == 200
    awake = memory(ops_server)
    assert awake["kv_cache"] == 96 * MiB and awake["weights"] > 0
    kv_mappings = kv_cache_mappings(ops_server.process.pid, 48 * MiB)
    kv_resident = sum(resident for _, resident in kv_mappings)
    assert sum(layers for layers, _ in kv_mappings) == 2 and kv_resident > 0  # a tensor per layer, partly written

    assert post(ops_server, f"/sleep?level={level}") == 200
    assert is_sleeping(ops_server)
    asleep = memory(ops_server)
    assert asleep["kv_cache"] == 0
    assert asleep["weights"] == (0 if level == 2 else awake["weights"])  # level 1 on CPU: already in host memory
    assert kv_cache_mappings(ops_server.process.pid, 48 * MiB) == []  # unmapped: their pages are the system's
    status, error = generate(ops_server)
    assert status == 503 and "sleeping" in error["error"]["message"], error

    if level == 2:  # parts wake one at a time; the engine serves once all are back
        assert post(ops_server, "/wake_up?tags=weights") == 200
        assert is_sleeping(ops_server)
        assert memory(ops_server) == {"weights": awake["weights"], "kv_cache": 0}
        assert generate(ops_server)[0] == 503
        assert post(ops_server, "/wake_up?tags=kv_cache") == 200
    else:
        assert post(ops_server, "/wake_up") == 200
    assert not is_sleeping(ops_server)
    assert memory(ops_server) == awake
    status, after = generate(ops_server)
    assert status == 200
    assert after["choices"][0]["text"] == before["choices"][0]["text"]


def test_sleep_input_errors(ops_server):
    assert call_json(ops_server.base_url, "POST", "/sleep?level=3", headers=AUTH)[0] == 400
    assert call_json(ops_server.base_url, "POST", "/sleep?level=x", headers=AUTH)[0] == 400
    assert post(ops_server, "/wake_up") == 200  # awake already: nothing to do
    status, body = call_json(ops_server.base_url, "POST", "/collective_rpc", {"method": "execute"}, headers=AUTH)
    assert status == 400 and "execute" in body["error"]["message"]
    status, body = call_json(ops_server.base_url, "POST", "/collective_rpc", {"method": "_load_model"}, headers=AUTH)
    assert status == 400
    status, _ = call_json(
        ops_server.base_url, "POST", "/collective_rpc", {"method": "memory_bytes", "args": [1]}, headers=AUTH
    )
    assert status == 400
    assert generate(ops_server)[0] == 200  # none of this hurt the engine


def test_dev_endpoints_need_the_flag(server):
    for method, path in (
        ("POST", "/sleep"),
        ("POST", "/wake_up"),
        ("GET", "/is_sleeping"),
        ("POST", "/collective_rpc"),
    ):
        assert call(server.base_url, method, path)[0] == 404
