"""Engine log-probabilities -> the OpenAI shapes of completions and chat."""

from __future__ import annotations

from kvserve.api.openai.chat_protocol import (
    ChatCompletionLogProb,
    ChatCompletionLogProbs,
    ChatCompletionLogProbsContent,
)
from kvserve.api.openai.completion_protocol import CompletionLogProbs
from kvserve.outputs import PositionLogprobs, TokenLogprob


def token_string(logprob: TokenLogprob, as_token_ids: bool) -> str:
    return f"token_id:{logprob.token_id}" if as_token_ids else logprob.decoded_token


def completion_logprobs(
    positions: list[PositionLogprobs | None],
    num_top: int,
    text_offset: int,
    as_token_ids: bool,
    first_prompt_token: str = "",
) -> CompletionLogProbs:
    """Legacy completions logprobs: up to num_top + 1 alternatives per token (the top ones and the sampled
    one); a None position (the first prompt token, `first_prompt_token` its text) has no logprob."""
    out = CompletionLogProbs()
    for position in positions:
        if position is None:
            out.tokens.append(first_prompt_token)
            out.token_logprobs.append(None)
            out.top_logprobs.append(None)
            out.text_offset.append(text_offset)
            text_offset += len(first_prompt_token)
            continue
        token = token_string(position.sampled, as_token_ids)
        out.tokens.append(token)
        out.token_logprobs.append(max(position.sampled.logprob, -9999.0))
        top = {token_string(t, as_token_ids): max(t.logprob, -9999.0) for t in position.top[:num_top]}
        top.setdefault(token, max(position.sampled.logprob, -9999.0))
        out.top_logprobs.append(top)
        out.text_offset.append(text_offset)
        text_offset += len(token)
    return out


def chat_logprobs(positions: list[PositionLogprobs], num_top: int, as_token_ids: bool) -> ChatCompletionLogProbs:
    """Chat logprobs: each token with its bytes and exactly num_top alternatives."""
    content = []
    for position in positions:
        token = token_string(position.sampled, as_token_ids)
        content.append(
            ChatCompletionLogProbsContent(
                token=token,
                logprob=max(position.sampled.logprob, -9999.0),
                bytes=list(token.encode("utf-8", errors="replace")),
                top_logprobs=[
                    ChatCompletionLogProb(
                        token=(text := token_string(t, as_token_ids)),
                        logprob=max(t.logprob, -9999.0),
                        bytes=list(text.encode("utf-8", errors="replace")),
                    )
                    for t in position.top[:num_top]
                ],
            )
        )
    return ChatCompletionLogProbs(content=content)
