//! The mocks take documents as the real APIs do, and a text document is text.

use serde_json::{Value, json};

use super::super::{Flavor, MockSettings};
use super::{post, spawn};

const PDF: &str = "JVBERi0xLjQKJSVFT0YK";

fn anthropic(content: Value) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
           "messages": [{"role": "user", "content": content}]})
}

fn openai(content: Value) -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": content}]})
}

#[tokio::test]
async fn anthropic_mock_reads_text_documents_and_not_pdfs() {
    let (base, _) = spawn(MockSettings::new(Flavor::Anthropic)).await;
    let ask = |content: Value| {
        let base = base.clone();
        async move {
            post(
                &base,
                Flavor::Anthropic,
                "/v1/messages",
                &anthropic(content),
            )
            .await
        }
    };
    let r = ask(json!([
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The grass is green."},
         "title": "Notes", "context": "not echoed", "citations": {"enabled": true}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}},
        {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": " Sky: blue."}]}},
        {"type": "text", "text": " What colour?"}
    ]))
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = r.json();
    assert_eq!(
        v["content"][0]["text"],
        "echo: The grass is green. Sky: blue. What colour?"
    );
    // The same as that text sent as a text block: ceil(42 / 4) + 3 = 14.
    let plain = ask(json!("The grass is green. Sky: blue. What colour?"))
        .await
        .json();
    assert_eq!(v["usage"]["input_tokens"], 14);
    assert_eq!(plain["usage"]["input_tokens"], 14);
    // A PDF alone: no text, the usage of an empty message.
    let pdf = ask(json!([
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}}
    ]))
    .await
    .json();
    assert_eq!(pdf["content"][0]["text"], "echo: ");
    assert_eq!(pdf["usage"]["input_tokens"], 3);
}

#[tokio::test]
async fn anthropic_mock_validates_documents_as_the_api_does() {
    let (base, _) = spawn(MockSettings::new(Flavor::Anthropic)).await;
    let cases = [
        (
            json!({"type": "document"}),
            "messages.0.content.0.document.source: Field required",
        ),
        (
            json!({"type": "document", "source": {"type": "base64", "media_type": "image/png", "data": PDF}}),
            "messages.0.content.0.document.source.base64.media_type: Input should be 'application/pdf'",
        ),
        (
            json!({"type": "document", "source": {"type": "text", "media_type": "text/plain"}}),
            "messages.0.content.0.document.source.text.data: Field required",
        ),
        (
            json!({"type": "document", "source": {"type": "url"}}),
            "messages.0.content.0.document.source.url.url: Field required",
        ),
        (
            json!({"type": "document", "source": {"type": "file", "file_id": 3}}),
            "messages.0.content.0.document.source.file.file_id: Input should be a valid string",
        ),
        (
            json!({"type": "document", "source": {"type": "url", "url": "u"}, "citations": {"enabled": "yes"}}),
            "messages.0.content.0.document.citations.enabled: Input should be a valid boolean",
        ),
        (
            json!({"type": "document", "source": {"type": "zip"}}),
            "messages.0.content.0.document.source.zip.type: Input tag 'zip' found using 'type' \
             does not match any of the expected tags: 'base64', 'content', 'text', 'url', 'file'",
        ),
    ];
    for (block, message) in cases {
        let r = post(
            &base,
            Flavor::Anthropic,
            "/v1/messages",
            &anthropic(json!([block])),
        )
        .await;
        assert_eq!(r.status, 400, "{}", r.text);
        let v = r.json();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["message"], message);
    }
}

#[tokio::test]
async fn openai_mock_takes_file_parts_as_openai_does() {
    let (base, _) = spawn(MockSettings::new(Flavor::OpenAi)).await;
    let path = "/v1/chat/completions";
    let ok = post(&base, Flavor::OpenAi, path, &openai(json!([
        {"type": "file", "file": {"file_data": format!("data:application/pdf;base64,{PDF}"), "filename": "a.pdf"}},
        {"type": "file", "file": {"file_id": "file-abc"}},
        {"type": "text", "text": "Summarise."}
    ])))
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    let v = ok.json();
    assert_eq!(v["choices"][0]["message"]["content"], "echo: Summarise.");
    // Files add no text: ceil(10 / 4) + 3 = 6.
    assert_eq!(v["usage"]["prompt_tokens"], 6);
    let cases = [
        (
            json!({"type": "file", "file": {"file_data": format!("data:application/pdf;base64,{PDF}")}}),
            "messages[0].content[0].file.file_id",
            "Missing required parameter: 'messages[0].content[0].file.file_id'.",
        ),
        (
            json!({"type": "file", "file": {"file_data": PDF, "filename": "a.pdf"}}),
            "messages[0].content[0].file.file_data",
            "Invalid value for 'messages[0].content[0].file.file_data': expected a base64-encoded data URL with an application/pdf MIME type.",
        ),
        (
            json!({"type": "document_url", "document_url": "https://example.com/a.pdf"}),
            "messages[0].content[0].type",
            "Invalid value: 'document_url'. Supported values are: 'text', 'image_url', 'input_audio', 'refusal', 'audio', and 'file'.",
        ),
    ];
    for (part, param, message) in cases {
        let r = post(&base, Flavor::OpenAi, path, &openai(json!([part]))).await;
        assert_eq!(r.status, 400, "{}", r.text);
        let v = r.json();
        assert_eq!(v["error"]["param"], param);
        assert_eq!(v["error"]["message"], message);
    }
}

