"""Chat templates: OpenAI-style messages to prompt text through a model's Jinja template, in a sandbox.

Rendering follows what vLLM does with a Hugging Face tokenizer: vLLM shapes each message's content for the
template's content format, then transformers' ``apply_chat_template(tokenize=False)`` renders it. Templates
come from the model repository or from the request, so they are untrusted code: they run in jinja2's immutable
sandbox, get their own copy of every value, and any failure in them is the request's fault (HTTP 400).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, NoReturn

import jinja2
from jinja2 import nodes
from jinja2.ext import Extension, loopcontrols
from jinja2.parser import Parser
from jinja2.runtime import Context, Macro, Undefined
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

ContentFormat = Literal["string", "openai"]

# Content part types that carry text, and the key that holds it (vLLM's text part types).
_TEXT_PART_KEYS = {
    "text": "text",
    "input_text": "text",
    "output_text": "text",
    "refusal": "refusal",
    "thinking": "thinking",
}
# Keys of a text part that vLLM consumes; any others stay on the part it hands an openai-format template.
_CONSUMED_PART_KEYS = frozenset({"type", "text", "refusal", "thinking"})
# chat_template_kwargs that vLLM refuses with a 400: the template is already chosen and the output is text.
# 'messages' is refused too, as transformers' render call would get it twice.
_REFUSED_KWARGS = frozenset({"chat_template", "tokenize", "messages"})
# Request fields that vLLM sets over chat_template_kwargs (tools and documents only where the request has them).
_REQUEST_FIELDS = frozenset({"add_generation_prompt", "continue_final_message", "tools", "documents"})
# transformers' marker: appended to the final message's text, it shows where that text ends in the output.
_CONTINUE_MARKER = "CONTINUE_FINAL_MESSAGE_TAG "
# Bounds that keep a template from exhausting memory or CPU with one expression ('x' * 10**12, 9**9**9).
_MAX_REPEATED_LEN = 1 << 24
_MAX_POWER_BITS = 1 << 16


class ChatTemplateError(ValueError):
    """A chat template that cannot be loaded, compiled or rendered for a request; the server answers 400."""


def load_chat_template(value: str) -> str:
    """--chat-template / a request's chat_template: the text of the file at that path, or the template itself.

    As in vLLM, a value without braces or newlines that names no readable file was meant as a path (it could not
    be a useful template), so it raises instead of becoming a template that prints itself.
    """
    if _is_file(value):
        try:
            return Path(value).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ChatTemplateError(f"cannot read chat template file {value!r}: {exc}") from exc
    if not any(marker in value for marker in "{}\n"):
        raise ChatTemplateError(f"chat template {value!r} looks like a file path, but no such file exists")
    return value


def _is_file(value: str) -> bool:
    try:
        return Path(value).is_file()
    except (OSError, ValueError):  # template text can be too long for a file name, or hold NUL
        return False


def detect_content_format(template: str) -> ContentFormat:
    """vLLM's --chat-template-content-format auto: 'openai' when the template loops over a message's content.

    The rule, from the template's syntax tree (scopes are ignored, as in vLLM):
    - names holding the messages: ``messages`` and every ``{% set x = ... %}`` whose value is one of them,
      possibly filtered, tested or sliced (``messages[1:]``, ``messages | selectattr(...)``);
    - message names: targets of ``{% for m in <messages name> %}`` loops, with the same unwrapping;
    - 'openai' if some ``{% for part in m['content'] %}`` (or ``m.content``, unwrapped the same way) exists,
      else 'string'. Content used any other way, indexed without a loop for one, reads as 'string'.
    """
    return _content_format_of(_parse(template))


def _content_format_of(root: nodes.Template) -> ContentFormat:
    loops = list(root.find_all(nodes.For))
    message_lists = _names_bound_to(root, "messages")
    message_names = {
        loop.target.name for loop in loops if isinstance(loop.target, nodes.Name) and _reads(loop.iter, message_lists)
    }
    return "openai" if any(_reads(loop.iter, message_names, key="content") for loop in loops) else "string"


def _names_bound_to(root: nodes.Template, name: str) -> set[str]:
    assigns = [assign for assign in root.find_all(nodes.Assign) if isinstance(assign.target, nodes.Name)]
    names = {name}
    while new_names := {assign.target.name for assign in assigns if _reads(assign.node, names)} - names:
        names |= new_names
    return names


def _reads(node: nodes.Node, names: set[str], key: str | None = None) -> bool:
    """Whether node is one of names (or its item `key`), seen through filters, tests and slices."""
    node = _unwrap(node)
    if key is None:
        return _is_name(node, names)
    if isinstance(node, nodes.Getitem):
        return _is_name(node.node, names) and isinstance(node.arg, nodes.Const) and node.arg.value == key
    return isinstance(node, nodes.Getattr) and _is_name(node.node, names) and node.attr == key


def _unwrap(node: nodes.Node) -> nodes.Node:
    # A filtered, tested or sliced sequence still yields the same items to a loop.
    while True:
        if isinstance(node, (nodes.Filter, nodes.Test)) and node.node is not None:
            node = node.node
        elif isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Slice):
            node = node.node
        else:
            return node


def _is_name(node: nodes.Node, names: set[str]) -> bool:
    return isinstance(node, nodes.Name) and node.ctx == "load" and node.name in names


class _ChatEnvironment(ImmutableSandboxedEnvironment):
    """jinja2's immutable sandbox, made to fail loudly and to bound the two operators that can blow up."""

    intercepted_binops = frozenset({"*", "**"})

    def unsafe_undefined(self, obj: Any, attribute: str) -> Undefined:
        # jinja2 answers with an Undefined that prints as "", which hides a probe of Python internals; the
        # request should fail instead.
        raise SecurityError(f"access to attribute {attribute!r} of {type(obj).__name__!r} object is unsafe")

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            _check_repetition(left, right)
            _check_repetition(right, left)
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1:
            if right * abs(left).bit_length() > _MAX_POWER_BITS:
                raise SecurityError(f"{left} ** {right} is too large for a chat template")
        return super().call_binop(context, operator, left, right)


