"""Chat through both SDKs to every provider flavor: plain, streamed, system prompts,
multi-turn. The mocks answer `echo: <last user message>` with deterministic usage."""

from __future__ import annotations

import pytest

from conftest import FLAVOR_MODEL
from helpers import completion_tokens, echo, prompt_tokens

PROVIDER = {"openai": "ext-openai", "anthropic": "ext-anthropic", "mistral": "ext-mistral"}


# --- OpenAI SDK --------------------------------------------------------------------


def test_openai_chat(oai, flavor, model):
    prompt = f"Hello from the OpenAI SDK to {flavor}!"
    raw = oai.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}]
    )
    assert raw.headers.get("x-asc-request-id")
    assert raw.headers.get("x-asc-provider") == PROVIDER[flavor]
    assert raw.headers.get("x-asc-attempts") == "1"
    resp = raw.parse()
    assert resp.object == "chat.completion"
    assert resp.model
    assert len(resp.choices) == 1
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == echo(prompt)
    assert not choice.message.tool_calls
    assert choice.finish_reason == "stop"
    assert resp.usage is not None
    assert resp.usage.prompt_tokens == prompt_tokens([prompt], 1)
    assert resp.usage.completion_tokens == completion_tokens(echo(prompt))
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


def test_openai_chat_max_tokens_length(oai, model):
    prompt = "a fairly long sentence that will not fit into two tokens"
    resp = oai.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], max_tokens=2
    )
    choice = resp.choices[0]
    assert choice.finish_reason == "length"
    assert echo(prompt).startswith(choice.message.content)
    assert len(choice.message.content) < len(echo(prompt))


def test_openai_stream_without_usage(oai, model):
    prompt = "stream me, please, in several pieces"
    stream = oai.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], stream=True
    )
    chunks = list(stream)
    assert chunks, "no chunks"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == echo(prompt)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert all(c.usage is None for c in chunks), "usage chunk sent although not asked for"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1


def test_openai_stream_with_usage(oai, model):
    prompt = "stream me with usage"
    stream = oai.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == echo(prompt)
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1
    last = chunks[-1]
    assert last.usage is not None, "the usage chunk must be the last one"
    assert last.choices == []
    assert last.usage.prompt_tokens == prompt_tokens([prompt], 1)
    assert last.usage.completion_tokens == completion_tokens(echo(prompt))
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens


def test_openai_system_prompt_and_multi_turn(oai, model):
    system = "You are a terse assistant."
    turns = [
        {"role": "system", "content": system},
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "echo: first question"},
        {"role": "user", "content": "second question"},
    ]
    resp = oai.chat.completions.create(model=model, messages=turns)
    assert resp.choices[0].message.content == echo("second question")
    assert resp.choices[0].finish_reason == "stop"
    texts = [system, "first question", "echo: first question", "second question"]
    # Every message (the system prompt included) reached the provider.
    assert resp.usage.prompt_tokens == prompt_tokens(texts, 4)


def test_openai_content_parts(oai, model):
    resp = oai.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": [{"type": "text", "text": "parts work"}]}],
    )
    assert resp.choices[0].message.content == echo("parts work")


# --- Anthropic SDK -----------------------------------------------------------------


def test_anthropic_chat(ant, flavor, model):
    prompt = f"Hello from the Anthropic SDK to {flavor}!"
    raw = ant.messages.with_raw_response.create(
        model=model, max_tokens=256, messages=[{"role": "user", "content": prompt}]
    )
    assert raw.headers.get("x-asc-request-id")
    assert raw.headers.get("x-asc-provider") == PROVIDER[flavor]
    msg = raw.parse()
    assert msg.type == "message"
    assert msg.role == "assistant"
    assert [b.type for b in msg.content] == ["text"]
    assert msg.content[0].text == echo(prompt)
    assert msg.stop_reason == "end_turn"
    assert msg.usage.input_tokens == prompt_tokens([prompt], 1)
    assert msg.usage.output_tokens == completion_tokens(echo(prompt))


def test_anthropic_max_tokens(ant, model):
    prompt = "a fairly long sentence that will not fit into two tokens"
    msg = ant.messages.create(
        model=model, max_tokens=2, messages=[{"role": "user", "content": prompt}]
    )
    assert msg.stop_reason == "max_tokens"
    assert echo(prompt).startswith(msg.content[0].text)
    assert len(msg.content[0].text) < len(echo(prompt))


