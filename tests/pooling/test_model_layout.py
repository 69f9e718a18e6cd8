"""How a model directory chooses its runner and pooling: the sentence-transformers files, --runner, and the
registry's encoders; a decoder served for embeddings (--runner pooling)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kvserve.api.pooling.capabilities import EMBED, POOLING, SCORE, served_apis
from kvserve.config import EngineConfig
from kvserve.model.encoders.bert import BertModel
from kvserve.model.encoders.sentence_transformers import PoolerConfig, read_pooler_config
from kvserve.model.llama import LlamaForCausalLM
from kvserve.model.registry import ModelTasks
from kvserve.request import EngineRequest, PoolingParams, TaskKind
from tests.engine_helpers import MiB, run_with_engine


def test_minilm_sentence_transformers_files(minilm_dir):
    pooler = read_pooler_config(minilm_dir)
    assert (pooler.pooling, pooler.normalize, pooler.max_seq_length) == ("mean", True, 256)


def write_layout(directory, modules: list[dict], pooling: dict) -> None:
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "1_Pooling").mkdir(exist_ok=True)
    (directory / "1_Pooling" / "config.json").write_text(json.dumps(pooling))


def test_layouts_kvserve_cannot_reproduce_are_refused(tmp_path):
    transformer = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}
    pooling = {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}
    write_layout(tmp_path, [transformer, pooling], {"pooling_mode_lasttoken": True})
    assert read_pooler_config(tmp_path) == PoolerConfig("last", False, None)
    write_layout(tmp_path, [transformer, pooling], {"pooling_mode_max_tokens": True})
    with pytest.raises(ValueError, match="pooling_mode_max_tokens is not supported"):
        read_pooler_config(tmp_path)
    dense = {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}
    write_layout(tmp_path, [transformer, pooling, dense], {"pooling_mode_mean_tokens": True})
    with pytest.raises(ValueError, match="models.Dense"):
        read_pooler_config(tmp_path)
    assert read_pooler_config(tmp_path / "1_Pooling") is None  # no modules.json: not sentence-transformers


def test_runner_choice():
    decoder, encoder = ModelTasks.of(LlamaForCausalLM), ModelTasks.of(BertModel)
    assert decoder.served_as("auto", None).runner == "generate"
    embedder = decoder.served_as("auto", PoolerConfig("last", True))  # Qwen3-Embedding's layout
    assert (embedder.runner, embedder.tasks, embedder.default_pooling) == ("pooling", {TaskKind.PREFILL_ONLY}, "last")
    assert encoder.served_as("auto", None).runner == "pooling" and not encoder.uses_kv_cache
    assert encoder.served_as("auto", PoolerConfig("mean", False)).default_normalize is False
    with pytest.raises(ValueError, match="cannot generate"):
        encoder.served_as("generate", None)


def test_a_decoder_served_for_embeddings(tiny_model_dir):
    config = EngineConfig(model=str(tiny_model_dir("qwen3")), kv_cache_memory=4 * MiB, runner="pooling")

    async def body(engine):
        output = await engine.encode(EngineRequest("e", [5, 9, 13, 2], pooling=PoolingParams()))
        return served_apis(engine), engine.runner.executor.runner, output

    apis, runner, output = run_with_engine(config, body)
    assert apis == {EMBED, SCORE, POOLING}
    assert runner.tasks.uses_kv_cache and runner.kv_caches  # a decoder keeps its paged cache
    assert output.pooled.shape == (64,) and np.linalg.norm(output.pooled) == pytest.approx(1.0, abs=1e-5)
