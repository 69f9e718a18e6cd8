"""Every completions/chat request field vLLM accepts, through the `openai` SDK (vLLM extras via extra_body)."""

from __future__ import annotations

import openai
import pytest
import tokenizers

from tests.api.server_process import ServerProcess
from tests.api.test_openai_sdk import post

MODEL = "tiny-llama"
EOS = 2  # <|im_end|>
IM_START = 1
USER = [{"role": "user", "content": "Tell me something."}]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir) -> tokenizers.Tokenizer:
    return tokenizers.Tokenizer.from_file(str(tiny_model_dir("llama") / "tokenizer.json"))


def complete(client, prompt="def main():", **kw):
    extra = kw.pop("extra_body", {})
    return client.completions.create(model=MODEL, prompt=prompt, extra_body=extra, **kw)


def greedy_ids(client, prompt, n_tokens: int) -> list[int]:
    return (
        complete(
            client,
            prompt,
            max_tokens=n_tokens,
            temperature=0.0,
            extra_body={"ignore_eos": True, "return_token_ids": True},
        )
        .choices[0]
        .token_ids
    )


def bad_request(call, *args, **kw) -> dict:
    with pytest.raises(openai.BadRequestError) as info:
        call(*args, **kw)
    return info.value.body


# -- lengths ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_tokens", [1, 7, 33])
def test_exact_token_counts_with_ignore_eos(client, n_tokens):
    result = complete(client, max_tokens=n_tokens, extra_body={"ignore_eos": True, "return_token_ids": True})
    assert result.usage.completion_tokens == len(result.choices[0].token_ids) == n_tokens


def test_max_completion_tokens_wins_over_max_tokens(client):
    result = client.chat.completions.create(
        model=MODEL, messages=USER, max_tokens=20, max_completion_tokens=3, extra_body={"ignore_eos": True}
    )
    assert result.usage.completion_tokens == 3


def test_chat_default_is_the_remaining_context(client):
    result = client.chat.completions.create(model=MODEL, messages=USER, extra_body={"ignore_eos": True})
    assert result.usage.total_tokens == 256 and result.choices[0].finish_reason == "length"


def test_min_tokens_holds_back_eos(client):
    forced_eos = {"logit_bias": {str(EOS): 100}}
    result = complete(client, max_tokens=10, extra_body=forced_eos)
    assert (result.usage.completion_tokens, result.choices[0].finish_reason) == (1, "stop")
    result = complete(client, max_tokens=10, extra_body={**forced_eos, "min_tokens": 5})
    assert (result.usage.completion_tokens, result.choices[0].finish_reason) == (6, "stop")
    body = bad_request(complete, client, max_tokens=3, extra_body={"min_tokens": 4})
    assert body["param"] == "min_tokens"


# -- sampling ---------------------------------------------------------------------------------------------
def test_temperature_bounds_and_greedy_with_n(client):
    assert "temperature" in bad_request(complete, client, temperature=2.5)["message"]
    assert bad_request(complete, client, temperature=0.0, n=2)["param"] == "n"
    assert bad_request(complete, client, top_p=0.0)["param"] == "top_p"


def test_top_k_one_and_min_p_one_are_greedy(client):
    greedy = greedy_ids(client, "x = ", 12)
    for extra in ({"top_k": 1}, {"min_p": 1.0}):
        sampled = complete(
            client,
            "x = ",
            max_tokens=12,
            temperature=1.0,
            extra_body={**extra, "ignore_eos": True, "return_token_ids": True},
        )
        assert sampled.choices[0].token_ids == greedy


def test_seed_reproduces_and_is_bounded(client):
    runs = [
        complete(client, max_tokens=16, temperature=1.0, seed=42, extra_body={"ignore_eos": True}).choices[0].text
        for _ in range(2)
    ]
    assert runs[0] == runs[1]
    assert bad_request(complete, client, seed=2**63)["param"] == "seed"


