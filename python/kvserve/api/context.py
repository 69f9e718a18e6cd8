"""What every route needs: the engine and the server settings, held on the app."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING

from quart import current_app

from kvserve.api.settings import ServerSettings
from kvserve.errors import NotFoundError

if TYPE_CHECKING:  # annotations only: the API modules import (and are tested with fakes) without the engine
    from kvserve.engine import AsyncEngine


_OVERRIDE: ContextVar[ServingContext | None] = ContextVar("kvserve_serving_context", default=None)


@dataclass(frozen=True, slots=True)
class ServingContext:
    engine: AsyncEngine
    settings: ServerSettings

    @staticmethod
    def current() -> ServingContext:
        return _OVERRIDE.get() or current_app.config["KVSERVE"]

    @contextmanager
    def serving(self) -> Iterator[None]:
        """Routes called inside see this context (the render routes run a route with a recording engine)."""
        token = _OVERRIDE.set(self)
        try:
            yield
        finally:
            _OVERRIDE.reset(token)

    def model_name(self, requested: str | None) -> str:
        """The served name to answer with; an unknown model is a 404 naming the `model` parameter."""
        if not requested or requested in self.settings.served_model_names:
            return self.settings.model_name
        raise NotFoundError(f"The model `{requested}` does not exist.", "model")
