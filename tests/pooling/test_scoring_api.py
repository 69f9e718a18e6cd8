"""Scoring models over HTTP against transformers on the same weights: a cross-encoder (a tiny random
BertForSequenceClassification with one label: /score, /rerank, /classify, /invocations) and a tiny ColBERT
(late interaction: MaxSim over token embeddings); the routes they do not serve are refused (501)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.pooling import encoder_models
from tests.pooling.http import post

QUERY = "what do pandas eat?"
DOCUMENTS = ["Pandas eat bamboo almost exclusively.", "The stock market fell today.", "Bamboo grows fast.", "Hi"]


@pytest.fixture(scope="module")
def expected(cross_encoder_dir) -> list[float]:
    logits = encoder_models.hf_logits(cross_encoder_dir, [QUERY] * len(DOCUMENTS), DOCUMENTS)
    return torch.sigmoid(logits[:, 0]).tolist()


def test_score_one_to_many_and_many_to_many(cross_encoder_server, cross_encoder_dir, expected):
    status, body = post(cross_encoder_server.base_url, "/score", {"text_1": QUERY, "text_2": DOCUMENTS})
    assert status == 200
    assert [d["score"] for d in body["data"]] == pytest.approx(expected, abs=1e-5)
    status, body = post(
        cross_encoder_server.base_url,
        "/v1/score",
        {"data_1": DOCUMENTS[:2], "data_2": DOCUMENTS[2:], "use_activation": False},
    )
    logits = encoder_models.hf_logits(cross_encoder_dir, DOCUMENTS[:2], DOCUMENTS[2:])[:, 0]
    assert [d["score"] for d in body["data"]] == pytest.approx(logits.tolist(), abs=1e-4)
    assert body["usage"]["prompt_tokens"] > 0


def test_rerank_orders_and_cuts(cross_encoder_server, expected):
    order = list(np.argsort(expected)[::-1])
    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        body = {"query": QUERY, "documents": DOCUMENTS, "top_n": 2, "return_documents": False}
        status, response = post(cross_encoder_server.base_url, path, body)
        assert status == 200
        assert [r["index"] for r in response["results"]] == order[:2]
        assert [r["relevance_score"] for r in response["results"]] == pytest.approx(
            sorted(expected)[::-1][:2], abs=1e-5
        )
        assert all(r["document"] is None for r in response["results"])
    status, response = post(cross_encoder_server.base_url, "/rerank", {"query": QUERY, "documents": [{"text": "Hi"}]})
    assert response["results"][0]["document"] == {"text": "Hi"}
    assert response["results"][0]["relevance_score"] == pytest.approx(expected[3], abs=1e-5)


def test_classify_reports_label_and_probabilities(cross_encoder_server, cross_encoder_dir):
    status, body = post(cross_encoder_server.base_url, "/classify", {"input": DOCUMENTS[:2]})
    assert status == 200
    logits = encoder_models.hf_logits(cross_encoder_dir, DOCUMENTS[:2])
    for data, row in zip(body["data"], logits):
        assert data["label"] == "class_0" and data["num_classes"] == 1
        assert data["probs"] == pytest.approx(torch.sigmoid(row).tolist(), abs=1e-5)


def test_invocations_and_refused_routes(cross_encoder_server, expected):
    url = cross_encoder_server.base_url
    status, body = post(url, "/invocations", {"query": QUERY, "documents": DOCUMENTS})
    assert status == 200 and len(body["results"]) == len(DOCUMENTS)
    status, body = post(url, "/invocations", {"input": "classify me"})
    assert status == 200 and body["data"][0]["num_classes"] == 1
    status, error = post(url, "/v1/embeddings", {"input": "x"})
    assert (status, error["error"]["message"]) == (501, "The model does not support Embeddings API")
    status, error = post(url, "/v1/completions", {"prompt": "x"})
    assert (status, error["error"]["message"]) == (501, "The model does not support Completions API")


@pytest.fixture(scope="module")
def colbert_server(colbert_dir):
    from tests.api.server_process import ServerProcess

    process = ServerProcess(str(colbert_dir), "--served-model-name", "colbert")
    yield process
    assert process.stop() == 0, process.log()


def test_late_interaction_scores_are_maxsim_of_token_embeddings(colbert_server, colbert_dir):
    from safetensors.torch import load_file

    linear = load_file(colbert_dir / "model.safetensors")["linear.weight"]

    def tokens(text: str) -> torch.Tensor:
        return torch.nn.functional.normalize(encoder_models.hf_token_states(colbert_dir, text) @ linear.T, dim=-1)

    expected = [float((tokens(QUERY) @ tokens(d).T).max(dim=1).values.sum()) for d in DOCUMENTS]
    status, body = post(colbert_server.base_url, "/score", {"text_1": QUERY, "text_2": DOCUMENTS})
    assert status == 200
    assert [d["score"] for d in body["data"]] == pytest.approx(expected, abs=1e-3)
    status, body = post(colbert_server.base_url, "/rerank", {"query": QUERY, "documents": DOCUMENTS, "top_n": 1})
    assert body["results"][0]["index"] == int(np.argmax(expected))
    status, body = post(colbert_server.base_url, "/pooling", {"input": DOCUMENTS[0]})
    np.testing.assert_allclose(body["data"][0]["data"], tokens(DOCUMENTS[0]).numpy(), atol=1e-4)
    status, error = post(colbert_server.base_url, "/v1/embeddings", {"input": "x"})
    assert (status, error["error"]["message"]) == (501, "The model does not support Embeddings API")
