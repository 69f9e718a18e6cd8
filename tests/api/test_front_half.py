"""The front half without an engine: OpenAI bodies -> neutral sampling fields -> SamplingParams, and the
engine requests of one API request."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from kvserve.api.context import ServingContext
from kvserve.api.frontend.engine_requests import fan_out, truncation
from kvserve.api.frontend.sampling import SamplingFields, per_choice_params, sampling_params
from kvserve.api.openai.chat_protocol import ChatCompletionRequest
from kvserve.api.openai.completion_protocol import CompletionRequest
from kvserve.api.openai.sampling import sampling_fields
from kvserve.api.settings import ServerSettings
from kvserve.errors import InvalidRequestError
from kvserve.request import EngineRequest, Truncation
from kvserve.sampling_params import DEFAULT_MAX_TOKENS, SamplingParams


class FakeTokenizer:
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) for c in text]


def context(generation_defaults: dict | None = None) -> ServingContext:
    model_config = SimpleNamespace(vocab_size=1000, generation_defaults=generation_defaults or {})
    engine = SimpleNamespace(model_config=model_config, tokenizer=FakeTokenizer())
    return ServingContext(engine, ServerSettings(served_model_names=("m",), model_root="m", chat_template=None))


def test_an_openai_body_fills_the_neutral_fields():
    body = CompletionRequest.model_validate(
        {
            "prompt": "x",
            "stop": "###",
            "temperature": 0.5,
            "top_k": 3,
            "logit_bias": {"7": 1.5},
            "allowed_token_ids": [1, 2],
            "stop_token_ids": [9],
            "bad_words": ["no"],
            "min_tokens": 2,
            "seed": 11,
            "ignore_eos": True,
        }
    )
    fields = sampling_fields(body, n=2, max_tokens=5, logprobs=1, prompt_logprobs=None)
    assert fields == SamplingFields(
        n=2,
        max_tokens=5,
        min_tokens=2,
        temperature=0.5,
        top_k=3,
        seed=11,
        stop=("###",),
        stop_token_ids=(9,),
        ignore_eos=True,
        logprobs=1,
        logit_bias={"7": 1.5},
        allowed_token_ids=(1, 2),
        bad_words=("no",),
    )
    chat = ChatCompletionRequest.model_validate({"messages": [], "stop": ["a", "b"]})
    assert sampling_fields(chat, n=1, max_tokens=None, logprobs=None, prompt_logprobs=None).stop == ("a", "b")


def test_defaults_are_the_request_then_the_generation_config_then_openai():
    ctx = context({"temperature": 0.3, "top_p": 0.9, "max_new_tokens": 40})
    params = sampling_params(SamplingFields(top_p=0.5, max_tokens=100), ctx)
    assert (params.temperature, params.top_p, params.top_k, params.min_p, params.repetition_penalty) == (
        0.3,
        0.5,
        0,
        0.0,
        1.0,
    )
    assert params.max_tokens == 40  # the model's max_new_tokens caps any request
    assert sampling_params(SamplingFields(), ctx).max_tokens == 40
    assert sampling_params(SamplingFields(), context()).max_tokens is None


def test_the_neutral_fields_become_sampling_params():
    fields = SamplingFields(
        temperature=0.7, top_k=-1, stop=("x",), logit_bias={"5": 300.0}, bad_words=("ab",), presence_penalty=0.5
    )
    params = sampling_params(fields, context())
    assert params == SamplingParams(
        max_tokens=None,
        temperature=0.7,
        top_k=0,
        stop=("x",),
        presence_penalty=0.5,
        logit_bias=((5, 100.0),),
        bad_words_token_ids=((97, 98),),  # " ab" is one token longer here, so not banned too
    )


@pytest.mark.parametrize(
    "fields, param, message",
    [
        (SamplingFields(temperature=2.5), "temperature", "temperature must be in [0, 2], got 2.5."),
        (SamplingFields(n=2, temperature=0.0), "n", "n must be 1 when using greedy sampling, got 2."),
        (SamplingFields(n=129), "n", "n must be at most 128, got 129."),
        (SamplingFields(stop=("a", "b", "c", "d", "e")), "stop", "stop accepts at most 4 sequences, got 5."),
        (
            SamplingFields(logprobs=21),
            "logprobs",
            "Requested sample logprobs of 21, which is greater than max allowed: 20",
        ),
        (SamplingFields(max_tokens=-3), "max_tokens", "max_tokens must be at least 1, got -3."),
        (SamplingFields(max_tokens=0, min_tokens=2), "max_tokens", "max_tokens must be at least 1, got 0."),
        (
            SamplingFields(max_tokens=3, min_tokens=4),
            "min_tokens",
            "min_tokens must be less than or equal to max_tokens=3, got 4.",
        ),
        (SamplingFields(top_p=0.0), "top_p", "top_p must be in (0, 1], got 0.0."),
        (SamplingFields(stop_token_ids=(1000,)), "stop_token_ids", "stop_token_ids contains out-of-vocab token id!"),
    ],
)
def test_bad_fields_are_400s_naming_the_field(fields, param, message):
    with pytest.raises(InvalidRequestError) as info:
        sampling_params(fields, context())
    assert (info.value.param, info.value.message) == (param, message)


def test_seeded_choices_get_consecutive_seeds():
    params = SamplingParams(seed=10)
    assert [p.seed for p in per_choice_params(params, 3)] == [10, 11, 12]
    assert per_choice_params(SamplingParams(), 2) == [SamplingParams(), SamplingParams()]


def test_fan_out_gives_one_request_per_prompt_and_choice():
    choices = [SamplingParams(seed=1), SamplingParams(seed=2)]
    base = EngineRequest("cmpl-x", "a", sampling=choices[0], priority=3, cache_salt="s", truncation=truncation(5, None))
    requests = fan_out(base, ["a", [1, 2]], choices)
    assert [(r.request_id, r.prompt, r.sampling.seed) for r in requests] == [
        ("cmpl-x-0-0", "a", 1),
        ("cmpl-x-0-1", "a", 2),
        ("cmpl-x-1-0", [1, 2], 1),
        ("cmpl-x-1-1", [1, 2], 2),
    ]
    assert {(r.priority, r.cache_salt, r.truncation, r.arrival_time) for r in requests} == {
        (3, "s", Truncation(5, "left"), base.arrival_time)
    }


def test_completions_default_max_tokens_is_the_shared_constant():
    assert CompletionRequest.model_validate({"prompt": "x"}).max_tokens == DEFAULT_MAX_TOKENS
