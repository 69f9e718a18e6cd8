"""glibc malloc settings for the serving process, applied before the model loads and threads start.

Left at its defaults, glibc keeps freed memory that a server never gets back (benchmarks/RESULTS.md, #14):
- it raises its mmap threshold to the size of each large block freed (up to 32 MiB), and fragmentation
  keeps what torch's multi-MiB temporaries (a step's logits, prefill activations) leave free resident;
- each thread that allocates may get its own arena (up to 8 per core), each holding its own free memory.
Fixed thresholds make the first predictable and ARENA_MAX bounds the second. The mmap threshold is not set
low: a block that is mmapped is unmapped when freed, and each of a prefill's temporaries (tens of MiB at
2,048 tokens) then faults its pages in afresh, layer after layer: with 256 KiB, two runs of 16 requests of the
default model (128 + 128 tokens each) took 1.5 million page faults instead of 0.25 million, and its 16-stream
serving run was ~10% slower than with 32 MiB (RESULTS.md, #14). Freed blocks below 32 MiB stay in the heap
for the next step instead; `release_free_memory` hands them back once the engine is idle (the scheduler's idle
hook), and once it has started (what loading left free: parsed tokenizer and GGUF metadata, conversion
temporaries). A variable the user set (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_, ...) wins over the setting.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform

logger = logging.getLogger(__name__)

# mallopt parameters (malloc.h) -> (the environment variable that sets the same, our value)
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
SETTINGS = {
    M_ARENA_MAX: ("MALLOC_ARENA_MAX", 2),
    M_MMAP_THRESHOLD: ("MALLOC_MMAP_THRESHOLD_", 32 << 20),
    M_TRIM_THRESHOLD: ("MALLOC_TRIM_THRESHOLD_", 64 << 20),
}


def _glibc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def tune_malloc() -> dict[str, int]:
    """Applies SETTINGS through mallopt where the C library is glibc; returns what was set, by variable name."""
    libc = _glibc()
    if libc is None:
        return {}
    applied = {}
    for param, (variable, value) in SETTINGS.items():
        if variable in os.environ or "GLIBC_TUNABLES" in os.environ:
            continue
        if libc.mallopt(param, value) == 1:
            applied[variable] = value
    logger.debug("malloc settings: %s", applied)
    return applied


def release_free_memory() -> None:
    """Returns the free memory at the top of each malloc arena and the free pages inside them to the system
    (glibc's malloc_trim; a few milliseconds: called while no step runs)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
