"""Soak: sustained mixed traffic against an in-process kvserve server, with clients that leave mid-stream
and bursts beyond capacity; fails on anything a production server must not do.

Traffic, for `--duration` seconds: `--capacity` clients in a loop (half chat streams, a quarter completion
streams, a quarter plain completions), every fifth stream disconnecting after a few chunks; every
`--burst-every` seconds a burst of 4 x capacity requests at once. The server runs max_num_seqs = capacity
and --max-num-queued-requests = 2 x capacity, so bursts meet admission control (503 + Retry-After).

Recorded every second: RSS and open file descriptors (this process: server and client), event-loop lag
(a probe task on the server's loop: how late a 50 ms sleep wakes), KV blocks in use (the engine's StepStats),
requests in the engine. The server runs in this process so the KV-block counters can be read directly.

Fails (exit 1) on: any 5xx other than 503, any request with no answer within `--hang-timeout`, RSS at the
end more than 10% above RSS after `--warmup`, KV blocks not all free once the traffic stops, an engine that
is no longer healthy.

    python benchmarks/soak.py                          # the embedded SmolLM2-135M, 5 minutes
    python benchmarks/soak.py --model DIR --duration 45 --json soak.json
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).parents[1]))  # the repository root: the tests' in-process server

from kvserve.api.settings import ServerSettings
from kvserve.config import EngineConfig
from kvserve.engine import AsyncEngine
from kvserve.messages import StepStats
from kvserve.text.chat_template import ChatTemplate
from tests.api.in_process_server import InProcessServer

DISCONNECT_FRACTION = 0.2
BURST_FACTOR = 4
MAX_RSS_GROWTH = 0.10
LAG_PROBE_S = 0.05


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


class SoakServer:
    """kvserve in this process (the tests' InProcessServer: hypercorn on its own loop and thread), with a
    probe of its event loop's lag and the engine's latest StepStats."""

    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.last_stats: StepStats | None = None
        self.max_lag = 0.0  # seconds, since the last sample

    def start(self) -> None:
        self.server = InProcessServer(self.config, "soak", settings=self._settings)
        self.port = self.server.port
        self.engine = self.server.engine
        self.server.call(lambda: self.engine.add_stats_listener(self._on_stats))
        self.probe = asyncio.run_coroutine_threadsafe(self._probe_lag(), self.server.loop)

    def _settings(self, engine: AsyncEngine) -> ServerSettings:
        template = engine.tokenizer.chat_template
        return ServerSettings(
            served_model_names=("soak",),
            model_root=self.config.model,
            chat_template=ChatTemplate(template, special_tokens=engine.tokenizer.special_tokens) if template else None,
        )

    def _on_stats(self, stats: StepStats) -> None:
        self.last_stats = stats

    async def _probe_lag(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(LAG_PROBE_S)
            self.max_lag = max(self.max_lag, time.perf_counter() - started - LAG_PROBE_S)

    def read(self, fn):
        """fn() on the server's loop (engine state is only read there)."""
        return self.server.call(fn)

    def kv_blocks(self) -> tuple[int, int]:
        """(free, total) KV blocks now: O(1) counters of the block pool."""

        def read() -> tuple[int, int]:
            pool = self.engine.scheduler.core.block_pool
            return pool.num_free_blocks, pool.num_blocks

        return self.read(read)

    def stop(self) -> None:
        self.probe.cancel()
        self.server.stop()


@dataclass
class Sample:
    t: float
    rss_mib: float
    open_fds: int
    max_loop_lag_ms: float
    kv_used_blocks: int
    open_requests: int
    num_rejected: int


@dataclass
class Report:
    duration_s: float
    warmup_s: float
    capacity: int
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    disconnected: int = 0
    hung: int = 0
    rss_mib_after_warmup: float = 0.0
    rss_mib_end: float = 0.0
    rss_growth: float = 0.0
    fds_after_warmup: int = 0
    fds_end: int = 0
    max_loop_lag_ms: float = 0.0
    max_kv_used_blocks: int = 0
    kv_free_blocks_end: int = 0
    kv_total_blocks: int = 0
    engine_healthy_end: bool = False
    failures: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)