def test_penalty_bounds(client):
    assert bad_request(complete, client, presence_penalty=2.5)["param"] == "presence_penalty"
    assert bad_request(complete, client, frequency_penalty=-3)["param"] == "frequency_penalty"
    assert bad_request(complete, client, extra_body={"repetition_penalty": 0})["param"] == "repetition_penalty"


def test_frequency_penalty_stops_repetition(client):
    plain = greedy_ids(client, "aaaa", 24)
    penalized = (
        complete(
            client,
            "aaaa",
            max_tokens=24,
            temperature=0.0,
            frequency_penalty=2.0,
            extra_body={"ignore_eos": True, "return_token_ids": True},
        )
        .choices[0]
        .token_ids
    )
    assert len(set(penalized)) > len(set(plain))


def test_logit_bias_forces_and_validates(client):
    result = complete(
        client,
        max_tokens=5,
        temperature=0.0,
        logit_bias={"77": 100},
        extra_body={"ignore_eos": True, "return_token_ids": True},
    )
    assert result.choices[0].token_ids == [77] * 5
    assert "logit_bias" in bad_request(complete, client, logit_bias={"abc": 1})["message"]
    body = bad_request(complete, client, logit_bias={"100000": 1})
    assert "[100000]" in body["message"] and body["param"] == "logit_bias"


def test_allowed_token_ids(client):
    result = complete(
        client,
        max_tokens=20,
        temperature=1.0,
        extra_body={"allowed_token_ids": [5, 6], "ignore_eos": True, "return_token_ids": True},
    )
    assert set(result.choices[0].token_ids) <= {5, 6}
    assert bad_request(complete, client, extra_body={"allowed_token_ids": [10**6]})["param"] == "allowed_token_ids"


def test_bad_words_change_the_greedy_choice(client, tokenizer):
    def round_trips(token: int) -> bool:  # a word that tokenizes back to exactly this token
        word = tokenizer.decode([token])
        return word.strip() == word and tokenizer.encode(word).ids == [token]

    prompt, first = next(
        (p, t)
        for p in ("import os", "x = 1", "def f", "hello", "for i in", "class", "print(", "return")
        for t in greedy_ids(client, p, 1)
        if round_trips(t)
    )
    banned = complete(
        client,
        prompt,
        max_tokens=1,
        temperature=0.0,
        extra_body={"bad_words": [tokenizer.decode([first])], "return_token_ids": True},
    )
    assert banned.choices[0].token_ids[0] != first
    assert bad_request(complete, client, extra_body={"bad_words": ["  "]})["param"] == "bad_words"


# -- stopping ---------------------------------------------------------------------------------------------
def test_stop_string_across_token_boundaries(client, tokenizer):
    ids = greedy_ids(client, "class A:", 20)
    pieces = [tokenizer.decode(ids[: i + 1]) for i in range(len(ids))]
    text = pieces[-1]
    # A stop string that starts inside one token and ends inside a later one.
    boundary = next(i for i in range(1, len(pieces)) if len(pieces[i]) - len(pieces[i - 1]) >= 2 and i > 2)
    start = len(pieces[boundary - 1]) - 1
    stop = text[start : start + 3]
    assume_first = text.index(stop)
    result = complete(client, "class A:", max_tokens=20, temperature=0.0, stop=[stop, "@@@"])
    choice = result.choices[0]
    assert (choice.text, choice.finish_reason, choice.stop_reason) == (text[:assume_first], "stop", stop)
    kept = complete(
        client, "class A:", max_tokens=20, temperature=0.0, stop=stop, extra_body={"include_stop_str_in_output": True}
    )
    assert kept.choices[0].text == text[: assume_first + len(stop)]
    streamed = "".join(
        c.choices[0].text for c in complete(client, "class A:", max_tokens=20, temperature=0.0, stop=stop, stream=True)
    )
    assert streamed == text[:assume_first]


def test_stop_validation(client):
    assert bad_request(complete, client, stop=["a", "b", "c", "d", "e"])["param"] == "stop"
    assert bad_request(complete, client, stop=[""])["param"] == "stop"


