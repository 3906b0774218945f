//! Guardrails over documents: a text document's texts are checked and redacted like
//! message text; PDFs and unseen documents are counted conservatively.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use asc_wire::anthropic;
use asc_wire::canonical::{Block, ChatRequest, DocumentSource};
use base64::Engine as _;
use serde_json::{Value, json};

use super::*;

use super::tests::guardrails;

fn request(content: Value) -> ChatRequest {
    let body =
        json!({"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": content}]});
    anthropic::parse_request(body.to_string().as_bytes()).unwrap()
}

fn text_doc(data: &str) -> Value {
    json!({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": data}})
}

fn pdf_doc(pages: usize) -> Value {
    let body = "1 0 obj <</Type /Page>> endobj\n".repeat(pages);
    let data = base64::engine::general_purpose::STANDARD.encode(format!("%PDF-1.4\n{body}%%EOF"));
    json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": data}})
}

/// The text source of the `i`th document.
fn doc_text(req: &ChatRequest, i: usize) -> String {
    match &req.documents().nth(i).unwrap().source {
        DocumentSource::Text { data, .. } => data.clone(),
        other => panic!("not a text document: {other:?}"),
    }
}

#[test]
fn a_blocked_term_in_a_text_document_is_refused_as_in_a_message() {
    let g = guardrails(Some("off"), &["project-orion"], None);
    let in_message = g.check_request(&mut request(json!("about Project-Orion")), "m");
    assert_eq!(in_message, Err(Violation::BlockedTerm));
    let cases = [
        json!([text_doc("Minutes: PROJECT-ORION slips."), {"type": "text", "text": "Summarise."}]),
        json!([{"type": "document", "title": "project-orion plan", "source": {"type": "url", "url": "https://example.com/a.pdf"}}]),
        json!([{"type": "document", "context": "about project-orion", "source": {"type": "text", "media_type": "text/plain", "data": "fine"}}]),
        json!([{"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": "(project-orion)"}]}}]),
        json!([{"type": "document", "source": {"type": "content", "content": "all of project-orion"}}]),
    ];
    for content in cases {
        let err = g
            .check_request(&mut request(content.clone()), "m")
            .unwrap_err();
        assert_eq!(err, Violation::BlockedTerm, "{content}");
        assert_eq!(err.guardrail(), "blocked_terms");
    }
    // Whole words, as in messages; bytes the gateway cannot read are not searched.
    assert!(
        g.check_request(&mut request(json!([text_doc("project-orionis")])), "m")
            .is_ok()
    );
    assert!(
        g.check_request(&mut request(json!([pdf_doc(1)])), "m")
            .is_ok()
    );
}