#[tokio::test]
async fn mistral_mock_takes_document_url_chunks() {
    let (base, _) = spawn(MockSettings::new(Flavor::Mistral)).await;
    let path = "/v1/chat/completions";
    let body = |part: Value| {
        let mut v = openai(json!([part, {"type": "text", "text": "Summarise."}]));
        v["model"] = json!("mistral-small-latest");
        v
    };
    let ok = post(
        &base,
        Flavor::Mistral,
        path,
        &body(json!({"type": "document_url", "document_url": "https://arxiv.org/pdf/1805.04770", "document_name": "p.pdf"})),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(
        ok.json()["choices"][0]["message"]["content"],
        "echo: Summarise."
    );
    for part in [
        json!({"type": "document_url"}),
        json!({"type": "file", "file": {"file_data": format!("data:application/pdf;base64,{PDF}")}}),
    ] {
        let r = post(&base, Flavor::Mistral, path, &body(part)).await;
        assert_eq!(r.status, 422, "{}", r.text);
        assert_eq!(r.json()["message"]["detail"][0]["msg"], "Field required");
    }
}

/// Documents with `citations.enabled`: the text reply cites the first of them whole, in
/// its kind's location (characters of a text, pages of a PDF, blocks of custom
/// content), `document_index` counting the request's documents; streamed, the same
/// citation comes as a `citations_delta` before the text. Without citations enabled,
/// or with structured output, none.
#[tokio::test]
async fn anthropic_mock_cites_documents_with_citations_enabled() {
    let (base, _) = spawn(MockSettings::new(Flavor::Anthropic)).await;
    let text_doc = |citations: bool| {
        json!({"type": "document", "title": "Notes", "citations": {"enabled": citations},
               "source": {"type": "text", "media_type": "text/plain", "data": "Grass is green."}})
    };
    let pdf = json!({"type": "document", "citations": {"enabled": true},
                     "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}});
    let custom = json!({"type": "document", "citations": {"enabled": true},
        "source": {"type": "content", "content": [{"type": "text", "text": "Sky: blue."}]}});
    let cases = [
        (
            json!([text_doc(true), {"type": "text", "text": "Colour?"}]),
            Some(
                json!({"type": "char_location", "cited_text": "Grass is green.",
                "document_index": 0, "document_title": "Notes",
                "start_char_index": 0, "end_char_index": 15}),
            ),
        ),
        (
            json!([text_doc(false), pdf, {"type": "text", "text": "Colour?"}]),
            Some(
                json!({"type": "page_location", "cited_text": "", "document_index": 1,
                "document_title": null, "start_page_number": 1, "end_page_number": 2}),
            ),
        ),
        (
            json!([custom, {"type": "text", "text": "Colour?"}]),
            Some(
                json!({"type": "content_block_location", "cited_text": "Sky: blue.",
                "document_index": 0, "document_title": null,
                "start_block_index": 0, "end_block_index": 1}),
            ),
        ),
        (
            json!([text_doc(false), {"type": "text", "text": "Colour?"}]),
            None,
        ),
    ];
    for (content, want) in cases {
        let req = anthropic(content.clone());
        let v = post(&base, Flavor::Anthropic, "/v1/messages", &req)
            .await
            .json();
        let block = &v["content"][0];
        assert_eq!(block["type"], "text", "{v}");
        assert_eq!(
            block.get("citations").cloned(),
            want.clone().map(|c| json!([c])),
            "{content}"
        );
        let mut sreq = req.clone();
        sreq["stream"] = json!(true);
        let r = post(&base, Flavor::Anthropic, "/v1/messages", &sreq).await;
        let deltas: Vec<Value> = super::anthropic_events(&r.text)
            .into_iter()
            .filter(|(e, _)| e == "content_block_delta")
            .map(|(_, v)| v["delta"].clone())
            .collect();
        let cited: Vec<&Value> = deltas
            .iter()
            .filter(|d| d["type"] == "citations_delta")
            .map(|d| &d["citation"])
            .collect();
        assert_eq!(cited, want.iter().collect::<Vec<_>>(), "{content}");
        if want.is_some() {
            assert_eq!(deltas[0]["type"], "citations_delta", "before the text");
        }
        let text: String = deltas.iter().filter_map(|d| d["text"].as_str()).collect();
        assert_eq!(text, block["text"].as_str().unwrap());
    }
    // Structured output is not cited.
    let mut req = anthropic(json!([text_doc(true), {"type": "text", "text": "Colour?"}]));
    req["output_config"] = json!({"format": {"type": "json_schema", "schema": {
        "type": "object", "properties": {"c": {"type": "string"}}, "required": ["c"],
        "additionalProperties": false}}});
    let v = post(&base, Flavor::Anthropic, "/v1/messages", &req)
        .await
        .json();
    assert!(v["content"][0].get("citations").is_none(), "{v}");
}
