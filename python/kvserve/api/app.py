"""The Quart app: the API families (their blueprints and error envelopes), the engine and settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Quart, Response
from werkzeug.exceptions import HTTPException

from kvserve.api.admin.health import bp as health_bp
from kvserve.api.context import ServingContext
from kvserve.api.envelopes import OPENAI, ErrorReport
from kvserve.api.errors import error_response
from kvserve.api.families import ApiFamilies, ApiFamily
from kvserve.api.openai.audio import bp as audio_bp
from kvserve.api.openai.chat import bp as chat_bp
from kvserve.api.openai.completions import bp as completions_bp
from kvserve.api.openai.models import bp as models_bp
from kvserve.api.realtime.routes import bp as realtime_bp
from kvserve.api.settings import ServerSettings
from kvserve.api.tokenize.routes import bp as tokenize_bp
from kvserve.errors import KvserveError

if TYPE_CHECKING:  # annotations only: the app is built in tests around a fake engine
    from kvserve.engine import AsyncEngine

# The one place a family joins the server. vLLM answers its own extras (tokenize, health) in OpenAI's
# envelope, which is also the envelope of any path no family claims. Anthropic's and Cohere's families will
# add themselves here, e.g. ApiFamily("anthropic", ANTHROPIC, (messages_bp,), ("/v1/messages",)).
API_FAMILIES = ApiFamilies(
    default=ApiFamily(
        "openai", OPENAI, (completions_bp, chat_bp, models_bp, health_bp, tokenize_bp, audio_bp, realtime_bp)
    ),
)


def create_app(engine: AsyncEngine, settings: ServerSettings, families: ApiFamilies = API_FAMILIES) -> Quart:
    app = Quart("kvserve")
    app.config["KVSERVE"] = ServingContext(engine, settings)
    app.config["RESPONSE_TIMEOUT"] = None  # generations may run for minutes; streams set their own
    app.config["BODY_TIMEOUT"] = 300
    app.config["MAX_CONTENT_LENGTH"] = 64 << 20
    families.install(app)

    @app.errorhandler(KvserveError)
    async def on_kvserve_error(error: KvserveError) -> Response:
        return error_response(ErrorReport.of(error))

    @app.errorhandler(HTTPException)
    async def on_http_error(error: HTTPException) -> Response:
        return error_response(ErrorReport.of_http(error))

    @app.errorhandler(Exception)
    async def on_unexpected_error(error: Exception) -> Response:
        return error_response(ErrorReport.unexpected(error))

    return app
