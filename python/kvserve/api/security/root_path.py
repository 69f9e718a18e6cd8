"""--root-path: the path prefix a proxy serves this server under. Requests arrive with the prefix (a proxy
that keeps it) or without it (one that strips it); both are routed alike: a request carrying the prefix gets
it as its ASGI root_path, which Quart strips before routing. The docs link through the prefix."""

from __future__ import annotations


class RootPath:
    """ASGI middleware that sets the scope's root_path of prefixed requests, whichever server runs the app."""

    def __init__(self, app, root_path: str) -> None:
        self.app = app
        self.root_path = root_path.rstrip("/")

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"].startswith(self.root_path + "/"):
            scope = {**scope, "root_path": self.root_path}
        await self.app(scope, receive, send)