def _check_repetition(sequence: Any, count: Any) -> None:
    if (
        isinstance(sequence, (str, list, tuple))
        and isinstance(count, int)
        and len(sequence) * count > _MAX_REPEATED_LEN
    ):
        raise SecurityError(f"repeating a {len(sequence)}-item sequence {count} times is too large for a chat template")


class _GenerationBlock(Extension):
    """``{% generation %}...{% endgeneration %}``: transformers marks assistant text with it for training masks.

    Rendering keeps the body, run as a call block so that its scope is the one transformers gives it.
    """

    tags = {"generation"}

    def parse(self, parser: Parser) -> nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Macro) -> str:
        return caller()


class _DictFactory:
    """The templates' ``dict``: it builds dicts without handing over the dict type itself, whose unbound
    methods (``dict.update(messages[0], ...)``) would mutate values past the immutable sandbox."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict[Any, Any]:
        return dict(*args, **kwargs)

    def fromkeys(self, keys: Any, value: Any = None) -> dict[Any, Any]:
        return dict.fromkeys(keys, value)


def _raise_exception(message: str) -> NoReturn:
    raise jinja2.TemplateError(message)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    # jinja2's own tojson escapes <, >, & and ' for HTML; templates expect plain JSON that keeps non-ASCII text,
    # with transformers' parameters in transformers' order.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(date_format: str) -> str:
    return datetime.now().strftime(date_format)


def _environment() -> _ChatEnvironment:
    environment = _ChatEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols, _GenerationBlock])
    environment.filters["tojson"] = _tojson
    environment.globals.update(raise_exception=_raise_exception, strftime_now=_strftime_now, dict=_DictFactory())
    return environment


# Shared by every template: compiling and rendering do not change it.
_ENVIRONMENT = _environment()


def _parse(template: str) -> nodes.Template:
    try:
        return _ENVIRONMENT.parse(template)
    except jinja2.TemplateSyntaxError as exc:
        raise ChatTemplateError(f"chat template does not compile: {exc.message} (line {exc.lineno})") from exc


class ChatTemplate:
    """One compiled chat template and the special tokens it sees; render() may run on several threads."""

    __slots__ = ("content_format", "_source", "_template", "_special_tokens")

    def __init__(
        self,
        template: str,
        *,
        content_format: Literal["auto", "string", "openai"] = "auto",
        special_tokens: Mapping[str, str | None] | None = None,
    ) -> None:
        if content_format not in ("auto", "string", "openai"):
            raise ValueError(f"content_format must be 'auto', 'string' or 'openai', got {content_format!r}")
        syntax_tree = _parse(template)
        self.content_format: ContentFormat = (
            _content_format_of(syntax_tree) if content_format == "auto" else content_format
        )
        self._source = template
        try:
            self._template = _ENVIRONMENT.from_string(syntax_tree)
        except jinja2.TemplateError as exc:  # e.g. an unknown filter or test, found at compile time
            raise ChatTemplateError(f"chat template does not compile: {exc}") from exc
        # transformers passes only the special tokens a tokenizer has: an unset one is undefined, not None,
        # so {{ pad_token }} prints "" rather than "None".
        self._special_tokens = {name: token for name, token in (special_tokens or {}).items() if token is not None}

    def render(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        add_generation_prompt: bool = True,
        continue_final_message: bool = False,
        tools: Sequence[Mapping[str, Any]] | None = None,
        documents: Sequence[Mapping[str, Any]] | None = None,
        chat_template_kwargs: Mapping[str, Any] | None = None,
    ) -> str:
        """OpenAI-style messages -> prompt text, as vLLM renders them through transformers.

        chat_template_kwargs become template variables over the special tokens. As in vLLM, they may not set
        'chat_template', 'tokenize' or 'messages' (400); the request's add_generation_prompt and
        continue_final_message win over theirs, and their 'tools' and 'documents' count only where the
        request's own are None.
        """
        if add_generation_prompt and continue_final_message:
            raise ChatTemplateError("Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
        if not messages:
            raise ChatTemplateError("Cannot apply chat template to an empty conversation.")
        conversation = [_prepare_message(message, self.content_format) for message in messages]
        variables = self._variables(conversation, add_generation_prompt, tools, documents, chat_template_kwargs or {})
        if continue_final_message:
            return self._render_continuing(conversation, variables)
        return self._render(variables)

    def _variables(
        self,
        conversation: list[dict[str, Any]],
        add_generation_prompt: bool,
        tools: Sequence[Mapping[str, Any]] | None,
        documents: Sequence[Mapping[str, Any]] | None,
        chat_template_kwargs: Mapping[str, Any],
    ) -> dict[str, Any]:
        if refused := sorted(_REFUSED_KWARGS & chat_template_kwargs.keys()):
            raise ChatTemplateError(f"Found unexpected chat template kwargs from request: {refused}")
        extra = {name: value for name, value in chat_template_kwargs.items() if name not in _REQUEST_FIELDS}
        documents = documents if documents is not None else chat_template_kwargs.get("documents")
        if documents is not None and not all(isinstance(document, Mapping) for document in documents):
            raise ChatTemplateError("Documents should be a list of dicts with 'title' and 'text' keys!")
        return {
            **self._special_tokens,
            **_plain(extra),
            "messages": conversation,
            "tools": _plain(tools if tools is not None else chat_template_kwargs.get("tools")),
            "documents": _plain(documents),
            "add_generation_prompt": add_generation_prompt,
        }

    def _render(self, variables: dict[str, Any]) -> str:
        try:
            return self._template.render(variables)
        # The template is untrusted code: whatever goes wrong in it (raise_exception, an undefined attribute, a
        # TypeError, a recursion without end) is the request's fault, never the server's.
        except jinja2.TemplateError as exc:
            raise ChatTemplateError(str(exc)) from exc
        except Exception as exc:
            raise ChatTemplateError(f"chat template failed: {type(exc).__name__}: {exc}") from exc

    def _render_continuing(self, conversation: list[dict[str, Any]], variables: dict[str, Any]) -> str:
        """The prompt cut right after the final message's text, so that the model continues that message.

        transformers' way, kept exactly: a marker appended to the text shows where the text ends, whatever the
        template writes after it (an end-of-turn token, a newline).
        """
        if "content" not in self._source:
            raise ChatTemplateError(
                'continue_final_message is set to "content" but this is not an accepted field in the chat_template'
            )
        text = _mark_final_text(conversation[-1])
        rendered = self._render(variables)
        marker = _CONTINUE_MARKER.strip()
        if text.strip() not in rendered or marker not in rendered:
            raise ChatTemplateError(
                "continue_final_message is set but the final message does not appear in the chat after applying the "
                "chat template: the template drops or changes part of it"
            )
        end = rendered.rindex(marker)
        if rendered.startswith(_CONTINUE_MARKER, end):
            return rendered[:end]
        # The template trimmed the whitespace after the marker, so it trimmed the text's trailing whitespace too.
        return rendered[:end].rstrip()


def _mark_final_text(message: dict[str, Any]) -> str:
    """Appends the marker to the final message's text (its last text part) and returns the text it had."""
    content = message["content"]
    if isinstance(content, str):
        message["content"] = content + _CONTINUE_MARKER
        return content
    for part in reversed(content):
        if "text" in part:
            text: str = part["text"]
            part["text"] = text + _CONTINUE_MARKER
            return text
    raise ChatTemplateError("continue_final_message is set but the final message has no text to continue")


