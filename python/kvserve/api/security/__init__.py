"""HTTP security options: API keys, CORS, request id headers."""