def test_stop_token_ids_report_the_id(client):
    result = complete(client, max_tokens=10, logit_bias={"9": 100}, extra_body={"stop_token_ids": [9]})
    choice = result.choices[0]
    assert (choice.finish_reason, choice.stop_reason, result.usage.completion_tokens) == ("stop", 9, 1)


def test_skip_special_tokens(client):
    forced = {"logit_bias": {str(IM_START): 100}, "ignore_eos": True}
    shown = complete(client, max_tokens=2, extra_body={**forced, "skip_special_tokens": False})
    hidden = complete(client, max_tokens=2, extra_body=forced)
    assert shown.choices[0].text == "<|im_start|><|im_start|>" and hidden.choices[0].text == ""
    spaced = complete(
        client,
        max_tokens=2,
        extra_body={**forced, "skip_special_tokens": False, "spaces_between_special_tokens": False},
    )
    assert spaced.choices[0].text == "<|im_start|><|im_start|>"


# -- logprobs and echo ---------------------------------------------------------------------------------------
def test_completion_logprobs_shape(client):
    result = complete(client, max_tokens=6, temperature=0.0, logprobs=3, extra_body={"ignore_eos": True})
    choice = result.choices[0]
    lp = choice.logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset) == 6
    assert "".join(lp.tokens) == choice.text
    # Token strings can collide (byte pieces decode to U+FFFD); as ids every alternative is distinct.
    result = complete(
        client,
        max_tokens=6,
        temperature=0.0,
        logprobs=3,
        extra_body={"ignore_eos": True, "return_tokens_as_token_ids": True},
    )
    lp = result.choices[0].logprobs
    assert all(3 <= len(top) <= 4 for top in lp.top_logprobs)
    assert lp.text_offset == [sum(len(t) for t in lp.tokens[:i]) for i in range(6)]
    assert all(lp.token_logprobs[i] == max(lp.top_logprobs[i].values()) for i in range(6))  # greedy = top-1


def test_chat_logprobs_shape(client):
    result = client.chat.completions.create(
        model=MODEL,
        messages=USER,
        max_tokens=5,
        logprobs=True,
        top_logprobs=2,
        temperature=0.0,
        extra_body={"ignore_eos": True},
    )
    content = result.choices[0].logprobs.content
    assert len(content) == 5
    for entry in content:
        assert len(entry.top_logprobs) == 2 and entry.bytes == list(entry.token.encode())
        assert entry.top_logprobs[0].logprob >= entry.top_logprobs[1].logprob
    assert (
        bad_request(client.chat.completions.create, model=MODEL, messages=USER, top_logprobs=2)["param"]
        == "top_logprobs"
    )
    assert (
        bad_request(client.chat.completions.create, model=MODEL, messages=USER, logprobs=True, top_logprobs=21)["param"]
        == "logprobs"
    )


def test_return_tokens_as_token_ids(client):
    result = complete(
        client,
        max_tokens=3,
        temperature=0.0,
        logprobs=1,
        extra_body={"return_tokens_as_token_ids": True, "return_token_ids": True, "ignore_eos": True},
    )
    assert result.choices[0].logprobs.tokens == [f"token_id:{t}" for t in result.choices[0].token_ids]


def test_completion_echo_with_prompt_logprobs(client):
    prompt = "print(1)"
    result = complete(
        client,
        prompt,
        max_tokens=4,
        temperature=0.0,
        echo=True,
        logprobs=1,
        extra_body={"ignore_eos": True, "return_token_ids": True},
    )
    choice = result.choices[0]
    assert choice.text.startswith(prompt)
    num_prompt = len(choice.prompt_token_ids)
    assert len(choice.logprobs.tokens) == num_prompt + 4
    assert choice.logprobs.token_logprobs[0] is None and choice.logprobs.token_logprobs[1] is not None
    # Every token has its text, the first prompt token's too (as vLLM decodes it), and each offset is where
    # its token starts in the choice's text.
    tokens, offsets = choice.logprobs.tokens, choice.logprobs.text_offset
    assert tokens[0] and "".join(tokens) == choice.text
    assert offsets == [sum(map(len, tokens[:i])) for i in range(len(tokens))]
    only_prompt = complete(client, prompt, max_tokens=0, echo=True)
    assert only_prompt.choices[0].text == prompt and only_prompt.usage.completion_tokens == 0