def _prepare_message(message: Mapping[str, Any], content_format: ContentFormat) -> dict[str, Any]:
    """The template's copy of one message: vLLM's shaping, then transformers' normalization."""
    if not isinstance(message, Mapping):
        raise ChatTemplateError(f"each message must be an object, got {type(message).__name__}")
    # transformers drops keys set to None: templates handle a missing key, while None would print as "None".
    prepared = {key: _plain(value) for key, value in message.items() if value is not None}
    prepared["content"] = _prepare_content(message.get("content"), content_format, message.get("role"))
    if prepared.get("role") == "assistant" and isinstance(prepared.get("tool_calls"), list):
        _prepare_tool_calls(prepared)
    return _alias_reasoning(prepared)


def _prepare_content(content: Any, content_format: ContentFormat, role: Any) -> str | list[dict[str, Any]]:
    """The content as the template's format wants it: text parts joined with newlines ('string'), or a list
    of {"type": "text", "text": ...} parts ('openai'). vLLM hands tool results over as a string in either
    format, since most templates only handle that for them."""
    parts = _text_parts(content)
    if content_format == "openai" and role != "tool":
        return parts
    return "\n".join(part["text"] for part in parts if part["text"])


def _text_parts(content: Any) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    if not isinstance(content, Sequence):
        raise ChatTemplateError(f"message content must be a string or a list of parts, got {type(content).__name__}")
    return [part for part in map(_text_part, content) if part is not None]


