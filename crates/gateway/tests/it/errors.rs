//! Bad input and broken upstreams: each case gets its exact status and code, in the
//! surface's error shape, and nothing that should not reach an upstream does.

use serde_json::{Value, json};

use crate::support::fault::{self, Fault};
use crate::support::{self, KEY, TestGateway};

const RESTRICTED: &str = r#"  - name: restricted
    allowed_models: [m-openai]
    keys: [{name: k, key: "sk-restricted-key-0000"}]
  - name: eu-only
    allowed_models: ["*"]
    regions: [eu]
    keys: [{name: k, key: "sk-eu-only-key-000000"}]"#;

async fn check(
    gw: &TestGateway,
    path: &str,
    body: Vec<u8>,
    key: &str,
    status: u16,
    code: &str,
    param: Option<&str>,
) {
    let resp = gw.post_raw(path, body.clone(), key).await;
    let ctx = format!(
        "{path} {}",
        String::from_utf8_lossy(&body[..body.len().min(120)])
    );
    assert_eq!(resp.status(), status, "{ctx}");
    every_response_headers(resp.headers(), &ctx);
    // The id also under the name the surface's SDK reads.
    let sdk = if path == "/v1/messages" {
        "request-id"
    } else {
        "x-request-id"
    };
    assert_eq!(
        resp.headers().get(sdk),
        resp.headers().get("x-asc-request-id"),
        "{ctx}"
    );
    let v: Value = resp.json().await.unwrap();
    if path == "/v1/messages" {
        assert_eq!(v["type"], "error", "{ctx}: {v}");
        assert!(v["error"]["type"].is_string(), "{ctx}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty(), "{ctx}");
        assert_eq!(v["error"]["code"], code, "{ctx}: {v}");
    } else {
        assert_eq!(v["error"]["code"], code, "{ctx}: {v}");
        // OpenAI's own types: every client error is an `invalid_request_error` (its 401
        // and its unknown model included), a rate limit `requests`, spent money
        // `insufficient_quota`.
        let kind = match (status, code) {
            (429, "budget_exceeded") => "insufficient_quota",
            (429, _) => "requests",
            (400..=499, _) => "invalid_request_error",
            _ => "server_error",
        };
        assert_eq!(v["error"]["type"], kind, "{ctx}: {v}");
        assert!(!v["error"]["message"].as_str().unwrap().is_empty(), "{ctx}");
        if let Some(p) = param {
            assert_eq!(v["error"]["param"], p, "{ctx}: {v}");
        }
    }
    // Never a secret in an error.
    let text = v.to_string();
    assert!(
        !text.contains(KEY) && !text.contains("sk-restricted"),
        "{ctx}"
    );
}

/// The headers every data-plane response carries, errors included (contract section 2).
fn every_response_headers(h: &reqwest::header::HeaderMap, ctx: &str) {
    let id = h.get("x-asc-request-id").map(|v| v.to_str().unwrap());
    assert!(id.is_some_and(|id| id.len() == 32), "{ctx}: {h:?}");
    let cache = h.get("x-asc-cache").map(|v| v.to_str().unwrap());
    assert!(
        cache.is_some_and(|c| ["hit", "miss", "bypass"].contains(&c)),
        "{ctx}: {h:?}"
    );
    let attempts = h.get("x-asc-attempts").map(|v| v.to_str().unwrap());
    assert!(
        attempts.is_some_and(|n| n.parse::<u32>().is_ok()),
        "{ctx}: {h:?}"
    );
}

fn chat(body: Value) -> Vec<u8> {
    serde_json::to_vec(&body).unwrap()
}

#[tokio::test]
async fn bad_requests_on_the_openai_surface() {
    let gw = TestGateway::start(&support::config("", "", RESTRICTED)).await;
    let p = "/v1/chat/completions";
    let msgs = json!([{"role": "user", "content": "hi"}]);
    type Case<'a> = (Vec<u8>, &'a str, u16, &'a str, Option<&'a str>);
    let cases: Vec<Case> = vec![
        (
            chat(json!({"model": "m-openai", "messages": msgs})),
            "",
            401,
            "invalid_api_key",
            None,
        ),
        (
            chat(json!({"model": "m-openai", "messages": msgs})),
            "sk-wrong-key-000000",
            401,
            "invalid_api_key",
            None,
        ),
        (b"{not json".to_vec(), KEY, 400, "invalid_request", None),
        (b"[1,2]".to_vec(), KEY, 400, "invalid_request", None),
        (
            vec![b'{', 0xff, 0xfe, b'}'],
            KEY,
            400,
            "invalid_request",
            None,
        ),
        (
            br#"{"model":"m-openai","messages":[{"role":"user","content":"\ud83d"}]}"#.to_vec(),
            KEY,
            400,
            "invalid_request",
            None,
        ),
        (
            chat(json!({"messages": msgs})),
            KEY,
            400,
            "invalid_request",
            Some("model"),
        ),
        (
            chat(json!({"model": "m-openai"})),
            KEY,
            400,
            "invalid_request",
            Some("messages"),
        ),
        (
            chat(json!({"model": "m-openai", "messages": []})),
            KEY,
            400,
            "invalid_request",
            Some("messages"),
        ),
        (
            chat(json!({"model": "m-openai", "messages": "hi"})),
            KEY,
            400,
            "invalid_request",
            Some("messages"),
        ),
        (
            chat(json!({"model": 42, "messages": msgs})),
            KEY,
            400,
            "invalid_request",
            Some("model"),
        ),
        (
            chat(json!({"model": "m-openai", "messages": [{"role": "wizard", "content": "hi"}]})),
            KEY,
            400,
            "invalid_request",
            None,
        ),
        (
            chat(json!({"model": "m-openai", "messages": msgs, "max_tokens": -1})),
            KEY,
            400,
            "invalid_request",
            Some("max_tokens"),
        ),
        (
            chat(
                json!({"model": "m-openai", "messages": msgs, "max_tokens": 1_000_000_000_000u64}),
            ),
            KEY,
            400,
            "invalid_request",
            Some("max_tokens"),
        ),
        (
            chat(json!({"model": "m-openai", "messages": msgs, "n": 3})),
            KEY,
            400,
            "invalid_request",
            Some("n"),
        ),
        (
            chat(json!({"model": "m-openai", "messages": msgs, "temperature": "hot"})),
            KEY,
            400,
            "invalid_request",
            Some("temperature"),
        ),
        (
            chat(json!({"model": "nope", "messages": msgs})),
            KEY,
            404,
            "model_not_found",
            Some("model"),
        ),
        (
            chat(json!({"model": "m-anthropic", "messages": msgs})),
            "sk-restricted-key-0000",
            403,
            "model_not_allowed",
            Some("model"),
        ),
        (
            chat(json!({"model": "m-openai", "messages": msgs})),
            "sk-eu-only-key-000000",
            403,
            "residency_denied",
            Some("model"),
        ),
        (
            chat(
                json!({"model": "m-openai", "messages": [{"role": "user", "content": "x".repeat(70_000)}]}),
            ),
            KEY,
            413,
            "request_too_large",
            None,
        ),
    ];
    for (body, key, status, code, param) in cases {
        check(&gw, p, body, key, status, code, param).await;
    }
    for m in ["mock-openai", "mock-anthropic", "mock-mistral"] {
        assert_eq!(gw.mock(m).requests, 0, "{m} was reached by a bad request");
    }
}

