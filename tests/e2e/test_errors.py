"""Typed errors through both SDKs: status, SDK exception class, contract code, and the
`x-asc-request-id` header on every error."""

from __future__ import annotations

import anthropic
import openai
import pytest

from conftest import EU_KEY, MAX_BODY_BYTES, RESTRICTED_KEY

USER = [{"role": "user", "content": "hello"}]


def check_openai_error(exc: openai.APIStatusError, status: int, code: str) -> dict:
    assert exc.status_code == status
    assert exc.code == code, exc.body
    assert isinstance(exc.body, dict)  # the SDK unwraps {"error": {...}}
    assert exc.body.get("code") == code
    assert exc.body.get("message")
    # OpenAI's own types: every client error is an invalid_request_error (a bad key
    # and an unknown model included), a rate limit `requests`, spent money
    # `insufficient_quota`.
    expected_type = {429: "insufficient_quota" if code == "budget_exceeded" else "requests"}.get(
        status, "invalid_request_error" if status < 500 else "server_error"
    )
    assert exc.body.get("type") == expected_type, exc.body
    assert exc.response.headers.get("x-asc-request-id")
    return exc.body


def check_anthropic_error(exc: anthropic.APIStatusError, status: int, code: str) -> dict:
    assert exc.status_code == status
    assert isinstance(exc.body, dict)
    assert exc.body.get("type") == "error", exc.body
    err = exc.body["error"]
    assert err.get("code") == code, exc.body
    assert err.get("type")
    assert err.get("message")
    assert exc.response.headers.get("x-asc-request-id")
    return err


# --- 401 ---------------------------------------------------------------------------


def test_openai_wrong_key(gateway):
    client = gateway.openai("sk-asc-not-a-real-key")
    with pytest.raises(openai.AuthenticationError) as ei:
        client.chat.completions.create(model="gpt", messages=USER)
    body = check_openai_error(ei.value, 401, "invalid_api_key")
    assert "sk-asc-not-a-real-key" not in body["message"]


def test_openai_wrong_key_models(gateway):
    with pytest.raises(openai.AuthenticationError) as ei:
        gateway.openai("sk-asc-not-a-real-key").models.list()
    check_openai_error(ei.value, 401, "invalid_api_key")


def test_anthropic_wrong_key(gateway):
    client = gateway.anthropic("sk-asc-not-a-real-key")
    with pytest.raises(anthropic.AuthenticationError) as ei:
        client.messages.create(model="claude", max_tokens=50, messages=USER)
    err = check_anthropic_error(ei.value, 401, "invalid_api_key")
    assert err["type"] == "authentication_error"
    assert "sk-asc-not-a-real-key" not in err["message"]


# --- 404 ---------------------------------------------------------------------------


def test_openai_unknown_model(oai):
    with pytest.raises(openai.NotFoundError) as ei:
        oai.chat.completions.create(model="no-such-model", messages=USER)
    body = check_openai_error(ei.value, 404, "model_not_found")
    assert "no-such-model" in body["message"]


def test_anthropic_unknown_model(ant):
    with pytest.raises(anthropic.NotFoundError) as ei:
        ant.messages.create(model="no-such-model", max_tokens=50, messages=USER)
    err = check_anthropic_error(ei.value, 404, "model_not_found")
    assert err["type"] == "not_found_error"


def test_openai_unknown_embeddings_model(oai):
    with pytest.raises(openai.NotFoundError) as ei:
        oai.embeddings.create(model="no-such-embedder", input="x")
    check_openai_error(ei.value, 404, "model_not_found")


# --- 403 ---------------------------------------------------------------------------


def test_openai_model_not_allowed(gateway):
    with pytest.raises(openai.PermissionDeniedError) as ei:
        gateway.openai(RESTRICTED_KEY).chat.completions.create(model="mistral", messages=USER)
    check_openai_error(ei.value, 403, "model_not_allowed")


def test_anthropic_model_not_allowed(gateway):
    with pytest.raises(anthropic.PermissionDeniedError) as ei:
        gateway.anthropic(RESTRICTED_KEY).messages.create(model="mistral", max_tokens=50, messages=USER)
    err = check_anthropic_error(ei.value, 403, "model_not_allowed")
    assert err["type"] == "permission_error"


def test_openai_restricted_key_allowed_model_works(gateway):
    resp = gateway.openai(RESTRICTED_KEY).chat.completions.create(model="gpt", messages=USER)
    assert resp.choices[0].message.content == "echo: hello"


def test_openai_residency_denied(gateway):
    with pytest.raises(openai.PermissionDeniedError) as ei:
        gateway.openai(EU_KEY).chat.completions.create(model="us-only", messages=USER)
    check_openai_error(ei.value, 403, "residency_denied")


def test_anthropic_residency_denied(gateway):
    with pytest.raises(anthropic.PermissionDeniedError) as ei:
        gateway.anthropic(EU_KEY).messages.create(model="us-only", max_tokens=50, messages=USER)
    check_anthropic_error(ei.value, 403, "residency_denied")


