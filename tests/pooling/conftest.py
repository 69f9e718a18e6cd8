"""Pooling models for the tests: the real all-MiniLM-L6-v2 and tiny random BERT classifiers, and one
session-scoped server per model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api.server_process import ServerProcess
from tests.pooling import encoder_models

# ChatML, so the embedding routes' chat form can be tested on a model that ships no template.
CHAT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    return encoder_models.minilm_dir()


@pytest.fixture(scope="session")
def classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encoder_models.build_bert_classifier(tmp_path_factory.mktemp("bert-classifier"), num_labels=3)


@pytest.fixture(scope="session")
def cross_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encoder_models.build_bert_classifier(tmp_path_factory.mktemp("bert-cross-encoder"), num_labels=1)


@pytest.fixture(scope="session")
def colbert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return encoder_models.build_colbert(tmp_path_factory.mktemp("colbert"))


@pytest.fixture(scope="session")
def minilm_server(minilm_dir) -> Iterator[ServerProcess]:
    process = ServerProcess(
        str(minilm_dir), "--served-model-name", "minilm", "--chat-template", CHAT_TEMPLATE, "--max-num-seqs", "32"
    )
    yield process
    assert process.stop() == 0, process.log()


@pytest.fixture(scope="session")
def cross_encoder_server(cross_encoder_dir) -> Iterator[ServerProcess]:
    process = ServerProcess(str(cross_encoder_dir), "--served-model-name", "cross-encoder")
    yield process
    assert process.stop() == 0, process.log()
