"""Which compiled tile configuration runs a GEMM of a given size: the tuned table, else a default by M.

`benchmarks/kernels/tune_gemm.py` times every configuration on the shapes of a model and writes the fastest per
(N, K) and M to a JSON table named after the device (`gemm_tables/<device>.json`, or the file that
KVSERVE_GEMM_TABLE names). A table looks like

    {"device": "NVIDIA H200", "sm": 90,
     "kinds": {"float8_e4m3fn->bfloat16": {"6144x4096": {"1": "sm90_swapab_64x16_c1x1_pingpong",
                                                          "4096": "sm90_128x256_c2x1_coop"}}}}

A problem takes the entry of its (N, K) tuned at the smallest M at or above its own (the largest for an M
beyond them all). Shapes not in the table, and devices without one, use `default_config`.
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

TABLE_DIR = Path(__file__).parent / "gemm_tables"
TABLE_ENV = "KVSERVE_GEMM_TABLE"

# Defaults by problem size: the largest M each configuration serves, smallest first. Decode-sized M takes
# the swapped-operand tiles (the weight's rows fill the 64-row wgmma tile), then narrow tiles, then the wide
# ones that reach full tensor-core rate on prefill-sized M.
_DEFAULTS: dict[int, list[tuple[int, str]]] = {
    90: [
        (16, "sm90_swapab_64x16_c1x1_pingpong"),
        (64, "sm90_swapab_64x64_c1x1_pingpong"),
        (256, "sm90_64x128_c1x1_pingpong"),
        (1 << 31, "sm90_128x128_c2x1_coop"),
    ],
    80: [(32, "sm80_32x64_s5"), (256, "sm80_64x128_s5"), (1 << 31, "sm80_128x128_s4")],
}


def kind_key(operand: torch.dtype, out_dtype: torch.dtype) -> str:
    return f"{str(operand).removeprefix('torch.')}->{str(out_dtype).removeprefix('torch.')}"


def shape_key(n: int, k: int) -> str:
    return f"{n}x{k}"


def table_file(device_name: str) -> Path:
    """The table of a device: KVSERVE_GEMM_TABLE if set, else gemm_tables/<device name, sanitised>.json."""
    override = os.environ.get(TABLE_ENV)
    if override:
        return Path(override)
    return TABLE_DIR / f"{re.sub(r'[^A-Za-z0-9]+', '_', device_name).strip('_')}.json"


@dataclass(frozen=True, slots=True)
class GemmTable:
    # kind -> "NxK" -> [(tuned M, configuration)] sorted by M
    kinds: dict[str, dict[str, list[tuple[int, str]]]]

    @classmethod
    def from_json(cls, data: dict) -> GemmTable:
        kinds = {
            kind: {shape: sorted((int(m), name) for m, name in by_m.items()) for shape, by_m in shapes.items()}
            for kind, shapes in data.get("kinds", {}).items()
        }
        return cls(kinds)

    @classmethod
    def load(cls, path: Path) -> GemmTable:
        return cls.from_json(json.loads(path.read_text())) if path.is_file() else cls({})

    def lookup(self, kind: str, m: int, n: int, k: int) -> str | None:
        tuned = self.kinds.get(kind, {}).get(shape_key(n, k))
        if not tuned:
            return None
        return next((name for tuned_m, name in tuned if tuned_m >= m), tuned[-1][1])


def default_config(sm: int, m: int, available: list[str]) -> str | None:
    """The configuration for M by the defaults of the newest architecture family whose kernels are available
    (Hopper runs int8 through the sm80 kernels); else the first available (the kernels list their best general
    configuration first); None if there is none."""
    for family in (90, 80) if sm == 90 else (80,):
        compiled = [(max_m, name) for max_m, name in _DEFAULTS[family] if name in available]
        if compiled:
            return next((name for max_m, name in compiled if m <= max_m), compiled[-1][1])
    return available[0] if available else None


def choose_config(table: GemmTable, kind: str, sm: int, m: int, n: int, k: int, available: list[str]) -> str | None:
    """The tuned configuration for the problem if the table has one that is compiled, else the default."""
    tuned = table.lookup(kind, m, n, k)
    if tuned is not None and tuned in available:
        return tuned
    return default_config(sm, m, available)


@functools.cache
def device_table(device_name: str) -> GemmTable:
    return GemmTable.load(table_file(device_name))
