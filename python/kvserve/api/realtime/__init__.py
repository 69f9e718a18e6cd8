"""WS /v1/realtime: vLLM's realtime transcription protocol over a websocket."""
