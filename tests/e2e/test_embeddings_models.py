"""Embeddings through the OpenAI SDK, and `/v1/models` through both SDKs."""

from __future__ import annotations

import anthropic
import openai
import pytest

from conftest import ALL_MODELS, EU_KEY, EU_MODELS, FULL_KEY, RESTRICTED_KEY, RESTRICTED_MODELS

EMBED_MODELS = ["embed", "embed-mistral"]


@pytest.mark.parametrize("embed_model", EMBED_MODELS)
def test_embeddings_deterministic(oai, embed_model):
    first = oai.embeddings.create(model=embed_model, input="the quick brown fox")
    second = oai.embeddings.create(model=embed_model, input="the quick brown fox")
    other = oai.embeddings.create(model=embed_model, input="a lazy dog")
    assert first.object == "list"
    assert len(first.data) == 1
    vec = first.data[0].embedding
    assert len(vec) > 0
    assert all(isinstance(x, float) for x in vec)
    assert second.data[0].embedding == vec
    assert other.data[0].embedding != vec
    assert len(other.data[0].embedding) == len(vec)
    assert first.usage.prompt_tokens > 0


@pytest.mark.parametrize("embed_model", EMBED_MODELS)
def test_embeddings_float_and_batch(oai, embed_model):
    # The SDK asks for base64 by default and decodes; explicit floats must agree.
    b64 = oai.embeddings.create(model=embed_model, input="same text")
    flt = oai.embeddings.create(model=embed_model, input="same text", encoding_format="float")
    assert flt.data[0].embedding == pytest.approx(b64.data[0].embedding, abs=1e-6)

    batch = oai.embeddings.create(model=embed_model, input=["same text", "another text"], encoding_format="float")
    assert [d.index for d in batch.data] == [0, 1]
    assert batch.data[0].embedding == pytest.approx(flt.data[0].embedding, abs=1e-6)
    assert batch.data[1].embedding != batch.data[0].embedding


@pytest.mark.parametrize(
    "key,expected",
    [(FULL_KEY, ALL_MODELS), (RESTRICTED_KEY, RESTRICTED_MODELS), (EU_KEY, EU_MODELS)],
    ids=["full", "restricted", "eu-only"],
)
def test_models_list_openai(gateway, key, expected):
    page = gateway.openai(key).models.list()
    ids = [m.id for m in page]
    assert len(ids) == len(set(ids)), ids
    assert set(ids) == expected
    assert all(m.object == "model" for m in page)


@pytest.mark.parametrize(
    "key,expected",
    [(FULL_KEY, ALL_MODELS), (RESTRICTED_KEY, RESTRICTED_MODELS), (EU_KEY, EU_MODELS)],
    ids=["full", "restricted", "eu-only"],
)
def test_models_list_anthropic(gateway, key, expected):
    ids = [m.id for m in gateway.anthropic(key).models.list()]
    assert len(ids) == len(set(ids)), ids
    assert set(ids) == expected


def test_implicit_model_usable_and_residency_respected(gateway):
    """A provider model name is requestable directly; for the EU-only tenant only its EU
    targets serve it."""
    client = gateway.openai(EU_KEY)
    for _ in range(4):
        raw = client.chat.completions.with_raw_response.create(
            model="mistral-small-latest", messages=[{"role": "user", "content": "direct"}]
        )
        assert raw.headers.get("x-asc-provider") in {"ext-mistral", "mock-eu"}
        assert raw.parse().choices[0].message.content == "echo: direct"


def test_models_retrieve_both_sdks(gateway):
    """`models.retrieve`: a model the key may use, and NotFoundError for one it may not."""
    assert gateway.openai(RESTRICTED_KEY).models.retrieve("gpt").id == "gpt"
    assert gateway.anthropic(RESTRICTED_KEY).models.retrieve("claude").id == "claude"
    with pytest.raises(openai.NotFoundError):
        gateway.openai(RESTRICTED_KEY).models.retrieve("embed")
    with pytest.raises(anthropic.NotFoundError):
        gateway.anthropic(RESTRICTED_KEY).models.retrieve("embed")


def test_request_ids_reach_the_sdks(gateway):
    """Each SDK reads the request id from its own header: the gateway's id is there."""
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="gpt", messages=[{"role": "user", "content": "id?"}]
    )
    assert raw.request_id == raw.headers["x-asc-request-id"]
    msg = gateway.anthropic().messages.create(
        model="claude", max_tokens=16, messages=[{"role": "user", "content": "id?"}]
    )
    assert msg._request_id and len(msg._request_id) == 32
    with pytest.raises(openai.NotFoundError) as e:
        gateway.openai().chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert e.value.request_id and len(e.value.request_id) == 32


def test_count_tokens_anthropic_sdk(ant):
    short = ant.messages.count_tokens(model="claude", messages=[{"role": "user", "content": "hi"}])
    long = ant.messages.count_tokens(
        model="claude", system="be brief", messages=[{"role": "user", "content": "hello world " * 50}]
    )
    assert 0 < short.input_tokens < long.input_tokens
