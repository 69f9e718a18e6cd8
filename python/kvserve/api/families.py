"""API families: which blueprints and URL prefixes answer errors in which envelope.

A family registers here once (in create_app) with its blueprints, its route prefixes and its envelope; its
handlers raise KvserveErrors and never write an envelope themselves. An error raised in a family's route,
and a 404/405 under its prefix (those match no route, so no blueprint), is written in its envelope; any
other request gets the default family's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from quart import Blueprint, Quart, current_app, request

from kvserve.api.envelopes import ErrorEnvelope

_CONFIG_KEY = "KVSERVE_API_FAMILIES"


@dataclass(frozen=True, slots=True)
class ApiFamily:
    name: str
    envelope: ErrorEnvelope
    blueprints: tuple[Blueprint, ...] = ()
    path_prefixes: tuple[str, ...] = ()


class ApiFamilies:
    def __init__(self, default: ApiFamily, others: Sequence[ApiFamily] = ()) -> None:
        self.default = default
        self.families = (default, *others)
        self._by_blueprint = {bp.name: family for family in self.families for bp in family.blueprints}
        # Longest prefix first, so /v1/messages (Anthropic) wins over a broader /v1/ of another family.
        self._by_prefix = sorted(
            ((prefix, family) for family in self.families for prefix in family.path_prefixes),
            key=lambda item: len(item[0]),
            reverse=True,
        )

    def install(self, app: Quart) -> None:
        for family in self.families:
            for blueprint in family.blueprints:
                app.register_blueprint(blueprint)
        app.config[_CONFIG_KEY] = self

    def family_for(self, blueprint: str | None, path: str) -> ApiFamily:
        if blueprint in self._by_blueprint:
            return self._by_blueprint[blueprint]
        return next((family for prefix, family in self._by_prefix if path.startswith(prefix)), self.default)


def current_envelope() -> ErrorEnvelope:
    """The envelope of the family serving the current request."""
    families: ApiFamilies = current_app.config[_CONFIG_KEY]
    return families.family_for(request.blueprint, request.path).envelope