#[tokio::test]
async fn bad_requests_on_the_anthropic_surface() {
    let gw = TestGateway::start(&support::config("", "", RESTRICTED)).await;
    let p = "/v1/messages";
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let cases: Vec<(Vec<u8>, &str, u16, &str)> = vec![
        (
            chat(json!({"model": "m-openai", "max_tokens": 10, "messages": msgs})),
            "nope-nope-nope",
            401,
            "invalid_api_key",
        ),
        (b"{".to_vec(), KEY, 400, "invalid_request"),
        (
            chat(json!({"model": "m-openai", "messages": msgs})),
            KEY,
            400,
            "invalid_request",
        ),
        (
            chat(json!({"model": "m-openai", "max_tokens": 10, "messages": []})),
            KEY,
            400,
            "invalid_request",
        ),
        (
            chat(
                json!({"model": "m-openai", "max_tokens": 10, "messages": [{"role": "system", "content": "x"}]}),
            ),
            KEY,
            400,
            "invalid_request",
        ),
        (
            chat(json!({"model": "m-openai", "max_tokens": -5, "messages": msgs})),
            KEY,
            400,
            "invalid_request",
        ),
        (
            chat(json!({"model": "nope", "max_tokens": 10, "messages": msgs})),
            KEY,
            404,
            "model_not_found",
        ),
        (
            chat(json!({"model": "m-mistral", "max_tokens": 10, "messages": msgs})),
            "sk-restricted-key-0000",
            403,
            "model_not_allowed",
        ),
        (
            chat(json!({"model": "m-anthropic", "max_tokens": 10, "messages": msgs})),
            "sk-eu-only-key-000000",
            403,
            "residency_denied",
        ),
    ];
    for (body, key, status, code) in cases {
        check(&gw, p, body, key, status, code, None).await;
    }
    for m in ["mock-openai", "mock-anthropic", "mock-mistral"] {
        assert_eq!(gw.mock(m).requests, 0, "{m} was reached by a bad request");
    }
}

