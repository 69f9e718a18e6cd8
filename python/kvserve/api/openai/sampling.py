"""OpenAI request fields -> engine SamplingParams: defaults, bounds and their 400s.

Defaults resolve request > the model's generation_config.json (--generation-config) > OpenAI's.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kvserve.api.context import ServingContext
from kvserve.api.openai.protocol_base import ResponseFormat
from kvserve.errors import InvalidRequestError, KvserveError
from kvserve.sampling_params import SamplingParams
from kvserve.tokenizer import Tokenizer

MAX_STOP_STRINGS = 4
MAX_N = 128
MAX_BAD_WORDS = 128
MAX_ALLOWED_TOKEN_IDS = 1 << 16

_OPENAI_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0}


class NotImplementedFeature(KvserveError):
    status_code = 501
    error_type = "NotImplementedError"


def require(condition: bool, message: str, param: str) -> None:
    if not condition:
        raise InvalidRequestError(message, param)


def resolve_defaults(request: Any, generation_defaults: dict[str, Any]) -> dict[str, Any]:
    return {
        name: value if (value := getattr(request, name, None)) is not None else generation_defaults.get(name, default)
        for name, default in _OPENAI_DEFAULTS.items()
    }


def stop_strings(stop: str | list[str] | None) -> tuple[str, ...]:
    strings = [stop] if isinstance(stop, str) else list(stop or [])
    require(
        len(strings) <= MAX_STOP_STRINGS,
        f"stop accepts at most {MAX_STOP_STRINGS} sequences, got {len(strings)}.",
        "stop",
    )
    require(all(strings), "stop strings must not be empty.", "stop")
    return tuple(strings)


def logit_bias(bias: dict[str, float] | None, vocab_size: int) -> tuple[tuple[int, float], ...]:
    if not bias:
        return ()
    parsed, bad_keys, out_of_vocab = [], [], []
    for key, value in bias.items():
        try:
            token_id = int(key)
        except ValueError:
            bad_keys.append(key)
            continue
        if not 0 <= token_id < vocab_size:
            out_of_vocab.append(token_id)
        parsed.append((token_id, max(-100.0, min(100.0, float(value)))))
    require(not bad_keys, f"logit_bias keys must be token ids (integers), got {bad_keys[:10]}.", "logit_bias")
    require(
        not out_of_vocab,
        f"token_id(s) {out_of_vocab[:10]} in logit_bias contain out-of-vocab token ids. Vocabulary size: {vocab_size}",
        "logit_bias",
    )
    return tuple(parsed)


def bad_words_token_ids(words: list[str], tokenizer: Tokenizer) -> tuple[tuple[int, ...], ...]:
    """Each word as it tokenizes at the start of a text, and after a space when that spelling is a distinct
    word of the same length (vLLM's rule), so both are banned."""
    require(len(words) <= MAX_BAD_WORDS, f"bad_words accepts at most {MAX_BAD_WORDS} words.", "bad_words")
    sequences: dict[tuple[int, ...], None] = {}
    for word in words:
        require(bool(word.strip()), "bad_words must not contain empty or blank words.", "bad_words")
        alone = tuple(tokenizer.encode(word.lstrip(), add_special_tokens=False))
        spaced = tuple(tokenizer.encode(" " + word.lstrip(), add_special_tokens=False))
        sequences[alone] = None
        if spaced and spaced[0] != alone[0] and len(spaced) == len(alone):
            sequences[spaced] = None
    return tuple(sequences)


def check_response_format(response_format: ResponseFormat | None) -> None:
    if response_format is not None and response_format.type != "text":
        raise NotImplementedFeature(
            f"response_format type {response_format.type!r} (structured output) is not supported yet; only 'text' is.",
            "response_format",
        )


@dataclasses.dataclass(frozen=True, slots=True)
class CommonFields:
    """The request fields completions and chat share, already checked."""

    n: int
    max_tokens: int | None
    logprobs: int | None
    prompt_logprobs: int | None
    seed: int | None


def sampling_params(request: Any, fields: CommonFields, ctx: ServingContext) -> SamplingParams:
    engine = ctx.engine
    settings = ctx.settings
    tokenizer = engine.tokenizer
    vocab_size = engine.model_config.vocab_size
    generation_defaults = engine.model_config.generation_defaults
    defaults = resolve_defaults(request, generation_defaults)
    max_tokens = fields.max_tokens
    if generation_defaults.get("max_new_tokens") is not None:  # vLLM: the model's limit caps any request
        max_tokens = min(v for v in (max_tokens, generation_defaults["max_new_tokens"]) if v is not None)
    require(fields.n >= 1, f"n must be at least 1, got {fields.n}.", "n")
    require(fields.n <= MAX_N, f"n must be at most {MAX_N}, got {fields.n}.", "n")
    temperature = defaults["temperature"]
    require(0.0 <= temperature <= 2.0, f"temperature must be in [0, 2], got {temperature}.", "temperature")
    require(
        not (fields.n > 1 and temperature < 1e-5),
        f"n must be 1 when using greedy sampling, got {fields.n}.",
        "n",
    )
    for name, value in (("logprobs", fields.logprobs), ("prompt_logprobs", fields.prompt_logprobs)):
        if value is not None:
            require(value >= 0, f"`{name}` must be a non-negative value, got {value}.", name)
            require(
                value <= settings.max_logprobs,
                f"Requested {'sample' if name == 'logprobs' else 'prompt'} logprobs of {value}, which is greater "
                f"than max allowed: {settings.max_logprobs}",
                name,
            )
    allowed = request.allowed_token_ids
    if allowed is not None:
        require(bool(allowed), "allowed_token_ids is not allowed to be empty.", "allowed_token_ids")
        require(len(allowed) <= MAX_ALLOWED_TOKEN_IDS, "allowed_token_ids is too long.", "allowed_token_ids")
        require(
            all(0 <= t < vocab_size for t in allowed),
            "allowed_token_ids contains out-of-vocab token id!",
            "allowed_token_ids",
        )
    stop_ids = tuple(request.stop_token_ids or ())
    require(
        all(0 <= t < vocab_size for t in stop_ids), "stop_token_ids contains out-of-vocab token id!", "stop_token_ids"
    )
    require(
        max_tokens is None or request.min_tokens <= max_tokens,
        f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {request.min_tokens}.",
        "min_tokens",
    )
    try:
        return SamplingParams(
            max_tokens=max_tokens,
            min_tokens=request.min_tokens,
            temperature=temperature,
            top_p=defaults["top_p"],
            top_k=0 if defaults["top_k"] == -1 else defaults["top_k"],
            min_p=defaults["min_p"],
            seed=fields.seed,
            stop=stop_strings(request.stop),
            stop_token_ids=stop_ids,
            ignore_eos=request.ignore_eos,
            include_stop_str_in_output=request.include_stop_str_in_output,
            skip_special_tokens=request.skip_special_tokens,
            spaces_between_special_tokens=request.spaces_between_special_tokens,
            logprobs=fields.logprobs,
            prompt_logprobs=fields.prompt_logprobs,
            presence_penalty=request.presence_penalty or 0.0,
            frequency_penalty=request.frequency_penalty or 0.0,
            repetition_penalty=defaults["repetition_penalty"],
            logit_bias=logit_bias(request.logit_bias, vocab_size),
            allowed_token_ids=tuple(allowed) if allowed is not None else None,
            bad_words_token_ids=bad_words_token_ids(request.bad_words, tokenizer),
        )
    except ValueError as e:
        message = str(e)
        raise InvalidRequestError(message, message.split(" ", 1)[0].strip("`")) from None


def per_choice_params(params: SamplingParams, n: int) -> list[SamplingParams]:
    """n samples of one prompt: a seeded request gives choice j the seed + j, so the choices differ."""
    if params.seed is None:
        return [params] * n
    return [dataclasses.replace(params, seed=params.seed + j) for j in range(n)]
