"""The embedding model's APIs over HTTP on the real all-MiniLM-L6-v2: the openai SDK's embeddings (float
and base64), the cohere SDK's embed and rerank (v1 and v2 clients), /score, /pooling, /invocations, and
their errors. References: transformers with sentence-transformers' mean pooling on the same weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.pooling import encoder_models
from tests.pooling.http import post

# The cohere SDK calls pydantic APIs deprecated since v2 (parse_obj, instance model_fields) on embed batches.
COHERE_SDK_WARNINGS = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecationWarning")

TEXTS = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.", "Paris"]


@pytest.fixture(scope="module")
def reference(minilm_dir):
    return encoder_models.hf_mean_pooled(minilm_dir, TEXTS).numpy()


@pytest.fixture(scope="module")
def openai_client(minilm_server):
    import openai

    with openai.OpenAI(base_url=f"{minilm_server.base_url}/v1", api_key="unused", max_retries=0, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def cohere_clients(minilm_server):
    """The cohere SDK's v1 and v2 clients over one HTTP client that the test closes."""
    import cohere
    import httpx

    with httpx.Client(timeout=60) as http:
        yield (
            cohere.Client(api_key="unused", base_url=minilm_server.base_url, httpx_client=http),
            cohere.ClientV2(api_key="unused", base_url=minilm_server.base_url, httpx_client=http),
        )


def assert_same_embeddings(vectors, reference):
    vectors = np.asarray(vectors, dtype=np.float32)
    assert vectors.shape == reference.shape
    cosines = (vectors * reference).sum(-1) / (np.linalg.norm(vectors, axis=-1) * np.linalg.norm(reference, axis=-1))
    assert cosines.min() >= 0.9999
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=-1), np.linalg.norm(reference, axis=-1), atol=1e-5)


@pytest.mark.parametrize("encoding_format", ["float", "base64"])
def test_openai_sdk_embeddings(openai_client, reference, minilm_dir, encoding_format):
    # The SDK asks for base64 when no format is given, and decodes it to floats itself.
    kwargs = {"encoding_format": "float"} if encoding_format == "float" else {}
    response = openai_client.embeddings.create(model="minilm", input=TEXTS, **kwargs)
    assert [d.index for d in response.data] == list(range(len(TEXTS)))
    assert_same_embeddings([d.embedding for d in response.data], reference)
    num_tokens = sum(len(ids) for ids in encoder_models.hf_tokenizer(minilm_dir)(TEXTS)["input_ids"])
    assert (response.usage.prompt_tokens, response.usage.total_tokens) == (num_tokens, num_tokens)
    assert response.model == "minilm" and response.object == "list"


def test_token_ids_and_chat_messages_inputs(minilm_server, openai_client, reference, minilm_dir):
    ids = encoder_models.hf_tokenizer(minilm_dir)(TEXTS[0])["input_ids"]
    response = openai_client.embeddings.create(model="minilm", input=ids, encoding_format="float")
    assert_same_embeddings([response.data[0].embedding], reference[:1])
    status, chat = post(minilm_server.base_url, "/v1/embeddings", {"messages": [{"role": "user", "content": "hi"}]})
    status_text, plain = post(
        minilm_server.base_url, "/v1/embeddings", {"input": "user: hi\n", "add_special_tokens": False}
    )
    assert (status, status_text) == (200, 200)
    np.testing.assert_allclose(chat["data"][0]["embedding"], plain["data"][0]["embedding"], atol=1e-6)


