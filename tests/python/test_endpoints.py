"""Embeddings, legacy completions and the models list, through the SDK."""

from __future__ import annotations

import base64
import math
import struct

import openai
import pytest

from harness import anthropic_provider, answer_to, model_group

INPUTS = ["hello world", "switchyard routes requests"]


def test_embeddings_float_list_input(client, basic):
    resp = client.embeddings.create(model="embed-test", input=INPUTS, encoding_format="float")
    assert resp.object == "list"
    assert [d.index for d in resp.data] == [0, 1]
    for d in resp.data:
        assert d.object == "embedding"
        assert len(d.embedding) == 8
        assert math.isclose(math.sqrt(sum(x * x for x in d.embedding)), 1.0, rel_tol=1e-4)
    assert resp.data[0].embedding != resp.data[1].embedding
    assert resp.usage.prompt_tokens == 5
    sent = basic.openai_fake.last()
    assert sent["path"] == "/v1/embeddings"
    assert sent["body"]["model"] == "fake-embedding-upstream"
    assert sent["body"]["input"] == INPUTS


def test_embeddings_base64_decoded_by_sdk(client, basic):
    floats = client.embeddings.create(model="embed-test", input=INPUTS, encoding_format="float")
    # Without encoding_format the SDK asks for base64 and decodes it itself.
    decoded = client.embeddings.create(model="embed-test", input=INPUTS)
    assert basic.openai_fake.last()["body"]["encoding_format"] == "base64"
    for f, d in zip(floats.data, decoded.data, strict=True):
        assert d.embedding == pytest.approx(f.embedding, rel=1e-6)


def test_embeddings_explicit_base64_is_raw_little_endian_f32(client):
    floats = client.embeddings.create(model="embed-test", input="hello world", encoding_format="float")
    b64 = client.embeddings.create(model="embed-test", input="hello world", encoding_format="base64")
    raw = b64.data[0].embedding
    assert isinstance(raw, str)
    values = struct.unpack(f"<{len(floats.data[0].embedding)}f", base64.b64decode(raw))
    assert list(values) == pytest.approx(floats.data[0].embedding, rel=1e-6)


def test_embeddings_dimensions_passed_through(client):
    resp = client.embeddings.create(model="embed-test", input="x", dimensions=3, encoding_format="float")
    assert len(resp.data[0].embedding) == 3


def test_completions(client, basic):
    resp = client.completions.create(model="gpt-test", prompt="Say hi", max_tokens=50)
    assert resp.object == "text_completion"
    assert resp.choices[0].text == answer_to("Say hi")
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.prompt_tokens == 2
    assert resp.usage.completion_tokens == 5
    sent = basic.openai_fake.last()
    assert sent["path"] == "/v1/completions"
    assert sent["body"]["model"] == "fake-gpt-upstream"
    assert sent["body"]["prompt"] == "Say hi"


def test_completions_streamed(client):
    stream = client.completions.create(model="gpt-test", prompt="Say hi", max_tokens=50, stream=True)
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == answer_to("Say hi")
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_models_list(client):
    models = client.models.list()
    ids = [m.id for m in models]
    assert ids == ["gpt-test", "claude-test", "azure-test", "embed-test", "acme/large-v1"]
    assert all(m.object == "model" for m in models)


def test_models_retrieve(client):
    m = client.models.retrieve("claude-test")
    assert m.id == "claude-test"
    assert m.object == "model"
    assert isinstance(m.created, int) and m.created > 0
    assert client.models.retrieve("acme/large-v1").id == "acme/large-v1"


def test_models_retrieve_unknown_is_404(client):
    with pytest.raises(openai.NotFoundError) as exc:
        client.models.retrieve("no-such-model")
    assert exc.value.status_code == 404
    assert exc.value.code == "model_not_found"
    assert "no-such-model" in exc.value.message


def test_anthropic_deployment_refuses_embeddings_clearly(launch):
    fake = launch.fake()
    gw = launch.gateway(anthropic_provider("anth", fake)
                        + model_group("claude-embed", {"provider": "anth", "model": "fake-claude"}))
    with pytest.raises(openai.BadRequestError) as exc:
        gw.client().embeddings.create(model="claude-embed", input="x", encoding_format="float")
    assert exc.value.code == "unsupported_parameter"
    assert fake.requests() == [], "nothing is sent to a deployment that cannot serve the endpoint"
