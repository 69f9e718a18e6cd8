"""The ModelRunner fed by the C++ core's scheduler: slots assigned and reused by the core, chunked prefill,
preemption, and generating and prefill-only requests in the same steps, against transformers."""

from __future__ import annotations

import numpy as np
import torch

from kvserve import _core
from kvserve.config import EngineConfig
from kvserve.messages import ExecuteBatch, NewRequest
from kvserve.model.model_config import ModelConfig
from kvserve.model.runner import ModelRunner
from kvserve.request import PoolingParams, PreparedRequest
from kvserve.sampling_params import SamplingParams
from tests.model.batches import prepared
from tests.model.hf_reference import hf_greedy_recomputed, hf_hidden_and_logprobs

BLOCK_SIZE = 4
NUM_BLOCKS = 20  # 80 tokens: fewer than the requests below need at once, so some are preempted


class CoreDriver:
    """Plays the scheduler actor: the core schedules, the runner executes, the core applies the result."""

    def __init__(self, runner: ModelRunner) -> None:
        self.runner = runner
        self.core = _core.Scheduler(
            _core.SchedulerConfig(
                num_blocks=NUM_BLOCKS,
                block_size=BLOCK_SIZE,
                max_num_seqs=3,
                max_num_batched_tokens=16,
                max_model_len=128,
            )
        )
        self.slots: dict[int, int] = {}
        self.new: list[NewRequest] = []
        self.finished_slots: list[int] = []
        self.outputs: dict[str, list[int]] = {}
        self.pooled: dict[str, np.ndarray] = {}
        self.ids: dict[int, str] = {}
        self.step_index = 0
        self.num_preemptions = 0

    def add(self, request: PreparedRequest) -> None:
        rid = request.request_id
        pooling = request.request.pooling is not None
        params = _core.RequestParams(
            max_tokens=request.max_tokens,
            eos_token_ids=list(request.eos_token_ids),
            ignore_eos=True,
            task=_core.TaskKind.PREFILL_ONLY if pooling else _core.TaskKind.GENERATE,
        )
        handle = self.core.add_request(rid, request.prompt_token_ids, params)
        self.slots[handle] = self.core.request_state(rid).slot
        self.ids[handle] = rid
        self.new.append(NewRequest(handle, self.slots[handle], request))
        self.outputs[rid] = []

    def step(self) -> None:
        out = self.core.schedule()
        self.num_preemptions += out.stats.num_preemptions
        arrays = {name: getattr(out, name) for name in ExecuteBatch.__dataclass_fields__ if hasattr(out, name)}
        batch = ExecuteBatch(
            step=self.step_index, **arrays, new_requests=tuple(self.new), finished_slots=tuple(self.finished_slots)
        )
        self.new, self.finished_slots = [], []
        self.step_index += 1
        result = self.runner.execute(batch)
        update = self.core.update(result.sampled_token_ids)
        rows = zip(update.handles.tolist(), update.token_ids.tolist(), update.finish_reasons.tolist())
        for handle, token, reason in rows:
            self.outputs[self.ids[handle]].append(token)
            if reason != int(_core.FinishReason.NONE):
                self.finished_slots.append(self.slots.pop(handle))
        if result.pooled is not None:
            for handle, value in zip(result.pooled.handles.tolist(), result.pooled.values):
                self.pooled[self.ids[handle]] = value
        for handle in update.pooled_handles.tolist():
            self.finished_slots.append(self.slots.pop(handle))

    def run(self) -> None:
        while self.core.has_unfinished:
            self.step()


def test_core_scheduled_steps_match_transformers(tiny_model_dir):
    model_dir = tiny_model_dir("llama")
    config = EngineConfig(model=str(model_dir), kv_cache_memory=1 << 20, block_size=BLOCK_SIZE, dtype="float32")
    runner = ModelRunner(config, ModelConfig.from_directory(model_dir), model_dir)
    driver = CoreDriver(runner)
    rng = np.random.default_rng(3)
    prompts = {f"g{i}": rng.integers(3, 384, int(rng.integers(5, 30))).tolist() for i in range(5)}
    greedy = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    for rid in ("g0", "g1", "g2"):
        driver.add(prepared(rid, prompts[rid], greedy))
    embed_prompt = rng.integers(3, 384, 9).tolist()
    driver.add(prepared("embed", embed_prompt, PoolingParams(pooling="mean", normalize=False)))
    while len(driver.slots) > 2:
        driver.step()
    # Later requests take the slots of finished ones.
    for rid in ("g3", "g4"):
        driver.add(prepared(rid, prompts[rid], greedy))
    driver.run()

    assert driver.num_preemptions > 0
    assert driver.core.num_slots < 6  # slots were reused
    for rid, prompt in prompts.items():
        assert driver.outputs[rid] == hf_greedy_recomputed(model_dir, prompt, 12), rid
    hidden, _ = hf_hidden_and_logprobs(model_dir, embed_prompt)
    # float32 on both sides, different kernels: see TOLERANCE in test_runner_steps.py.
    torch.testing.assert_close(torch.from_numpy(driver.pooled["embed"]), hidden.mean(dim=0), rtol=1e-5, atol=1e-5)
    # The runner still holds only the requests whose end it hears of with the next batch.
    held = {slot for slot, request in enumerate(driver.runner.input_batch.requests) if request is not None}
    assert held == set(driver.finished_slots)
