"""An ASGI wrapper that turns a cancelled HTTP call into a client disconnect the app sees.

When a client goes away, Ray's proxy cancels the request, and the replica may cancel the app's ASGI call
before it delivers `http.disconnect` through `receive`. Quart ends a request only on that message: its
`__call__` waits on its own tasks with `asyncio.wait`, which does not pass a cancellation on, so a cancelled
call would leave the route (and the engine request, with its KV blocks) running to the end. Here the call
runs shielded; a cancellation makes the app's pending `receive()` answer `http.disconnect` (the route then
aborts its request, as under hypercorn), and the wrapper waits for the app to finish before it re-raises.
"""

from __future__ import annotations

import asyncio

from starlette.types import Message, Receive, Scope, Send

from kvserve.integrations.ray_serve.http_middleware import HttpMiddleware

# How long a cancelled call waits for the app to unwind (abort its request) before leaving it behind.
UNWIND_TIMEOUT_S = 5.0


class DisconnectOnCancel(HttpMiddleware):
    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        disconnected = asyncio.Event()

        async def receive_or_disconnect() -> Message:
            message = asyncio.ensure_future(receive())
            gone = asyncio.ensure_future(disconnected.wait())
            try:
                await asyncio.wait({message, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:  # also when the app stops listening (it cancels its receiver once a response is sent)
                gone.cancel()
                if not message.done():
                    message.cancel()
            if message.done() and not message.cancelled():
                return message.result()
            return {"type": "http.disconnect"}

        call = asyncio.ensure_future(self.app(scope, receive_or_disconnect, send))
        try:
            await asyncio.shield(call)
        except asyncio.CancelledError:
            disconnected.set()
            done, _ = await asyncio.wait({call}, timeout=UNWIND_TIMEOUT_S)
            if call in done and not call.cancelled():
                call.exception()  # the client is gone: an error now has no one to answer
            raise
