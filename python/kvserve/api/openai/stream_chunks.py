"""The hot-path stream chunks, a plain text delta, built as dicts instead of pydantic models.

A long stream sends one of these per token; building and dumping the pydantic models costs ~10 us a chunk,
these ~2 us. tests/api/test_stream_chunks.py holds them byte-identical to the models' serialisation, so the
response schema stays the models'. Chunks with logprobs, token ids, usage or a finish reason go through the
models.
"""

from __future__ import annotations

from kvserve.api.sse import sse_event


def chat_content_event(request_id: str, created: int, model: str, index: int, text: str) -> bytes:
    return sse_event(
        {
            "id": request_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": index, "delta": {"content": text}, "logprobs": None, "finish_reason": None}],
        }
    )


def completion_text_event(request_id: str, created: int, model: str, index: int, text: str) -> bytes:
    return sse_event(
        {
            "id": request_id,
            "object": "text_completion",
            "created": created,
            "model": model,
            "choices": [
                {
                    "index": index,
                    "text": text,
                    "logprobs": None,
                    "finish_reason": None,
                    "stop_reason": None,
                    "prompt_token_ids": None,
                    "token_ids": None,
                }
            ],
            "usage": None,
            "system_fingerprint": None,
        }
    )