def test_base64_dtypes_and_byte_orders(minilm_server, reference):
    import base64

    def fetch(**fields) -> bytes:
        body = {"input": TEXTS[0], "encoding_format": "base64", **fields}
        status, response = post(minilm_server.base_url, "/v1/embeddings", body)
        assert status == 200, response
        return base64.b64decode(response["data"][0]["embedding"])

    np.testing.assert_array_equal(np.frombuffer(fetch(), "<f4"), np.frombuffer(fetch(endianness="big"), ">f4"))
    np.testing.assert_allclose(
        np.frombuffer(fetch(embed_dtype="float16", endianness="big"), ">f2"), reference[0], atol=1e-3
    )
    bf16 = np.frombuffer(fetch(embed_dtype="bfloat16", endianness="little"), "<u2").astype(np.uint32) << 16
    np.testing.assert_allclose(bf16.view(np.float32), reference[0], atol=4e-3)
    status, error = post(minilm_server.base_url, "/v1/embeddings", {"input": "x", "embed_dtype": "fp8_e4m3"})
    assert status == 400 and "embed_dtype" in error["error"]["message"]


def test_truncate_prompt_tokens(minilm_server):
    status, body = post(
        minilm_server.base_url, "/v1/embeddings", {"input": "word " * 300, "truncate_prompt_tokens": 10}
    )
    assert status == 200 and body["usage"]["prompt_tokens"] == 10


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": ""}, "input must not be empty"),
        ({"input": []}, "input must not be empty"),
        ({"input": ["fine", ""]}, "must not contain empty"),
        ({"input": "word " * 300}, "maximum context length is 256 tokens"),
        ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
        ({"input": "x", "dimensions": 128}, "does not support matryoshka representation"),
    ],
)
def test_embedding_errors_are_400(minilm_server, body, message):
    status, error = post(minilm_server.base_url, "/v1/embeddings", body)
    assert status == 400, error
    assert message in error["error"]["message"] and error["error"]["code"] == 400


def test_generative_and_classification_routes_on_an_embedding_model_are_501(minilm_server):
    status, error = post(
        minilm_server.base_url, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]}
    )
    assert (status, error["error"]["message"]) == (501, "The model does not support Chat Completions API")
    status, error = post(minilm_server.base_url, "/classify", {"input": "x"})
    assert (status, error["error"]["message"]) == (501, "The model does not support Classification API")


@COHERE_SDK_WARNINGS
def test_cohere_sdk_embed_v1_and_v2(cohere_clients, reference):
    v1, v2 = cohere_clients
    floats = v1.embed(texts=TEXTS, model="minilm", input_type="search_document")
    assert_same_embeddings(floats.embeddings, reference)
    typed = v1.embed(
        texts=TEXTS, model="minilm", input_type="search_query", embedding_types=["float", "int8", "binary"]
    )
    assert_same_embeddings(typed.embeddings.float_, reference)
    np.testing.assert_array_equal(typed.embeddings.int8, np.rint(np.clip(reference, -1, 1) * 127))
    packed = np.packbits(reference >= 0, axis=-1).view(np.int8)
    np.testing.assert_array_equal(typed.embeddings.binary, packed)

    response = v2.embed(
        texts=TEXTS, model="minilm", input_type="classification", embedding_types=["float", "uint8", "ubinary"]
    )
    assert_same_embeddings(response.embeddings.float_, reference)
    np.testing.assert_array_equal(response.embeddings.uint8, np.rint((np.clip(reference, -1, 1) + 1) * 127.5))
    np.testing.assert_array_equal(response.embeddings.ubinary, np.packbits(reference >= 0, axis=-1))
    assert response.texts == TEXTS


def test_cohere_embed_errors_are_400(minilm_server):
    status, error = post(minilm_server.base_url, "/v2/embed", {"model": "minilm", "texts": []})
    assert status == 400 and "texts" in error["error"]["message"]
    status, error = post(minilm_server.base_url, "/v2/embed", {"texts": ["word " * 300], "truncate": "NONE"})
    assert status == 400 and "maximum context length" in error["error"]["message"]
    status, body = post(minilm_server.base_url, "/v2/embed", {"texts": ["word " * 300], "truncate": "END"})
    assert status == 200 and body["meta"]["billed_units"]["input_tokens"] == 256


def cosine_scores(reference: np.ndarray, query: int, documents: list[int]) -> list[float]:
    return [float(reference[query] @ reference[d]) for d in documents]


