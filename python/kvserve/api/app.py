"""The Quart app: blueprints, the engine and settings on the app, errors in the OpenAI envelope."""

from __future__ import annotations

from quart import Quart, Response
from werkzeug.exceptions import HTTPException

from kvserve.api.admin.health import bp as health_bp
from kvserve.api.context import ServingContext
from kvserve.api.errors import error_body, error_response, internal_error
from kvserve.api.openai.chat import bp as chat_bp
from kvserve.api.openai.completions import bp as completions_bp
from kvserve.api.openai.models import bp as models_bp
from kvserve.api.settings import ServerSettings
from kvserve.api.tokenize.routes import bp as tokenize_bp
from kvserve.engine import AsyncEngine
from kvserve.errors import KvserveError

_HTTP_ERROR_TYPES = {404: "NotFoundError", 405: "MethodNotAllowed", 413: "RequestEntityTooLarge"}


def create_app(engine: AsyncEngine, settings: ServerSettings) -> Quart:
    app = Quart("kvserve")
    app.config["KVSERVE"] = ServingContext(engine, settings)
    app.config["RESPONSE_TIMEOUT"] = None  # generations may run for minutes; streams set their own
    app.config["BODY_TIMEOUT"] = 300
    app.config["MAX_CONTENT_LENGTH"] = 64 << 20
    for blueprint in (completions_bp, chat_bp, models_bp, health_bp, tokenize_bp):
        app.register_blueprint(blueprint)

    @app.errorhandler(KvserveError)
    async def on_kvserve_error(error: KvserveError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def on_http_error(error: HTTPException) -> Response:
        status = error.code or 500
        body = error_body(error.description or error.name, _HTTP_ERROR_TYPES.get(status, "BadRequestError"), status)
        return Response(body, status=status, content_type="application/json")

    @app.errorhandler(Exception)
    async def on_unexpected_error(error: Exception) -> Response:
        return internal_error(error)

    return app
