"""Tokenize a prompt or a chat conversation (as the chat route renders it), and detokenize ids."""

from __future__ import annotations

import orjson
from quart import Blueprint, Response

from kvserve.api.context import ServingContext
from kvserve.api.json_body import parse_json_body
from kvserve.api.openai.chat import chat_template_for
from kvserve.api.openai.sampling import require
from kvserve.api.tokenize.protocol import DetokenizeRequest, TokenizeRequest
from kvserve.errors import InvalidRequestError
from kvserve.text.chat_template import ChatTemplateError

bp = Blueprint("tokenize", __name__)


def _json(payload: dict) -> Response:
    return Response(orjson.dumps(payload), content_type="application/json")


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
        require(
            not (body.continue_final_message and body.add_generation_prompt),
            "Cannot set both `continue_final_message` and `add_generation_prompt` to True.",
            "continue_final_message",
        )
        try:
            text = chat_template_for(body, ctx).render(
                body.messages,
                add_generation_prompt=body.add_generation_prompt,
                continue_final_message=body.continue_final_message,
                tools=body.tools,
                documents=body.documents,
                chat_template_kwargs=body.chat_template_kwargs,
            )
        except ChatTemplateError as e:
            raise InvalidRequestError(str(e), "messages") from None
        add_special = bool(body.add_special_tokens)
    else:
        text = body.prompt
        add_special = body.add_special_tokens is not False
    token_ids = tokenizer.encode(text, add_special_tokens=add_special)
    token_strs = [tokenizer.id_to_token(t) for t in token_ids] if body.return_token_strs else None
    return _json(
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
    return _json({"prompt": ctx.engine.tokenizer.decode(body.tokens, skip_special_tokens=False)})
