"""GET /openapi.json (from the routes' pydantic models) and GET /docs (Swagger UI)."""
