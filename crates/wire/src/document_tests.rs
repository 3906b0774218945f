//! Documents across the hub: Anthropic `document` blocks and OpenAI `file` parts, parsed,
//! written to each upstream format, and refused where the target has no counterpart.

use serde_json::{Value, json};

use crate::canonical::{Block, ChatRequest, Document, DocumentSource, Format};
use crate::error::RequestError;
use crate::{anthropic, mistral, openai};

const PDF: &str = "JVBERi0xLjQK";

fn anthropic_request(content: Value) -> ChatRequest {
    let body = json!({"model": "claude-x", "max_tokens": 64, "messages": [{"role": "user", "content": content}]});
    anthropic::parse_request(body.to_string().as_bytes()).unwrap()
}

fn openai_request(messages: Value) -> ChatRequest {
    let body = json!({"model": "gpt-x", "messages": messages});
    openai::parse_request(body.to_string().as_bytes()).unwrap()
}

fn openai_error(messages: Value) -> RequestError {
    let body = json!({"model": "gpt-x", "messages": messages});
    openai::parse_request(body.to_string().as_bytes()).unwrap_err()
}

fn to_anthropic(req: &ChatRequest) -> Value {
    serde_json::from_slice(&anthropic::encode_request(req, "claude-x")).unwrap()
}

fn to_openai(req: &ChatRequest) -> Value {
    serde_json::from_slice(&openai::encode_request(
        req,
        "gpt-x",
        openai::Dialect::OpenAi,
    ))
    .unwrap()
}

fn to_mistral(req: &ChatRequest) -> Value {
    serde_json::from_slice(&mistral::encode_request(req, "mistral-x")).unwrap()
}

fn only_document(req: &ChatRequest) -> &Document {
    let mut docs = req.documents();
    let d = docs.next().unwrap();
    assert!(docs.next().is_none());
    d
}

fn refusal(r: Result<(), RequestError>) -> (String, String) {
    let e = r.unwrap_err();
    (e.param.unwrap(), e.message)
}

/// Every Anthropic document form, with every field.
fn anthropic_documents() -> Value {
    json!([
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
         "title": "Report", "context": "Q3 figures", "citations": {"enabled": true},
         "cache_control": {"type": "ephemeral", "ttl": "1h"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The grass is green."},
         "title": "Notes", "citations": {"enabled": false}},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}},
        {"type": "document", "source": {"type": "content", "content": [
            {"type": "text", "text": "First chunk."},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBO"}}
        ]}, "context": "chunks"},
        {"type": "document", "source": {"type": "file", "file_id": "file_011CNha8iCJcU1wXNR6q4V8w"}},
        {"type": "text", "text": "Summarise."}
    ])
}

#[test]
fn anthropic_documents_parse_and_reach_anthropic_unchanged() {
    let req = anthropic_request(anthropic_documents());
    assert!(req.has_documents());
    assert_eq!(req.documents().count(), 5);
    let docs: Vec<&Document> = req.documents().collect();
    assert_eq!(
        docs[0].source,
        DocumentSource::Base64 {
            media_type: "application/pdf".into(),
            data: PDF.into()
        }
    );
    assert_eq!(docs[0].title.as_deref(), Some("Report"));
    assert_eq!(docs[0].context.as_deref(), Some("Q3 figures"));
    assert_eq!(docs[0].at, "messages[0].content[0].source");
    assert_eq!(
        docs[4].source,
        DocumentSource::File {
            file_id: "file_011CNha8iCJcU1wXNR6q4V8w".into(),
            owner: Format::Anthropic
        }
    );
    match &docs[3].source {
        DocumentSource::Content { content } => {
            assert_eq!(content.len(), 2);
            assert_eq!(content[0], Block::text("First chunk."));
        }
        other => panic!("expected content, got {other:?}"),
    }
    assert_eq!(anthropic::check_documents(&req), Ok(()));
    let out = to_anthropic(&req);
    assert_eq!(out["messages"][0]["content"], anthropic_documents());
    // A string `content` source is one text block.
    let req = anthropic_request(
        json!([{"type": "document", "source": {"type": "content", "content": "All of it."}}]),
    );
    assert_eq!(
        to_anthropic(&req)["messages"][0]["content"][0]["source"],
        json!({"type": "content", "content": [{"type": "text", "text": "All of it."}]})
    );
}

