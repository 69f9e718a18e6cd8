"""Benchmark prompts, sized with the served model's tokenizer.

- `random`: synthetic text of an exact token length (`vllm bench serve`'s random dataset: per-request
  lengths drawn uniformly within ±range_ratio, text from runs of consecutive token ids).
- `sharegpt`: a ShareGPT JSON file; the first turn is the prompt and the second turn's token count the
  output length, with vLLM's length filters.
- `prefix_repetition`: groups of prompts that share a prefix, for prefix-cache runs.

A prompt's `prompt_len` is the number of tokens /v1/completions will count for it, special tokens the
tokenizer adds (a BOS) included; the usage chunk's prompt_tokens replaces it once the server answers.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from kvserve.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

DATASETS = ("random", "sharegpt", "prefix_repetition")

# Decoding ids and encoding the text again rarely needs more than two rounds to settle on a length.
_MAX_FIT_ROUNDS = 10

# vLLM's ShareGPT filters: drop trivially short prompts or answers, and conversations too long for the
# context lengths the dataset is used with.
_SHAREGPT_MIN_LEN = 4
_SHAREGPT_MAX_PROMPT_LEN = 1024
_SHAREGPT_MAX_TOTAL_LEN = 2048


@dataclass(frozen=True, slots=True)
class SampleRequest:
    prompt: str
    prompt_len: int
    output_len: int


def load_tokenizer(source: str) -> Tokenizer:
    """A tokenizer directory as is; a .gguf file or a Hugging Face repo id is found the way the server
    finds its model, so the default source (the server's model root) tokenizes as the server does."""
    path = Path(source).expanduser()
    if path.is_dir():
        return Tokenizer.from_directory(path)
    from kvserve.model.loader import resolve_model_dir  # imports torch: only for non-directory sources

    return Tokenizer.from_directory(resolve_model_dir(source))


def num_special_tokens(tokenizer: Tokenizer) -> int:
    """Tokens encode() adds around any text (a BOS, say): the server counts them in prompt_tokens."""
    return len(tokenizer.encode("", add_special_tokens=True)) - len(tokenizer.encode("", add_special_tokens=False))


def _text_token_ids(tokenizer: Tokenizer) -> np.ndarray:
    """Ids that decode to valid text on their own. Special tokens would be dropped by decode() or change the
    prompt's meaning; lone bytes of multi-byte characters decode to U+FFFD, which encodes to other tokens
    and keeps a prompt's length from settling."""
    ids = sorted(set(range(tokenizer.vocab_size)) - tokenizer.all_special_ids)
    texts = tokenizer.backend.decode_batch([[i] for i in ids])
    return np.array([i for i, text in zip(ids, texts) if text and "\ufffd" not in text], dtype=np.int64)


def _fit_text(
    tokenizer: Tokenizer, token_ids: list[int], num_tokens: int, fill: Callable[[int], list[int]], lead: str = ""
) -> tuple[str, int]:
    """Text made from `token_ids` that adds exactly `num_tokens` tokens when appended to `lead`, and the
    count it reached (short of exact only if the rounds run out).

    Decoding ids and encoding the text again does not give the same ids back: merges differ across the
    old token boundaries and partial UTF-8 bytes become U+FFFD. So the text's own ids are trimmed or topped
    up with `fill` and the round trip repeated until the count is right.
    """
    lead_count = len(tokenizer.encode(lead, add_special_tokens=False))
    ids = list(token_ids)
    for attempt in range(_MAX_FIT_ROUNDS):
        text = tokenizer.decode(ids)
        count = len(tokenizer.encode(lead + text, add_special_tokens=False)) - lead_count
        if count == num_tokens:
            break
        ids = tokenizer.encode(text, add_special_tokens=False)
        if count < num_tokens:
            ids += fill(num_tokens - count)
        else:
            # Trimming alone can cycle (the cut ids re-encode one token too long every time); replacing a
            # growing tail of the trimmed ids with fresh tokens breaks the cycle.
            trimmed_len = max(0, len(ids) - (count - num_tokens))
            kept = max(0, trimmed_len - attempt)
            ids = ids[:kept] + fill(trimmed_len - kept)
    return text, count


def _warn_misses(name: str, requests: list[SampleRequest], targets: list[int]) -> None:
    misses = sum(r.prompt_len != t for r, t in zip(requests, targets))
    if misses:
        logger.warning(
            "%s: %d of %d prompts missed their token length (their real length is used)", name, misses, len(requests)
        )


def random_requests(
    tokenizer: Tokenizer, num_requests: int, input_len: int, output_len: int, range_ratio: float, seed: int
) -> list[SampleRequest]:
    if not 0.0 <= range_ratio < 1.0:
        raise ValueError(f"--random-range-ratio must be in [0, 1), got {range_ratio}")
    num_special = num_special_tokens(tokenizer)
    text_len = max(0, input_len - num_special)
    input_low, input_high = math.floor(text_len * (1 - range_ratio)), math.ceil(text_len * (1 + range_ratio))
    if input_low < 1:
        raise ValueError(
            f"--random-input-len {input_len} leaves no room for text after {num_special} special token(s) "
            f"at --random-range-ratio {range_ratio}"
        )
    output_low = max(1, math.floor(output_len * (1 - range_ratio)))
    output_high = max(1, math.ceil(output_len * (1 + range_ratio)))
    rng = np.random.default_rng(seed)
    input_lens = rng.integers(input_low, input_high + 1, size=num_requests)
    output_lens = rng.integers(output_low, output_high + 1, size=num_requests)
    pool = _text_token_ids(tokenizer)
    # Distinct first tokens (while the vocabulary has enough), so no two prompts share a prefix the server's
    # cache could reuse; vLLM's random offsets can collide.
    starts = rng.choice(len(pool), size=num_requests, replace=num_requests > len(pool))

    def fill(n: int) -> list[int]:
        return pool[rng.integers(0, len(pool), size=n)].tolist()

    requests = []
    for i in range(num_requests):
        run = pool[(starts[i] + np.arange(input_lens[i])) % len(pool)].tolist()
        text, count = _fit_text(tokenizer, run, int(input_lens[i]), fill)
        requests.append(SampleRequest(text, num_special + count, int(output_lens[i])))
    _warn_misses("random", requests, [num_special + int(n) for n in input_lens])
    return requests


def _sharegpt_keeps(prompt_len: int, output_len: int, check_output: bool) -> bool:
    return (
        prompt_len >= _SHAREGPT_MIN_LEN
        and (output_len >= _SHAREGPT_MIN_LEN or not check_output)
        and prompt_len <= _SHAREGPT_MAX_PROMPT_LEN
        and prompt_len + output_len <= _SHAREGPT_MAX_TOTAL_LEN
    )


def sharegpt_requests(
    tokenizer: Tokenizer, path: str, num_requests: int, seed: int, output_len: int | None
) -> list[SampleRequest]:
    """`output_len` replaces each answer's length (and its minimum-length filter) when given."""
    with open(path, encoding="utf-8") as f:
        conversations = [entry for entry in json.load(f) if len(entry.get("conversations", [])) >= 2]
    rng = random.Random(seed)
    rng.shuffle(conversations)
    requests: list[SampleRequest] = []
    for entry in conversations:
        if len(requests) == num_requests:
            break
        prompt, answer = entry["conversations"][0]["value"], entry["conversations"][1]["value"]
        prompt_len = len(tokenizer.encode(prompt))
        answer_len = len(tokenizer.encode(answer)) if output_len is None else output_len
        if _sharegpt_keeps(prompt_len, answer_len, check_output=output_len is None):
            requests.append(SampleRequest(prompt, prompt_len, answer_len))
    if not requests:
        raise ValueError(f"no conversation in {path} passes the ShareGPT length filters")
    # Like vLLM, a file with too few usable conversations is topped up with repeats.
    requests += [rng.choice(requests) for _ in range(num_requests - len(requests))]
    return requests


def prefix_repetition_requests(
    tokenizer: Tokenizer,
    num_requests: int,
    prefix_len: int,
    suffix_len: int,
    num_prefixes: int,
    output_len: int,
    seed: int,
) -> list[SampleRequest]:
    """num_prefixes groups of num_requests // num_prefixes prompts (vLLM's sizing: the remainder is
    dropped), each prompt its group's prefix then its own suffix, shuffled.

    A suffix whose first characters would merge with the prefix's last token is redrawn, so every prompt
    of a group starts with exactly the prefix's tokens: the property a prefix cache keys on.
    """
    prompts_per_prefix = num_requests // num_prefixes
    if prompts_per_prefix == 0:
        raise ValueError(
            f"--num-prompts ({num_requests}) must be at least --prefix-repetition-num-prefixes ({num_prefixes})"
        )
    rng = np.random.default_rng(seed)
    pool = _text_token_ids(tokenizer)

    def fill(n: int) -> list[int]:
        return pool[rng.integers(0, len(pool), size=n)].tolist()

    num_special = num_special_tokens(tokenizer)
    requests, targets = [], []
    for _ in range(num_prefixes):
        prefix, _ = _fit_text(tokenizer, fill(prefix_len), prefix_len, fill)
        prefix_ids = tokenizer.encode(prefix, add_special_tokens=False)
        for _ in range(prompts_per_prefix):
            for _ in range(_MAX_FIT_ROUNDS):
                suffix, count = _fit_text(tokenizer, fill(suffix_len), suffix_len, fill, lead=prefix)
                if tokenizer.encode(prefix + suffix, add_special_tokens=False)[: len(prefix_ids)] == prefix_ids:
                    break
            requests.append(SampleRequest(prefix + suffix, num_special + len(prefix_ids) + count, output_len))
            targets.append(num_special + prefix_len + suffix_len)
    _warn_misses("prefix_repetition", requests, targets)
    order = rng.permutation(len(requests))
    return [requests[i] for i in order]


def sample_requests(args: argparse.Namespace, tokenizer: Tokenizer) -> list[SampleRequest]:
    if args.dataset_name == "random":
        return random_requests(
            tokenizer,
            args.num_prompts,
            args.random_input_len,
            args.random_output_len,
            args.random_range_ratio,
            args.seed,
        )
    if args.dataset_name == "sharegpt":
        if args.dataset_path is None:
            raise ValueError("--dataset-name sharegpt needs --dataset-path (a ShareGPT JSON file)")
        return sharegpt_requests(tokenizer, args.dataset_path, args.num_prompts, args.seed, args.sharegpt_output_len)
    if args.dataset_name == "prefix_repetition":
        return prefix_repetition_requests(
            tokenizer,
            args.num_prompts,
            args.prefix_repetition_prefix_len,
            args.prefix_repetition_suffix_len,
            args.prefix_repetition_num_prefixes,
            args.prefix_repetition_output_len,
            args.seed,
        )
    raise ValueError(f"unknown dataset {args.dataset_name!r}; choose from {', '.join(DATASETS)}")