class Traffic:
    def __init__(self, base_url: str, capacity: int, max_tokens: int, hang_timeout: float, rng: random.Random) -> None:
        self.base_url = base_url
        self.capacity = capacity
        self.max_tokens = max_tokens
        self.hang_timeout = hang_timeout
        self.rng = rng
        self.statuses: collections.Counter[str] = collections.Counter()
        self.num_streams = 0
        self.disconnected = 0
        self.hung = 0
        self.errors: list[str] = []

    def _request(self) -> tuple[str, dict[str, Any], bool]:
        """(path, body, stream) of a random request of the mix."""
        max_tokens = self.rng.randint(self.max_tokens // 4, self.max_tokens)
        words = " ".join(
            self.rng.choice(("alpha", "beta", "gamma", "delta", "soak")) for _ in range(self.rng.randint(4, 40))
        )
        kind = self.rng.random()
        if kind < 0.5:
            return (
                "/v1/chat/completions",
                {"messages": [{"role": "user", "content": words}], "max_tokens": max_tokens, "stream": True},
                True,
            )
        body = {"prompt": words, "max_tokens": max_tokens, "ignore_eos": True}
        stream = kind < 0.75
        return "/v1/completions", {**body, "stream": stream}, stream

    async def one(self, session: aiohttp.ClientSession) -> None:
        path, body, stream = self._request()
        leave_after = None
        if stream:
            self.num_streams += 1
            # Exactly one stream in 1 / DISCONNECT_FRACTION leaves, after a few chunks.
            if self.num_streams % round(1 / DISCONNECT_FRACTION) == 0:
                leave_after = self.rng.randint(1, 4)
        try:
            async with asyncio.timeout(self.hang_timeout):
                async with session.post(self.base_url + path, json={"model": "soak", **body}) as response:
                    self.statuses[str(response.status)] += 1
                    if response.status >= 500 and response.status != 503:
                        self.errors.append(f"{response.status} {path}: {(await response.text())[:200]}")
                        return
                    if response.status == 503:  # as the official SDKs do: wait Retry-After, then go on
                        await response.read()
                        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
                        return
                    if response.status != 200:
                        await response.read()
                        return
                    if not stream:
                        await response.json()
                        return
                    chunks = 0
                    async for line in response.content:
                        if not line.startswith(b"data: "):
                            continue
                        if b'"error"' in line:
                            self.errors.append(f"error event {path}: {line[:200]!r}")
                        chunks += 1
                        if leave_after is not None and chunks >= leave_after:
                            self.disconnected += 1
                            response.close()  # drop the connection mid-stream
                            return
        except TimeoutError:
            self.hung += 1
            self.errors.append(f"no answer within {self.hang_timeout} s: {path}")
        except aiohttp.ClientError as e:
            self.statuses[type(e).__name__] += 1
            self.errors.append(f"{type(e).__name__} {path}: {e}")

    async def client(self, session: aiohttp.ClientSession, until: float) -> None:
        while time.monotonic() < until:
            await self.one(session)

    async def bursts(self, session: aiohttp.ClientSession, until: float, every: float) -> None:
        while time.monotonic() + every < until:
            await asyncio.sleep(every)
            await asyncio.gather(*(self.one(session) for _ in range(BURST_FACTOR * self.capacity)))


async def drive(server: SoakServer, args: argparse.Namespace, report: Report) -> Traffic:
    traffic = Traffic(
        f"http://127.0.0.1:{server.port}", args.capacity, args.max_tokens, args.hang_timeout, random.Random(args.seed)
    )
    started = time.monotonic()
    until = started + args.duration
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        tasks = [asyncio.ensure_future(traffic.client(session, until)) for _ in range(args.capacity)]
        tasks.append(asyncio.ensure_future(traffic.bursts(session, until, args.burst_every)))
        warm = False
        while not all(task.done() for task in tasks):
            await asyncio.sleep(1.0)
            stats = server.last_stats
            lag, server.max_lag = server.max_lag, 0.0
            sample = Sample(
                t=round(time.monotonic() - started, 1),
                rss_mib=rss_bytes() / (1 << 20),
                open_fds=open_fds(),
                max_loop_lag_ms=lag * 1e3,
                kv_used_blocks=stats.num_used_blocks if stats else 0,
                open_requests=server.read(lambda: server.engine.num_open_requests),
                num_rejected=server.read(lambda: server.engine.admission.num_rejected),
            )
            report.samples.append(sample)
            if not warm and sample.t >= args.warmup:
                warm = True
                report.rss_mib_after_warmup, report.fds_after_warmup = sample.rss_mib, sample.open_fds
        await asyncio.gather(*tasks)
    return traffic


def run(args: argparse.Namespace) -> Report:
    config = EngineConfig(
        model=args.model,
        kv_cache_memory=args.kv_cache_memory,
        max_num_seqs=args.capacity,
        max_num_queued_requests=2 * args.capacity,
        max_model_len=args.max_model_len,
    )
    server = SoakServer(config)
    server.start()
    report = Report(duration_s=args.duration, warmup_s=args.warmup, capacity=args.capacity)
    try:
        traffic = asyncio.run(drive(server, args, report))
        idle_by = time.monotonic() + 10
        while server.read(lambda: server.engine.num_open_requests) and time.monotonic() < idle_by:
            time.sleep(0.05)
        free, total = server.kv_blocks()
        deadline = time.monotonic() + 5  # aborts of the last disconnects may still be on their way
        while free != total and time.monotonic() < deadline:
            time.sleep(0.05)
            free, total = server.kv_blocks()
        report.kv_free_blocks_end, report.kv_total_blocks = free, total
        report.engine_healthy_end = server.read(lambda: server.engine.is_healthy)
    finally:
        server.stop()
    report.requests = sum(traffic.statuses.values())
    report.statuses = dict(sorted(traffic.statuses.items()))
    report.disconnected, report.hung = traffic.disconnected, traffic.hung
    report.rss_mib_end = report.samples[-1].rss_mib
    report.fds_end = report.samples[-1].open_fds
    report.rss_growth = report.rss_mib_end / report.rss_mib_after_warmup - 1 if report.rss_mib_after_warmup else 0.0
    report.max_loop_lag_ms = max(s.max_loop_lag_ms for s in report.samples)
    report.max_kv_used_blocks = max(s.kv_used_blocks for s in report.samples)
    report.failures = judge(report, traffic.errors)
    return report


def judge(report: Report, errors: list[str]) -> list[str]:
    failures = list(dict.fromkeys(errors))[:20]
    if report.hung:
        failures.append(f"{report.hung} requests hung")
    if report.rss_growth > MAX_RSS_GROWTH:
        failures.append(f"RSS grew {report.rss_growth:.1%} after warm-up (limit {MAX_RSS_GROWTH:.0%})")
    if report.kv_free_blocks_end != report.kv_total_blocks:
        failures.append(f"{report.kv_total_blocks - report.kv_free_blocks_end} KV blocks still used at the end")
    if not report.engine_healthy_end:
        failures.append("the engine is not healthy at the end")
    if report.statuses.get("200", 0) == 0:
        failures.append("no request succeeded")
    return failures


def print_report(report: Report) -> None:
    print(f"{'t s':>6} {'RSS MiB':>8} {'fds':>5} {'lag ms':>7} {'KV used':>8} {'open':>5} {'rejected':>9}")
    for s in report.samples:
        print(
            f"{s.t:6.1f} {s.rss_mib:8.1f} {s.open_fds:5d} {s.max_loop_lag_ms:7.1f} {s.kv_used_blocks:8d} "
            f"{s.open_requests:5d} {s.num_rejected:9d}"
        )
    print(
        f"requests {report.requests}  statuses {report.statuses}  "
        f"disconnected {report.disconnected}  hung {report.hung}"
    )
    print(
        f"RSS {report.rss_mib_after_warmup:.1f} MiB after warm-up -> {report.rss_mib_end:.1f} MiB at the end "
        f"({report.rss_growth:+.1%}); fds {report.fds_after_warmup} -> {report.fds_end}; "
        f"max loop lag {report.max_loop_lag_ms:.1f} ms"
    )
    print(f"KV blocks free at the end: {report.kv_free_blocks_end}/{report.kv_total_blocks}")
    print("PASS" if not report.failures else "FAIL:\n  " + "\n  ".join(report.failures))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory or .gguf (default: the embedded SmolLM2-135M)")
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of traffic")
    parser.add_argument("--warmup", type=float, default=30.0, help="seconds before the RSS baseline is taken")
    parser.add_argument("--capacity", type=int, default=8, help="max_num_seqs, and the number of steady clients")
    parser.add_argument("--burst-every", type=float, default=10.0, help="seconds between bursts of 4 x capacity")
    parser.add_argument("--max-tokens", type=int, default=48, help="most tokens a request asks for")
    parser.add_argument("--max-model-len", type=int, default=512)
    parser.add_argument("--kv-cache-memory", type=int, default=64 << 20, help="bytes")
    parser.add_argument("--hang-timeout", type=float, default=60.0, help="seconds after which a request counts as hung")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="write the report (with the samples) here")
    args = parser.parse_args(argv)
    if args.model is None:
        from kvserve.cli import embedded_model_path

        args.model = str(embedded_model_path())
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = run(args)
    print_report(report)
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=1))
    return 1 if report.failures else 0


if __name__ == "__main__":
    sys.exit(main())
