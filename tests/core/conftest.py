from __future__ import annotations

import pytest

from kvserve import _core

from .helpers import make_scheduler


@pytest.fixture
def scheduler() -> _core.Scheduler:
    return make_scheduler()
