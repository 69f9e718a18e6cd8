"""The Quart app: the API families (their blueprints and error envelopes), the engine and settings."""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Quart, Response
from werkzeug.exceptions import HTTPException

from kvserve.api.admin.collective_rpc import bp as collective_rpc_bp
from kvserve.api.admin.health import bp as health_bp
from kvserve.api.admin.load import bp as load_bp
from kvserve.api.admin.load import install_load_tracking
from kvserve.api.admin.metrics import bp as metrics_bp
from kvserve.api.admin.metrics import install_metrics
from kvserve.api.admin.sleep import bp as sleep_bp
from kvserve.api.anthropic.routes import bp as anthropic_messages_bp
from kvserve.api.cohere.embed import bp as cohere_embed_bp
from kvserve.api.context import ServingContext
from kvserve.api.docs.routes import install_docs
from kvserve.api.envelopes import ANTHROPIC, OPENAI, ErrorReport
from kvserve.api.errors import error_response
from kvserve.api.families import ApiFamilies, ApiFamily
from kvserve.api.limits import check_header_count
from kvserve.api.openai.audio import bp as audio_bp
from kvserve.api.openai.chat import bp as chat_bp
from kvserve.api.openai.completions import bp as completions_bp
from kvserve.api.openai.embeddings import bp as embeddings_bp
from kvserve.api.openai.models import bp as models_bp
from kvserve.api.openai.responses.routes import bp as responses_bp
from kvserve.api.openai.responses.store import install_responses_store
from kvserve.api.pooling.capabilities import refuse_unserved_routes
from kvserve.api.pooling.classify import bp as classify_bp
from kvserve.api.pooling.pool import bp as pooling_bp
from kvserve.api.pooling.score import bp as score_bp
from kvserve.api.realtime.routes import bp as realtime_bp
from kvserve.api.render.routes import bp as render_bp
from kvserve.api.sagemaker.invocations import bp as invocations_bp
from kvserve.api.scoring.generative import bp as generative_scoring_bp
from kvserve.api.security.api_keys import install_api_keys
from kvserve.api.security.cors import install_cors
from kvserve.api.security.request_ids import install_request_ids
from kvserve.api.security.root_path import RootPath
from kvserve.api.settings import ServerSettings
from kvserve.api.tokenize.routes import bp as tokenize_bp
from kvserve.errors import KvserveError

if TYPE_CHECKING:  # annotations only: the app is built in tests around a fake engine
    from kvserve.engine import AsyncEngine

# The one place a family joins the server. vLLM answers its own extras (tokenize, health) in OpenAI's
# envelope, which is also the envelope of any path no family claims.
# vLLM answers its pooling routes in this envelope too, Cohere's /v2/embed and the rerank routes included.
POOLING_BLUEPRINTS = (embeddings_bp, cohere_embed_bp, pooling_bp, classify_bp, score_bp, invocations_bp)
API_FAMILIES = ApiFamilies(
    default=ApiFamily(
        "openai",
        OPENAI,
        (
            completions_bp,
            chat_bp,
            responses_bp,
            models_bp,
            health_bp,
            tokenize_bp,
            render_bp,
            generative_scoring_bp,
            load_bp,
            metrics_bp,
            *POOLING_BLUEPRINTS,
            audio_bp,
            realtime_bp,
        ),
    ),
    others=(ApiFamily("anthropic", ANTHROPIC, (anthropic_messages_bp,), ("/v1/messages",)),),
)
# --enable-dev-endpoints: routes that change the engine's state (documented as dangerous).
DEV_BLUEPRINTS = (sleep_bp, collective_rpc_bp)


def create_app(engine: AsyncEngine, settings: ServerSettings, families: ApiFamilies = API_FAMILIES) -> Quart:
    app = Quart("kvserve")
    app.config["KVSERVE"] = ServingContext(engine, settings)
    app.config["RESPONSE_TIMEOUT"] = None  # generations may run for minutes; streams set their own
    app.config["BODY_TIMEOUT"] = 300
    app.config["MAX_CONTENT_LENGTH"] = settings.max_request_body_bytes
    families.install(app)
    install_responses_store(app, settings)
    app.before_request(check_header_count)
    if settings.enable_dev_endpoints:
        for blueprint in DEV_BLUEPRINTS:
            app.register_blueprint(blueprint)
    install_docs(app, settings)
    if engine is not None:  # an app built around no engine (envelope tests) has no metrics to read
        install_metrics(app, engine, settings)
    # CORS first: preflights are answered before the API-key check, and the key before anything else.
    install_cors(app, settings)
    install_api_keys(app, settings.api_keys, settings.protect_metrics)
    app.before_request(refuse_unserved_routes)  # a generative route on a pooling model, or the reverse: 501
    if settings.enable_request_id_headers:
        install_request_ids(app)
    if settings.enable_server_load_tracking:
        install_load_tracking(app)
    if settings.root_path:
        app.asgi_app = RootPath(app.asgi_app, settings.root_path)

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
