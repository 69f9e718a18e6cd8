"""Grammars for the model's tokenizer (llguidance), compiled before a request is admitted.

AsyncEngine.generate awaits `compile(spec)` before the request reaches the tokenizer actor: the work runs on a
small thread pool (llguidance drops the GIL while it builds a grammar), bounded in source size, in time, and by
llguidance's own limits on grammar and lexer size. A spec that does not compile is the request's error (400);
nothing reaches the engine. Compiled grammars are kept in an LRU cache as matchers in their initial state, and
the runner takes a copy of one per request (`matcher`), which costs about a microsecond.

llguidance's view of the tokenizer (~33 MiB resident for a 49k vocabulary, ~0.4 s to build) is built on the
first structured-output request, as vLLM builds its grammar backend: a server that never gets one does not
hold it. `grammar_compiler` (engine/async_engine.py) builds one at start to check that llguidance reads the
tokenizer, and drops it.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import llguidance

from kvserve.errors import InvalidRequestError
from kvserve.structured.spec import GrammarSpec
from kvserve.tokenizer import Tokenizer

logger = logging.getLogger(__name__)

MAX_SOURCE_CHARS = 1 << 18
COMPILE_TIMEOUT_S = 10.0
CACHE_SIZE = 256
NUM_COMPILE_THREADS = 2
# JSON whitespace when it is allowed: a bounded run, so that a model cannot spin in whitespace without end.
JSON_WHITESPACE = r"[\x20\x0A\x0D\x09]{0,16}"


def grammar_text(spec: GrammarSpec) -> str:
    """llguidance's grammar for a spec (not yet checked against a tokenizer); ValueError when the spec's source
    is not what its kind says."""
    if spec.kind in ("json", "json_object"):
        if spec.disable_any_whitespace:
            options = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
        else:
            options = {"whitespace_flexible": True, "whitespace_pattern": JSON_WHITESPACE}
        schema = '{"type": "object"}' if spec.kind == "json_object" else spec.source
        return llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=options)
    if spec.kind == "regex":
        return llguidance.LLMatcher.grammar_from_regex(spec.source)
    if spec.kind == "choice":
        return llguidance.grammar_from("choice", spec.source)
    return llguidance.grammar_from("grammar", spec.source)


def ll_tokenizer(tokenizer: Tokenizer, vocab_size: int, eos_token_ids: tuple[int, ...]) -> llguidance.LLTokenizer:
    """llguidance's view of our `tokenizers` tokenizer (its JSON, no transformers). Its vocabulary covers the
    model's rows too, so masks are at least as wide as the logits; ids the tokenizer lacks are never allowed."""
    return llguidance.LLTokenizer(
        tokenizer.backend.to_str(),
        n_vocab=max(vocab_size, tokenizer.vocab_size),
        eos_token=list(eos_token_ids) or None,
    )


class GrammarCompiler:
    def __init__(
        self,
        make_tokenizer: Callable[[], llguidance.LLTokenizer],
        *,
        cache_size: int = CACHE_SIZE,
        timeout_s: float = COMPILE_TIMEOUT_S,
        max_source_chars: int = MAX_SOURCE_CHARS,
    ) -> None:
        self._make_tokenizer = make_tokenizer
        self._tokenizer: llguidance.LLTokenizer | None = None
        self._tokenizer_lock = threading.Lock()  # the compile pool's threads may ask for it at once
        self.cache_size = cache_size
        self.timeout_s = timeout_s
        self.max_source_chars = max_source_chars
        self._cache: OrderedDict[GrammarSpec, llguidance.LLMatcher] = OrderedDict()
        self._lock = threading.Lock()  # the event loop reads the cache; the pool and the runner thread fill it
        self._pool = ThreadPoolExecutor(NUM_COMPILE_THREADS, thread_name_prefix="kvserve-grammar")

    async def compile(self, spec: GrammarSpec) -> None:
        """Raises InvalidRequestError (400) when the spec does not compile within the limits."""
        if self._cached(spec) is not None:
            return
        if len(spec.source) > self.max_source_chars:
            raise InvalidRequestError(
                f"the structured output {spec.kind} is {len(spec.source)} characters long; the limit is "
                f"{self.max_source_chars}.",
                "structured_outputs",
            )
        future = asyncio.get_running_loop().run_in_executor(self._pool, self._compile, spec)
        try:
            await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except asyncio.TimeoutError:
            raise InvalidRequestError(
                f"compiling the structured output {spec.kind} took longer than {self.timeout_s:g} s.",
                "structured_outputs",
            ) from None
        except ValueError as e:
            raise InvalidRequestError(f"invalid structured output {spec.kind}: {e}", "structured_outputs") from None

    @property
    def tokenizer(self) -> llguidance.LLTokenizer:
        """llguidance's tokenizer, built on first use."""
        with self._tokenizer_lock:
            if self._tokenizer is None:
                self._tokenizer = self._make_tokenizer()
            return self._tokenizer

    def matcher(self, spec: GrammarSpec) -> llguidance.LLMatcher:
        """A matcher in its grammar's initial state, for one request. On a cache miss (an entry evicted since
        the request's compile) it compiles here; a grammar that fails then gives a matcher in llguidance's
        error state, whose mask allows only EOS: the request ends, the engine does not."""
        template = self._cached(spec)
        if template is None:
            try:
                template = self._compile(spec)
            except ValueError:
                template = llguidance.LLMatcher(self.tokenizer, "%invalid", log_level=0)
        return template.deep_copy()

    def _cached(self, spec: GrammarSpec) -> llguidance.LLMatcher | None:
        with self._lock:
            template = self._cache.get(spec)
            if template is not None:
                self._cache.move_to_end(spec)
            return template

    def _compile(self, spec: GrammarSpec) -> llguidance.LLMatcher:
        template = llguidance.LLMatcher(self.tokenizer, grammar_text(spec), log_level=0)
        if template.is_error():
            raise ValueError(_error_message(template.get_error()))
        with self._lock:
            self._cache[spec] = template
            self._cache.move_to_end(spec)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return template

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _error_message(error: str) -> str:
    """llguidance's error without the dump of its parser state that may follow it, on one line."""
    return " ".join(error.split("<state>")[0].split())[:1000]
