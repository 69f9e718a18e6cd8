"""TokenizerActor: text -> token ids, validation against the model's limits, then hand-off.

It also forwards aborts, so an abort always reaches the scheduler after the request it cancels.
"""

from __future__ import annotations

from kvserve.actors.base import Actor
from kvserve.errors import ErrorInfo, InvalidRequestError
from kvserve.messages import AbortRequest, AddRequest, RegisterRequest, RequestFailed, TokenizeRequest
from kvserve.tokenizer import Tokenizer


class TokenizerActor(Actor):
    name = "tokenizer"

    def __init__(
        self,
        tokenizer: Tokenizer,
        max_model_len: int,
        vocab_size: int,
        eos_token_ids: tuple[int, ...],
        scheduler: Actor,
        detokenizer: Actor,
    ) -> None:
        super().__init__()
        self.tokenizer = tokenizer
        self.max_model_len = max_model_len
        self.vocab_size = vocab_size
        self.eos_token_ids = eos_token_ids
        self.scheduler = scheduler
        self.detokenizer = detokenizer
        self.handles(TokenizeRequest, self.on_tokenize)
        self.handles(AbortRequest, self.scheduler.send)

    def on_tokenize(self, request: TokenizeRequest) -> None:
        try:
            token_ids = self._prompt_token_ids(request)
            max_tokens = self._max_tokens(request, len(token_ids))
        except InvalidRequestError as e:
            self.detokenizer.send(RequestFailed(request.request_id, ErrorInfo.of(e)))
            return
        self.detokenizer.send(RegisterRequest(request.request_id, token_ids, request.params))
        self.scheduler.send(
            AddRequest(
                request_id=request.request_id,
                prompt_token_ids=token_ids,
                params=request.params,
                max_tokens=max_tokens,
                eos_token_ids=self.eos_token_ids,
                arrival_time=request.arrival_time,
                priority=request.priority,
                cache_salt=request.cache_salt or "",
            )
        )

    def _prompt_token_ids(self, request: TokenizeRequest) -> list[int]:
        if request.prompt_token_ids is not None:
            token_ids = list(request.prompt_token_ids)
            bad = [t for t in token_ids if not 0 <= t < self.vocab_size]
            if bad:
                raise InvalidRequestError(
                    f"Token id(s) {bad[:10]} out of vocabulary (vocabulary size {self.vocab_size})", "prompt"
                )
        else:
            token_ids = self.tokenizer.encode(request.prompt or "", request.add_special_tokens)
        if not token_ids:
            raise InvalidRequestError("The prompt is empty: it must contain at least one token.", "prompt")
        return self._truncate(request, token_ids)

    def _truncate(self, request: TokenizeRequest, token_ids: list[int]) -> list[int]:
        keep = request.truncate_prompt_tokens
        if keep is None:
            return token_ids
        max_input = self.max_model_len - (request.params.max_tokens or 1)
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
        return token_ids[-keep:] if request.truncation_side == "left" else token_ids[:keep]

    def _max_tokens(self, request: TokenizeRequest, num_prompt_tokens: int) -> int:
        """vLLM's checks: the prompt plus the requested output must fit the context."""
        asked = request.params.max_tokens
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
