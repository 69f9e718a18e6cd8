"""glibc malloc settings for the serving process, applied before the model loads and threads start.

Left at its defaults, glibc keeps freed memory that a server never gets back (benchmarks/RESULTS.md, #14):
- it raises its mmap threshold to the size of each large block freed (up to 32 MiB), so after the first
  prefill, torch's multi-MiB temporaries (a step's logits, prefill activations) come from the heap and the
  arenas, and fragmentation keeps them resident after they are freed;
- each thread that allocates may get its own arena (up to 8 per core), each holding its own free memory.
Fixed thresholds turn the first off (a block of MMAP_THRESHOLD or more is mmapped, and unmapped when freed);
ARENA_MAX bounds the second. Measured on the default model at 16 streams: 111 MiB less resident, no change in
step time. A variable the user set (MALLOC_ARENA_MAX, MALLOC_MMAP_THRESHOLD_, ...) wins over the setting.
`release_free_memory` hands back what loading left free (parsed tokenizer and GGUF metadata, conversion
temporaries) once the engine has started.
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
    M_MMAP_THRESHOLD: ("MALLOC_MMAP_THRESHOLD_", 256 << 10),
    M_TRIM_THRESHOLD: ("MALLOC_TRIM_THRESHOLD_", 1 << 20),
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
    (glibc's malloc_trim; a few milliseconds)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
