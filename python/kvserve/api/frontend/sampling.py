"""Any API family's sampling fields -> engine SamplingParams: defaults, bounds and their 400s.

Defaults resolve request > the model's generation_config.json (--generation-config) > OpenAI's. Error
messages name fields by their OpenAI/vLLM names, which every family's clients of this server share.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from kvserve.api.context import ServingContext
from kvserve.api.frontend.validation import require
from kvserve.errors import InvalidRequestError
from kvserve.sampling_params import GREEDY_TEMPERATURE, SamplingParams
from kvserve.structured.spec import GrammarSpec
from kvserve.tokenizer import Tokenizer

MAX_STOP_STRINGS = 4
MAX_N = 128
MAX_BAD_WORDS = 128
MAX_ALLOWED_TOKEN_IDS = 1 << 16

_OPENAI_DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "min_p": 0.0, "repetition_penalty": 1.0}


@dataclasses.dataclass(frozen=True, slots=True)
class SamplingFields:
    """What a request asks of sampling and stopping, as its API family's body said it, before defaults.

    Each family fills this from its own body; None means "not given" (the five fields of _OPENAI_DEFAULTS
    then come from the model's generation config, then OpenAI's defaults).
    """

    # Defaulted when not given: the model's generation config, then OpenAI's.
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # -1 or 0: disabled
    min_p: float | None = None
    repetition_penalty: float | None = None
    # Checked against the server's limits and the vocabulary, then passed on.
    n: int = 1
    max_tokens: int | None = None  # None: up to the context length
    min_tokens: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    allowed_token_ids: tuple[int, ...] | None = None
    logprobs: int | None = None  # top-k per generated token (0: the sampled token's only)
    prompt_logprobs: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    # Translated to token ids.
    logit_bias: Mapping[str, float] | None = None  # JSON object keys: token ids as strings
    bad_words: tuple[str, ...] = ()
    # Output options, passed on as given.
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    skip_special_tokens: bool = True
    spaces_between_special_tokens: bool = True
    structured: GrammarSpec | None = None  # the output constraint (compiled by the engine before admission)


def resolve_defaults(fields: SamplingFields, generation_defaults: Mapping[str, object]) -> dict[str, float]:
    return {
        name: value if (value := getattr(fields, name)) is not None else generation_defaults.get(name, default)
        for name, default in _OPENAI_DEFAULTS.items()
    }


def stop_strings(strings: tuple[str, ...]) -> tuple[str, ...]:
    require(
        len(strings) <= MAX_STOP_STRINGS,
        f"stop accepts at most {MAX_STOP_STRINGS} sequences, got {len(strings)}.",
        "stop",
    )
    require(all(strings), "stop strings must not be empty.", "stop")
    return strings


def logit_bias(bias: Mapping[str, float] | None, vocab_size: int) -> tuple[tuple[int, float], ...]:
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


def bad_words_token_ids(words: tuple[str, ...], tokenizer: Tokenizer) -> tuple[tuple[int, ...], ...]:
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


def _check_logprob_counts(fields: SamplingFields, max_logprobs: int) -> None:
    for name, value in (("logprobs", fields.logprobs), ("prompt_logprobs", fields.prompt_logprobs)):
        if value is not None:
            require(value >= 0, f"`{name}` must be a non-negative value, got {value}.", name)
            require(
                value <= max_logprobs,
                f"Requested {'sample' if name == 'logprobs' else 'prompt'} logprobs of {value}, which is greater "
                f"than max allowed: {max_logprobs}",
                name,
            )


def _check_token_ids(fields: SamplingFields, vocab_size: int) -> None:
    allowed = fields.allowed_token_ids
    if allowed is not None:
        require(bool(allowed), "allowed_token_ids is not allowed to be empty.", "allowed_token_ids")
        require(len(allowed) <= MAX_ALLOWED_TOKEN_IDS, "allowed_token_ids is too long.", "allowed_token_ids")
        require(
            all(0 <= t < vocab_size for t in allowed),
            "allowed_token_ids contains out-of-vocab token id!",
            "allowed_token_ids",
        )
    require(
        all(0 <= t < vocab_size for t in fields.stop_token_ids),
        "stop_token_ids contains out-of-vocab token id!",
        "stop_token_ids",
    )


def sampling_params(fields: SamplingFields, ctx: ServingContext) -> SamplingParams:
    engine = ctx.engine
    vocab_size = engine.model_config.vocab_size
    generation_defaults = engine.model_config.generation_defaults
    defaults = resolve_defaults(fields, generation_defaults)
    max_tokens = fields.max_tokens
    if generation_defaults.get("max_new_tokens") is not None:  # vLLM: the model's limit caps any request
        max_tokens = min(v for v in (max_tokens, generation_defaults["max_new_tokens"]) if v is not None)
    require(fields.n >= 1, f"n must be at least 1, got {fields.n}.", "n")
    require(fields.n <= MAX_N, f"n must be at most {MAX_N}, got {fields.n}.", "n")
    temperature = defaults["temperature"]
    require(0.0 <= temperature <= 2.0, f"temperature must be in [0, 2], got {temperature}.", "temperature")
    require(
        not (fields.n > 1 and temperature < GREEDY_TEMPERATURE),
        f"n must be 1 when using greedy sampling, got {fields.n}.",
        "n",
    )
    _check_logprob_counts(fields, ctx.settings.max_logprobs)
    _check_token_ids(fields, vocab_size)
    require(max_tokens is None or max_tokens >= 1, f"max_tokens must be at least 1, got {max_tokens}.", "max_tokens")
    require(
        max_tokens is None or fields.min_tokens <= max_tokens,
        f"min_tokens must be less than or equal to max_tokens={max_tokens}, got {fields.min_tokens}.",
        "min_tokens",
    )
    try:
        return SamplingParams(
            max_tokens=max_tokens,
            min_tokens=fields.min_tokens,
            temperature=temperature,
            top_p=defaults["top_p"],
            top_k=0 if defaults["top_k"] == -1 else defaults["top_k"],
            min_p=defaults["min_p"],
            seed=fields.seed,
            stop=stop_strings(fields.stop),
            stop_token_ids=fields.stop_token_ids,
            ignore_eos=fields.ignore_eos,
            include_stop_str_in_output=fields.include_stop_str_in_output,
            skip_special_tokens=fields.skip_special_tokens,
            spaces_between_special_tokens=fields.spaces_between_special_tokens,
            logprobs=fields.logprobs,
            prompt_logprobs=fields.prompt_logprobs,
            presence_penalty=fields.presence_penalty or 0.0,
            frequency_penalty=fields.frequency_penalty or 0.0,
            repetition_penalty=defaults["repetition_penalty"],
            logit_bias=logit_bias(fields.logit_bias, vocab_size),
            allowed_token_ids=fields.allowed_token_ids,
            bad_words_token_ids=bad_words_token_ids(fields.bad_words, engine.tokenizer),
            structured=fields.structured,
        )
    except ValueError as e:
        message = str(e)
        raise InvalidRequestError(message, message.split(" ", 1)[0].strip("`")) from None


def per_choice_params(params: SamplingParams, n: int) -> list[SamplingParams]:
    """n samples of one prompt: a seeded request gives choice j the seed + j, so the choices differ."""
    if params.seed is None:
        return [params] * n
    return [dataclasses.replace(params, seed=params.seed + j) for j in range(n)]