#[test]
fn pii_in_a_text_document_is_redacted_before_it_leaves() {
    let g = guardrails(Some("redact"), &[], None);
    let mut req = request(json!([
        {"type": "document", "title": "Call 555-123-4567", "context": "from john@example.com",
         "source": {"type": "text", "media_type": "text/plain", "data": "Mail john@example.com or jane@example.com."},
         "citations": {"enabled": true}},
        {"type": "document", "source": {"type": "content", "content": [
            {"type": "text", "text": "Card 4111 1111 1111 1111"}
        ]}},
        pdf_doc(1),
        {"type": "text", "text": "Is jane@example.com in it?"}
    ]));
    let pdf_before = req.documents().nth(2).unwrap().source.clone();
    let found = g.check_request(&mut req, "m").unwrap();
    assert_eq!(found.pii.get("email"), Some(&4));
    assert_eq!(found.pii.get("phone"), Some(&1));
    assert_eq!(found.pii.get("card"), Some(&1));
    let d = req.documents().next().unwrap();
    assert_eq!(d.title.as_deref(), Some("Call [PHONE_1]"));
    assert_eq!(d.context.as_deref(), Some("from [EMAIL_1]"));
    // The same value, the same placeholder, across documents and messages.
    assert_eq!(doc_text(&req, 0), "Mail [EMAIL_1] or [EMAIL_2].");
    match &req.documents().nth(1).unwrap().source {
        DocumentSource::Content { content } => {
            assert_eq!(content[0], Block::text("Card [CARD_1]"));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        req.messages[0].content[3],
        Block::text("Is [EMAIL_2] in it?")
    );
    // Everything else about the documents stays as it was.
    assert_eq!(req.documents().nth(2).unwrap().source, pdf_before);
    assert!(req.documents().next().unwrap().citations.is_some());
    // What goes upstream is the redacted text.
    let body = String::from_utf8(anthropic::encode_request(&req, "claude")).unwrap();
    assert!(!body.contains("example.com") && !body.contains("4111"));
}

#[test]
fn pii_in_a_text_document_is_blocked_and_detected_as_in_a_message() {
    let doc = || request(json!([text_doc("reach me at john@example.com")]));
    let err = guardrails(Some("block"), &[], None)
        .check_request(&mut doc(), "m")
        .unwrap_err();
    assert_eq!(
        err,
        Violation::Pii {
            types: vec!["email"]
        }
    );
    let mut req = doc();
    let found = guardrails(Some("detect"), &[], None)
        .check_request(&mut req, "m")
        .unwrap();
    assert_eq!(found.pii.get("email"), Some(&1));
    assert_eq!(doc_text(&req, 0), "reach me at john@example.com");
}

#[test]
fn logged_content_has_text_documents_redacted_and_no_pdf_bytes() {
    let req = request(json!([
        {"type": "document", "title": "Notes", "source": {"type": "text", "media_type": "text/plain", "data": "for john@example.com"}},
        pdf_doc(2),
        {"type": "text", "text": "Summarise."}
    ]));
    assert_eq!(loggable_request(&req), "Notes\nfor [EMAIL_1]\nSummarise.");
}

#[test]
fn documents_count_toward_max_prompt_tokens() {
    let words = "word ".repeat(200);
    let as_text = count_prompt_tokens("gpt-4o", &request(json!([{"type": "text", "text": words}])));
    let as_doc = count_prompt_tokens("gpt-4o", &request(json!([text_doc(&words)])));
    assert_eq!(as_doc, as_text);
    let titled = count_prompt_tokens(
        "gpt-4o",
        &request(
            json!([{"type": "document", "title": "Title", "context": "Context",
            "source": {"type": "text", "media_type": "text/plain", "data": words}}]),
        ),
    );
    assert_eq!(titled, as_text + 2);
    let base = count_prompt_tokens("gpt-4o", &request(json!([])));
    for (doc, tokens) in [
        (pdf_doc(1), PER_PDF_PAGE),
        (pdf_doc(3), 3 * PER_PDF_PAGE),
        (
            json!({"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}),
            UNSEEN_DOCUMENT,
        ),
        (
            json!({"type": "document", "source": {"type": "file", "file_id": "file_01"}}),
            UNSEEN_DOCUMENT,
        ),
    ] {
        assert_eq!(
            count_prompt_tokens("gpt-4o", &request(json!([doc]))),
            base + tokens
        );
    }
    // The limit refuses a long text document as it refuses a long message.
    let g = guardrails(None, &[], Some(100));
    let err = g
        .check_request(&mut request(json!([text_doc(&words)])), "gpt-4o")
        .unwrap_err();
    assert_eq!(err.guardrail(), "max_prompt_tokens");
    assert!(
        g.check_request(&mut request(json!([pdf_doc(1)])), "gpt-4o")
            .is_err()
    );
    let g = guardrails(None, &[], Some(2 * PER_PDF_PAGE));
    assert!(
        g.check_request(&mut request(json!([pdf_doc(1)])), "gpt-4o")
            .is_ok()
    );
}

#[test]
fn budget_estimates_count_documents_never_below_the_guardrail_count() {
    use crate::policy::estimate_prompt_tokens;
    let words = "word ".repeat(400);
    let plain = estimate_prompt_tokens(&request(json!([{"type": "text", "text": words}])));
    assert_eq!(
        estimate_prompt_tokens(&request(json!([text_doc(&words)]))),
        plain
    );
    let empty = estimate_prompt_tokens(&request(json!([])));
    for doc in [
        pdf_doc(1),
        pdf_doc(5),
        json!({"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}),
    ] {
        let req = request(json!([doc]));
        let opaque = opaque_document_tokens(&req.documents().next().unwrap().source);
        assert!(estimate_prompt_tokens(&req) >= empty + opaque);
    }
}
