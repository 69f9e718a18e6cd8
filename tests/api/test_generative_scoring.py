"""POST /generative_scoring against transformers' next-token probabilities on the tiny model."""

from __future__ import annotations

import pytest
import torch

from tests.api.http_calls import call_json
from tests.engine_helpers import _hf_model

LABELS = [11, 42, 7]


def hf_label_probs(model_dir, prompt_ids: list[int], apply_softmax: bool) -> list[float]:
    with torch.no_grad():
        logits = _hf_model(model_dir)(torch.tensor([prompt_ids])).logits[0, -1].double()
    logprobs = torch.log_softmax(logits, dim=-1)[LABELS]
    probs = torch.softmax(logprobs, dim=-1) if apply_softmax else logprobs.exp()
    return probs.tolist()


@pytest.mark.parametrize("apply_softmax", [True, False])
@pytest.mark.parametrize("item_first", [False, True])
def test_scores_match_transformers(server, tiny_model_dir, apply_softmax, item_first):
    query = [30, 31, 32, 33]
    items = [[40, 41], [50], [60, 61, 62, 63, 64]]
    status, body = call_json(
        server.base_url,
        "POST",
        "/generative_scoring",
        {
            "model": "tiny-llama",
            "query": query,
            "items": items,
            "label_token_ids": LABELS,
            "apply_softmax": apply_softmax,
            "item_first": item_first,
        },
    )
    assert status == 200, body
    assert body["object"] == "list" and body["model"] == "tiny-llama" and body["id"].startswith("generative-scoring-")
    prompts = [item + query if item_first else query + item for item in items]
    for i, (result, prompt) in enumerate(zip(body["data"], prompts)):
        assert result["index"] == i and result["object"] == "score"
        # float32 logits against float64 from the same weights
        assert result["score"] == pytest.approx(
            hf_label_probs(tiny_model_dir("llama"), prompt, apply_softmax)[0], abs=1e-5
        )
    num_prompt_tokens = sum(len(p) for p in prompts)
    assert body["usage"] == {
        "prompt_tokens": num_prompt_tokens,
        "total_tokens": num_prompt_tokens,
        "completion_tokens": 0,
        "prompt_tokens_details": None,
    }


def test_text_query_and_items(server):
    status, by_text = call_json(
        server.base_url,
        "POST",
        "/generative_scoring",
        {"query": "Is this a city?", "items": ["Paris", "blue"], "label_token_ids": LABELS},
    )
    assert status == 200, by_text
    _, query = call_json(server.base_url, "POST", "/tokenize", {"prompt": "Is this a city?"})
    items = [
        call_json(server.base_url, "POST", "/tokenize", {"prompt": t, "add_special_tokens": False})[1]
        for t in ("Paris", "blue")
    ]
    status, by_ids = call_json(
        server.base_url,
        "POST",
        "/generative_scoring",
        {"query": query["tokens"], "items": [i["tokens"] for i in items], "label_token_ids": LABELS},
    )
    assert [d["score"] for d in by_text["data"]] == pytest.approx([d["score"] for d in by_ids["data"]], abs=1e-6)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"query": [1], "items": [[2]], "label_token_ids": []}, "label_token_ids"),
        ({"query": [1], "items": [[2]], "label_token_ids": [10**9]}, "label_token_ids"),
        ({"query": [1], "items": [], "label_token_ids": [3]}, "items"),
        ({"query": [1], "items": [[2]]}, "label_token_ids"),
        ({"query": [1], "items": [list(range(300))], "label_token_ids": [3]}, "input"),
    ],
)
def test_bad_requests_are_400s(server, body, param):
    status, error = call_json(server.base_url, "POST", "/generative_scoring", body)
    assert status == 400, error
    assert error["error"]["param"] == param
