"""How torch's OpenMP threads (and our kernels', the same pool) wait between parallel regions: set before
torch loads, since libgomp reads its environment once.

A CPU decode step is ~240 parallel regions (matmuls, attention) microseconds apart; steps are milliseconds
apart. libgomp's default spins ~300k iterations after each region, so idle pool threads take the cores from
the event loop, the actors and the runner (at 16 streams on 2 cores: 19x less throughput, /health up to
0.47 s). OMP_WAIT_POLICY=PASSIVE sleeps at once, and then every region pays a futex wake of its threads: the
default model's one-stream step took 11.9 ms instead of 5.7. A short spin (GOMP_SPINCOUNT, tens of µs) keeps
the threads awake from one region of a step to the next and asleep between steps (benchmarks/RESULTS.md,
#14). A user's own OMP_WAIT_POLICY or GOMP_SPINCOUNT wins.
"""

from __future__ import annotations

import os

SPIN_COUNT = 10_000


def configure_openmp_waiting() -> None:
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return
    os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
