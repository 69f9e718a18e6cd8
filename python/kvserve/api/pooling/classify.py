"""POST /classify: class probabilities (or logits, use_activation false) and the argmax label per input."""

from __future__ import annotations

from quart import Blueprint, Response

from kvserve.api.context import ServingContext
from kvserve.api.json_body import parse_json_body
from kvserve.api.pooling.encode import EncodeOptions, encode, request_prompts
from kvserve.api.pooling.protocol import ClassificationData, ClassificationRequest, ClassificationResponse
from kvserve.api.responses import json_response
from kvserve.model.encoders.bert import labels_of
from kvserve.request import PoolingParams

bp = Blueprint("pooling_classify", __name__)


@bp.post("/classify")
async def create_classification() -> Response:
    return json_response(await classify(await parse_json_body(ClassificationRequest)))


async def classify(body: ClassificationRequest) -> ClassificationResponse:
    ctx = ServingContext.current()
    model = ctx.model_name(body.model)
    prompts, add_special_tokens = request_prompts(body, ctx)
    params = PoolingParams(kind="classify", activation=body.use_activation is not False)
    pooled = await encode(ctx, prompts, params, EncodeOptions.of(body, add_special_tokens))
    labels = labels_of(ctx.engine.model_config)
    data = [
        ClassificationData(index=i, label=labels[int(probs.argmax())], probs=probs.tolist(), num_classes=len(probs))
        for i, probs in enumerate(pooled.values)
    ]
    return ClassificationResponse(model=model, data=data, usage=pooled.usage)
