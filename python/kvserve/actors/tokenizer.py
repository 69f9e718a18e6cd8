"""TokenizerActor: an EngineRequest -> a PreparedRequest (token ids, validated against the model's limits).

It also forwards aborts, so an abort always reaches the scheduler after the request it cancels.
"""

from __future__ import annotations

import operator
from collections.abc import Callable

from kvserve.actors.base import Actor
from kvserve.errors import ErrorInfo, InvalidRequestError
from kvserve.messages import AbortRequest, RequestFailed
from kvserve.request import EngineRequest, PreparedRequest, TextPair
from kvserve.tokenizer import Tokenizer

# Raises ValueError when the model cannot serve the request (its task, pooling kind or options); a pure
# function of the model's configuration, so calling it here keeps bad requests away from the runner.
RequestCheck = Callable[[EngineRequest], None]


class TokenizerActor(Actor):
    name = "tokenizer"

    def __init__(
        self,
        tokenizer: Tokenizer,
        max_model_len: int,
        vocab_size: int,
        eos_token_ids: tuple[int, ...],
        check_request: RequestCheck,
        scheduler: Actor,
        detokenizer: Actor,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self.eos_token_ids = eos_token_ids
        self.check_request = check_request
        self.scheduler = scheduler
        self.detokenizer = detokenizer
        self.handles(EngineRequest, self.on_request)
        self.handles(AbortRequest, self.scheduler.send)

    def on_request(self, request: EngineRequest) -> None:
        try:
            prepared = self.prepare(request)
        except InvalidRequestError as e:
            self.detokenizer.send(RequestFailed(request.request_id, ErrorInfo.of(e)))
            return
        self.detokenizer.send(prepared)  # registers the request's text state before its first token
        self.scheduler.send(prepared)

    def prepare(self, request: EngineRequest) -> PreparedRequest:
        try:
            self.check_request(request)
        except ValueError as e:
            raise InvalidRequestError(str(e), "model") from None
        token_ids, token_type_ids = self._prompt_tokens(request)
        if request.sampling is None:
            if len(token_ids) > self.max_model_len:
                raise InvalidRequestError(
                    f"This model's maximum context length is {self.max_model_len} tokens. However, you requested "
                    f"{len(token_ids)} tokens in the input. Please reduce the length of the input.",
                    "input",
                )
            max_tokens = 0
        else:
            max_tokens = self._max_tokens(request, len(token_ids))
        return PreparedRequest(request, token_ids, max_tokens, self.eos_token_ids, token_type_ids)

    def _prompt_tokens(self, request: EngineRequest) -> tuple[list[int], list[int] | None]:
        """The prompt's token ids, truncated as asked, and a text pair's token type ids (cut alike)."""
        if isinstance(request.prompt, TextPair):
            token_ids, type_ids = self.tokenizer.encode_pair(request.prompt.first, request.prompt.second)
            token_ids = self._truncate(request, token_ids)
            if request.truncation is not None and request.truncation.side == "left":
                return token_ids, type_ids[len(type_ids) - len(token_ids) :]
            return token_ids, type_ids[: len(token_ids)]
        return self._prompt_token_ids(request), None

    def _prompt_token_ids(self, request: EngineRequest) -> list[int]:
        if isinstance(request.prompt, str):
            token_ids = self.tokenizer.encode(request.prompt, request.add_special_tokens)
        else:
            try:
                token_ids = [operator.index(t) for t in request.prompt]
            except TypeError:
                raise InvalidRequestError("Prompt token ids must be integers.", "prompt") from None
            bad = [t for t in token_ids if not 0 <= t < self.vocab_size]
            if bad:
                raise InvalidRequestError(
                    f"Token id(s) {bad[:10]} out of vocabulary (vocabulary size {self.vocab_size})", "prompt"
                )
        if not token_ids:
            raise InvalidRequestError("The prompt is empty: it must contain at least one token.", "prompt")
        return self._truncate(request, token_ids)

    def _truncate(self, request: EngineRequest, token_ids: list[int]) -> list[int]:
        if request.truncation is None:
            return token_ids
        keep = request.truncation.keep
        max_input = self.max_model_len - ((request.sampling.max_tokens or 1) if request.sampling else 0)
        if keep < 0:
            keep = max_input
        elif keep > max_input:
            raise InvalidRequestError(
                f"truncate_prompt_tokens={keep} cannot be greater than max_model_len - max_tokens = {max_input}. "
                "Please request a smaller truncation size.",
                "truncate_prompt_tokens",
            )
        if keep >= len(token_ids):
            return token_ids
        if keep == 0:
            raise InvalidRequestError("truncate_prompt_tokens=0 leaves an empty prompt.", "truncate_prompt_tokens")
        return token_ids[-keep:] if request.truncation.side == "left" else token_ids[:keep]

    def _max_tokens(self, request: EngineRequest, num_prompt_tokens: int) -> int:
        """vLLM's checks: the prompt plus the requested output must fit the context."""
        asked = request.sampling.max_tokens
        limit = self.max_model_len
        if asked is not None and asked > limit:
            raise InvalidRequestError(
                f"max_tokens={asked} cannot be greater than max_model_len={limit}. Please request fewer output tokens.",
                "max_tokens",
            )
        wanted = 1 if asked is None else asked
        if num_prompt_tokens + wanted > limit:
            raise InvalidRequestError(
                f"You passed {num_prompt_tokens} input tokens and requested {wanted} output tokens. However, the "
                f"model's context length is only {limit} tokens, resulting in a maximum input length of "
                f"{limit - wanted} tokens. Please reduce the length of the input prompt.",
                "input_tokens",
            )
        return limit - num_prompt_tokens if asked is None else asked
