"""The engine: the one object the API layer talks to."""

from kvserve.engine.async_engine import AsyncEngine

__all__ = ["AsyncEngine"]
