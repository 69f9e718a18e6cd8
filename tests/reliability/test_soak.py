"""A short soak run (benchmarks/soak.py) on the tiny model: mixed traffic, disconnects and bursts at 4x
capacity, with no 5xx but 503, no hang, no memory growth past 10% and every KV block free at the end."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SOAK = Path(__file__).parents[2] / "benchmarks" / "soak.py"


def test_short_soak(tiny_model_dir, capsys, monkeypatch):
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    soak = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "soak", soak)  # its dataclasses look their module up there
    spec.loader.exec_module(soak)
    args = soak.parse_args(
        [
            "--model",
            str(tiny_model_dir("llama")),
            "--duration",
            "30",
            "--warmup",
            "10",
            "--burst-every",
            "5",
            "--capacity",
            "4",
            "--max-tokens",
            "32",
            "--kv-cache-memory",
            str(16 << 20),
            "--hang-timeout",
            "30",
        ]
    )
    report = soak.run(args)
    with capsys.disabled():
        soak.print_report(report)
    assert not report.failures
    statuses = report.statuses
    assert statuses.get("503", 0) > 0, "the bursts must meet admission control"
    assert set(statuses) <= {"200", "503"}, statuses
    assert report.disconnected > 0 and report.kv_free_blocks_end == report.kv_total_blocks