def test_prompt_logprobs(client):
    result = complete(client, "abc def", max_tokens=1, extra_body={"prompt_logprobs": 2, "return_token_ids": True})
    choice = result.choices[0]
    payload = choice.model_dump()["prompt_logprobs"]
    assert payload[0] is None and len(payload) == len(choice.prompt_token_ids)
    for token_id, position in zip(choice.prompt_token_ids[1:], payload[1:]):
        assert str(token_id) in {str(k) for k in position} and all("logprob" in v for v in position.values())
    assert bad_request(complete, client, stream=True, extra_body={"prompt_logprobs": 1})["param"] == "prompt_logprobs"


def test_chat_echo_repeats_the_last_message_of_the_answer_role(client):
    messages = USER + [{"role": "assistant", "content": "Well,"}]
    result = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=3,
        extra_body={"echo": True, "add_generation_prompt": False, "continue_final_message": True, "ignore_eos": True},
    )
    assert result.choices[0].message.content.startswith("Well,")
    body = bad_request(
        client.chat.completions.create, model=MODEL, messages=messages, extra_body={"continue_final_message": True}
    )
    assert body["param"] == "continue_final_message"


# -- streaming options -------------------------------------------------------------------------------------
def test_continuous_usage_stats(client):
    chunks = list(
        complete(
            client,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True, "continuous_usage_stats": True},
            extra_body={"ignore_eos": True},
        )
    )
    counts = [c.usage.completion_tokens for c in chunks if c.choices]
    assert counts == sorted(counts) and counts[-1] == 5 and chunks[-1].usage.completion_tokens == 5


# -- request-level options ---------------------------------------------------------------------------------
def test_truncate_prompt_tokens(client):
    prompt = list(range(50, 150))
    for side, kept in (("left", prompt[-10:]), ("right", prompt[:10])):
        result = complete(
            client,
            prompt,
            max_tokens=1,
            extra_body={"truncate_prompt_tokens": 10, "truncation_side": side, "return_token_ids": True},
        )
        assert result.usage.prompt_tokens == 10 and result.choices[0].prompt_token_ids == kept


def test_request_id_field_and_header(client, server):
    result = complete(client, max_tokens=1, extra_body={"request_id": "my-id"})
    assert result.id == "cmpl-my-id"
    result = client.with_options(default_headers={"X-Request-Id": "header-id"}).chat.completions.create(
        model=MODEL, messages=USER, max_tokens=1
    )
    assert result.id == "chatcmpl-header-id"


def test_cache_salt_and_cached_tokens(client):
    prompt = list(range(3, 60))
    complete(client, prompt, max_tokens=1)
    again = complete(client, prompt, max_tokens=1)
    salted = complete(client, prompt, max_tokens=1, extra_body={"cache_salt": "tenant-7"})
    assert again.usage.prompt_tokens_details.cached_tokens >= 48
    assert salted.usage.prompt_tokens_details.cached_tokens == 0
    assert bad_request(complete, client, extra_body={"cache_salt": ""})["param"] == "cache_salt"


def test_priority_needs_the_priority_policy(client):
    assert bad_request(complete, client, extra_body={"priority": 3})["param"] == "priority"


def test_unsupported_fields_are_clear_errors(client):
    assert bad_request(complete, client, suffix="end")["param"] == "suffix"
    complete(client, max_tokens=1, user="someone", extra_body={"response_format": {"type": "text"}, "unknown_field": 1})
    for field, value in (("use_beam_search", True), ("prompt_embeds", "AAAA")):
        with pytest.raises(openai.APIStatusError) as info:
            complete(client, extra_body={field: value})
        assert info.value.status_code == 501 and info.value.body["param"] == field


