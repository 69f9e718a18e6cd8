"""ChatTemplate against transformers' apply_chat_template(tokenize=False), on templates in the styles models ship.

The reference is what vLLM does: it shapes each message's content for the template's format (text parts joined
with newlines for 'string' templates, a list of text parts for 'openai' ones, tool-call arguments as objects),
then transformers renders. The tests hand transformers that shaped input and kvserve the raw OpenAI messages.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, models

from kvserve.text.chat_template import (
    ChatTemplate,
    ChatTemplateError,
    ContentFormat,
    detect_content_format,
    load_chat_template,
)

Message = dict[str, Any]

# ChatML with a default system prompt (SmolLM2, Qwen2.5).
CHATML = (
    "{% if messages[0]['role'] != 'system' %}<|im_start|>system\nYou are a concise assistant.<|im_end|>\n{% endif %}"
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# ChatML with tools, tool calls, tool results, reasoning and an enable_thinking switch (Qwen3).
QWEN_TOOLS = r"""
{%- if tools %}
{{- '<|im_start|>system\n' }}
{%- if messages[0].role == 'system' %}
{{- messages[0].content + '\n\n' }}
{%- endif %}
{{- '# Tools\n\n<tools>' }}
{%- for tool in tools %}
{{- '\n' + tool | tojson }}
{%- endfor %}
{{- '\n</tools>\n\nCall a tool with <tool_call>{"name": <name>, "arguments": <arguments>}</tool_call>.<|im_end|>\n' }}
{%- elif messages[0].role == 'system' %}
{{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
{%- endif %}
{%- for message in messages %}
{%- if message.role == 'system' and loop.first %}
{%- elif message.role == 'assistant' %}
{{- '<|im_start|>assistant\n' }}
{%- if message.reasoning_content %}
{{- '<think>\n' + message.reasoning_content | trim + '\n</think>\n\n' }}
{%- endif %}
{{- message.content }}
{%- for call in message.tool_calls %}
{%- if loop.first and message.content %}{{ '\n' }}{% endif %}
{{- '<tool_call>\n{"name": "' + call.function.name + '", "arguments": ' }}
{{- call.function.arguments | tojson + '}\n</tool_call>' }}
{%- endfor %}
{{- '<|im_end|>\n' }}
{%- elif message.role == 'tool' %}
{{- '<|im_start|>user\n<tool_response>\n' + message.content + '\n</tool_response><|im_end|>\n' }}
{%- else %}
{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
{{- '<|im_start|>assistant\n' }}
{%- if enable_thinking is defined and not enable_thinking %}
{{- '<think>\n\n</think>\n\n' }}
{%- endif %}
{%- endif %}
"""

# Header ids, bos_token, trimmed content and a date from strftime_now unless given (Llama 3).
LLAMA3 = r"""
{{- bos_token }}
{%- if date_string is not defined %}
{%- set date_string = strftime_now('%d %b %Y') %}
{%- endif %}
{%- if messages[0].role == 'system' %}
{%- set system_message = messages[0].content | trim %}
{%- set messages = messages[1:] %}
{%- else %}
{%- set system_message = '' %}
{%- endif %}
<|start_header_id|>system<|end_header_id|>

Today Date: {{ date_string }}

{{ system_message }}<|eot_id|>
{%- for message in messages %}
<|start_header_id|>{{ message.role }}<|end_header_id|>

{{ message.content | trim }}<|eot_id|>
{%- endfor %}
{%- if add_generation_prompt %}
<|start_header_id|>assistant<|end_header_id|>

{% endif %}
"""

# [INST] turns that must alternate, checked with raise_exception (Mistral).
MISTRAL = r"""
{{- bos_token }}
{%- if messages[0]['role'] == 'system' %}
{%- set system_prefix = messages[0]['content'] + '\n\n' %}
{%- set loop_messages = messages[1:] %}
{%- else %}
{%- set system_prefix = '' %}
{%- set loop_messages = messages %}
{%- endif %}
{%- for message in loop_messages %}
{%- if (message['role'] == 'user') != (loop.index0 is even) %}
{{- raise_exception('After the optional system message, roles must go user, assistant, user, ...') }}
{%- endif %}
{%- if message['role'] == 'user' %}
{{- '[INST] ' + (system_prefix if loop.first else '') + message['content'] + ' [/INST]' }}
{%- else %}
{{- ' ' + message['content'] + eos_token }}
{%- endif %}
{%- endfor %}
"""

# Content as a list of typed parts, or a string (Gemma 3, Llama 4, Qwen2-VL).
GEMMA = r"""
{{- bos_token }}
{%- for message in messages %}
{%- set role = 'model' if message['role'] == 'assistant' else message['role'] %}
<start_of_turn>{{ role }}
{% if message['content'] is string %}
{{- message['content'] | trim }}
{%- else %}
{%- for item in message['content'] %}
{%- if item['type'] == 'image' %}<start_of_image>{% elif item['type'] == 'text' %}{{ item['text'] | trim }}{% endif %}
{%- endfor %}
{%- endif %}
<end_of_turn>
{% endfor %}
{%- if add_generation_prompt %}<start_of_turn>model
{% endif %}
"""

# Content only as parts, which it joins with " | ".
PARTS = (
    "{% for message in messages %}<{{ message['role'] }}>"
    "{% for part in message['content'] %}{{ part['text'] }}{% if not loop.last %} | {% endif %}{% endfor %}"
    "</{{ message['role'] }}>\n{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}"
)

# Tools as indented JSON, documents, {% generation %}, developer and custom roles, named tool results.
TOOLS_JSON = r"""
{%- set tool_list = tools if tools is not none else [] %}
{%- if tool_list or documents %}
<|system|>
{%- if tool_list %}
You may call these functions:
{{ tool_list | tojson(indent=2) }}
{%- endif %}
{%- for doc in documents or [] %}
<document index="{{ loop.index }}" title="{{ doc.title }}">{{ doc.text }}</document>
{%- endfor %}
<|end|>
{%- endif %}
{%- for message in messages %}
{%- if message.role in ['system', 'developer'] %}
<|system|>{{ message.content }}<|end|>
{%- elif message.role == 'assistant' %}
<|assistant|>{% generation %}{{ message.content }}
{%- for call in message.tool_calls or [] %}
<call>{{ {'name': call.function.name, 'arguments': call.function.arguments} | tojson(sort_keys=true) }}</call>
{%- endfor %}<|end|>{% endgeneration %}
{%- elif message.role == 'tool' %}
<|tool|>{{ message.name | default('tool', true) }}: {{ message.content }}<|end|>
{%- else %}
<|{{ message.role }}|>{{ message.content }}<|end|>
{%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
<|assistant|>
{%- endif %}
"""


@dataclass(frozen=True)
class Style:
    template: str
    content_format: ContentFormat
    special_tokens: dict[str, str] = field(default_factory=dict)


STYLES = {
    "chatml": Style(CHATML, "string", {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}),
    "qwen-tools": Style(QWEN_TOOLS, "string", {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}),
    "llama3": Style(LLAMA3, "string", {"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"}),
    "mistral": Style(MISTRAL, "string", {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}),
    "gemma": Style(GEMMA, "openai", {"bos_token": "<bos>", "eos_token": "<eos>", "pad_token": "<pad>"}),
    "parts": Style(PARTS, "openai"),
    "tools-json": Style(TOOLS_JSON, "string", {"eos_token": "<|end|>"}),
}

# A conversation every style accepts (Mistral's alternation included). No content has an empty line, so
# splitting it on newlines into parts and joining them back gives it again.
CONVERSATION: list[Message] = [
    {"role": "system", "content": "You answer in one line.\nBe precise."},
    {"role": "user", "content": "Where is Zürich?"},
    {"role": "assistant", "content": "In Switzerland, by the lake. "},
    {"role": "user", "content": "  And its population?\nRoughly, please.  "},
]
DATE = {"date_string": "01 Jan 2025"}  # so that Llama 3 prints no clock-dependent date

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Météo actuelle — current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@functools.cache
def hf_tokenizer(style_name: str) -> Any:
    from transformers import PreTrainedTokenizerFast

    special_tokens = STYLES[style_name].special_tokens
    vocab = {token: token_id for token_id, token in enumerate(["[UNK]", *special_tokens.values()])}
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")), **special_tokens
    )
    tokenizer.chat_template = STYLES[style_name].template
    return tokenizer


def reference(style_name: str, messages: list[Message], **kwargs: Any) -> str:
    """transformers' rendering of messages as vLLM shapes them for the style's content format."""
    kwargs.setdefault("add_generation_prompt", True)
    return hf_tokenizer(style_name).apply_chat_template(vllm_shaped(style_name, messages), tokenize=False, **kwargs)


def vllm_shaped(style_name: str, messages: list[Message]) -> list[Message]:
    return messages if STYLES[style_name].content_format == "string" else as_one_part(messages)


def render(style_name: str, messages: list[Message], **kwargs: Any) -> str:
    style = STYLES[style_name]
    return ChatTemplate(style.template, special_tokens=style.special_tokens).render(messages, **kwargs)


def as_parts(messages: list[Message]) -> list[Message]:
    """The messages with each content line as its own text part."""
    return [
        {**message, "content": [{"type": "text", "text": line} for line in message["content"].split("\n")]}
        for message in messages
    ]


def as_one_part(messages: list[Message]) -> list[Message]:
    return [{**message, "content": [{"type": "text", "text": message["content"]}]} for message in messages]


@pytest.mark.parametrize("add_generation_prompt", [True, False])
@pytest.mark.parametrize("style_name", STYLES)
def test_matches_transformers(style_name: str, add_generation_prompt: bool) -> None:
    expected = reference(style_name, CONVERSATION, add_generation_prompt=add_generation_prompt, **DATE)
    kwargs = dict(add_generation_prompt=add_generation_prompt, chat_template_kwargs=DATE)
    assert render(style_name, CONVERSATION, **kwargs) == expected
    assert render(style_name, as_one_part(CONVERSATION), **kwargs) == expected
    if STYLES[style_name].content_format == "string":
        assert render(style_name, as_parts(CONVERSATION), **kwargs) == expected


def test_string_format_joins_text_parts_with_newlines_and_drops_empty_ones() -> None:
    parts = [{"type": "text", "text": "first"}, {"type": "text", "text": ""}, "second", {"type": "text", "text": None}]
    messages = [{"role": "user", "content": parts}]
    assert render("chatml", messages) == reference("chatml", [{"role": "user", "content": "first\nsecond"}])


def test_openai_format_keeps_parts_as_given() -> None:
    parts = [{"type": "text", "text": "Describe"}, {"type": "input_text", "text": "this", "cache_control": {}}]
    expected_parts = [{"type": "text", "text": "Describe"}, {"type": "text", "text": "this", "cache_control": {}}]
    expected = hf_tokenizer("parts").apply_chat_template(
        [{"role": "user", "content": expected_parts}], tokenize=False, add_generation_prompt=True
    )
    assert (
        render("parts", [{"role": "user", "content": parts}]) == expected == "<user>Describe | this</user>\n<assistant>"
    )


@settings(max_examples=40, deadline=None)
@given(texts=st.lists(st.text(max_size=12), max_size=4))
def test_any_text_parts_join_as_vllm_joins_them(texts: list[str]) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": text} for text in texts]}]
    joined = "\n".join(text for text in texts if text)
    assert render("chatml", messages) == reference("chatml", [{"role": "user", "content": joined}])


@pytest.mark.parametrize("final", ["The capital of France is", "Sure, here it is: "])
@pytest.mark.parametrize("style_name", STYLES)
def test_continue_final_message_matches_transformers(style_name: str, final: str) -> None:
    messages = [*CONVERSATION, {"role": "assistant", "content": final}]
    expected = reference(style_name, messages, add_generation_prompt=False, continue_final_message=True, **DATE)
    kwargs = dict(add_generation_prompt=False, continue_final_message=True, chat_template_kwargs=DATE)
    assert render(style_name, messages, **kwargs) == expected
    assert render(style_name, as_one_part(messages), **kwargs) == expected


def test_continue_final_message_cuts_right_after_the_text() -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello, "}]
    rendered = render("chatml", messages, add_generation_prompt=False, continue_final_message=True)
    assert rendered.endswith("<|im_start|>assistant\nHello, ")
    trimmed = render("llama3", messages, add_generation_prompt=False, continue_final_message=True)
    assert trimmed.endswith("<|start_header_id|>assistant<|end_header_id|>\n\nHello,")


def test_continue_final_message_needs_the_final_text_in_the_output() -> None:
    drops_assistants = "{% for m in messages if m.role == 'user' %}{{ m.content }}{% endfor %}"
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    with pytest.raises(ChatTemplateError, match="does not appear"):
        ChatTemplate(drops_assistants).render(messages, add_generation_prompt=False, continue_final_message=True)
    with pytest.raises(ChatTemplateError, match="no text to continue"):
        ChatTemplate(PARTS).render(
            [{"role": "assistant", "content": []}], add_generation_prompt=False, continue_final_message=True
        )


def test_add_generation_prompt_and_continue_final_message_exclude_each_other() -> None:
    with pytest.raises(ChatTemplateError, match="Cannot set both"):
        render("chatml", CONVERSATION, add_generation_prompt=True, continue_final_message=True)


TOOL_CONVERSATION: list[Message] = [
    {"role": "system", "content": "You check the weather."},
    {"role": "user", "content": "Weather in Köln?"},
    {
        "role": "assistant",
        "content": None,
        "reasoning": "The user wants the weather, so I call the tool.",
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Köln"}'},
            }
        ],
    },
    {"role": "tool", "tool_call_id": "call_1", "name": "get_weather", "content": [{"type": "text", "text": "12 °C"}]},
]


def vllm_tool_conversation(content_format: ContentFormat) -> list[Message]:
    """TOOL_CONVERSATION as vLLM hands it to transformers: arguments as an object, reasoning under both names,
    and tool results as a string in either format."""
    system, user, assistant, tool = (dict(message) for message in TOOL_CONVERSATION)
    call = {**assistant["tool_calls"][0], "function": {"name": "get_weather", "arguments": {"city": "Köln"}}}
    assistant.update(reasoning_content=assistant["reasoning"], tool_calls=[call], content="")
    tool["content"] = "12 °C"
    if content_format == "openai":
        system, user = as_one_part([system, user])
        assistant["content"] = []
    return [system, user, assistant, tool]


@pytest.mark.parametrize("chat_template_kwargs", [{}, {"enable_thinking": True}, {"enable_thinking": False}])
@pytest.mark.parametrize("style_name", ["qwen-tools", "tools-json", "gemma"])
def test_tools_tool_calls_and_reasoning_match_transformers(
    style_name: str, chat_template_kwargs: dict[str, Any]
) -> None:
    hf_messages = vllm_tool_conversation(STYLES[style_name].content_format)
    expected = hf_tokenizer(style_name).apply_chat_template(
        hf_messages, tools=[WEATHER_TOOL], tokenize=False, add_generation_prompt=True, **chat_template_kwargs
    )
    rendered = render(style_name, TOOL_CONVERSATION, tools=[WEATHER_TOOL], chat_template_kwargs=chat_template_kwargs)
    assert rendered == expected


def test_tool_rendering_reads_as_intended() -> None:
    rendered = render(
        "qwen-tools", TOOL_CONVERSATION, tools=[WEATHER_TOOL], chat_template_kwargs={"enable_thinking": False}
    )
    assert '"description": "Météo actuelle — current weather for a city"' in rendered  # tojson keeps non-ASCII
    assert '{"name": "get_weather", "arguments": {"city": "Köln"}}' in rendered
    assert "<think>\nThe user wants the weather, so I call the tool.\n</think>" in rendered
    assert "<tool_response>\n12 °C\n</tool_response>" in rendered
    assert rendered.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_tool_call_arguments_that_are_not_a_json_object_become_empty() -> None:
    calls = [
        {"type": "function", "function": {"name": "f", "arguments": arguments}}
        for arguments in ("not json", "[1, 2]", "", None, {"already": "an object"})
    ]
    messages = [{"role": "user", "content": "go"}, {"role": "assistant", "content": "", "tool_calls": calls}]
    rendered = render("tools-json", messages, add_generation_prompt=False)
    assert rendered.count('<call>{"arguments": {}, "name": "f"}</call>') == 4
    assert '<call>{"arguments": {"already": "an object"}, "name": "f"}</call>' in rendered


def test_documents_developer_custom_roles_and_generation_blocks_match_transformers() -> None:
    documents = [{"title": "Köln", "text": "A city on the Rhine."}, {"title": "Zürich", "text": "A city on a lake."}]
    messages = [
        {"role": "developer", "content": "Cite the documents."},
        {"role": "narrator", "content": "The user arrives.", "mood": "calm"},
        {"role": "user", "content": "Which city is on the Rhine?"},
        {"role": "assistant", "content": "Köln."},
        {"role": "user", "content": "Thanks"},
    ]
    expected = reference("tools-json", messages, documents=documents)
    assert render("tools-json", messages, documents=documents) == expected
    assert "<|narrator|>The user arrives.<|end|>" in expected
    assert "<|system|>Cite the documents.<|end|>" in expected


def test_llama3_date_comes_from_strftime_now_unless_given() -> None:
    rendered = render("llama3", CONVERSATION)
    assert rendered == reference("llama3", CONVERSATION)
    assert "Today Date: " in rendered and "01 Jan 2025" not in rendered


def test_unset_special_tokens_are_undefined_not_none() -> None:
    template = "[{{ bos_token }}|{{ pad_token }}]{{ messages[0]['content'] }}"
    rendered = ChatTemplate(template, special_tokens={"bos_token": "<s>", "pad_token": None}).render(
        [{"role": "user", "content": "x"}]
    )
    assert rendered == "[<s>|]x"


def test_messages_with_none_values_lose_those_keys_as_in_transformers() -> None:
    template = "{% for m in messages %}{{ m.role }}:{{ m.name is defined }}:{{ m.content }};{% endfor %}"
    messages = [{"role": "user", "content": "a", "name": None}, {"role": "assistant", "content": None}]
    assert ChatTemplate(template).render(messages) == "user:False:a;assistant:False:;"


def test_caller_messages_are_not_changed() -> None:
    messages = [
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
        {
            "role": "assistant",
            "content": "Hel",
            "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
    ]
    snapshot = json.dumps(messages)
    render("tools-json", messages, add_generation_prompt=False, continue_final_message=True)
    assert json.dumps(messages) == snapshot


@pytest.mark.parametrize("template", [MISTRAL, "{{ messages[0].content.missing.deeper }}"])
def test_template_errors_carry_the_templates_message(template: str) -> None:
    messages = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    with pytest.raises(jinja2.TemplateError) as hf_error:
        hf_tokenizer("mistral").apply_chat_template(messages, chat_template=template, tokenize=False)
    with pytest.raises(ChatTemplateError) as error:
        ChatTemplate(template, special_tokens=STYLES["mistral"].special_tokens).render(messages)
    assert str(error.value) == str(hf_error.value)


def test_mistral_rejects_bad_role_order() -> None:
    with pytest.raises(ChatTemplateError, match=r"^After the optional system message, roles must go user"):
        render("mistral", [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_chat_template_kwargs_follow_vllm() -> None:
    # Template variables over the special tokens, as transformers passes them.
    bos = {"bos_token": "<BOS>"}
    assert render("llama3", CONVERSATION, chat_template_kwargs={**DATE, **bos}) == reference(
        "llama3", CONVERSATION, **DATE, **bos
    )
    # The request's own add_generation_prompt wins; kwargs' tools and documents count where the request has none.
    with_prompt = render("chatml", CONVERSATION, add_generation_prompt=True)
    assert render("chatml", CONVERSATION, chat_template_kwargs={"add_generation_prompt": False}) == with_prompt
    with_tools = render("qwen-tools", CONVERSATION, tools=[WEATHER_TOOL])
    assert render("qwen-tools", CONVERSATION, chat_template_kwargs={"tools": [WEATHER_TOOL]}) == with_tools
    assert render("qwen-tools", CONVERSATION, tools=[WEATHER_TOOL], chat_template_kwargs={"tools": []}) == with_tools
    documents = [{"title": "Köln", "text": "On the Rhine."}]
    with_documents = render("tools-json", CONVERSATION, documents=documents)
    assert render("tools-json", CONVERSATION, chat_template_kwargs={"documents": documents}) == with_documents
    with pytest.raises(ChatTemplateError, match="Documents should be a list of dicts"):
        render("tools-json", CONVERSATION, documents=["not a dict"])  # type: ignore[list-item]


@pytest.mark.parametrize("name", ["messages", "chat_template", "tokenize"])
def test_chat_template_kwargs_may_not_set_messages_or_the_template(name: str) -> None:
    with pytest.raises(ChatTemplateError, match=name):
        render("chatml", CONVERSATION, chat_template_kwargs={name: []})


@pytest.mark.parametrize(
    "part",
    [
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}},
        {"type": "input_audio", "input_audio": {"data": "", "format": "wav"}},
        {"type": "video_url", "video_url": {"url": "https://example.com/cat.mp4"}},
    ],
)
def test_non_text_parts_are_unsupported(part: dict[str, Any]) -> None:
    messages = [{"role": "user", "content": [{"type": "text", "text": "What is this?"}, part]}]
    for style_name in ("chatml", "gemma"):
        with pytest.raises(ChatTemplateError, match=f"{part['type']}.*unsupported"):
            render(style_name, messages)


@pytest.mark.parametrize(
    "messages",
    [
        [],
        ["just text"],
        [{"role": "user", "content": 42}],
        [{"role": "user", "content": [{"text": "no type"}]}],
        [{"role": "user", "content": [{"type": ["text"], "text": "a list as type"}]}],
        [{"role": "user", "content": [{"type": "text", "text": 7}]}],
        [{"role": "assistant", "content": "", "tool_calls": [{"type": "custom", "custom": {}}]}],
    ],
)
def test_malformed_messages_raise(messages: list[Any]) -> None:
    with pytest.raises(ChatTemplateError):
        render("chatml", messages)


@pytest.mark.parametrize("style_name", STYLES)
def test_detection_picks_each_styles_format(style_name: str) -> None:
    style = STYLES[style_name]
    assert detect_content_format(style.template) == style.content_format
    assert ChatTemplate(style.template).content_format == style.content_format


END_END = "{% endfor %}{% endfor %}"


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{% for m in messages %}{% for p in m.content %}{{ p.text }}{% endfor %}{% endfor %}", "openai"),
        ("{% for m in messages %}{% for p in m['content'] | selectattr('type', 'eq', 'text') %}" + END_END, "openai"),
        ("{% for m in messages[1:] %}{% for p in m['content'][::-1] %}{% endfor %}{% endfor %}", "openai"),
        (
            "{% set rest = messages[1:] %}{% set more = rest %}{% for m in more %}{% for p in m.content %}" + END_END,
            "openai",
        ),
        (
            "{% for m in messages | reverse %}{% for p in m.content if p.type == 'text' %}{% endfor %}{% endfor %}",
            "openai",
        ),
        ("{% for m in messages %}{{ m['content'] }}{% endfor %}", "string"),
        ("{% for m in messages %}{{ m['content'][0]['text'] }}{% endfor %}", "string"),
        ("{% for m in messages %}{% for call in m['tool_calls'] %}{% endfor %}{% endfor %}", "string"),
        ("{% for m in others %}{% for p in m.content %}{% endfor %}{% endfor %}", "string"),
        (
            "{% macro show(c) %}{% for p in c %}{{ p }}{% endfor %}{% endmacro %}"
            "{% for m in messages %}{{ show(m.content) }}{% endfor %}",
            "string",
        ),
    ],
)
def test_detection_rules(template: str, expected: ContentFormat) -> None:
    assert detect_content_format(template) == expected


def test_explicit_content_format_overrides_detection() -> None:
    template = ChatTemplate(CHATML, content_format="openai")
    assert template.content_format == "openai"
    with pytest.raises(ValueError, match="content_format"):
        ChatTemplate(CHATML, content_format="parts")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "template",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ self._TemplateReference__context }}",
        "{{ lipsum.__globals__ }}",
        "{{ messages[0] | attr('__class__') }}",
        "{{ '{0.__class__}'.format(1) }}",
        "{% set x = [] %}{{ x.append(1) }}",
        "{{ messages.pop() }}",
        "{% set d = {} %}{{ dict.update(d, {'a': 1}) }}",
        "{% set ns = namespace(a=1) %}{% set ns._hidden = 2 %}{{ ns._hidden }}",
        "{{ 'x' * 10 ** 9 }}",
        "{{ 2 ** 100000000 }}",
        "{% macro again() %}{{ again() }}{% endmacro %}{{ again() }}",
    ],
)
def test_sandbox_refuses_internals_and_mutation(template: str) -> None:
    with pytest.raises(ChatTemplateError):
        ChatTemplate(template).render([{"role": "user", "content": "hi"}])


def test_sandbox_leaves_ordinary_template_features_working() -> None:
    template = (
        "{% set ns = namespace(count=0) %}{% for m in messages %}{% set ns.count = ns.count + 1 %}{% endfor %}"
        "{{ ns.count }} {{ dict(a=1) | tojson }} {{ '-' * 3 }} {{ 2 ** 10 }} {{ raise_exception is defined }}"
        "{% for i in range(5) %}{% if i == 2 %}{% break %}{% endif %}{{ i }}{% endfor %}"
    )
    assert ChatTemplate(template).render([{"role": "user", "content": "hi"}] * 2) == '2 {"a": 1} --- 1024 True01'


@pytest.mark.parametrize(
    "template",
    ["{% for m in messages %}{{ m.content }}", "{{ messages | no_such_filter }}", "{% if %}", "{% endgeneration %}"],
)
def test_invalid_template_raises_at_construction(template: str) -> None:
    with pytest.raises(ChatTemplateError, match="does not compile"):
        ChatTemplate(template)


def test_load_chat_template_from_file_and_text(tmp_path: Path) -> None:
    path = tmp_path / "template.jinja"
    path.write_text(CHATML, encoding="utf-8")
    assert load_chat_template(str(path)) == CHATML
    assert load_chat_template(CHATML) == CHATML
    too_long_for_a_file_name = CHATML + "{# " + "x" * 5000 + " #}"
    assert load_chat_template(too_long_for_a_file_name) == too_long_for_a_file_name
    for missing in (str(tmp_path / "missing.jinja"), "templates/chatml.j2", "chatml"):
        with pytest.raises(ChatTemplateError, match="looks like a file path"):
            load_chat_template(missing)
