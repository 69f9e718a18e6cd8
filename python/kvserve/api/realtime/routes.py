"""WS /v1/realtime: a realtime transcription session per websocket (events in realtime/session.py)."""

from __future__ import annotations

import orjson
from quart import Blueprint, websocket

from kvserve.api.context import ServingContext
from kvserve.api.envelopes import ErrorReport
from kvserve.api.realtime.session import Event, RealtimeSession
from kvserve.errors import KvserveError

bp = Blueprint("realtime", __name__)


def _error(report: ErrorReport) -> Event:
    return {"type": "error", "error": report.message, "code": report.error_type}


async def _send(event: Event) -> None:
    await websocket.send(orjson.dumps(event).decode())


@bp.websocket("/v1/realtime")
async def realtime() -> None:
    await websocket.accept()
    try:
        session = RealtimeSession(ServingContext.current())
    except KvserveError as e:
        await _send(_error(ErrorReport.of(e)))
        await websocket.close(1008)
        return
    await _send(session.created())
    while True:
        raw = await websocket.receive()
        try:
            event = orjson.loads(raw)
            if not isinstance(event, dict):
                raise KvserveError("Each event is a JSON object.")
            async for out in session.handle(event):
                await _send(out)
        except orjson.JSONDecodeError as e:
            await _send({"type": "error", "error": f"The event is not valid JSON: {e}", "code": "BadRequestError"})
        except KvserveError as e:
            await _send(_error(ErrorReport.of(e)))
        except Exception as e:  # a bug answers its event with an error (logged); the session stays open
            await _send(_error(ErrorReport.unexpected(e)))