def test_anthropic_stream(ant, model):
    prompt = "stream me through the Anthropic SDK"
    with ant.messages.stream(
        model=model, max_tokens=256, messages=[{"role": "user", "content": prompt}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == echo(prompt)
    assert final.content[0].text == echo(prompt)
    assert final.stop_reason == "end_turn"
    assert final.usage.input_tokens == prompt_tokens([prompt], 1)
    assert final.usage.output_tokens == completion_tokens(echo(prompt))


def test_anthropic_stream_raw_events(ant, model):
    prompt = "raw events"
    stream = ant.messages.create(
        model=model,
        max_tokens=256,
        messages=[{"role": "user", "content": prompt}],
        stream=True,
    )
    events = list(stream)
    types = [e.type for e in events]
    assert types[0] == "message_start"
    assert types[-1] == "message_stop"
    assert "content_block_start" in types and "content_block_stop" in types
    assert "message_delta" in types
    deltas = [e.delta.text for e in events if e.type == "content_block_delta"]
    assert "".join(deltas) == echo(prompt)
    md = [e for e in events if e.type == "message_delta"][-1]
    assert md.delta.stop_reason == "end_turn"
    assert md.usage.output_tokens == completion_tokens(echo(prompt))


def test_anthropic_system_string_multi_turn(ant, model):
    system = "You are a terse assistant."
    msg = ant.messages.create(
        model=model,
        max_tokens=256,
        system=system,
        messages=[
            {"role": "user", "content": "first question"},
            {"role": "assistant", "content": "echo: first question"},
            {"role": "user", "content": "second question"},
        ],
    )
    assert msg.content[0].text == echo("second question")
    assert msg.stop_reason == "end_turn"
    texts = [system, "first question", "echo: first question", "second question"]
    # The system prompt counts as one message, on every flavor.
    assert msg.usage.input_tokens == prompt_tokens(texts, 4)


def test_anthropic_system_blocks(ant, model):
    baseline = ant.messages.create(
        model=model, max_tokens=256, messages=[{"role": "user", "content": "hi there"}]
    )
    system = [
        {"type": "text", "text": "You are a terse assistant."},
        {"type": "text", "text": "Always answer in English."},
    ]
    msg = ant.messages.create(
        model=model,
        max_tokens=256,
        system=system,
        messages=[{"role": "user", "content": [{"type": "text", "text": "hi there"}]}],
    )
    assert msg.content[0].text == echo("hi there")
    # Both blocks reached the provider: at least their chars plus one message more.
    extra = msg.usage.input_tokens - baseline.usage.input_tokens
    min_chars = sum(len(b["text"]) for b in system)
    assert extra >= 3 + min_chars // 4, (baseline.usage, msg.usage)


def test_same_model_name_on_both_surfaces(oai, ant, model):
    """The same request through both SDKs gives the same text and token counts."""
    prompt = "same on both surfaces"
    o = oai.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}])
    a = ant.messages.create(model=model, max_tokens=256, messages=[{"role": "user", "content": prompt}])
    assert o.choices[0].message.content == a.content[0].text == echo(prompt)
    assert o.usage.prompt_tokens == a.usage.input_tokens
    assert o.usage.completion_tokens == a.usage.output_tokens


assert set(PROVIDER) == set(FLAVOR_MODEL)


def order_model():
    """A Pydantic model with a nested model (a `$ref` into `$defs` in its schema), and
    the instance the mocks answer its schema with for the prompt "one coffee"."""
    import pydantic

    class Buyer(pydantic.BaseModel):
        name: str

    class Order(pydantic.BaseModel):
        item: str
        qty: int
        express: bool
        buyer: Buyer

    return Order, Order(item="echo: one coffee", qty=0, express=False, buyer=Buyer(name="echo: one coffee"))


@pytest.mark.parametrize("upstream", ["openai", "mistral", "anthropic"])
def test_openai_structured_output_parse(oai, upstream):
    """`chat.completions.parse` with a Pydantic model: the strict JSON schema reaches the
    provider (OpenAI and Mistral `response_format`, Anthropic `output_config.format`; the
    mock answers with the schema's simplest instance) and the SDK parses it."""
    Order, want = order_model()
    done = oai.chat.completions.parse(
        model=FLAVOR_MODEL[upstream],
        messages=[{"role": "user", "content": "one coffee"}],
        response_format=Order,
    )
    assert done.choices[0].finish_reason == "stop"
    assert done.choices[0].message.parsed == want


@pytest.mark.parametrize("upstream", ["openai", "anthropic"])
def test_openai_structured_output_stream(oai, upstream):
    """The same through `chat.completions.stream`: the streamed JSON parses at the end."""
    Order, want = order_model()
    with oai.chat.completions.stream(
        model=FLAVOR_MODEL[upstream],
        messages=[{"role": "user", "content": "one coffee"}],
        response_format=Order,
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.parsed == want


@pytest.mark.parametrize("upstream", ["anthropic", "openai", "mistral"])
def test_anthropic_structured_output_parse(ant, upstream):
    """`messages.parse(output_format=Model)` (anthropic 2.14 sends GA `output_config.format`)
    through every provider: OpenAI and Mistral get `response_format` `json_schema`."""
    Order, want = order_model()
    msg = ant.messages.parse(
        model=FLAVOR_MODEL[upstream],
        max_tokens=256,
        messages=[{"role": "user", "content": "one coffee"}],
        output_format=Order,
    )
    assert msg.stop_reason == "end_turn"
    assert msg.parsed_output == want


@pytest.mark.parametrize("upstream", ["anthropic", "openai"])
def test_anthropic_structured_output_create_and_stream(ant, upstream):
    """`messages.create(output_config=...)` with a hand-written schema and an effort, and
    `messages.stream(output_format=Model)`: the text block holds the JSON."""
    import json

    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "sunny": {"type": "boolean"}},
        "required": ["city", "sunny"],
        "additionalProperties": False,
    }
    msg = ant.messages.create(
        model=FLAVOR_MODEL[upstream],
        max_tokens=256,
        messages=[{"role": "user", "content": "Zürich"}],
        output_config={"format": {"type": "json_schema", "schema": schema}, "effort": "low"},
    )
    assert json.loads(msg.content[0].text) == {"city": "echo: Zürich", "sunny": False}

    Order, want = order_model()
    with ant.messages.stream(
        model=FLAVOR_MODEL[upstream],
        max_tokens=256,
        messages=[{"role": "user", "content": "one coffee"}],
        output_format=Order,
    ) as stream:
        final = stream.get_final_message()
    assert final.parsed_output == want
