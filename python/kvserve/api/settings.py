"""Server-level settings the routes read (the engine's are in kvserve.config)."""

from __future__ import annotations

from dataclasses import dataclass

from kvserve.text.chat_template import ChatTemplate


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

    @property
    def model_name(self) -> str:
        return self.served_model_names[0]
