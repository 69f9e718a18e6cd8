"""The ModelRunner driven by hand-made ExecuteBatch messages: slots, generation, pooled rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kvserve.config import EngineConfig
from kvserve.model.model_config import ModelConfig
from kvserve.model.runner import ModelRunner
from kvserve.request import EncoderInput, EngineRequest, PoolingParams, TaskKind
from kvserve.sampling_params import SamplingParams
from tests.model.batches import RunnerDriver, prepared
from tests.model.hf_reference import hf_greedy_recomputed as hf_greedy
from tests.model.hf_reference import hf_hidden_and_logprobs

MiB = 1 << 20
GREEDY = SamplingParams(max_tokens=64, temperature=0.0, ignore_eos=True)


def make_runner(model_dir, block_size: int = 4) -> ModelRunner:
    config = EngineConfig(model=str(model_dir), kv_cache_memory=4 * MiB, block_size=block_size, dtype="float32")
    return ModelRunner(config, ModelConfig.from_directory(model_dir), model_dir)


def test_greedy_generation_in_reused_slots_matches_transformers(tiny_model_dir):
    model_dir = tiny_model_dir("llama")
    rng = np.random.default_rng(0)
    prompts = [rng.integers(3, 384, n).tolist() for n in (7, 19, 3, 11)]
    driver = RunnerDriver(make_runner(model_dir))
    for slot in range(3):
        driver.add(slot, prepared(f"r{slot}", prompts[slot], GREEDY))
    outputs: dict[int, list[int]] = {}
    for _ in range(6):
        driver.step()
    # Slot 1 finishes; the next request takes it while the others decode.
    outputs[1] = driver.rows[1].token_ids[len(prompts[1]) :]
    driver.finish(1)
    driver.add(1, prepared("r3", prompts[3], GREEDY))
    for _ in range(6):
        driver.step()
    for slot, prompt in ((0, prompts[0]), (2, prompts[2])):
        outputs[slot] = driver.rows[slot].token_ids[len(prompt) :]
    reused = driver.rows[1].token_ids[len(prompts[3]) :]
    assert outputs[0] == hf_greedy(model_dir, prompts[0], 12)
    assert outputs[1] == hf_greedy(model_dir, prompts[1], 6)
    assert outputs[2] == hf_greedy(model_dir, prompts[2], 12)
    assert reused == hf_greedy(model_dir, prompts[3], 6)


def test_a_new_request_in_a_finished_slot_gets_none_of_its_state(tiny_model_dir):
    driver = RunnerDriver(make_runner(tiny_model_dir("llama")))
    banned = SamplingParams(max_tokens=8, temperature=0.0, allowed_token_ids=(5,), repetition_penalty=2.0, seed=1)
    driver.add(0, prepared("a", [3, 4], banned))
    driver.step()
    assert driver.rows[0].token_ids[-1] == 5
    driver.finish(0)
    driver.add(0, prepared("b", [3, 4], GREEDY))
    driver.step()
    batch = driver.runner.input_batch
    assert batch.allowed_ids[0] is None and batch.generators[0] is None and batch.features[0] == 0
    assert driver.rows[0].token_ids[-1] == hf_greedy(tiny_model_dir("llama"), [3, 4], 1)[0]


# Both sides run float32 over the same weights, but through different kernels (ours: the C++ CPU RMSNorm and
# paged attention; theirs: eager torch), so sums are ordered differently: a few float32 ulps (~1e-7) per
# operation over two layers of width 64 on values of order 1 stays well below 1e-5.
TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def test_pooled_rows_match_transformers(tiny_model_dir):
    model_dir = tiny_model_dir("qwen3")
    rng = np.random.default_rng(1)
    prompt = rng.integers(3, 384, 13).tolist()
    hidden, logprobs = hf_hidden_and_logprobs(model_dir, prompt)
    cases = {
        "last": PoolingParams(normalize=False),
        "last_normalized": PoolingParams(),
        "mean": PoolingParams(pooling="mean", normalize=False),
        "cls": PoolingParams(pooling="cls", normalize=False),
        "all": PoolingParams(pooling="all"),
        "matryoshka": PoolingParams(pooling="mean", dimensions=16),
        "next_token": PoolingParams(kind="next_token"),
        "labels": PoolingParams(kind="next_token", token_ids=(7, 3, 200)),
    }
    mean = hidden.mean(dim=0)
    expected = {
        "last": hidden[-1],
        "last_normalized": hidden[-1] / hidden[-1].norm(),
        "mean": mean,
        "cls": hidden[0],
        "all": hidden / hidden.norm(dim=-1, keepdim=True),
        "matryoshka": mean[:16] / mean[:16].norm(),
        "next_token": logprobs,
        "labels": logprobs[[7, 3, 200]],
    }
    driver = RunnerDriver(make_runner(model_dir))
    driver.add(0, prepared("gen", prompt, GREEDY))  # a generating row in the same step
    handles = {
        name: driver.add(slot, prepared(name, prompt, params)) for slot, (name, params) in enumerate(cases.items(), 1)
    }
    batch, result = driver.step()
    assert result.pooled is not None and result.pooled.handles.tolist() == list(handles.values())
    assert result.sampled_token_ids.tolist() == hf_greedy(model_dir, prompt, 1)
    for name, value in zip(handles, result.pooled.values):
        assert value.dtype == np.float32
        torch.testing.assert_close(torch.from_numpy(value), expected[name], **TOLERANCE)
    assert set(driver.rows) == {0}  # pooled requests are done; their slots are free


def test_supported_tasks_and_refusals(tiny_model_dir):
    runner = make_runner(tiny_model_dir("llama"))
    assert runner.supported_tasks == {TaskKind.GENERATE, TaskKind.PREFILL_ONLY}
    whisper_like = EngineRequest("w", [1], sampling=SamplingParams(), encoder_input=EncoderInput(np.zeros(4), 4))
    with pytest.raises(ValueError, match="encoder_decoder"):
        runner.check_request(whisper_like)
    with pytest.raises(ValueError, match="hidden size"):
        runner.check_request(EngineRequest("e", [1], pooling=PoolingParams(dimensions=65)))
    with pytest.raises(ValueError, match="token_ids"):
        runner.check_request(EngineRequest("s", [1], pooling=PoolingParams(kind="next_token", token_ids=(384,))))


def test_allowed_ids_and_bans_through_the_runner(tiny_model_dir):
    driver = RunnerDriver(make_runner(tiny_model_dir("llama")))
    params = SamplingParams(max_tokens=8, temperature=0.0, allowed_token_ids=(9, 10), bad_words_token_ids=((10,),))
    driver.add(0, prepared("a", [3, 4, 5], params))
    for _ in range(3):
        driver.step()
    assert driver.rows[0].token_ids[3:] == [9, 9, 9]
