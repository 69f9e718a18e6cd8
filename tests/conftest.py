"""Session-wide fixtures. Heavy imports stay inside fixtures so tests/core runs without torch."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import tiny_models


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_models.train_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path):
    """tiny_model_dir(name) -> directory of that tiny model, built once per session."""
    built: dict[str, Path] = {}

    def get(name: str = "llama") -> Path:
        if name not in built:
            built[name] = tiny_models.build_model(name, tmp_path_factory.mktemp(name), tokenizer_dir)
        return built[name]

    return get


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    cuda_items = [item for item in items if item.get_closest_marker("cuda")]
    if not cuda_items:
        return
    import torch

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in cuda_items:
            item.add_marker(skip)
