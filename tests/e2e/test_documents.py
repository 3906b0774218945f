"""Documents through the official SDKs: the Anthropic SDK's `document` blocks (a
base64 PDF, a plain-text document) to an Anthropic- and an OpenAI-flavoured provider,
the OpenAI SDK's `file` parts; what a provider has no counterpart for is a 400 the SDK
raises as BadRequestError. The mocks echo the text of the last user message: a text
document's text counts, a PDF adds none."""

from __future__ import annotations

import base64

import anthropic
import openai
import pytest

from helpers import completion_tokens, echo, prompt_tokens

# A tiny PDF (two page objects): the mocks only read that it is base64.
PDF = base64.b64encode(
    b"%PDF-1.4\n1 0 obj <</Type /Page>> endobj\n2 0 obj <</Type /Page>> endobj\n%%EOF\n"
).decode()

NOTES = "The grass is green."
QUESTION = " What colour is it?"

PROVIDER = {"claude": "ext-anthropic", "gpt": "ext-openai"}


def documents() -> list[dict]:
    return [
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
            "title": "report.pdf",
            "context": "Quarterly figures",
            "citations": {"enabled": True},
        },
        {
            "type": "document",
            "source": {"type": "text", "media_type": "text/plain", "data": NOTES},
            "title": "Notes",
        },
        {"type": "text", "text": QUESTION},
    ]


@pytest.mark.parametrize("model", ["claude", "gpt"])
def test_anthropic_sdk_sends_a_pdf_and_a_text_document(ant, model):
    raw = ant.messages.with_raw_response.create(
        model=model,
        max_tokens=256,
        messages=[{"role": "user", "content": documents()}],
    )
    assert raw.headers.get("x-asc-provider") == PROVIDER[model]
    msg = raw.parse()
    assert msg.content[0].text == echo(NOTES + QUESTION)
    assert msg.stop_reason == "end_turn"
    # The PDF is no text to the mock; the text document is.
    assert msg.usage.input_tokens == prompt_tokens([NOTES, QUESTION], 1)
    assert msg.usage.output_tokens == completion_tokens(echo(NOTES + QUESTION))


@pytest.mark.parametrize("model", ["claude", "gpt"])
def test_anthropic_sdk_streams_with_documents(ant, model):
    with ant.messages.stream(
        model=model, max_tokens=256, messages=[{"role": "user", "content": documents()}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == echo(NOTES + QUESTION)
    assert final.usage.input_tokens == prompt_tokens([NOTES, QUESTION], 1)


def test_anthropic_sdk_pdf_by_url_to_openai_is_refused(ant):
    with pytest.raises(anthropic.BadRequestError) as ei:
        ant.messages.create(
            model="gpt",
            max_tokens=64,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Read this."},
                        {
                            "type": "document",
                            "source": {"type": "url", "url": "https://example.com/a.pdf"},
                        },
                    ],
                }
            ],
        )
    assert ei.value.status_code == 400
    message = ei.value.body["error"]["message"]
    assert "messages[0].content[1].source" in message
    assert "OpenAI Chat Completions takes files only as `file_data` or `file_id`" in message


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_openai_sdk_sends_a_file_part(oai, model):
    prompt = "Summarise the attached file."
    raw = oai.chat.completions.with_raw_response.create(
        model=model,
        messages=[
            {
                "role": "user",
                "content": [
                    {
                        "type": "file",
                        "file": {
                            "file_data": f"data:application/pdf;base64,{PDF}",
                            "filename": "report.pdf",
                        },
                    },
                    {"type": "text", "text": prompt},
                ],
            }
        ],
    )
    assert raw.headers.get("x-asc-provider") == PROVIDER[model]
    resp = raw.parse()
    assert resp.choices[0].message.content == echo(prompt)
    assert resp.usage.prompt_tokens == prompt_tokens([prompt], 1)


def test_openai_sdk_file_id_to_anthropic_is_refused(oai):
    with pytest.raises(openai.BadRequestError) as ei:
        oai.chat.completions.create(
            model="claude",
            messages=[
                {"role": "system", "content": "Be brief."},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Read it."},
                        {"type": "file", "file": {"file_id": "file-abc123"}},
                    ],
                },
            ],
        )
    assert ei.value.status_code == 400
    err = ei.value.body
    assert err["code"] == "invalid_request"
    assert err["param"] == "messages[1].content[1].file.file_id"
    assert "OpenAI's Files API, which Anthropic cannot read" in err["message"]


def test_anthropic_sdk_reads_citations_json_and_streamed(ant):
    """Citations on a text document, served by Anthropic: `messages.create` and
    `messages.stream` (whose `citations_delta`s the SDK folds into the block) give the
    same citation of the document's text; served by OpenAI, which has no citations,
    none."""
    doc = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": NOTES},
        "title": "Notes",
        "citations": {"enabled": True},
    }
    messages = [{"role": "user", "content": [doc, {"type": "text", "text": QUESTION}]}]
    msg = ant.messages.create(model="claude", max_tokens=256, messages=messages)
    (cite,) = msg.content[0].citations
    assert cite.type == "char_location"
    assert (cite.cited_text, cite.document_index, cite.document_title) == (NOTES, 0, "Notes")
    assert (cite.start_char_index, cite.end_char_index) == (0, len(NOTES))

    with ant.messages.stream(model="claude", max_tokens=256, messages=messages) as stream:
        final = stream.get_final_message()
    assert final.content[0].text == msg.content[0].text
    assert [c.model_dump() for c in final.content[0].citations] == [cite.model_dump()]

    other = ant.messages.create(model="gpt", max_tokens=256, messages=messages)
    assert other.content[0].text == echo(NOTES + QUESTION)
    assert not other.content[0].citations
