"""Fixtures of the reliability tests."""

from __future__ import annotations

import pytest

from tests import tiny_models


@pytest.fixture(scope="session")
def long_context_model(tmp_path_factory, tokenizer_dir):
    """The tiny Llama with an 8192-token context: generations that outlast a test's checks on any machine
    (8000 tokens take seconds even where the tiny model makes 2000 tokens/s)."""
    return tiny_models.build_model(
        "llama", tmp_path_factory.mktemp("long"), tokenizer_dir, max_position_embeddings=8192
    )