def _text_part(part: Any) -> dict[str, Any] | None:
    if isinstance(part, str):
        return {"type": "text", "text": part}
    if not isinstance(part, Mapping):
        raise ChatTemplateError(f"a content part must be an object, got {type(part).__name__}")
    part_type = part.get("type")
    if not isinstance(part_type, str):
        raise ChatTemplateError("a content part needs a 'type' string")
    text_key = _TEXT_PART_KEYS.get(part_type)
    if text_key is None:
        raise ChatTemplateError(f"content part type {part_type!r} is unsupported: this server accepts text only")
    text = part.get(text_key)
    if text is None:  # vLLM skips a text part without text
        return None
    if not isinstance(text, str):
        raise ChatTemplateError(f"the {text_key!r} of a {part_type!r} content part must be a string")
    extra = {key: _plain(value) for key, value in part.items() if key not in _CONSUMED_PART_KEYS}
    return {"type": "text", "text": text, **extra}


def _prepare_tool_calls(message: dict[str, Any]) -> None:
    """vLLM hands templates each call's arguments as an object (transformers' convention), not OpenAI's JSON
    string, and drops an empty tool_calls list, which would send templates down their tool-call path."""
    tool_calls: list[Any] = message["tool_calls"]
    if not tool_calls:
        del message["tool_calls"]
        return
    for call in tool_calls:
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or call.get("type", "function") != "function":
            raise ChatTemplateError("chat completions only support assistant tool_calls of type 'function'.")
        function["arguments"] = _arguments_object(function.get("arguments"))


def _arguments_object(arguments: Any) -> dict[str, Any]:
    # Arguments that are not a JSON object become {} (vLLM): they sit in the conversation's history, so failing
    # on them would fail every later turn.
    if isinstance(arguments, str) and arguments:
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return {}
    return arguments if isinstance(arguments, dict) else {}


def _alias_reasoning(message: dict[str, Any]) -> dict[str, Any]:
    """The message's reasoning under every name templates read it by.

    vLLM takes it as ``reasoning`` (or the older ``reasoning_content``) and passes both names; transformers then
    fills ``reasoning_content`` and, for gpt-oss templates, ``thinking`` from whichever it finds first.
    """
    if (reasoning := message.get("reasoning", message.get("reasoning_content"))) is not None:
        message = {**message, "reasoning": reasoning, "reasoning_content": reasoning}
    reasoning = message.get("reasoning_content", message.get("thinking"))
    if reasoning is None:
        return message
    return {"thinking": reasoning, **message, "reasoning_content": reasoning}


def _plain(value: Any) -> Any:
    """A copy the template may see: its own dicts and lists, so that nothing it does reaches the caller's."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value
