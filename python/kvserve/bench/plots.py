"""PNG plots of benchmark results: latency CDFs of one run, throughput and TTFT over a concurrency sweep.

Figures are built with `matplotlib.figure.Figure` directly rather than pyplot: no global figure state and
no display backend, so plotting works on a headless server and from several runs in one process.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import ScalarFormatter

# Per-request arrays of a result dict, in seconds, and how a CDF of each is titled.
_CDF_METRICS = {"ttfts": "TTFT", "tpots": "TPOT", "e2els": "E2EL"}


def _save(figure: Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    return path


def plot_latency_cdfs(result: dict[str, Any], out_dir: str | Path) -> list[Path]:
    """One CDF per latency over the run's successful requests: `{label}-{ttft,tpot,e2el}_cdf.png`.
    A latency without samples (TPOT when every answer had one token) gets no file."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    succeeded = [not error for error in result["errors"]]
    paths = []
    for key, title in _CDF_METRICS.items():
        values_ms = np.sort([v * 1000.0 for v, ok in zip(result[key], succeeded) if ok and v is not None])
        if values_ms.size == 0:
            continue
        figure = Figure(figsize=(6, 4))
        ax = figure.add_subplot()
        ax.step(values_ms, np.arange(1, values_ms.size + 1) / values_ms.size, where="post")
        ax.set_xlabel(f"{title} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{title} CDF: {result['label']}, {values_ms.size} requests")
        ax.grid(alpha=0.3)
        paths.append(_save(figure, out / f"{result['label']}-{key[:-1]}_cdf.png"))
    return paths


def _concurrency(result: dict[str, Any]) -> int:
    """The configured limit, or the peak the run reached when it had none."""
    limit = result.get("max_concurrency")
    return limit if limit is not None else result["max_concurrent_requests"]


def plot_sweep(results: Sequence[dict[str, Any]], out_dir: str | Path) -> list[Path]:
    """Output throughput and TTFT against concurrency, one line per label (a server, a configuration):
    `sweep_output_throughput.png` and `sweep_ttft.png` (median solid, p99 dashed when reported)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    by_label: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for result in results:
        by_label[result["label"]].append(result)
    for runs in by_label.values():
        runs.sort(key=_concurrency)

    throughput = Figure(figsize=(6, 4))
    throughput_ax = throughput.add_subplot()
    ttft = Figure(figsize=(6, 4))
    ttft_ax = ttft.add_subplot()
    for label, runs in by_label.items():
        x = [_concurrency(r) for r in runs]
        throughput_ax.plot(x, [r["output_throughput"] for r in runs], marker="o", label=label)
        (line,) = ttft_ax.plot(x, [r["median_ttft_ms"] for r in runs], marker="o", label=f"{label} median")
        if all("p99_ttft_ms" in r for r in runs):
            ttft_ax.plot(
                x,
                [r["p99_ttft_ms"] for r in runs],
                marker="x",
                linestyle="--",
                color=line.get_color(),
                label=f"{label} p99",
            )
    for ax, ylabel in ((throughput_ax, "output tokens/s"), (ttft_ax, "TTFT (ms)")):
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(ScalarFormatter())  # 1, 2, 4 rather than 2^0, 2^1, 2^2
        ax.set_xlabel("concurrency")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend()
    throughput_ax.set_title("Output throughput")
    ttft_ax.set_title("Time to first token")
    return [_save(throughput, out / "sweep_output_throughput.png"), _save(ttft, out / "sweep_ttft.png")]
