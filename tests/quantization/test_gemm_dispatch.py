"""Choosing a GEMM tile configuration: the tuned table by (N, K) and M, else the defaults by M."""

from __future__ import annotations

import json

import pytest
import torch

from kvserve import ops
from kvserve.ops import gemm_dispatch
from kvserve.ops.gemm_dispatch import GemmTable, choose_config, default_config, kind_key

SM90 = [
    "sm90_128x128_c2x1_coop",
    "sm90_128x256_c2x1_coop",
    "sm90_64x128_c1x1_pingpong",
    "sm90_swapab_64x16_c1x1_pingpong",
    "sm90_swapab_64x64_c1x1_pingpong",
]
KIND = kind_key(torch.float8_e4m3fn, torch.bfloat16)
TABLE = GemmTable.from_json(
    {"kinds": {KIND: {"6144x4096": {"16": "sm90_swapab_64x16_c1x1_pingpong", "256": "sm90_64x128_c1x1_pingpong",
                                    "4096": "sm90_128x256_c2x1_coop"}}}}
)  # fmt: skip


def test_kind_key():
    assert KIND == "float8_e4m3fn->bfloat16"


@pytest.mark.parametrize(
    ("m", "expected"),
    [
        (1, "sm90_swapab_64x16_c1x1_pingpong"),
        (16, "sm90_swapab_64x16_c1x1_pingpong"),
        (17, "sm90_64x128_c1x1_pingpong"),
        (4096, "sm90_128x256_c2x1_coop"),
        (100_000, "sm90_128x256_c2x1_coop"),  # beyond every tuned M: the largest's
    ],
)
def test_tuned_entry_at_the_smallest_m_at_or_above(m, expected):
    assert choose_config(TABLE, KIND, 90, m, 6144, 4096, SM90) == expected


@pytest.mark.parametrize(
    ("m", "expected"),
    [
        (1, "sm90_swapab_64x16_c1x1_pingpong"),
        (64, "sm90_swapab_64x64_c1x1_pingpong"),
        (65, "sm90_64x128_c1x1_pingpong"),
        (257, "sm90_128x128_c2x1_coop"),
    ],
)
def test_untuned_shapes_take_the_defaults(m, expected):
    assert choose_config(TABLE, KIND, 90, m, 4096, 4096, SM90) == expected
    assert choose_config(TABLE, kind_key(torch.bfloat16, torch.bfloat16), 90, m, 6144, 4096, SM90) == expected


def test_a_tuned_configuration_that_is_not_compiled_is_not_used():
    assert choose_config(TABLE, KIND, 90, 4096, 6144, 4096, SM90[:1]) == "sm90_128x128_c2x1_coop"


def test_defaults_on_ampere_and_without_kernels():
    sm80 = ["sm80_128x128_s4", "sm80_128x256_s3", "sm80_64x128_s5", "sm80_32x64_s5"]
    assert default_config(80, 8, sm80) == "sm80_32x64_s5"
    assert default_config(89, 200, sm80) == "sm80_64x128_s5"
    assert default_config(80, 4096, sm80) == "sm80_128x128_s4"
    assert default_config(80, 4096, ["sm80_128x256_s3"]) == "sm80_128x256_s3"
    assert default_config(90, 1, []) is None
    assert default_config(90, 8, sm80) == "sm80_32x64_s5"  # int8 on Hopper: the sm80 kernels' defaults


def test_table_files(tmp_path, monkeypatch):
    monkeypatch.delenv(gemm_dispatch.TABLE_ENV, raising=False)
    assert gemm_dispatch.table_file("NVIDIA H200").name == "NVIDIA_H200.json"
    assert GemmTable.load(tmp_path / "absent.json") == GemmTable({})
    path = tmp_path / "table.json"
    path.write_text(json.dumps({"kinds": {KIND: {"8x16": {"1": "a", "64": "b"}}}}))
    monkeypatch.setenv(gemm_dispatch.TABLE_ENV, str(path))
    assert gemm_dispatch.table_file("NVIDIA H200") == path
    assert GemmTable.load(path).lookup(KIND, 2, 8, 16) == "b"


@pytest.mark.skipif(not ops.HAS_GEMM_KERNELS, reason="kvserve._kernels was built without the GEMMs (or not at all)")
@pytest.mark.parametrize("sm", [80, 86, 90])
@pytest.mark.parametrize(
    ("operand", "out_dtype"),
    [(torch.bfloat16, torch.bfloat16), (torch.float16, torch.float16), (torch.float8_e4m3fn, torch.bfloat16),
     (torch.float8_e4m3fn, torch.float16), (torch.int8, torch.bfloat16), (torch.int8, torch.float16)],
)  # fmt: skip
def test_the_defaults_name_compiled_configurations(sm, operand, out_dtype):
    """The compiled tables (no GPU needed to list them) hold every default of their architecture."""
    from kvserve import _kernels
    from kvserve.ops import cuda_gemm, cuda_kernels

    names = _kernels.gemm_configs(cuda_gemm.OPERAND_CODES[operand], cuda_kernels.DTYPE_CODES[out_dtype], sm)
    if operand == torch.float8_e4m3fn and sm != 90:
        assert names == []  # fp8 only through the Hopper kernels
        return
    # int8 runs the sm80 kernels on Hopper too; a build without 90a has no sm90 entries at all.
    family = 90 if any(n.startswith("sm90") for n in names) else 80
    expected = {name for _, name in gemm_dispatch._DEFAULTS[family]}
    assert expected <= set(names)
    assert all(default_config(sm, m, names) in expected for m in (1, 16, 64, 256, 4096))


@pytest.mark.skipif(not ops.HAS_GEMM_KERNELS, reason="kvserve._kernels was built without the GEMMs (or not at all)")
def test_gemm_launchers_reject_bad_problems_before_touching_the_device():
    from kvserve import _kernels

    bf16, fp8 = _kernels.OPERAND_BFLOAT16, _kernels.OPERAND_FLOAT8_E4M3
    with pytest.raises(ValueError, match="multiple of 8"):
        _kernels.gemm(2, 0, 0, 0, 0, m=4, n=12, k=64, config="sm90_128x128_c2x1_coop", stream=0)
    with pytest.raises(ValueError, match="multiple of 16 bytes"):
        _kernels.gemm(2, 0, 0, 0, 0, m=4, n=16, k=4, config="sm90_128x128_c2x1_coop", stream=0)
    with pytest.raises(ValueError, match="float16 or bfloat16"):
        _kernels.gemm(0, 0, 0, 0, 0, m=4, n=16, k=64, config="sm90_128x128_c2x1_coop", stream=0)
    with pytest.raises(ValueError, match="fp8 or int8"):
        _kernels.scaled_mm(bf16, 2, 0, 0, 0, 0, 0, 0, True, 4, 16, 64, "sm90_128x128_c2x1_coop", 0)
    with pytest.raises(ValueError, match="both scales"):
        _kernels.scaled_mm(fp8, 2, 0, 0, 0, 0, 0, 0, True, 4, 16, 64, "sm90_128x128_c2x1_coop", 0)
    with pytest.raises(ValueError, match="operand code"):
        _kernels.gemm_configs(9, 2, 90)
    with pytest.raises(ValueError, match="bad shape or stride"):
        _kernels.dynamic_quantize(fp8, 2, 0, 0, 0, rows=2, cols=64, x_stride=32, stream=0)
