from __future__ import annotations

from pathlib import Path

import pytest

from tests.whisper.tiny_whisper import build_tiny_whisper


@pytest.fixture(scope="session")
def whisper_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))
