"""POST /collective_rpc (with --enable-dev-endpoints): calls a method of the model runner, on its thread
between steps, and returns each worker's result: {"method", "args", "kwargs", "timeout"} -> {"results"}.

Dangerous by design (it runs code paths of the runner on request); methods the scheduler drives (steps,
sleep) are refused, so a call cannot break a step in flight.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import Field
from quart import Blueprint, Response

from kvserve.api.context import ServingContext
from kvserve.api.json_body import parse_json_body
from kvserve.api.openai.protocol_base import RequestModel, ResponseModel
from kvserve.api.responses import json_response
from kvserve.errors import KvserveError

bp = Blueprint("admin_collective_rpc", __name__)


class CollectiveRpcRequest(RequestModel):
    method: str
    args: list[Any] = Field(default_factory=list)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    timeout: float | None = Field(default=None, gt=0)


class CollectiveRpcResponse(ResponseModel):
    results: list[Any]


class RpcTimeoutError(KvserveError):
    status_code = 504
    error_type = "TimeoutError"


def _jsonable(result: object) -> object:
    """vLLM's rule: None, dicts and lists as they are, anything else as its string."""
    return result if result is None or isinstance(result, dict | list | str | int | float | bool) else str(result)


@bp.post("/collective_rpc")
async def collective_rpc() -> Response:
    body = await parse_json_body(CollectiveRpcRequest)
    engine = ServingContext.current().engine
    try:
        results = await asyncio.wait_for(engine.collective_rpc(body.method, body.args, body.kwargs), body.timeout)
    except TimeoutError:
        raise RpcTimeoutError(f"collective_rpc {body.method!r} did not finish in {body.timeout} s.") from None
    return json_response(CollectiveRpcResponse(results=[_jsonable(r) for r in results]))
