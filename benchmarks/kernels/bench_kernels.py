"""Times each CUDA kernel against its torch reference and against the card's copy bandwidth.

Each op runs on inputs several times the L2 (60 MB on an H200) in bf16, timed with CUDA events (median of
repeats after warm-up). Bandwidth is the fewest bytes the op must move (each input read once, each output
written once) over its time, compared with a device-to-device copy's (bytes read + written) / time, measured
first on the same card. Targets (issue 15): paged attention decode (batch 64, context 4k) >= 70% of the copy
bandwidth; reshape_and_cache, rms_norm and silu_and_mul >= 80%.

    python benchmarks/kernels/bench_kernels.py --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from collections.abc import Callable
from datetime import datetime, timezone

import torch

from kvserve import ops

DTYPE = torch.bfloat16
ELEM = 2  # bytes of a bf16


def median_ms(fn: Callable[[], object], repeats: int = 30, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def copy_bandwidth() -> float:
    """Bytes per second of a 2 GiB device-to-device copy, counting bytes read and written."""
    src = torch.randn(1 << 29, device="cuda")  # 2 GiB of float32
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src), repeats=20)
    return 2 * src.numel() * src.element_size() / (ms * 1e-3)


def paged_batch(q_lens: list[int], seq_lens: list[int], heads: int, kv_heads: int, head_dim: int, block_size: int):
    blocks = [math.ceil(s / block_size) for s in seq_lens]
    num_blocks = sum(blocks)
    width = max(blocks)
    perm = torch.randperm(num_blocks, device="cuda").to(torch.int32)
    tables = torch.zeros(len(seq_lens), width, dtype=torch.int32, device="cuda")
    used = 0
    for r, n in enumerate(blocks):
        tables[r, :n] = perm[used : used + n]
        used += n
    kv_cache = torch.randn(2, num_blocks, block_size, kv_heads, head_dim, device="cuda", dtype=DTYPE)
    query = torch.randn(sum(q_lens), heads, head_dim, device="cuda", dtype=DTYPE)
    starts = torch.tensor([0, *torch.tensor(q_lens).cumsum(0).tolist()], dtype=torch.int32, device="cuda")
    lens = torch.tensor(seq_lens, dtype=torch.int32, device="cuda")
    args = (query, kv_cache, tables, lens, starts, max(q_lens), max(seq_lens), head_dim**-0.5)
    kv_bytes = sum(seq_lens) * kv_heads * head_dim * 2 * ELEM
    return args, kv_bytes + 2 * query.numel() * ELEM


def cases() -> list[tuple[str, str, Callable[[], object], int, float | None]]:
    """(op, shape, call, bytes moved, target fraction of copy bandwidth)."""
    out = []
    tokens, hidden = 16384, 4096
    x = torch.randn(tokens, hidden, device="cuda", dtype=DTYPE)
    residual = torch.randn_like(x)
    weight = torch.randn(hidden, device="cuda", dtype=DTYPE)
    out.append(("rms_norm", f"{tokens}x{hidden}", lambda: ops.rms_norm(x, weight, 1e-6), 2 * x.numel() * ELEM, 0.8))
    out.append(
        ("fused_add_rms_norm", f"{tokens}x{hidden}", lambda: ops.fused_add_rms_norm(x, residual, weight, 1e-6),
         4 * x.numel() * ELEM, None)
    )  # fmt: skip
    gate_up = torch.randn(8192, 2 * 14336, device="cuda", dtype=DTYPE)
    out.append(
        ("silu_and_mul", "8192x2*14336", lambda: ops.silu_and_mul(gate_up), gate_up.numel() * ELEM * 3 // 2, 0.8)
    )
    heads, kv_heads, head_dim = 32, 8, 128
    q = torch.randn(tokens, heads, head_dim, device="cuda", dtype=DTYPE)
    k = torch.randn(tokens, kv_heads, head_dim, device="cuda", dtype=DTYPE)
    angles = torch.rand(tokens, head_dim // 2, device="cuda") * 1000
    cos, sin = angles.cos().to(DTYPE), angles.sin().to(DTYPE)
    rot_bytes = 2 * (q.numel() + k.numel()) * ELEM + 2 * cos.numel() * ELEM
    out.append(
        ("rotary_embedding", f"{tokens}x(32+8)x128", lambda: ops.rotary_embedding(q, k, cos, sin), rot_bytes, None)
    )
    block_size = 16
    num_blocks = 2 * tokens // block_size
    kv_cache = torch.randn(2, num_blocks, block_size, kv_heads, head_dim, device="cuda", dtype=DTYPE)
    v = torch.randn_like(k)
    slots = torch.randperm(num_blocks * block_size, device="cuda")[:tokens]
    out.append(
        ("reshape_and_cache", f"{tokens}x8x128", lambda: ops.reshape_and_cache(k, v, kv_cache, slots),
         4 * k.numel() * ELEM + slots.numel() * 8, 0.8)
    )  # fmt: skip
    for batch, context in [(64, 4096), (8, 16384), (256, 1024)]:
        args, nbytes = paged_batch([1] * batch, [context] * batch, heads, kv_heads, head_dim, block_size)
        target = 0.7 if (batch, context) == (64, 4096) else None
        out.append(
            (
                "paged_attention decode",
                f"b{batch} ctx{context} 32/8x128",
                lambda a=args: ops.paged_attention(*a),
                nbytes,
                target,
            )
        )
    mixed_q = [512] * 4 + [1] * 60
    mixed_seq = [2048] * 4 + [2048] * 60
    args, nbytes = paged_batch(mixed_q, mixed_seq, heads, kv_heads, head_dim, block_size)
    out.append(
        ("paged_attention mixed", "4x512 prefill + 60 decode, ctx 2k", lambda: ops.paged_attention(*args), nbytes, None)
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    if not (torch.cuda.is_available() and ops.HAS_CUDA_KERNELS):
        raise SystemExit("needs a CUDA device and kvserve._kernels")
    torch.manual_seed(0)
    copy_bw = copy_bandwidth()
    rows = []
    for op, shape, call, nbytes, target in cases():
        kernel_ms = median_ms(call, args.repeats)
        with ops.reference_only():
            reference_ms = median_ms(call, max(5, args.repeats // 3))
        fraction = nbytes / (kernel_ms * 1e-3) / copy_bw
        rows.append(
            dict(op=op, shape=shape, kernel_ms=kernel_ms, reference_ms=reference_ms, bytes=nbytes,
                 gb_per_s=nbytes / (kernel_ms * 1e-3) / 1e9, fraction_of_copy=fraction, target=target,
                 meets_target=None if target is None else fraction >= target)
        )  # fmt: skip
        torch.cuda.empty_cache()
    result = dict(
        device=torch.cuda.get_device_name(),
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        torch=torch.__version__,
        dtype=str(DTYPE),
        copy_gb_per_s=copy_bw / 1e9,
        rows=rows,
    )
    print(f"{result['device']}, {result['date']}: device-to-device copy {copy_bw / 1e9:.0f} GB/s (read + write)")
    print(f"{'op':24} {'shape':36} {'kernel ms':>10} {'ref ms':>9} {'speedup':>8} {'GB/s':>7} {'% copy':>7} target")
    for r in rows:
        target = "" if r["target"] is None else f">={r['target']:.0%} {'ok' if r['meets_target'] else 'MISSED'}"
        print(
            f"{r['op']:24} {r['shape']:36} {r['kernel_ms']:10.4f} {r['reference_ms']:9.4f} "
            f"{r['reference_ms'] / r['kernel_ms']:7.1f}x {r['gb_per_s']:7.0f} {r['fraction_of_copy']:7.1%} {target}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
