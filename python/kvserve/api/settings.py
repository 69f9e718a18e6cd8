"""Server-level settings the routes read (the engine's are in kvserve.config)."""

from __future__ import annotations

from dataclasses import dataclass

from kvserve.text.chat_template import ChatTemplate
from kvserve.text.reasoning.think_tags import ThinkTagParser
from kvserve.text.tools.base import ToolParser


@dataclass(frozen=True, slots=True)
class ServerSettings:
    served_model_names: tuple[str, ...]
    model_root: str  # what /v1/models reports as `root`: the model path or repo id
    chat_template: ChatTemplate | None
    response_role: str = "assistant"
    max_logprobs: int = 20
    enable_prompt_tokens_details: bool = False
    enable_force_include_usage: bool = False
    return_tokens_as_token_ids: bool = False
    trust_request_chat_template: bool = False
    system_fingerprint: str | None = None
    max_request_body_bytes: int = 64 << 20  # larger bodies get 413
    shutdown_timeout: float = 5.0  # seconds in-flight requests get to finish after SIGTERM
    # Security and HTTP options (api/security/)
    api_keys: tuple[str, ...] = ()  # empty: no key is asked for
    protect_metrics: bool = False  # /metrics asks for the key too
    allowed_origins: tuple[str, ...] = ("*",)
    allowed_methods: tuple[str, ...] = ("*",)
    allowed_headers: tuple[str, ...] = ("*",)
    allow_credentials: bool = False
    root_path: str = ""  # the path prefix a proxy serves this server under
    enable_request_id_headers: bool = False
    # Operational routes (api/admin/, api/docs/)
    enable_server_load_tracking: bool = False
    enable_dev_endpoints: bool = False  # /sleep, /wake_up, /is_sleeping, /collective_rpc: dangerous
    metrics_prefix: str = "kvserve"
    disable_docs: bool = False
    enable_offline_docs: bool = False  # Swagger UI's assets from the swagger-ui-bundle package, no CDN
    enable_auto_tool_choice: bool = False
    tool_parser: ToolParser | None = None  # --tool-call-parser: reads tool calls of tool_choice "auto"
    reasoning_parser: ThinkTagParser | None = None  # --reasoning-parser: splits reasoning from the answer
    # The Responses API's store (api/openai/responses/store.py)
    enable_responses_store: bool = False
    responses_store_max_entries: int = 1024
    responses_store_max_age: float = 3600.0  # seconds a stored response is kept

    @property
    def model_name(self) -> str:
        return self.served_model_names[0]
