"""The C++ Philox kernel behind the CPU sampler's Exp(1) draws (kvserve._core.cpu.exponential_draws), on numpy
buffers: its distribution, and that a draw is a pure function of (seed, counter, index). Torch-free, so that
`make test-sanitize` runs it (tests/model/test_random_draws.py covers how the sampler uses it)."""

from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from kvserve import _core


def draws(rows: int, cols: int, seeds: list[int], counters: list[int], threads: int = 1) -> np.ndarray:
    out = np.empty((rows, cols), dtype=np.float32)
    seed_array, counter_array = np.array(seeds, dtype=np.uint64), np.array(counters, dtype=np.uint64)
    _core.cpu.exponential_draws(
        out.ctypes.data, rows, cols, cols, seed_array.ctypes.data, counter_array.ctypes.data, threads
    )
    return out


def test_draws_follow_the_exponential_distribution() -> None:
    n = 200_003  # not a multiple of 4: the last Philox block is partly used
    x = draws(1, n, [12345], [7])[0].astype(np.float64)
    # Kolmogorov-Smirnov distance to Exp(1)'s CDF, against the 1% critical value 1.63 / sqrt(n).
    ordered = np.sort(x)
    cdf = 1.0 - np.exp(-ordered)
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks < 1.63 / math.sqrt(n)
    assert abs(x.mean() - 1.0) < 0.01 and abs(x.var() - 1.0) < 0.02
    # 23 random bits centred in their intervals: never 0 (a draw of 0 would win any race), never above 16.7.
    assert x.min() >= -math.log1p(-(2.0**-24)) * 0.99 and x.max() <= -math.log(2.0**-24) * 1.01


def test_each_draw_is_a_function_of_seed_counter_and_index() -> None:
    rows = draws(5, 1001, [1, 1, 2, 1, 1], [0, 1, 0, 0, 2**40])
    assert np.array_equal(rows[0], rows[3])  # same (seed, counter)
    for other in (1, 2, 4):
        assert not np.array_equal(rows[0], rows[other])
        assert abs(np.corrcoef(rows[0], rows[other])[0, 1]) < 0.1
    # Rows in one call equal rows drawn one by one, on any number of threads; a prefix is the same draws.
    many = draws(64, 1001, list(range(64)), [3] * 64, threads=2)
    for r in (0, 17, 63):
        assert np.array_equal(many[r], draws(1, 1001, [r], [3])[0])
    assert np.array_equal(draws(1, 10, [9], [9])[0], draws(1, 1001, [9], [9])[0, :10])


def test_the_race_picks_the_largest_logit_over_temperature_minus_log_draw() -> None:
    """One pass a row, against the same draws taken from exponential_draws: NaN and -inf logits included."""
    rng = np.random.default_rng(3)
    rows, cols = 9, 1003
    logits = (rng.standard_normal((rows, cols)) * 3).astype(np.float32)
    logits[1, :] = -np.inf  # every token masked: the first index, as argmax over -inf keys
    logits[2, 500] = np.nan  # NaN counts as the maximum
    logits[3, ::2] = -np.inf
    temperatures = np.linspace(0.3, 2.0, rows).astype(np.float32)
    seeds = np.arange(100, 100 + rows, dtype=np.uint64)
    counters = np.full(rows, 5, dtype=np.uint64)
    for threads in (1, 2):
        out = np.empty(rows, dtype=np.int64)
        _core.cpu.exponential_race(
            out.ctypes.data, logits.ctypes.data, rows, cols, cols, temperatures.ctypes.data, seeds.ctypes.data,
            counters.ctypes.data, threads,
        )  # fmt: skip
        e = draws(rows, cols, seeds.tolist(), counters.tolist())
        with np.errstate(invalid="ignore"):
            keys = logits / temperatures[:, None] - np.log(e)
        expected = [int(np.flatnonzero(np.isnan(k))[0]) if np.isnan(k).any() else int(np.argmax(k)) for k in keys]
        assert out.tolist() == expected
    assert out[1] == 0 and out[2] == 500 and out[3] % 2 == 1


def _draws_digest() -> str:
    """Draws over widths around the vector path's 32-draw groups, and a race, as bytes in hex."""
    parts = [draws(3, cols, [0, 2**40 + 7, 2**64 - 1], [0, 9, 2**33]).tobytes() for cols in (1, 3, 31, 32, 33, 100)]
    logits = np.linspace(-3, 3, 4 * 1001, dtype=np.float32).reshape(4, 1001)
    temperatures, seeds, counters = (np.full(4, 0.7, np.float32), np.arange(4, dtype=np.uint64),
                                     np.full(4, 3, np.uint64))  # fmt: skip
    out = np.empty(4, dtype=np.int64)
    _core.cpu.exponential_race(
        out.ctypes.data, logits.ctypes.data, 4, 1001, 1001, temperatures.ctypes.data, seeds.ctypes.data,
        counters.ctypes.data, 1,
    )  # fmt: skip
    return b"".join([*parts, out.tobytes()]).hex()


@pytest.mark.skipif("KVSERVE_CPU_ISA" in os.environ, reason="already running under a capped instruction set")
def test_every_build_draws_the_same_values() -> None:
    """The AVX2 path (eight Philox blocks at once) and the portable one give the same draws and races, bit for
    bit: a seeded request samples the same tokens on any CPU."""
    code = "from tests.core.test_exponential_draws import _draws_digest; print(_draws_digest())"
    env = {**os.environ, "KVSERVE_CPU_ISA": "baseline"}
    baseline = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert baseline.stdout.strip() == _draws_digest()
