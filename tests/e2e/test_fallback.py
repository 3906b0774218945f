"""Fallback: `resilient` has a primary that always fails (500) and an EU fallback."""

from __future__ import annotations

import json

from helpers import ANTHROPIC_TOOLS, OPENAI_TOOLS, TOOL_NAME, echo

USER = [{"role": "user", "content": "are you there?"}]


def test_openai_fallback(oai):
    raw = oai.chat.completions.with_raw_response.create(model="resilient", messages=USER)
    assert int(raw.headers["x-asc-attempts"]) >= 2
    assert raw.headers.get("x-asc-provider") == "mock-eu"
    assert raw.headers.get("x-asc-request-id")
    resp = raw.parse()
    assert resp.choices[0].message.content == echo("are you there?")
    assert resp.choices[0].finish_reason == "stop"
    assert resp.usage.total_tokens > 0


def test_anthropic_fallback(ant):
    raw = ant.messages.with_raw_response.create(model="resilient", max_tokens=100, messages=USER)
    assert int(raw.headers["x-asc-attempts"]) >= 2
    assert raw.headers.get("x-asc-provider") == "mock-eu"
    msg = raw.parse()
    assert msg.content[0].text == echo("are you there?")
    assert msg.stop_reason == "end_turn"


def test_openai_fallback_streaming(oai):
    """The primary fails before any byte reached the client: the fallback serves the
    stream."""
    raw = oai.chat.completions.with_raw_response.create(
        model="resilient", messages=USER, stream=True, stream_options={"include_usage": True}
    )
    assert int(raw.headers["x-asc-attempts"]) >= 2
    assert raw.headers.get("x-asc-provider") == "mock-eu"
    chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == echo("are you there?")
    assert chunks[-1].usage is not None


def test_anthropic_fallback_streaming(ant):
    with ant.messages.stream(model="resilient", max_tokens=100, messages=USER) as stream:
        assert int(stream.response.headers["x-asc-attempts"]) >= 2
        assert stream.response.headers.get("x-asc-provider") == "mock-eu"
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == echo("are you there?")
    assert final.usage.output_tokens > 0


def test_fallback_tool_call_both_surfaces(oai, ant):
    resp = oai.chat.completions.create(model="resilient", messages=USER, tools=OPENAI_TOOLS)
    call = resp.choices[0].message.tool_calls[0]
    assert call.function.name == TOOL_NAME
    assert json.loads(call.function.arguments) == {"input": "are you there?"}

    msg = ant.messages.create(model="resilient", max_tokens=100, messages=USER, tools=ANTHROPIC_TOOLS)
    use = next(b for b in msg.content if b.type == "tool_use")
    assert use.input == {"input": "are you there?"}
    assert msg.stop_reason == "tool_use"
