"""Which APIs the served model answers, and the route gate that refuses the others as vLLM does (501).

A server runs one model with one runner: `generate` answers the text-generation APIs, `pooling` the
pooling ones that its pooled rows support. Embedding models (pooling "embed") serve embeddings and score /
rerank by cosine similarity; token-embedding models (ColBERT, pooling "all") serve score / rerank by
MaxSim; classifiers serve classification, and score / rerank as cross-encoders when they have one label.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import request

from kvserve.api.context import ServingContext
from kvserve.api.frontend.validation import NotImplementedFeature
from kvserve.model.encoders.bert import num_labels_of

if TYPE_CHECKING:
    from kvserve.engine import AsyncEngine

GENERATE, EMBED, TOKEN_EMBED, CLASSIFY, SCORE, POOLING = (
    "generate",
    "embed",
    "token_embed",
    "classify",
    "score",
    "pooling",
)

# Route -> (the API it belongs to, vLLM's words when the model does not serve it).
_ROUTES: dict[str, tuple[str, str]] = {
    "/v1/chat/completions": (GENERATE, "Chat Completions API"),
    "/v1/completions": (GENERATE, "Completions API"),
    "/v1/messages": (GENERATE, "Messages API"),
    "/v1/messages/count_tokens": (GENERATE, "Messages API"),
    "/v1/embeddings": (EMBED, "Embeddings API"),
    "/v1/embed": (EMBED, "Embeddings API"),
    "/v2/embed": (EMBED, "Embeddings API"),
    "/classify": (CLASSIFY, "Classification API"),
    "/score": (SCORE, "Score API"),
    "/v1/score": (SCORE, "Score API"),
    "/rerank": (SCORE, "Rerank API"),
    "/v1/rerank": (SCORE, "Rerank API"),
    "/v2/rerank": (SCORE, "Rerank API"),
    "/pooling": (POOLING, "Pooling API"),
}


def served_apis(engine: AsyncEngine) -> frozenset[str]:
    tasks = engine.model_tasks
    if tasks.runner == "generate":
        return frozenset({GENERATE})
    apis = {POOLING}
    if "embed" in tasks.pooling_kinds:
        apis |= {SCORE, TOKEN_EMBED if tasks.default_pooling == "all" else EMBED}
    if "classify" in tasks.pooling_kinds:
        apis.add(CLASSIFY)
        if num_labels_of(engine.model_config) == 1:
            apis.add(SCORE)
    return frozenset(apis)


async def refuse_unserved_routes() -> None:
    """before_request: a matched route of an API the model does not serve is a 501 naming that API."""
    rule = request.url_rule
    if rule is None or rule.rule not in _ROUTES:
        return
    api, name = _ROUTES[rule.rule]
    if api not in served_apis(ServingContext.current().engine):
        raise NotImplementedFeature(f"The model does not support {name}")
