"""8-bit checkpoints and --quantization fp8 on CPU, through the torch reference of the scaled GEMM.

The oracle is transformers on the dequantized weights with each quantized projection's input rounded per token
(tests/quantization/checkpoints.py): what W8A8 computes. kvserve must produce its greedy tokens exactly.
"""

from __future__ import annotations

import asyncio

import pytest
import torch

from kvserve.config import EngineConfig
from kvserve.model.loader import build_model, iterate_safetensors, safetensors_files
from kvserve.model.model_config import ModelConfig
from kvserve.model.quantization import Int8Fp8LinearMethod, Linear, LinearMethod
from kvserve.sampling_params import SamplingParams
from tests.quantization import checkpoints

NUM_TOKENS = 16
PROMPTS = [[5, 71, 200, 33, 9], [300, 12, 12, 41, 7, 88, 150, 3, 19], [42]]


def engine_greedy(model_dir, **overrides) -> list[list[int]]:
    from tests.engine_helpers import MiB, generate, run_with_engine

    config = EngineConfig(model=str(model_dir), device="cpu", dtype="float32", kv_cache_memory=16 * MiB, **overrides)

    async def body(engine):
        params = SamplingParams(max_tokens=NUM_TOKENS, temperature=0.0, ignore_eos=True)
        return await asyncio.gather(*(generate(engine, p, params, f"r{i}") for i, p in enumerate(PROMPTS)))

    return [tokens for tokens, _, _ in run_with_engine(config, body)]


def quantized_modules(state: dict[str, torch.Tensor], model_dir) -> set[str]:
    from safetensors.torch import load_file

    return {name.removesuffix(".weight_scale") for name in load_file(model_dir / "model.safetensors") if
            name.endswith(".weight_scale")}  # fmt: skip


@pytest.fixture(scope="module")
def float_dir(tiny_model_dir):
    return tiny_model_dir("llama")


@pytest.mark.parametrize("layout", sorted(checkpoints.LAYOUTS))
def test_quantized_checkpoint_greedy_matches_fake_quant_oracle(tmp_path, float_dir, layout):
    model_dir = checkpoints.quantize_checkpoint(float_dir, tmp_path / layout, layout)
    dtype = checkpoints.LAYOUTS[layout][1]
    state = checkpoints.dequantized_state(model_dir)
    quantized = quantized_modules(state, model_dir)
    assert len(quantized) == 2 * 7 - (layout == "ct-fp8-channel")  # the ignored down_proj stays float

    oracle = checkpoints.fake_quant_oracle(float_dir, state, quantized, dtype)
    expected = [checkpoints.greedy(oracle, p, NUM_TOKENS) for p in PROMPTS]
    assert engine_greedy(model_dir) == expected

    # Not vacuous: the oracle's logits differ from the float32 model's by the rounding, and only by it (a
    # wrong scale or row order would be off by ~100%). Measured: int8 3.6%; fp8 e4m3 (3 mantissa bits) more.
    float_model = checkpoints.fake_quant_oracle(float_dir, {}, set(), dtype)
    with torch.no_grad():
        ids = torch.tensor([PROMPTS[1]])
        quantized_logits, float_logits = oracle(input_ids=ids).logits, float_model(input_ids=ids).logits
    error = ((quantized_logits - float_logits).norm() / float_logits.norm()).item()
    assert 1e-3 < error < (0.25 if dtype == torch.float8_e4m3fn else 0.1)


def test_quantization_fp8_flag_quantizes_per_channel_at_load(float_dir):
    from safetensors.torch import load_file

    tensors = load_file(float_dir / "model.safetensors")
    state = {}
    for name, tensor in tensors.items():
        if checkpoints.PROJECTION.fullmatch(name):
            q, scale = checkpoints.quantize_rows(tensor.float(), torch.float8_e4m3fn, per_row=True)
            state[name] = q.float() * scale
    quantized = {name.removesuffix(".weight") for name in state}
    oracle = checkpoints.fake_quant_oracle(float_dir, state, quantized, torch.float8_e4m3fn)
    expected = [checkpoints.greedy(oracle, p, NUM_TOKENS) for p in PROMPTS]
    assert engine_greedy(float_dir, quantization="fp8") == expected


def test_quantized_model_layers_and_parameters(tmp_path, float_dir):
    model_dir = checkpoints.quantize_checkpoint(float_dir, tmp_path / "q", "ct-fp8-channel")
    config = ModelConfig.from_directory(model_dir)
    model = build_model(config, iterate_safetensors(safetensors_files(model_dir)), torch.float32, torch.device("cpu"))
    layer0, layer1 = model.layers
    assert isinstance(layer0.down_proj.method, Int8Fp8LinearMethod)
    assert type(layer1.down_proj.method) is LinearMethod  # ignored by the checkpoint's `re:` pattern
    assert layer1.down_proj.weight.dtype == torch.float32
    qkv = layer0.qkv_proj
    assert qkv.weight.dtype == torch.float8_e4m3fn and qkv.weight_scale.shape == (qkv.out_features,)
    # Per-tensor scales of q, k and v become the rows of one per-channel vector.
    per_tensor = build_model(
        ModelConfig.from_directory(checkpoints.quantize_checkpoint(float_dir, tmp_path / "t", "fp8-static")),
        iterate_safetensors([tmp_path / "t" / "model.safetensors"]), torch.float32, torch.device("cpu"),
    ).layers[0].qkv_proj  # fmt: skip
    c = config
    q_rows, kv_rows = c.num_attention_heads * c.head_dim, c.num_key_value_heads * c.head_dim
    bounds = [0, q_rows, q_rows + kv_rows, q_rows + 2 * kv_rows]
    for start, end in zip(bounds, bounds[1:]):
        assert torch.unique(per_tensor.weight_scale[start:end]).numel() == 1
    assert torch.unique(per_tensor.weight_scale).numel() == 3


def test_missing_weight_scale_is_an_error(tmp_path, float_dir):
    model_dir = checkpoints.quantize_checkpoint(float_dir, tmp_path / "q", "ct-fp8-channel")
    config = ModelConfig.from_directory(model_dir)
    files = safetensors_files(model_dir)
    weights = ((n, t) for n, t in iterate_safetensors(files) if n != "model.layers.0.mlp.up_proj.weight_scale")
    with pytest.raises(ValueError, match="missing weights for: layers.0.gate_up_proj.weight_scale"):
        build_model(config, weights, torch.float32, torch.device("cpu"))


def test_dummy_weights_of_a_quantized_model_are_quantized(tmp_path, float_dir):
    model_dir = checkpoints.quantize_checkpoint(float_dir, tmp_path / "q", "ct-int8-channel")
    model = build_model(ModelConfig.from_directory(model_dir), None, torch.float32, torch.device("cpu"))
    linears = [m for m in model.modules() if isinstance(m, Linear)]
    assert len(linears) == 8
    assert all(m.weight.dtype == torch.int8 and m.weight_scale.dtype == torch.float32 for m in linears)
    assert all(bool((m.weight_scale > 0).all()) for m in linears)
