"""The embedded default model: `kvserve serve` with no MODEL serves SmolLM2-135M-Instruct from its GGUF."""

from __future__ import annotations

import asyncio
import functools

import openai
import pytest

from kvserve.cli import DEFAULT_MODEL_NAME, embedded_model_path
from kvserve.config import EngineConfig
from kvserve.sampling_params import SamplingParams
from tests.api.server_process import ServerProcess
from tests.engine_helpers import MiB, generate, run_with_engine


@pytest.fixture(scope="module")
def default_server():
    process = ServerProcess(None, "--kv-cache-memory", "256MiB", "--max-model-len", "2048")
    yield process
    assert process.stop() == 0, process.log()


def test_chat_answers_the_capital_of_france(default_server):
    client = openai.OpenAI(base_url=f"{default_server.base_url}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list().data] == [DEFAULT_MODEL_NAME]
    reply = client.chat.completions.create(
        model=DEFAULT_MODEL_NAME,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=40,
        temperature=0.0,
    )
    assert "Paris" in reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"


def test_responses_answer_the_capital_of_france(default_server):
    client = openai.OpenAI(base_url=f"{default_server.base_url}/v1", api_key="unused", max_retries=0)
    ask = dict(model=DEFAULT_MODEL_NAME, input="What is the capital of France?", max_output_tokens=40, temperature=0.0)
    response = client.responses.create(**ask)
    assert "Paris" in response.output_text and response.status == "completed"
    with client.responses.stream(**ask) as stream:
        assert stream.get_final_response().output_text == response.output_text


@functools.cache
def hf_gguf_model():
    import transformers

    path = embedded_model_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype="float32")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    return model.eval(), tokenizer


def test_greedy_is_token_exact_against_transformers_on_the_gguf():
    import torch
    import transformers

    model, tokenizer = hf_gguf_model()
    prompts = ["The capital of France is", "def quicksort(items):", "Once upon a time, in a small village,"]
    expected = []
    for text in prompts:
        ids = tokenizer(text).input_ids
        config = transformers.GenerationConfig(do_sample=False, max_new_tokens=24, eos_token_id=None, pad_token_id=0)
        model.generation_config.eos_token_id = None
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), generation_config=config)
        expected.append((ids, out[0, len(ids) :].tolist()))

    async def body(engine):
        params = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
        return await asyncio.gather(*(generate(engine, ids, params, f"r{i}") for i, (ids, _) in enumerate(expected)))

    config = EngineConfig(model=str(embedded_model_path()), kv_cache_memory=128 * MiB, max_model_len=1024)
    results = run_with_engine(config, body)
    for (_, reference), (tokens, _, _) in zip(expected, results):
        assert tokens == reference
    # The tokenizer built from the GGUF vocabulary gives transformers' ids.
    from kvserve.model.loader import resolve_model_dir
    from kvserve.tokenizer import Tokenizer

    ours = Tokenizer.from_directory(resolve_model_dir(str(embedded_model_path())))
    for text in [*prompts, "<|im_start|>user\nHi 👋 — ça va?<|im_end|>"]:
        assert ours.encode(text) == tokenizer(text).input_ids