#[test]
fn requests_without_documents_have_none() {
    let req = anthropic_request(json!("hi"));
    assert!(!req.has_documents());
    assert_eq!(req.documents().count(), 0);
    for check in [
        anthropic::check_documents,
        openai::check_documents,
        mistral::check_documents,
    ] {
        assert_eq!(check(&req), Ok(()));
    }
}

#[test]
fn anthropic_documents_to_openai() {
    let req = anthropic_request(json!([
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
         "title": "report.pdf", "citations": {"enabled": true}, "cache_control": {"type": "ephemeral"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The grass is green."},
         "title": "Notes", "context": "ignored"},
        {"type": "document", "source": {"type": "content", "content": [
            {"type": "text", "text": "First chunk."},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/i.png"}}
        ]}},
        {"type": "text", "text": "Summarise."}
    ]));
    assert_eq!(openai::check_documents(&req), Ok(()));
    let out = to_openai(&req);
    assert_eq!(
        out["messages"][0]["content"],
        json!([
            {"type": "file", "file": {"file_data": format!("data:application/pdf;base64,{PDF}"), "filename": "report.pdf"}},
            {"type": "file", "file": {"file_data": format!("data:application/pdf;base64,{PDF}"), "filename": "document.pdf"}},
            {"type": "text", "text": "The grass is green."},
            {"type": "text", "text": "First chunk."},
            {"type": "image_url", "image_url": {"url": "https://example.com/i.png"}},
            {"type": "text", "text": "Summarise."}
        ])
    );
}

#[test]
fn openai_file_parts_parse_and_reach_openai_unchanged() {
    let parts = json!([
        {"type": "text", "text": "Read these."},
        {"type": "file", "file": {"file_data": format!("data:application/pdf;base64,{PDF}"), "filename": "x.pdf"}},
        {"type": "file", "file": {"file_id": "file-abc123"}}
    ]);
    let req = openai_request(json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": parts}
    ]));
    let docs: Vec<&Document> = req.documents().collect();
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].title.as_deref(), Some("x.pdf"));
    assert_eq!(
        docs[0].source,
        DocumentSource::Base64 {
            media_type: "application/pdf".into(),
            data: PDF.into()
        }
    );
    // The client's index, not the hub's (the system message is hoisted out).
    assert_eq!(docs[0].at, "messages[1].content[1].file.file_data");
    assert_eq!(docs[1].at, "messages[1].content[2].file.file_id");
    assert_eq!(
        docs[1].source,
        DocumentSource::File {
            file_id: "file-abc123".into(),
            owner: Format::OpenAi
        }
    );
    assert_eq!(openai::check_documents(&req), Ok(()));
    assert_eq!(to_openai(&req)["messages"][1]["content"], parts);
}

#[test]
fn openai_file_parts_are_checked() {
    let user = |part: Value| json!([{"role": "user", "content": [part]}]);
    let cases = [
        (
            json!({"type": "file"}),
            "messages[0].content[0].file",
            "`messages[0].content[0].file` is required and must be an object",
        ),
        (
            json!({"type": "file", "file": {}}),
            "messages[0].content[0].file",
            "`messages[0].content[0].file` needs `file_data` (a base64 data URL) or `file_id`",
        ),
        (
            json!({"type": "file", "file": {"file_data": "data:application/pdf;base64,AA", "file_id": "file-1"}}),
            "messages[0].content[0].file",
            "`messages[0].content[0].file` takes `file_data` or `file_id`, not both",
        ),
        (
            json!({"type": "file", "file": {"file_data": PDF, "filename": "x.pdf"}}),
            "messages[0].content[0].file.file_data",
            "`messages[0].content[0].file.file_data` must be a base64 data URL: data:application/pdf;base64,<data>",
        ),
        (
            json!({"type": "file", "file": {"file_id": 7}}),
            "messages[0].content[0].file.file_id",
            "`messages[0].content[0].file.file_id` must be a string",
        ),
        (
            json!({"type": "file", "file": {"file_id": "f", "filename": ["x"]}}),
            "messages[0].content[0].file.filename",
            "`messages[0].content[0].file.filename` must be a string",
        ),
        (
            json!({"type": "input_audio"}),
            "messages[0].content[0].type",
            "unsupported content part type `input_audio`; supported: text, image_url, file",
        ),
    ];
    for (part, param, message) in cases {
        let e = openai_error(user(part));
        assert_eq!(e.param.as_deref(), Some(param));
        assert_eq!(e.message, message);
    }
}