def test_openai_residency_denied_streaming(gateway):
    with pytest.raises(openai.PermissionDeniedError) as ei:
        gateway.openai(EU_KEY).chat.completions.create(model="us-only", messages=USER, stream=True)
    check_openai_error(ei.value, 403, "residency_denied")


def test_eu_tenant_served_in_eu(gateway):
    raw = gateway.openai(EU_KEY).chat.completions.with_raw_response.create(model="mistral", messages=USER)
    assert raw.headers.get("x-asc-provider") == "ext-mistral"
    assert raw.parse().choices[0].message.content == "echo: hello"


def test_eu_tenant_fallback_skips_us_primary(gateway):
    """`resilient` has a US primary and an EU fallback: an EU-only tenant goes straight
    to the EU fallback and never to the US primary."""
    raw = gateway.openai(EU_KEY).chat.completions.with_raw_response.create(model="resilient", messages=USER)
    assert raw.headers.get("x-asc-provider") == "mock-eu"
    assert raw.headers.get("x-asc-attempts") == "1"


# --- 400 ---------------------------------------------------------------------------


def test_openai_missing_messages(oai):
    with pytest.raises(openai.BadRequestError) as ei:
        oai.post("/chat/completions", body={"model": "gpt"}, cast_to=object)
    body = check_openai_error(ei.value, 400, "invalid_request")
    assert "messages" in body["message"]


def test_openai_malformed_json(oai):
    with pytest.raises(openai.BadRequestError) as ei:
        oai.post(
            "/chat/completions",
            cast_to=object,
            content=b'{"model": "gpt", "messages": [',
            options={"headers": {"Content-Type": "application/json"}},
        )
    check_openai_error(ei.value, 400, "invalid_request")


def test_anthropic_missing_messages(ant):
    with pytest.raises(anthropic.BadRequestError) as ei:
        ant.post("/v1/messages", body={"model": "claude", "max_tokens": 50}, cast_to=object)
    err = check_anthropic_error(ei.value, 400, "invalid_request")
    assert err["type"] == "invalid_request_error"
    assert "messages" in err["message"]


def test_openai_wrong_type(oai):
    with pytest.raises(openai.BadRequestError) as ei:
        oai.post("/chat/completions", body={"model": "gpt", "messages": "not a list"}, cast_to=object)
    body = check_openai_error(ei.value, 400, "invalid_request")
    assert "messages" in body["message"]


# --- 502 ---------------------------------------------------------------------------


def test_openai_every_target_fails(oai):
    with pytest.raises(openai.InternalServerError) as ei:
        oai.chat.completions.create(model="broken", messages=USER)
    body = check_openai_error(ei.value, 502, "upstream_error")
    # The message lists the attempts (provider, status).
    assert "dead-a" in body["message"] and "dead-b" in body["message"], body["message"]
    assert "500" in body["message"]
    assert ei.value.response.headers.get("x-asc-attempts") == "2"


def test_anthropic_every_target_fails(ant):
    with pytest.raises(anthropic.InternalServerError) as ei:
        ant.messages.create(model="broken", max_tokens=50, messages=USER)
    err = check_anthropic_error(ei.value, 502, "upstream_error")
    assert "dead-a" in err["message"] and "dead-b" in err["message"], err["message"]


def test_openai_every_target_fails_streaming(oai):
    """Nothing reached the client yet, so the failure is an HTTP error, not an event."""
    with pytest.raises(openai.InternalServerError) as ei:
        oai.chat.completions.create(model="broken", messages=USER, stream=True)
    check_openai_error(ei.value, 502, "upstream_error")


def test_anthropic_every_target_fails_streaming(ant):
    with pytest.raises(anthropic.InternalServerError) as ei:
        with ant.messages.stream(model="broken", max_tokens=50, messages=USER) as stream:
            stream.get_final_message()
    check_anthropic_error(ei.value, 502, "upstream_error")


# --- 413 ---------------------------------------------------------------------------

BIG = "x" * (MAX_BODY_BYTES + 1024)


def test_openai_body_too_large(oai):
    with pytest.raises(openai.APIStatusError) as ei:
        oai.chat.completions.create(model="gpt", messages=[{"role": "user", "content": BIG}])
    check_openai_error(ei.value, 413, "request_too_large")


def test_anthropic_body_too_large(ant):
    with pytest.raises(anthropic.APIStatusError) as ei:
        ant.messages.create(model="claude", max_tokens=50, messages=[{"role": "user", "content": BIG}])
    err = check_anthropic_error(ei.value, 413, "request_too_large")
    if hasattr(anthropic, "RequestTooLargeError"):
        assert isinstance(ei.value, anthropic.RequestTooLargeError)
    assert err["type"] == "request_too_large"


def test_openai_body_too_large_embeddings(oai):
    with pytest.raises(openai.APIStatusError) as ei:
        oai.embeddings.create(model="embed", input=BIG, encoding_format="float")
    check_openai_error(ei.value, 413, "request_too_large")