#[tokio::test]
async fn broken_upstreams_give_502_or_504_with_the_attempts() {
    let garbage = fault::start(Fault::Garbage).await;
    let reset = fault::start(Fault::Reset).await;
    let hang = fault::start(Fault::Hang).await;
    let failing = fault::start(Fault::Status(500)).await;
    let providers = format!(
        "  - {{name: garbage, kind: openai, api_key: k, region: us, base_url: \"{}\"}}\n  - {{name: reset, kind: openai, api_key: k, region: us, base_url: \"{}\"}}\n  - {{name: hang, kind: openai, api_key: k, region: us, base_url: \"{}\"}}\n  - {{name: failing, kind: openai, api_key: k, region: us, base_url: \"{}\"}}",
        garbage.base_url, reset.base_url, hang.base_url, failing.base_url
    );
    let models = r#"  - name: garbage
    retries: 0
    targets: [{provider: garbage, model: x}]
  - name: reset
    retries: 0
    targets: [{provider: reset, model: x}]
  - name: hang
    retries: 0
    timeout_ms: 300
    targets: [{provider: hang, model: x}]
  - name: failing
    retries: 1
    circuit_breaker: {consecutive_failures: 100, error_rate: 1.0}
    targets: [{provider: failing, model: x}]"#;
    let gw = TestGateway::start(&support::config(&providers, models, "")).await;
    let msgs = json!([{"role": "user", "content": "hi"}]);
    for (model, status, code) in [
        ("garbage", 502, "upstream_error"),
        ("reset", 502, "upstream_error"),
        ("hang", 504, "upstream_timeout"),
        ("failing", 502, "upstream_error"),
    ] {
        for stream in [false, true] {
            let body = chat(json!({"model": model, "messages": msgs, "stream": stream}));
            let resp = gw.post_raw("/v1/chat/completions", body, KEY).await;
            assert_eq!(resp.status(), status, "{model} stream={stream}");
            every_response_headers(resp.headers(), model);
            // A provider that answered (or took the request and hung) is named; one
            // whose connection failed was not reached.
            let reached = matches!(model, "hang" | "failing" | "garbage");
            let named = resp
                .headers()
                .get("x-asc-provider")
                .map(|v| v.to_str().unwrap());
            assert_eq!(named, reached.then_some(model), "{model}");
            if reached {
                assert_eq!(resp.headers()["x-asc-target-model"], "x", "{model}");
            }
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["error"]["code"], code, "{model}: {v}");
            let msg = v["error"]["message"].as_str().unwrap();
            assert!(msg.contains(model), "the message lists the attempts: {msg}");
            assert!(
                !msg.contains("not json!"),
                "upstream bodies are never echoed"
            );
        }
    }
    // retries: 1 → two tries per request, two requests.
    assert_eq!(failing.hits.load(std::sync::atomic::Ordering::SeqCst), 4);
    // Anthropic surface, same failure: Anthropic's error shape with status 502.
    let body = chat(json!({"model": "failing", "max_tokens": 5, "messages": msgs}));
    let resp = gw.post_raw("/v1/messages", body, KEY).await;
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-asc-attempts"], "2");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "api_error");
}

#[tokio::test]
async fn health_and_unknown_routes() {
    let gw = TestGateway::start(&support::config("", "", "")).await;
    let r = gw
        .http
        .get(format!("{}/healthz", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = gw
        .http
        .get(format!("{}/readyz", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    every_response_headers(r.headers(), "readyz");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["status"], "ready");
    let r = gw
        .http
        .get(format!("{}/v1/nothing", gw.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    every_response_headers(r.headers(), "unknown route");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "not_found", "{v}");
    // A known route with the wrong method: 405 with a body in the surface's shape.
    for (path, anthropic) in [("/v1/chat/completions", false), ("/v1/messages", true)] {
        let r = gw
            .http
            .get(format!("{}{path}", gw.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 405, "{path}");
        every_response_headers(r.headers(), path);
        let sdk = if anthropic {
            "request-id"
        } else {
            "x-request-id"
        };
        assert_eq!(
            r.headers().get(sdk),
            r.headers().get("x-asc-request-id"),
            "{path}"
        );
        let v: Value = r.json().await.unwrap();
        if anthropic {
            assert_eq!(v["type"], "error", "{v}");
            assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        } else {
            assert_eq!(v["error"]["code"], "method_not_allowed", "{v}");
        }
    }
}

/// Request headers are capped at 8 KiB (HTTP/1): past that the answer is 431 and the
/// connection's next client is served as usual; headers just under the cap pass.
#[tokio::test]
async fn oversized_request_headers_get_431() {
    let gw = TestGateway::start(&support::config("", "", "")).await;
    let body = json!({"model": "m-openai", "messages": [{"role": "user", "content": "hi"}]});
    let send = |filler: usize| {
        gw.http
            .post(format!("{}/v1/chat/completions", gw.url))
            .bearer_auth(KEY)
            .header("x-filler", "a".repeat(filler))
            .json(&body)
            .send()
    };
    let r = send(16 * 1024).await.unwrap();
    assert_eq!(r.status(), 431);
    let r = send(6 * 1024).await.unwrap();
    assert_eq!(r.status(), 200, "headers under the cap are served");
}