#[test]
fn openai_file_data_to_anthropic() {
    let req = openai_request(json!([{"role": "user", "content": [
        {"type": "file", "file": {"file_data": format!("data:application/pdf;base64,{PDF}"), "filename": "x.pdf"}},
        {"type": "text", "text": "Summarise."}
    ]}]));
    assert_eq!(anthropic::check_documents(&req), Ok(()));
    assert_eq!(
        to_anthropic(&req)["messages"][0]["content"],
        json!([
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}, "title": "x.pdf"},
            {"type": "text", "text": "Summarise."}
        ])
    );
}

#[test]
fn documents_to_mistral() {
    let req = anthropic_request(json!([
        {"type": "document", "source": {"type": "url", "url": "https://arxiv.org/pdf/1805.04770"}, "title": "paper.pdf"},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/b.pdf"}},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Plain."}},
        {"type": "text", "text": "Compare."}
    ]));
    assert_eq!(mistral::check_documents(&req), Ok(()));
    assert_eq!(
        to_mistral(&req)["messages"][0]["content"],
        json!([
            {"type": "document_url", "document_url": "https://arxiv.org/pdf/1805.04770", "document_name": "paper.pdf"},
            {"type": "document_url", "document_url": "https://example.com/b.pdf"},
            {"type": "text", "text": "Plain."},
            {"type": "text", "text": "Compare."}
        ])
    );
}

