"""Runner options: dtype resolution and the load formats used for speed runs."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file

from kvserve.config import EngineConfig
from kvserve.model.model_config import ModelConfig
from kvserve.model.quantization import StoredLinearMethod
from kvserve.model.runner import ModelRunner, keeps_half_weights, resolve_dtype
from kvserve.sampling_params import SamplingParams
from tests.engine_helpers import MiB, generate, run_with_engine

CPU = torch.device("cpu")


def test_auto_dtype_on_cpu_is_float32_with_half_weights_kept():
    def config(dtype: torch.dtype) -> ModelConfig:
        return SimpleNamespace(dtype=dtype, quantization=None)  # the two fields the decision reads

    for half in (torch.bfloat16, torch.float16):
        assert resolve_dtype("auto", config(half), CPU) == torch.float32
        assert keeps_half_weights("auto", config(half), CPU)
        assert not keeps_half_weights("float32", config(half), CPU)
    assert resolve_dtype("auto", config(torch.float32), CPU) == torch.float32
    assert not keeps_half_weights("auto", config(torch.float32), CPU)
    assert resolve_dtype("float16", config(torch.float32), CPU) == torch.float16
    assert resolve_dtype("auto", config(torch.float16), torch.device("cuda")) == torch.float16


def run_one(model_dir, load_format: str) -> list[int]:
    config = EngineConfig(model=str(model_dir), kv_cache_memory=4 * MiB, load_format=load_format)

    async def body(engine):
        params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
        return (await generate(engine, [5, 6, 7], params, "r"))[0]

    return run_with_engine(config, body)


def test_noop_load_format_runs_the_framework_without_a_model(tiny_model_dir):
    assert run_one(tiny_model_dir("llama"), "noop") == [0] * 6  # zero logits: greedy picks token 0


def test_dummy_load_format_ignores_the_checkpoint(tiny_model_dir):
    tokens = run_one(tiny_model_dir("qwen3"), "dummy")
    assert len(tokens) == 6 and tokens != run_one(tiny_model_dir("qwen3"), "auto")


def half_checkpoint(model_dir, target, dtype: torch.dtype):
    """The same model saved in f16/bf16."""
    shutil.copytree(model_dir, target)
    tensors = load_file(target / "model.safetensors")
    save_file({name: t.to(dtype) for name, t in tensors.items()}, target / "model.safetensors", {"format": "pt"})
    config = json.loads((target / "config.json").read_text())
    config["dtype"] = config["torch_dtype"] = str(dtype).removeprefix("torch.")
    (target / "config.json").write_text(json.dumps(config))
    return target


def greedy(model_dir, dtype: str) -> list[list[int]]:
    config = EngineConfig(model=str(model_dir), kv_cache_memory=4 * MiB, dtype=dtype)
    prompts = [[5, 6, 7], [100, 3, 250, 17, 9], [42] * 12]

    async def body(engine):
        params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
        return [(await generate(engine, p, params, f"r{i}"))[0] for i, p in enumerate(prompts)]

    return run_with_engine(config, body)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "f16"])
def test_half_weights_stay_half_and_match_the_float32_upcast(tiny_model_dir, tmp_path, dtype):
    """--dtype auto keeps the weights as stored (2 bytes each) and computes in float32: the greedy tokens
    equal those of --dtype float32, the same weights upcast at load."""
    model_dir = half_checkpoint(tiny_model_dir("llama"), tmp_path / "half", dtype)
    model_config = ModelConfig.from_directory(model_dir)
    runner = ModelRunner(EngineConfig(model=str(model_dir), kv_cache_memory=4 * MiB), model_config, model_dir)
    layer = runner.model.layers[0].qkv_proj
    assert isinstance(layer.method, StoredLinearMethod) and layer.weight.dtype == torch.uint8
    assert layer.weight.shape == (layer.out_features, 2 * layer.in_features)
    assert runner.model.embed_tokens.weight.dtype == torch.uint8 and runner.dtype == torch.float32
    assert greedy(model_dir, "auto") == greedy(model_dir, "float32")
