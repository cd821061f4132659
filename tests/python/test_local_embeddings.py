"""/v1/embeddings answered in-process by the real all-MiniLM-L6-v2 on Candle,
through the official SDK: vectors match sentence-transformers, every input
form works, usage is real, bad input and overload get OpenAI-shaped errors."""

from __future__ import annotations

import base64
import json
import math
import os
import struct
import threading

import openai
import pytest

from harness import REPO

MODEL = "all-MiniLM-L6-v2"
MODEL_DIR = REPO / "models" / MODEL
FIXTURE = json.loads((REPO / "embedder" / "tests" / "fixtures" / f"{MODEL}.json").read_text("utf-8"))


def local_model(**extra) -> str:
    if not (MODEL_DIR / "model.safetensors").is_file():
        raise RuntimeError(f"{MODEL_DIR} is missing: run models/fetch.sh (the test command does)")
    fields = {"name": MODEL, "path": str(MODEL_DIR), **extra}
    # Unset: the gateway's default (bf16 on the CPU). Set to run a suite,
    # e.g. the accuracy measure, with another precision.
    if os.environ.get("SWITCHYARD_TEST_PRECISION") and "precision" not in extra:
        fields["precision"] = os.environ["SWITCHYARD_TEST_PRECISION"]
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in fields.items())
    return f"[[embedding_models]]\n{body}\n"


def cosine(a, b) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


@pytest.fixture
def gw(launch):
    return launch.gateway(local_model())


def test_vectors_match_the_reference_implementation(gw):
    texts = FIXTURE["texts"][:12]
    raw = gw.client().embeddings.with_raw_response.create(model=MODEL, input=texts, encoding_format="float")
    assert raw.headers["x-switchyard-backend"] == f"local/{MODEL}"
    resp = raw.parse()
    assert [d.index for d in resp.data] == list(range(len(texts)))
    for d, ref in zip(resp.data, FIXTURE["vectors"][:12]):
        assert len(d.embedding) == 384
        assert cosine(d.embedding, ref) >= 0.999
    assert resp.usage.prompt_tokens > 0
    assert resp.usage.prompt_tokens == resp.usage.total_tokens


def test_sdk_default_base64_is_decoded_to_the_same_vector(gw):
    c = gw.client()
    as_float = c.embeddings.create(model=MODEL, input="hello world", encoding_format="float").data[0].embedding
    sdk_default = c.embeddings.create(model=MODEL, input="hello world").data[0].embedding  # SDK asks for base64
    assert sdk_default == pytest.approx(as_float, abs=1e-7)
    raw = gw.http("POST", "/v1/embeddings", {"model": MODEL, "input": "hello world", "encoding_format": "base64"})
    decoded = struct.unpack("<384f", base64.b64decode(raw.json()["data"][0]["embedding"]))
    assert list(decoded) == pytest.approx(as_float, abs=1e-7)


def test_token_arrays_and_usage(gw):
    c = gw.client()
    # [CLS]=101 and [SEP]=102 are added by the gateway; 7592 2088 = "hello world".
    by_ids = c.embeddings.create(model=MODEL, input=[[7592, 2088]], encoding_format="float")
    by_text = c.embeddings.create(model=MODEL, input="hello world", encoding_format="float")
    assert cosine(by_ids.data[0].embedding, by_text.data[0].embedding) > 0.99999
    assert by_ids.usage.prompt_tokens == 2 == by_text.usage.prompt_tokens
    single = c.embeddings.create(model=MODEL, input=[7592, 2088], encoding_format="float")
    assert cosine(single.data[0].embedding, by_text.data[0].embedding) > 0.99999


def test_long_input_is_truncated_not_refused(gw):
    resp = gw.client().embeddings.create(model=MODEL, input="word " * 5000, encoding_format="float")
    assert resp.usage.prompt_tokens == 254


def test_bad_input_gets_openai_errors(gw):
    c = gw.client()
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model=MODEL, input="x", dimensions=128)
    assert e.value.body["param"] == "dimensions" and "384" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model=MODEL, input=[[1, 50_000_000]])
    assert e.value.body["param"] == "input" and "vocabulary" in e.value.message
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model=MODEL, input="")
    assert e.value.body["param"] == "input"
    with pytest.raises(openai.BadRequestError) as e:
        c.embeddings.create(model=MODEL, input=["x"] * 10_000)
    assert e.value.code == "too_many_inputs"
    ok = c.embeddings.create(model=MODEL, input="   ", encoding_format="float")
    assert len(ok.data[0].embedding) == 384


def test_listed_in_models(gw):
    ids = [m.id for m in gw.client().models.list().data]
    assert MODEL in ids
    assert gw.client().models.retrieve(MODEL).id == MODEL


def test_a_full_queue_answers_503_with_retry_after(launch):
    gw = launch.gateway(local_model(max_batch=1, max_wait_ms=0, queue_capacity=1))
    long_texts = ["a fairly long sentence to keep the model busy " * 20] * 16
    statuses: list[int] = []
    retry_after: list[str | None] = []
    lock = threading.Lock()

    def one():
        r = gw.http("POST", "/v1/embeddings", {"model": MODEL, "input": long_texts}, timeout=60)
        with lock:
            statuses.append(r.status)
            if r.status == 503:
                retry_after.append(r.headers.get("retry-after"))
                assert r.json()["error"]["code"] == "embedding_queue_full"

    threads = [threading.Thread(target=one) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert len(statuses) == 12
    assert statuses.count(503) >= 1 and statuses.count(200) >= 1, statuses
    assert all(r == "1" for r in retry_after)
