//! Guardrails end to end: PII redacted before it leaves, in replies and in streams
//! (split across chunks too), blocked terms and PII blocks, prompt-size limits.

use serde_json::{Value, json};

use crate::support::fault::{self, Fault};
use crate::support::{self, TestGateway};

const PII_TEXT: &str = "Mail jane.roe@example.org or call +44 20 7946 0958; card 4111-1111-1111-1111, SSN 123-45-6789, IBAN GB82 WEST 1234 5698 7654 32, host 10.1.2.3.";
const RAW: [&str; 6] = [
    "jane.roe@example.org",
    "7946 0958",
    "4111-1111-1111-1111",
    "123-45-6789",
    "GB82 WEST",
    "10.1.2.3",
];

fn tenants() -> String {
    r#"  - name: redact
    allowed_models: ["*"]
    guardrails: {pii: redact}
    keys: [{name: k, key: "sk-redact-key-0000000"}]
  - name: block
    allowed_models: ["*"]
    guardrails: {pii: block, blocked_terms: [project-orion], max_prompt_tokens: 200}
    keys: [{name: k, key: "sk-block-key-00000000"}]
  - name: detect
    allowed_models: ["*"]
    guardrails: {pii: detect}
    keys: [{name: k, key: "sk-detect-key-0000000"}]"#
        .into()
}

async fn gateway() -> (TestGateway, fault::FaultUpstream) {
    let leaky = fault::start(Fault::LeaksPii).await;
    let providers = support::fault_provider("leaky", &leaky.base_url);
    let models = "  - name: leaky\n    targets: [{provider: leaky, model: m}]";
    (
        TestGateway::start(&support::config(&providers, models, &tenants())).await,
        leaky,
    )
}

fn chat(model: &str, text: &str, stream: bool) -> Vec<u8> {
    serde_json::to_vec(&json!({"model": model, "stream": stream,
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]}))
    .unwrap()
}

#[tokio::test]
async fn pii_is_redacted_before_it_reaches_the_provider_and_in_the_echo() {
    let (gw, _l) = gateway().await;
    for flavor in ["openai", "anthropic", "mistral"] {
        for stream in [false, true] {
            let r = gw
                .post_raw(
                    "/v1/chat/completions",
                    chat(&format!("m-{flavor}"), PII_TEXT, stream),
                    "sk-redact-key-0000000",
                )
                .await;
            assert_eq!(r.status(), 200);
            let bytes = r.bytes().await.unwrap();
            let text = if stream {
                support::openai_stream(&bytes).text
            } else {
                support::openai_json(&serde_json::from_slice(&bytes).unwrap()).text
            };
            let sent = gw
                .mock(&format!("mock-{flavor}"))
                .last_body
                .unwrap()
                .to_string();
            for raw in RAW {
                assert!(
                    !sent.contains(raw),
                    "{flavor}: `{raw}` reached the provider: {sent}"
                );
                assert!(!text.contains(raw), "{flavor}: `{raw}` came back: {text}");
            }
            for placeholder in [
                "[EMAIL_1]",
                "[PHONE_1]",
                "[CARD_1]",
                "[SSN_1]",
                "[IBAN_1]",
                "[IP_1]",
            ] {
                assert!(
                    sent.contains(placeholder),
                    "{flavor}: {placeholder} missing in {sent}"
                );
                assert!(
                    text.contains(placeholder),
                    "{flavor}: {placeholder} missing in {text}"
                );
            }
        }
    }
}

#[tokio::test]
async fn pii_in_a_reply_is_redacted_even_split_across_stream_chunks() {
    let (gw, leaky) = gateway().await;
    let r = gw
        .post_raw(
            "/v1/chat/completions",
            chat("leaky", "hi", false),
            "sk-redact-key-0000000",
        )
        .await;
    let v: Value = r.json().await.unwrap();
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert_eq!(text, "Write to [EMAIL_1] or pay with [CARD_1] today.");
    for surface in ["/v1/chat/completions", "/v1/messages"] {
        let body = serde_json::to_vec(&json!({"model": "leaky", "stream": true, "max_tokens": 50,
            "messages": [{"role": "user", "content": "hi"}]}))
        .unwrap();
        let r = gw.post_raw(surface, body, "sk-redact-key-0000000").await;
        let bytes = r.bytes().await.unwrap();
        let raw = String::from_utf8_lossy(&bytes);
        assert!(
            !raw.contains("example.com") && !raw.contains("hn.doe"),
            "{raw}"
        );
        assert!(!raw.contains("1111 1111"), "{raw}");
        let r = if surface == "/v1/messages" {
            support::anthropic_stream(&bytes)
        } else {
            support::openai_stream(&bytes)
        };
        assert_eq!(
            r.text, "Write to [EMAIL_1] or pay with [CARD_1] today.",
            "{surface}"
        );
        assert!(r.terminated);
    }
    // Without redaction the same reply passes untouched (the upstream really leaks).
    let r = gw
        .post_raw(
            "/v1/chat/completions",
            chat("leaky", "hi", true),
            "sk-detect-key-0000000",
        )
        .await;
    let text = support::openai_stream(&r.bytes().await.unwrap()).text;
    assert!(text.contains("john.doe@example.com"));
    assert!(leaky.hits.load(std::sync::atomic::Ordering::SeqCst) >= 4);
}

#[tokio::test]
async fn block_mode_terms_and_prompt_size_refuse_with_403_and_reach_nothing() {
    let (gw, _l) = gateway().await;
    let long = "lorem ipsum dolor ".repeat(200);
    for (text, guardrail) in [
        ("my email is a.b@example.com", "pii"),
        ("status of Project-Orion please", "blocked_terms"),
        (long.as_str(), "max_prompt_tokens"),
    ] {
        let r = gw
            .post_raw(
                "/v1/chat/completions",
                chat("m-openai", text, false),
                "sk-block-key-00000000",
            )
            .await;
        assert_eq!(r.status(), 403, "{guardrail}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["error"]["code"], "guardrail_blocked");
        let msg = v["error"]["message"].as_str().unwrap();
        assert!(msg.contains(guardrail), "{msg}");
        assert!(
            !msg.contains("example.com") && !msg.to_lowercase().contains("orion"),
            "never the matched text: {msg}"
        );
    }
    // Whole words only: a longer word is not the term.
    let r = gw
        .post_raw(
            "/v1/chat/completions",
            chat("m-openai", "project-orionis is fine", false),
            "sk-block-key-00000000",
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(gw.mock("mock-openai").requests, 1);
    // Detect mode changes nothing.
    let r = gw
        .post_raw(
            "/v1/chat/completions",
            chat("m-openai", "write a.b@example.com", false),
            "sk-detect-key-0000000",
        )
        .await;
    assert_eq!(r.status(), 200);
    let sent = gw.mock("mock-openai").last_body.unwrap().to_string();
    assert!(sent.contains("a.b@example.com"));
}
