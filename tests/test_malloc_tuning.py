"""The serving process's glibc malloc settings: applied through mallopt, a user's own variable wins. Run in a
child process: the settings would change how the test process itself lays out its memory."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys

import pytest

from kvserve.malloc_tuning import SETTINGS

PROBE = "import json; from kvserve.malloc_tuning import tune_malloc; print(json.dumps(tune_malloc()))"


def applied(**env: str) -> dict[str, int]:
    clean = {k: v for k, v in os.environ.items() if k not in {name for name, _ in SETTINGS.values()}}
    clean.pop("GLIBC_TUNABLES", None)
    result = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_settings_apply_unless_the_user_set_them() -> None:
    assert applied() == dict(SETTINGS.values())
    assert applied(MALLOC_ARENA_MAX="4") == {k: v for k, v in SETTINGS.values() if k != "MALLOC_ARENA_MAX"}
    assert applied(GLIBC_TUNABLES="glibc.malloc.arena_max=4") == {}