@COHERE_SDK_WARNINGS
def test_cohere_sdk_rerank_v1_and_v2(cohere_clients, reference):
    v1, v2 = cohere_clients
    expected = cosine_scores(reference, 0, [1, 2, 3])
    order = sorted(range(3), key=lambda i: expected[i], reverse=True)
    response = v1.rerank(query=TEXTS[0], documents=TEXTS[1:], model="minilm", top_n=2)
    assert [r.index for r in response.results] == order[:2]
    assert [r.relevance_score for r in response.results] == pytest.approx([expected[i] for i in order[:2]], abs=1e-4)
    response = v2.rerank(query=TEXTS[0], documents=TEXTS[1:], model="minilm")
    assert [r.index for r in response.results] == order
    # Cohere's v2 results type has no `document` (the SDK keeps vLLM's extra field as a dict).
    assert [r.document["text"] for r in response.results] == [TEXTS[1:][i] for i in order]


def test_score_one_to_one_one_to_many_and_many_to_many(minilm_server, reference):
    url = minilm_server.base_url
    status, body = post(url, "/score", {"text_1": TEXTS[0], "text_2": TEXTS[1]})
    assert status == 200 and body["data"][0]["score"] == pytest.approx(cosine_scores(reference, 0, [1])[0], abs=1e-4)
    status, body = post(url, "/v1/score", {"text_1": TEXTS[0], "text_2": TEXTS[1:]})
    assert [d["score"] for d in body["data"]] == pytest.approx(cosine_scores(reference, 0, [1, 2, 3]), abs=1e-4)
    assert [d["object"] for d in body["data"]] == ["score"] * 3
    status, body = post(url, "/score", {"queries": TEXTS[:2], "documents": TEXTS[2:]})
    expected = [float(reference[0] @ reference[2]), float(reference[1] @ reference[3])]
    assert [d["score"] for d in body["data"]] == pytest.approx(expected, abs=1e-4)
    status, error = post(url, "/score", {"text_1": TEXTS[:2], "text_2": TEXTS[:3]})
    assert status == 400 and "1:1, 1:N or N:N" in error["error"]["message"]
    status, error = post(url, "/rerank", {"query": "q", "documents": []})
    assert status == 400


def test_pooling_route_embeds_and_gives_token_embeddings(minilm_server, minilm_dir, reference):
    status, body = post(minilm_server.base_url, "/pooling", {"input": TEXTS[:2]})
    assert status == 200 and body["object"] == "list" and body["data"][0]["object"] == "pooling"
    assert_same_embeddings([d["data"] for d in body["data"]], reference[:2])
    status, body = post(minilm_server.base_url, "/pooling", {"input": TEXTS[0], "task": "token_embed"})
    tokens = torch.nn.functional.normalize(encoder_models.hf_token_states(minilm_dir, TEXTS[0]), dim=-1)
    np.testing.assert_allclose(body["data"][0]["data"], tokens.numpy(), atol=1e-4)
    status, error = post(minilm_server.base_url, "/pooling", {"input": "x", "task": "classify"})
    assert status == 400


def test_invocations_dispatch_by_body_shape(minilm_server, reference):
    url = minilm_server.base_url
    status, body = post(url, "/invocations", {"input": TEXTS[:2], "encoding_format": "float"})
    assert status == 200 and body["data"][0]["object"] == "embedding"
    assert_same_embeddings([d["embedding"] for d in body["data"]], reference[:2])
    status, body = post(url, "/invocations", {"query": TEXTS[0], "documents": TEXTS[1:]})
    assert status == 200 and len(body["results"]) == 3
    status, body = post(url, "/invocations", {"text_1": TEXTS[0], "text_2": TEXTS[1]})
    assert status == 200 and body["data"][0]["object"] == "score"
    status, error = post(url, "/invocations", {"prompt": "a completion body"})
    assert status == 400
    assert error["error"]["message"] == (
        "Cannot find suitable handler for request. Expected one of: "
        "['EmbeddingRequest', 'ScoreRequest', 'RerankRequest', 'PoolingRequest']"
    )
