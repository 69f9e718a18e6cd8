"""Runner options: dtype resolution and the load formats used for speed runs."""

from __future__ import annotations

import torch

from kvserve.config import EngineConfig
from kvserve.model import runner as runner_module
from kvserve.model.runner import resolve_dtype
from kvserve.sampling_params import SamplingParams
from tests.engine_helpers import MiB, generate, run_with_engine

CPU = torch.device("cpu")


def test_auto_dtype_on_cpu_depends_on_native_bf16(monkeypatch):
    monkeypatch.setattr(runner_module, "cpu_has_fast_bf16", lambda: False)
    assert resolve_dtype("auto", torch.bfloat16, CPU) == torch.float32
    assert resolve_dtype("auto", torch.float16, CPU) == torch.float32
    monkeypatch.setattr(runner_module, "cpu_has_fast_bf16", lambda: True)
    assert resolve_dtype("auto", torch.bfloat16, CPU) == torch.bfloat16
    assert resolve_dtype("auto", torch.float32, CPU) == torch.float32
    assert resolve_dtype("float16", torch.float32, CPU) == torch.float16
    assert resolve_dtype("auto", torch.float16, torch.device("cuda")) == torch.float16


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
