"""Whether a served model can run a request: asked once per request, before it is admitted, in the engine's
process (the model itself may live in tensor-parallel worker processes)."""

from __future__ import annotations

from torch import nn

from kvserve.model.model_config import ModelConfig
from kvserve.model.registry import ModelTasks
from kvserve.request import EngineRequest, PoolingParams


def check_request(
    request: EngineRequest,
    tasks: ModelTasks,
    model_config: ModelConfig,
    structured_outputs: bool,
    model: nn.Module | None,
) -> None:
    """Raises ValueError when the model cannot serve `request` (a task, pooling kind or option it lacks).
    structured_outputs: whether grammars are available; model: the model in this process, which checks an
    encoder input's shape (None where the model runs elsewhere: no encoder inputs are served then)."""
    reason = (
        tasks.unsupported(request)
        or _unsupported_pooling(request.pooling, model_config)
        or _unsupported_encoder_input(request, model)
    )
    structured = request.sampling is not None and request.sampling.structured is not None
    if structured and not structured_outputs:
        reason = "structured outputs are not available: the tokenizer could not be read as a grammar vocabulary"
    if reason is not None:
        raise ValueError(reason)


def _unsupported_pooling(pooling: PoolingParams | None, c: ModelConfig) -> str | None:
    if pooling is None:
        return None
    if pooling.dimensions is not None and pooling.dimensions > c.hidden_size:
        return f"dimensions {pooling.dimensions} exceeds the model's hidden size {c.hidden_size}"
    if pooling.token_ids is not None and not all(0 <= t < c.vocab_size for t in pooling.token_ids):
        return f"token_ids must be in [0, {c.vocab_size})"
    return None


def _unsupported_encoder_input(request: EngineRequest, model: nn.Module | None) -> str | None:
    # An encoder-decoder model says what its encoder takes; a wrong shape must not reach a step.
    if request.encoder_input is None:
        return None
    if model is None:
        return "this model takes no encoder input"
    return model.unsupported_encoder_input(request.encoder_input)