#[test]
fn what_a_target_cannot_take_is_refused_naming_the_clients_field() {
    let url = anthropic_request(json!([
        {"type": "text", "text": "Read it."},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
    ]));
    assert_eq!(
        refusal(openai::check_documents(&url)),
        (
            "messages[0].content[1].source".into(),
            "`messages[0].content[1].source` is a document by URL, and OpenAI Chat Completions \
             takes files only as `file_data` or `file_id`; send the PDF inline \
             (`source.type: base64`) for this model"
                .into()
        )
    );
    let anthropic_file = anthropic_request(
        json!([{"type": "document", "source": {"type": "file", "file_id": "file_011"}}]),
    );
    assert_eq!(
        refusal(openai::check_documents(&anthropic_file)),
        (
            "messages[0].content[0].source".into(),
            "`messages[0].content[0].source` names a file in Anthropic's Files API, which \
             OpenAI cannot read; send the PDF inline (`source.type: base64`) for this model"
                .into()
        )
    );
    let pdf = anthropic_request(json!([
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}}
    ]));
    assert_eq!(
        refusal(mistral::check_documents(&pdf)),
        (
            "messages[0].content[0].source".into(),
            "`messages[0].content[0].source` is an inline document, and Mistral's chat API \
             reads documents only by URL (`document_url`); send a URL Mistral can fetch \
             (`source.type: url`) for this model"
                .into()
        )
    );
    assert_eq!(
        refusal(mistral::check_documents(&anthropic_file)).0,
        "messages[0].content[0].source"
    );
    // OpenAI's file ids: not Anthropic's, not Mistral's; the index is the client's.
    let openai_file = openai_request(json!([
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Read it."}, {"type": "file", "file": {"file_id": "file-abc"}}]}
    ]));
    assert_eq!(
        refusal(anthropic::check_documents(&openai_file)),
        (
            "messages[1].content[1].file.file_id".into(),
            "`messages[1].content[1].file.file_id` names a file in OpenAI's Files API, which \
             Anthropic cannot read; send the PDF itself as `file_data` for this model"
                .into()
        )
    );
    assert_eq!(
        refusal(mistral::check_documents(&openai_file)),
        (
            "messages[1].content[1].file.file_id".into(),
            "`messages[1].content[1].file.file_id` names a file in another provider's Files \
             API, which Mistral cannot read; send a URL Mistral can fetch (`source.type: url`) \
             for this model"
                .into()
        )
    );
    assert_eq!(openai::check_documents(&openai_file), Ok(()));
    // Inline data that is not a PDF is refused when it is read, on either surface: no
    // provider's chat API takes it, and the guardrails would not read it.
    let text_data = openai_error(json!([{"role": "user", "content": [
        {"type": "file", "file": {"file_data": "data:text/plain;base64,aGk=", "filename": "a.txt"}}
    ]}]));
    assert_eq!(
        refusal(Err(text_data)),
        (
            "messages[0].content[0].file.file_data".into(),
            "`messages[0].content[0].file.file_data` is \"text/plain\" data; inline documents \
             must be PDFs (application/pdf): send text as a text part or a text document"
                .into()
        )
    );
    let body = json!({"model": "claude-x", "max_tokens": 64, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": "aGk="}}
    ]}]});
    let own = anthropic::parse_request(body.to_string().as_bytes()).unwrap_err();
    assert_eq!(
        own.param.as_deref(),
        Some("messages[0].content[0].source.media_type")
    );
    // `citations` is `{"enabled": bool}` only (it travels to Anthropic unscanned).
    for bad in [
        json!({"enabled": true, "note": "project-orion"}),
        json!({"enabled": "yes"}),
    ] {
        let body = json!({"model": "claude-x", "max_tokens": 64, "messages": [{"role": "user", "content": [
            {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
             "citations": bad}
        ]}]});
        let e = anthropic::parse_request(body.to_string().as_bytes()).unwrap_err();
        assert_eq!(
            e.param.as_deref(),
            Some("messages[0].content[0].citations"),
            "{bad}"
        );
        assert_eq!(
            e.message,
            "`messages[0].content[0].citations` takes only `enabled`, a boolean"
        );
    }
    // The media type is compared without regard to case.
    let upper = anthropic_request(json!([
        {"type": "document", "source": {"type": "base64", "media_type": "Application/PDF", "data": PDF}}
    ]));
    assert_eq!(anthropic::check_documents(&upper), Ok(()));
}

#[test]
fn a_text_document_is_part_of_the_last_user_text() {
    let req = anthropic_request(json!([
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "The grass is green."}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}},
        {"type": "text", "text": "What colour?"}
    ]));
    assert_eq!(
        req.last_user_text().as_deref(),
        Some("The grass is green.\nWhat colour?")
    );
    assert_eq!(
        only_document(&anthropic_request(json!([
            {"type": "document", "source": {"type": "url", "url": "u"}}
        ])))
        .source,
        DocumentSource::Url { url: "u".into() }
    );
}

#[test]
fn documents_survive_serde_without_their_position() {
    // The cache keeps canonical requests and replies as JSON: a document round-trips,
    // and its position (`at`) is not part of it.
    let req = anthropic_request(anthropic_documents());
    let json = serde_json::to_string(&req.messages).unwrap();
    assert!(!json.contains("messages[0]"));
    let back: Vec<crate::canonical::Message> = serde_json::from_str(&json).unwrap();
    let doc = |b: &Block| match b {
        Block::Document(d) => Some((d.source.clone(), d.title.clone(), d.citations.clone())),
        _ => None,
    };
    let before: Vec<_> = req.messages[0].content.iter().filter_map(doc).collect();
    let after: Vec<_> = back[0].content.iter().filter_map(doc).collect();
    assert_eq!(before, after);
}
