"""Reading quantization_config (vLLM fp8, llm-compressor compressed-tensors) and --quantization."""

from __future__ import annotations

import copy

import pytest
import torch

from kvserve.config import EngineConfig
from kvserve.model.quantization import QuantizationConfig, linear_method, resolve_quantization
from kvserve.model.quantization.linear import Int8Fp8LinearMethod, LinearMethod
from tests.quantization.checkpoints import LAYOUTS


def parse(qc: dict) -> QuantizationConfig | None:
    return QuantizationConfig.from_hf_config({"quantization_config": qc})


def test_no_quantization_config():
    assert QuantizationConfig.from_hf_config({}) is None


@pytest.mark.parametrize(
    ("layout", "expected"),
    [
        ("fp8-static", QuantizationConfig("fp8", torch.float8_e4m3fn, ignore=("lm_head",))),
        (
            "ct-fp8-channel",
            QuantizationConfig(
                "compressed-tensors", torch.float8_e4m3fn, ignore=("lm_head", "re:.*layers\\.1\\.mlp\\.down_proj")
            ),
        ),
        ("ct-int8-channel", QuantizationConfig("compressed-tensors", torch.int8, ignore=("lm_head",))),
    ],
)  # fmt: skip
def test_checkpoint_layouts(layout, expected):
    assert parse(LAYOUTS[layout][0]) == expected


def test_fp8_modules_to_not_convert_and_default_scheme():
    config = parse({"quant_method": "fp8", "modules_to_not_convert": ["model.layers.0.mlp.down_proj"]})
    assert config.ignore == ("model.layers.0.mlp.down_proj",)
    assert config.is_ignored("model.layers.0.mlp.down_proj")
    assert not config.is_ignored("model.layers.10.mlp.down_proj")


def test_ignore_patterns():
    config = QuantizationConfig("compressed-tensors", torch.float8_e4m3fn, ignore=("lm_head", "re:.*\\.1\\..*"))
    assert config.is_ignored("lm_head")
    assert config.is_ignored("model.layers.1.self_attn.q_proj")
    assert not config.is_ignored("model.layers.11.self_attn.q_proj")


def ct_config(**changes) -> dict:
    qc = copy.deepcopy(LAYOUTS["ct-fp8-channel"][0])
    group = qc["config_groups"]["group_0"]
    for path, value in changes.items():
        section, key = path.split("__")
        if value is None:
            group[section] = None
        else:
            group[section][key] = value
    return qc


@pytest.mark.parametrize(
    ("qc", "message"),
    [
        ({"quant_method": "gptq", "bits": 4}, "unsupported quantization_config quant_method 'gptq'"),
        ({"quant_method": "fp8", "weight_block_size": [128, 128]}, "block-wise"),
        ({"quant_method": "fp8", "activation_scheme": "sometimes"}, "activation_scheme"),
        (ct_config(weights__num_bits=4), "only 8-bit symmetric static weights"),
        (ct_config(weights__strategy="group"), "only 8-bit symmetric static weights"),
        (ct_config(weights__symmetric=False), "only 8-bit symmetric static weights"),
        (ct_config(input_activations__x=None), "only W8A8"),
        (ct_config(input_activations__type="int"), "only W8A8"),
        (ct_config(input_activations__strategy="group"), "unsupported input activation scheme"),
        ({"quant_method": "compressed-tensors", "config_groups": {}}, "expected one config group"),
    ],
)
def test_unsupported_configs_are_refused(qc, message):
    with pytest.raises(ValueError, match=message):
        parse(qc)


def test_quantization_flag():
    online = resolve_quantization("fp8", None)
    assert online == QuantizationConfig("fp8", torch.float8_e4m3fn, quantize_on_load=True)
    checkpoint = parse(LAYOUTS["fp8-static"][0])
    assert resolve_quantization("fp8", checkpoint) is checkpoint
    with pytest.raises(ValueError, match="does not match the checkpoint's quantization"):
        resolve_quantization("fp8", parse(LAYOUTS["ct-int8-channel"][0]))
    with pytest.raises(ValueError, match="quantization must be 'fp8'"):
        EngineConfig(model="m", quantization="awq")


def test_fused_projections_are_quantized_together():
    config = QuantizationConfig("fp8", torch.float8_e4m3fn, ignore=("model.layers.0.self_attn.k_proj",))
    names = [f"model.layers.0.self_attn.{p}_proj" for p in "qkv"]
    with pytest.raises(ValueError, match="ignores only some of"):
        linear_method(config, names)
    assert isinstance(linear_method(config, ["model.layers.0.mlp.down_proj"]), Int8Fp8LinearMethod)
    assert type(linear_method(None, names)) is LinearMethod
