"""Tokenize a prompt or a chat conversation (as the chat route renders it), and detokenize ids."""

from __future__ import annotations

from quart import Blueprint, Response

from kvserve.api.context import ServingContext
from kvserve.api.frontend.conversation import render_conversation
from kvserve.api.frontend.validation import require
from kvserve.api.json_body import parse_json_body
from kvserve.api.responses import json_response
from kvserve.api.tokenize.protocol import DetokenizeRequest, TokenizeRequest

bp = Blueprint("tokenize", __name__)


@bp.post("/tokenize")
async def tokenize() -> Response:
    body = await parse_json_body(TokenizeRequest)
    ctx = ServingContext.current()
    ctx.model_name(body.model)
    tokenizer = ctx.engine.tokenizer
    require(
        (body.prompt is None) != (body.messages is None), "Provide exactly one of `prompt` or `messages`.", "prompt"
    )
    if body.messages is not None:
        text = render_conversation(body.conversation(), ctx)
        add_special = bool(body.add_special_tokens)
    else:
        text = body.prompt
        add_special = body.add_special_tokens is not False
    token_ids = tokenizer.encode(text, add_special_tokens=add_special)
    token_strs = [tokenizer.id_to_token(t) for t in token_ids] if body.return_token_strs else None
    return json_response(
        {
            "count": len(token_ids),
            "max_model_len": ctx.engine.max_model_len,
            "tokens": token_ids,
            "token_strs": token_strs,
        }
    )


@bp.post("/detokenize")
async def detokenize() -> Response:
    body = await parse_json_body(DetokenizeRequest)
    ctx = ServingContext.current()
    ctx.model_name(body.model)
    vocab_size = ctx.engine.model_config.vocab_size
    bad = [t for t in body.tokens if not 0 <= t < vocab_size]
    require(not bad, f"Token id(s) {bad[:10]} out of vocabulary (vocabulary size {vocab_size})", "tokens")
    return json_response({"prompt": ctx.engine.tokenizer.decode(body.tokens, skip_special_tokens=False)})
