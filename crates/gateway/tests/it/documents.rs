//! Documents end to end: Anthropic `document` blocks and OpenAI `file` parts through
//! the real server to the mocks, translated where the provider has a counterpart,
//! refused (400, nothing sent) where none has, routed around targets that cannot take
//! them, and under the guardrails like message text.

use serde_json::{Value, json};

use crate::support::{self, KEY, TestGateway};

/// `%PDF-1.4` with two page objects, base64.
const PDF: &str = "JVBERi0xLjQKMSAwIG9iaiA8PC9UeXBlIC9QYWdlPj4gZW5kb2JqCjIgMCBvYmogPDwvVHlwZSAvUGFnZT4+IGVuZG9iagolJUVPRgo=";

fn pdf_block() -> Value {
    json!({"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF},
           "title": "report.pdf", "context": "Q3", "citations": {"enabled": true},
           "cache_control": {"type": "ephemeral"}})
}

fn text_block(text: &str) -> Value {
    json!({"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text},
           "title": "Notes"})
}

fn url_block() -> Value {
    json!({"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}})
}

fn messages_body(model: &str, content: Value, stream: bool) -> Vec<u8> {
    serde_json::to_vec(&json!({"model": model, "max_tokens": 100, "stream": stream,
        "messages": [{"role": "user", "content": content}]}))
    .unwrap()
}

fn chat_body(model: &str, content: Value) -> Vec<u8> {
    serde_json::to_vec(&json!({"model": model, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": content}
    ]}))
    .unwrap()
}

fn file_part() -> Value {
    json!({"type": "file", "file": {"file_data": format!("data:application/pdf;base64,{PDF}"), "filename": "x.pdf"}})
}

async fn gateway() -> TestGateway {
    let models = "  - name: m-mixed\n    targets: [{provider: mock-openai, model: gpt-4o-mini, weight: 99}, {provider: mock-anthropic, model: claude-3-5-haiku-latest, weight: 1}]";
    let tenants = r#"  - name: guarded
    allowed_models: ["*"]
    guardrails: {pii: redact, blocked_terms: [project-orion]}
    keys: [{name: k, key: "sk-guarded-key-000000"}]"#;
    TestGateway::start(&support::config("", models, tenants)).await
}

/// The content of the last user message the mock `provider` received.
fn sent(gw: &TestGateway, provider: &str) -> Value {
    let body = gw.mock(provider).last_body.unwrap();
    let messages = body["messages"].as_array().unwrap();
    messages.iter().rev().find(|m| m["role"] == "user").unwrap()["content"].clone()
}

#[tokio::test]
async fn anthropic_documents_reach_anthropic_unchanged() {
    let gw = gateway().await;
    let content = json!([pdf_block(), text_block("The grass is green."), url_block(),
        {"type": "text", "text": " What colour?"}]);
    for stream in [false, true] {
        let r = gw
            .post_raw(
                "/v1/messages",
                messages_body("m-anthropic", content.clone(), stream),
                KEY,
            )
            .await;
        assert_eq!(r.status(), 200);
        let bytes = r.bytes().await.unwrap();
        let text = if stream {
            support::anthropic_stream(&bytes).text
        } else {
            support::anthropic_json(&serde_json::from_slice(&bytes).unwrap()).text
        };
        assert_eq!(text, "echo: The grass is green. What colour?");
        assert_eq!(sent(&gw, "mock-anthropic"), content);
    }
}

#[tokio::test]
async fn documents_are_translated_where_the_provider_has_a_counterpart() {
    let gw = gateway().await;
    // Anthropic surface, OpenAI provider: the PDF as file_data, the text document as text.
    let content = json!([pdf_block(), text_block("The grass is green."),
        {"type": "text", "text": " What colour?"}]);
    let r = gw
        .post_raw(
            "/v1/messages",
            messages_body("m-openai", content, false),
            KEY,
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        support::anthropic_json(&v).text,
        "echo: The grass is green. What colour?"
    );
    assert_eq!(
        sent(&gw, "mock-openai"),
        json!([
            {"type": "file", "file": {"file_data": format!("data:application/pdf;base64,{PDF}"), "filename": "report.pdf"}},
            {"type": "text", "text": "The grass is green."},
            {"type": "text", "text": " What colour?"}
        ])
    );
    // The same text costs the same on both mocks: a PDF adds nothing, the text document
    // is text. (The Anthropic mock reports the cached part apart: all of it counts.)
    let openai_usage = v["usage"]["input_tokens"].as_u64().unwrap();
    let r = gw
        .post_raw(
            "/v1/messages",
            messages_body(
                "m-anthropic",
                json!([pdf_block(), text_block("The grass is green."), {"type": "text", "text": " What colour?"}]),
                false,
            ),
            KEY,
        )
        .await;
    let v: Value = r.json().await.unwrap();
    let u = &v["usage"];
    let all = [
        "input_tokens",
        "cache_creation_input_tokens",
        "cache_read_input_tokens",
    ]
    .iter()
    .map(|k| u[k].as_u64().unwrap_or(0))
    .sum::<u64>();
    assert_eq!(all, openai_usage);
    // Anthropic surface, Mistral provider: a URL as document_url.
    let r = gw
        .post_raw(
            "/v1/messages",
            messages_body(
                "m-mistral",
                json!([url_block(), {"type": "text", "text": "Summarise."}]),
                true,
            ),
            KEY,
        )
        .await;
    assert_eq!(r.status(), 200);
    let text = support::anthropic_stream(&r.bytes().await.unwrap()).text;
    assert_eq!(text, "echo: Summarise.");
    assert_eq!(
        sent(&gw, "mock-mistral"),
        json!([{"type": "document_url", "document_url": "https://example.com/a.pdf"},
               {"type": "text", "text": "Summarise."}])
    );
    // OpenAI surface, Anthropic provider: file_data as a base64 document, its filename
    // the title.
    let r = gw
        .post_raw(
            "/v1/chat/completions",
            chat_body(
                "m-anthropic",
                json!([file_part(), {"type": "text", "text": "Summarise."}]),
            ),
            KEY,
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(support::openai_json(&v).text, "echo: Summarise.");
    assert_eq!(
        sent(&gw, "mock-anthropic"),
        json!([{"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF}, "title": "x.pdf"},
               {"type": "text", "text": "Summarise."}])
    );
    // OpenAI surface, OpenAI provider: the part as given.
    let parts = json!([file_part(), {"type": "file", "file": {"file_id": "file-abc"}}, {"type": "text", "text": "Hi."}]);
    let r = gw
        .post_raw(
            "/v1/chat/completions",
            chat_body("m-openai", parts.clone()),
            KEY,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(sent(&gw, "mock-openai"), parts);
}

#[tokio::test]
async fn what_no_target_can_take_is_a_400_naming_the_field_and_nothing_is_sent() {
    let gw = gateway().await;
    let before = (
        gw.mock("mock-openai").chat,
        gw.mock("mock-anthropic").chat,
        gw.mock("mock-mistral").chat,
    );
    // A PDF by URL to OpenAI, on the Anthropic surface: Anthropic's error shape.
    let r = gw
        .post_raw(
            "/v1/messages",
            messages_body(
                "m-openai",
                json!([{"type": "text", "text": "Read."}, url_block()]),
                false,
            ),
            KEY,
        )
        .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(
        v["error"]["message"],
        "`messages[0].content[1].source` is a document by URL, and OpenAI Chat Completions \
         takes files only as `file_data` or `file_id`; send the PDF inline \
         (`source.type: base64`) for this model"
    );
    // A streamed one is refused the same way, before any event.
    let r = gw
        .post_raw(
            "/v1/messages",
            messages_body("m-openai", json!([url_block()]), true),
            KEY,
        )
        .await;
    assert_eq!(r.status(), 400);
    // An OpenAI file id to Anthropic: OpenAI's shape, the client's own index (after the
    // system message).
    let r = gw
        .post_raw(
            "/v1/chat/completions",
            chat_body(
                "m-anthropic",
                json!([{"type": "file", "file": {"file_id": "file-abc"}}]),
            ),
            KEY,
        )
        .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "invalid_request");
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(v["error"]["param"], "messages[1].content[0].file.file_id");
    assert_eq!(
        v["error"]["message"],
        "`messages[1].content[0].file.file_id` names a file in OpenAI's Files API, which \
         Anthropic cannot read; send the PDF itself as `file_data` for this model"
    );
    // An inline PDF to Mistral.
    let r = gw
        .post_raw(
            "/v1/chat/completions",
            chat_body("m-mistral", json!([file_part()])),
            KEY,
        )
        .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["param"], "messages[1].content[0].file.file_data");
    let after = (
        gw.mock("mock-openai").chat,
        gw.mock("mock-anthropic").chat,
        gw.mock("mock-mistral").chat,
    );
    assert_eq!(after, before, "a refused request reached a provider");
}

#[tokio::test]
async fn a_route_serves_documents_from_the_targets_that_can_take_them() {
    let gw = gateway().await;
    // m-mixed draws OpenAI 99 times in 100; a PDF by URL goes to Anthropic every time,
    // and OpenAI never sees it.
    let openai_before = gw.mock("mock-openai").chat;
    for _ in 0..5 {
        let r = gw
            .post_raw(
                "/v1/messages",
                messages_body(
                    "m-mixed",
                    json!([url_block(), {"type": "text", "text": "Go."}]),
                    false,
                ),
                KEY,
            )
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-asc-provider"], "mock-anthropic");
        assert_eq!(r.headers()["x-asc-attempts"], "1");
    }
    assert_eq!(gw.mock("mock-openai").chat, openai_before);
    // What both can take goes by weight as usual (OpenAI, nearly always).
    let r = gw
        .post_raw(
            "/v1/messages",
            messages_body(
                "m-mixed",
                json!([pdf_block(), {"type": "text", "text": "Go."}]),
                false,
            ),
            KEY,
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn text_documents_are_under_the_guardrails_like_message_text() {
    let gw = gateway().await;
    let key = "sk-guarded-key-000000";
    // A blocked term: the same refusal inside a text document as inside a message.
    let in_message = gw
        .post_raw(
            "/v1/messages",
            messages_body("m-anthropic", json!("status of Project-Orion?"), false),
            key,
        )
        .await;
    let in_document = gw
        .post_raw(
            "/v1/messages",
            messages_body(
                "m-anthropic",
                json!([text_block("Minutes: project-orion slips."), {"type": "text", "text": "Status?"}]),
                false,
            ),
            key,
        )
        .await;
    assert_eq!(in_message.status(), 403);
    assert_eq!(in_document.status(), 403);
    let (a, b): (Value, Value) = (
        in_message.json().await.unwrap(),
        in_document.json().await.unwrap(),
    );
    assert_eq!(a, b);
    assert_eq!(b["error"]["type"], "permission_error");
    let r = gw
        .post_raw(
            "/v1/chat/completions",
            chat_body("m-openai", json!([{"type": "text", "text": "Status?"}, {"type": "file", "file": {"file_id": "f"}},
                {"type": "text", "text": "project-orion"}])),
            key,
        )
        .await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "guardrail_blocked");
    // PII in a text document (and its title) is redacted before it leaves, to either
    // format, and the echo shows the placeholders.
    for (model, provider) in [
        ("m-anthropic", "mock-anthropic"),
        ("m-openai", "mock-openai"),
    ] {
        let content = json!([
            {"type": "document", "title": "jane.roe@example.org",
             "source": {"type": "text", "media_type": "text/plain", "data": "Call +44 20 7946 0958."}},
            {"type": "text", "text": " Who?"}
        ]);
        let r = gw
            .post_raw("/v1/messages", messages_body(model, content, false), key)
            .await;
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        assert_eq!(
            support::anthropic_json(&v).text,
            "echo: Call [PHONE_1]. Who?"
        );
        let out = sent(&gw, provider).to_string();
        assert!(!out.contains("7946") && !out.contains("jane.roe"), "{out}");
        assert!(out.contains("[PHONE_1]"), "{out}");
    }
}

/// Citations, Anthropic to Anthropic: the JSON reply's `citations` and the stream's
/// `citations_delta` reach the client as the upstream sent them. The stream is relayed:
/// the client gets the upstream's own events in the upstream's order (the mock sends
/// its `ping` after the block start; the gateway's encoder sends it after
/// `message_start`). With `pii: redact` the stream is re-encoded (its text redacted),
/// and the citations, which the hub does not model, are left out.
#[tokio::test]
async fn anthropic_citations_reach_the_client_json_and_streamed() {
    let gw = gateway().await;
    let mut doc = text_block("The grass is green.");
    doc["citations"] = json!({"enabled": true});
    let content = json!([doc, {"type": "text", "text": " What colour?"}]);
    let want = json!({"type": "char_location", "cited_text": "The grass is green.",
        "document_index": 0, "document_title": "Notes",
        "start_char_index": 0, "end_char_index": 19});

    let r = gw
        .post_raw(
            "/v1/messages",
            messages_body("m-anthropic", content.clone(), false),
            KEY,
        )
        .await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["content"][0]["citations"], json!([want]), "{v}");

    let events = |bytes: &[u8]| -> Vec<(String, Value)> {
        support::sse_events(bytes)
            .into_iter()
            .map(|e| {
                let v: Value = serde_json::from_str(&e.data).unwrap();
                (e.event.unwrap_or_default(), v)
            })
            .collect()
    };
    let r = gw
        .post_raw(
            "/v1/messages",
            messages_body("m-anthropic", content.clone(), true),
            KEY,
        )
        .await;
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    let got = events(&bytes);
    let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names[..4],
        [
            "message_start",
            "content_block_start",
            "ping",
            "content_block_delta"
        ],
        "{names:?}"
    );
    assert_eq!(
        got[3].1["delta"],
        json!({"type": "citations_delta", "citation": want})
    );
    assert_eq!(names.last(), Some(&"message_stop"));
    assert_eq!(
        support::anthropic_stream(&bytes).text,
        "echo: The grass is green. What colour?"
    );

    // Redacted: re-encoded, no citations, the stream still whole.
    let r = gw
        .post_raw(
            "/v1/messages",
            messages_body("m-anthropic", content, true),
            "sk-guarded-key-000000",
        )
        .await;
    assert_eq!(r.status(), 200);
    let bytes = r.bytes().await.unwrap();
    let got = events(&bytes);
    assert!(
        got.iter()
            .all(|(_, v)| v["delta"]["type"] != "citations_delta"),
        "{got:?}"
    );
    assert_eq!(got.last().map(|(n, _)| n.as_str()), Some("message_stop"));
}
