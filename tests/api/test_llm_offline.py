"""kvserve.LLM (offline, in-process) against the HTTP path and transformers: the same greedy outputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from kvserve import LLM, SamplingParams
from tests.engine_helpers import hf_greedy

GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)


@pytest.fixture(scope="module")
def llm(tiny_model_dir):
    with LLM(str(tiny_model_dir("llama")), kv_cache_memory=64 << 20, max_model_len=256, block_size=8) as offline:
        yield offline


def test_generate_matches_transformers_in_input_order(llm, tiny_model_dir):
    prompts = [[5, 6, 7, 8], [40, 41], [100, 3, 9, 27, 81]]
    outputs = llm.generate(prompts, GREEDY, use_tqdm=False)
    assert [o.prompt_token_ids for o in outputs] == prompts
    for prompt, output in zip(prompts, outputs):
        assert output.outputs[0].token_ids == hf_greedy(tiny_model_dir("llama"), prompt, 12)
        assert output.outputs[0].finish_reason == "length" and output.finished


def test_per_prompt_params_and_text_prompts(llm, client):
    short = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
    outputs = llm.generate(["def main():", "import os"], [short, GREEDY], use_tqdm=False)
    assert [len(o.outputs[0].token_ids) for o in outputs] == [3, 12]
    assert outputs[0].prompt == "def main():"
    http = client.completions.create(
        model="tiny-llama", prompt="import os", max_tokens=12, temperature=0.0, extra_body={"ignore_eos": True}
    )
    assert outputs[1].outputs[0].text == http.choices[0].text


def test_chat_matches_the_chat_completions_route(llm, client):
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    offline = llm.chat(messages, GREEDY, use_tqdm=False)[0].outputs[0]
    http = client.chat.completions.create(
        model="tiny-llama", messages=messages, max_tokens=12, temperature=0.0, extra_body={"ignore_eos": True}
    )
    assert offline.text == http.choices[0].message.content


def test_several_conversations_and_a_bad_count_of_params(llm):
    conversations = [[{"role": "user", "content": f"Count to {i}"}] for i in range(3)]
    assert len(llm.chat(conversations, GREEDY, use_tqdm=False)) == 3
    with pytest.raises(ValueError, match="2 sampling params for 3 prompts"):
        llm.generate(["a", "b", "c"], [GREEDY, GREEDY], use_tqdm=False)


def test_vllm_prompt_dicts_and_arrays_are_prompts_too(llm):
    """vLLM's TextPrompt / TokensPrompt dicts, one or a list, and token ids as a numpy array."""
    plain = llm.generate([[5, 6, 7, 8], "def main():"], GREEDY, use_tqdm=False)
    dicts = llm.generate([{"prompt_token_ids": [5, 6, 7, 8]}, {"prompt": "def main():"}], GREEDY, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in dicts] == [o.outputs[0].token_ids for o in plain]
    (single,) = llm.generate({"prompt_token_ids": np.array([5, 6, 7, 8])}, GREEDY, use_tqdm=False)
    assert single.outputs[0].token_ids == plain[0].outputs[0].token_ids
    assert single.prompt_token_ids == [5, 6, 7, 8]


@pytest.mark.parametrize(
    "prompt",
    [[{"prompt_token_ids": [1], "prompt": "x"}], [{"text": "x"}], [["a", 1]], [[1.5, 2]], [None], [[True, 2]]],
)
def test_malformed_prompts_are_value_errors_and_the_engine_serves_on(llm, prompt):
    with pytest.raises(ValueError, match="prompt"):
        llm.generate(prompt, GREEDY, use_tqdm=False)
    assert len(llm.generate([[5, 6]], GREEDY, use_tqdm=False)[0].outputs[0].token_ids) == 12


def test_embed_returns_the_normalised_last_hidden_state(llm, tiny_model_dir):
    import numpy as np
    import torch

    from tests.engine_helpers import _hf_model

    prompt = [5, 6, 7, 8, 9]
    (output,) = llm.embed([prompt], use_tqdm=False)
    with torch.no_grad():
        hidden = _hf_model(tiny_model_dir("llama"))(torch.tensor([prompt]), output_hidden_states=True).hidden_states[-1]
    expected = torch.nn.functional.normalize(hidden[0, -1], dim=0).numpy()
    np.testing.assert_allclose(output.outputs.embedding, expected, atol=1e-4)
    assert output.prompt_token_ids == prompt


def test_a_model_that_fails_to_load_leaves_no_thread_behind(tmp_path):
    import threading

    before = {t.name for t in threading.enumerate()}
    with pytest.raises(ValueError, match="cannot load model"):
        LLM(str(tmp_path / "missing-model"))
    left = {t.name for t in threading.enumerate() if t.is_alive()} - before
    assert not {name for name in left if name.startswith(("kvserve-llm", "kvserve-runner"))}, left


def test_a_script_that_never_shuts_down_exits_cleanly(tiny_model_dir):
    """A script that drops its LLM without shutdown() (or never drops it): the engine is shut down when the LLM
    is collected or the interpreter exits, without the actors' tracebacks of an engine torn down mid-wait."""
    script = (
        "import sys\n"
        "from kvserve import LLM, SamplingParams\n"
        "kept = LLM(sys.argv[1], kv_cache_memory=16 << 20)\n"
        "params = SamplingParams(max_tokens=2, ignore_eos=True)\n"
        "print(len(kept.generate([[5, 6, 7]], params, use_tqdm=False)[0].outputs[0].token_ids))\n"
        "dropped = LLM(sys.argv[1], kv_cache_memory=16 << 20)\n"
        "del dropped\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tiny_model_dir("llama"))], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["2"]
    assert "Traceback" not in result.stderr and "Task was destroyed" not in result.stderr, result.stderr[-2000:]