def test_per_request_chat_template_needs_trust(client):
    body = bad_request(
        client.chat.completions.create, model=MODEL, messages=USER, extra_body={"chat_template": "{{ 'x' }}"}
    )
    assert body["param"] == "chat_template"


def test_string_and_part_content_give_the_same_prompt(client):
    parts = [{"role": "user", "content": [{"type": "text", "text": "Tell me something."}]}]
    as_string = client.chat.completions.create(
        model=MODEL, messages=USER, max_tokens=4, temperature=0.0, extra_body={"return_token_ids": True}
    )
    as_parts = client.chat.completions.create(
        model=MODEL, messages=parts, max_tokens=4, temperature=0.0, extra_body={"return_token_ids": True}
    )
    assert as_string.prompt_token_ids == as_parts.prompt_token_ids
    assert as_string.choices[0].message.content == as_parts.choices[0].message.content


def test_roles_and_unknown_message_keys(client):
    messages = [
        {"role": "developer", "content": "be brief"},
        {"role": "system", "content": "really"},
        {"role": "user", "content": "hi", "name": "bob", "x-extra": 1},
        {"role": "assistant", "content": "hello"},
        {"role": "tool", "content": "42", "tool_call_id": "t1"},
        {"role": "narrator", "content": "meanwhile"},
    ]
    assert client.chat.completions.create(model=MODEL, messages=messages, max_tokens=2).usage.completion_tokens >= 1


@pytest.mark.parametrize(
    ("payload", "param"),
    [
        ({"prompt": "x", "n": 129, "temperature": 1.0}, "n"),
        ({"prompt": ["x"] * 129}, "prompt"),
        ({"prompt": "x", "bad_words": ["w"] * 129}, "bad_words"),
        ({"prompt": "x", "logprobs": 21}, "logprobs"),
        ({"prompt": "x", "max_tokens": 100000}, "max_tokens"),
    ],
)
def test_server_bounds(server, payload, param):
    status, body = post(server, "/v1/completions", payload)
    assert status == 400 and body["error"]["param"] == param, body


def test_system_fingerprint_is_stable(client):
    first = complete(client, max_tokens=1)
    second = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=1)
    assert first.system_fingerprint and first.system_fingerprint == second.system_fingerprint
    assert first.system_fingerprint.startswith("kvserve-")


# -- server flags -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def flagged(tiny_model_dir):
    process = ServerProcess(
        str(tiny_model_dir("llama")),
        "--served-model-name",
        MODEL,
        "--kv-cache-memory",
        "32MiB",
        "--scheduling-policy",
        "priority",
        "--trust-request-chat-template",
        "--enable-force-include-usage",
        "--response-role",
        "bot",
        "--return-tokens-as-token-ids",
        "--max-logprobs",
        "3",
    )
    yield process, openai.OpenAI(base_url=f"{process.base_url}/v1", api_key="unused", max_retries=0)
    assert process.stop() == 0


def test_server_flags(flagged):
    _, client = flagged
    chunks = list(complete(client, max_tokens=2, stream=True))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    chat = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=2, logprobs=True, top_logprobs=1)
    assert chat.choices[0].message.role == "bot"
    assert chat.choices[0].logprobs.content[0].token.startswith("token_id:")
    assert bad_request(complete, client, logprobs=4)["param"] == "logprobs"
    complete(client, max_tokens=1, extra_body={"priority": -5})


def test_request_chat_template_and_kwargs(flagged):
    process, client = flagged
    template = "{% for m in messages %}{{ m['content'] }}|{{ flavour }}{% endfor %}"
    result = client.chat.completions.create(
        model=MODEL,
        messages=USER,
        max_tokens=1,
        extra_body={"chat_template": template, "chat_template_kwargs": {"flavour": "mint"}, "return_token_ids": True},
    )
    status, body = post(process, "/detokenize", {"tokens": result.prompt_token_ids})
    assert status == 200 and body["prompt"] == "Tell me something.|mint"
