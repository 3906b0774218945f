"""Tool calls through both SDKs to every provider flavor, plain and streamed, and the
round trip with the tool result. The mock calls the first offered tool with
`{"input": "<last user text>"}` and, after a tool result, answers `echo: <result>`."""

from __future__ import annotations

import json

from helpers import ANTHROPIC_TOOLS, OPENAI_TOOLS, TOOL_NAME, echo

# --- OpenAI SDK --------------------------------------------------------------------


def test_openai_tool_call_round_trip(oai, model):
    question = "What is the capital of France?"
    messages = [{"role": "user", "content": question}]
    resp = oai.chat.completions.create(model=model, messages=messages, tools=OPENAI_TOOLS)
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls and len(calls) == 1
    call = calls[0]
    assert call.type == "function"
    assert call.id
    assert call.function.name == TOOL_NAME
    assert json.loads(call.function.arguments) == {"input": question}
    assert resp.usage.completion_tokens > 0

    # Send the tool result back; the tools are still offered.
    messages.append(choice.message.model_dump(exclude_none=True))
    messages.append({"role": "tool", "tool_call_id": call.id, "content": "Paris"})
    resp2 = oai.chat.completions.create(model=model, messages=messages, tools=OPENAI_TOOLS)
    choice2 = resp2.choices[0]
    assert choice2.finish_reason == "stop"
    assert not choice2.message.tool_calls
    assert choice2.message.content == echo("Paris")


def test_openai_tool_choice_none_answers_with_text(oai, model):
    resp = oai.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "no tools now"}],
        tools=OPENAI_TOOLS,
        tool_choice="none",
    )
    assert resp.choices[0].finish_reason == "stop"
    assert resp.choices[0].message.content == echo("no tools now")


def test_openai_tool_call_streamed(oai, model):
    question = "stream a tool call"
    stream = oai.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": question}],
        tools=OPENAI_TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    calls: dict[int, dict] = {}
    finish = []
    usage = None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for ch in chunk.choices:
            if ch.finish_reason:
                finish.append(ch.finish_reason)
            for tc in ch.delta.tool_calls or []:
                acc = calls.setdefault(tc.index, {"id": None, "name": "", "arguments": ""})
                if tc.id:
                    acc["id"] = tc.id
                if tc.function and tc.function.name:
                    acc["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    acc["arguments"] += tc.function.arguments
    assert finish == ["tool_calls"]
    assert list(calls) == [0]
    assert calls[0]["id"]
    assert calls[0]["name"] == TOOL_NAME
    assert json.loads(calls[0]["arguments"]) == {"input": question}
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0


def test_openai_tool_call_stream_helper(oai, model):
    question = "helper stream"
    with oai.chat.completions.stream(
        model=model, messages=[{"role": "user", "content": question}], tools=OPENAI_TOOLS
    ) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    choice = final.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == TOOL_NAME
    assert json.loads(call.function.arguments) == {"input": question}


# --- Anthropic SDK -----------------------------------------------------------------


def test_anthropic_tool_use_round_trip(ant, model):
    question = "What is the capital of Italy?"
    messages = [{"role": "user", "content": question}]
    msg = ant.messages.create(model=model, max_tokens=256, messages=messages, tools=ANTHROPIC_TOOLS)
    assert msg.stop_reason == "tool_use"
    uses = [b for b in msg.content if b.type == "tool_use"]
    assert len(uses) == 1
    use = uses[0]
    assert use.id
    assert use.name == TOOL_NAME
    assert use.input == {"input": question}
    assert msg.usage.output_tokens > 0

    messages.append({"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]})
    messages.append(
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Rome"}],
        }
    )
    msg2 = ant.messages.create(model=model, max_tokens=256, messages=messages, tools=ANTHROPIC_TOOLS)
    assert msg2.stop_reason == "end_turn"
    assert [b.type for b in msg2.content] == ["text"]
    assert msg2.content[0].text == echo("Rome")


def test_anthropic_tool_result_blocks(ant, model):
    """A tool result given as a list of text blocks."""
    question = "blocks please"
    msg = ant.messages.create(
        model=model, max_tokens=256, messages=[{"role": "user", "content": question}], tools=ANTHROPIC_TOOLS
    )
    use = next(b for b in msg.content if b.type == "tool_use")
    msg2 = ant.messages.create(
        model=model,
        max_tokens=256,
        tools=ANTHROPIC_TOOLS,
        messages=[
            {"role": "user", "content": question},
            {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in msg.content]},
            {
                "role": "user",
                "content": [
                    {
                        "type": "tool_result",
                        "tool_use_id": use.id,
                        "content": [{"type": "text", "text": "forty-two"}],
                    }
                ],
            },
        ],
    )
    assert msg2.stop_reason == "end_turn"
    assert msg2.content[0].text == echo("forty-two")


def test_anthropic_tool_choice_none(ant, model):
    msg = ant.messages.create(
        model=model,
        max_tokens=256,
        messages=[{"role": "user", "content": "no tools now"}],
        tools=ANTHROPIC_TOOLS,
        tool_choice={"type": "none"},
    )
    assert msg.stop_reason == "end_turn"
    assert msg.content[0].text == echo("no tools now")


def test_anthropic_tool_use_streamed(ant, model):
    question = "stream a tool use"
    partial = []
    with ant.messages.stream(
        model=model, max_tokens=256, messages=[{"role": "user", "content": question}], tools=ANTHROPIC_TOOLS
    ) as stream:
        for event in stream:
            if event.type == "input_json":
                partial.append(event.partial_json)
        final = stream.get_final_message()
    assert json.loads("".join(partial)) == {"input": question}
    assert final.stop_reason == "tool_use"
    use = next(b for b in final.content if b.type == "tool_use")
    assert use.name == TOOL_NAME
    assert use.input == {"input": question}
    assert final.usage.output_tokens > 0
    assert final.usage.input_tokens > 0
