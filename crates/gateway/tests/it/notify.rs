//! Webhooks: budget alerts and circuit openings are POSTed, signed with HMAC-SHA256,
//! retried when the receiver fails, and counted in metrics.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::fault::{self, Fault};
use crate::support::{self, KEY, TestGateway};

type Seen = Arc<Mutex<Vec<(String, String, Value)>>>;

/// A receiver that fails its first `fail_first` calls with 500, then records them.
async fn receiver(fail_first: usize) -> (String, Seen) {
    let seen: Seen = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: http::HeaderMap, body: axum::body::Bytes| {
            let (s, calls) = (s.clone(), calls.clone());
            async move {
                if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < fail_first {
                    return http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                let h = |n: &str| {
                    headers
                        .get(n)
                        .map(|v| v.to_str().unwrap().to_owned())
                        .unwrap_or_default()
                };
                let expected = asc_gateway::notify::signature("hook-secret", &body);
                assert_eq!(h("x-asc-signature"), expected, "signed with the secret");
                s.lock().unwrap().push((
                    h("x-asc-event"),
                    h("x-asc-delivery"),
                    serde_json::from_slice(&body).unwrap(),
                ));
                http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/hook"), seen)
}

#[tokio::test]
async fn circuit_openings_and_budget_alerts_reach_signed_webhooks_with_retries() {
    let (url, seen) = receiver(2).await;
    let dead = fault::start(Fault::Status(500)).await;
    let providers = support::fault_provider("dead", &dead.base_url);
    let models = "  - name: fragile\n    retries: 0\n    circuit_breaker: {consecutive_failures: 1, cooldown_ms: 60000}\n    targets: [{provider: dead, model: x}]\n    fallbacks: [{provider: mock-openai, model: gpt-4o-mini}]";
    let tenants = r#"  - name: spender
    allowed_models: [m-openai]
    budget: {limit_usd: 0.05, period: month, alert_at: [0.1]}
    keys: [{name: k, key: "sk-spender-key-000000"}]"#;
    let yaml = format!(
        "notifications:\n  - {{url: \"{url}\", secret: hook-secret, events: [budget_alert, circuit_open]}}\nprices:\n  - {{provider: mock-openai, model: gpt-4o-mini, input: 1000, output: 1000}}\n{}",
        support::config(&providers, models, tenants)
    );
    let gw = TestGateway::start(&yaml).await;
    assert_eq!(gw.chat_status(KEY, "fragile").await, 200);
    let body = json!({"model": "m-openai", "max_tokens": 3, "messages": [{"role": "user", "content": "hello"}]});
    for _ in 0..3 {
        let _ = gw
            .post_raw(
                "/v1/chat/completions",
                serde_json::to_vec(&body).unwrap(),
                "sk-spender-key-000000",
            )
            .await;
    }
    let mut waited = 0;
    while seen.lock().unwrap().len() < 2 {
        assert!(
            waited < 80,
            "webhooks not delivered: {:?}",
            seen.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    }
    let got = seen.lock().unwrap().clone();
    let kinds: Vec<&str> = got.iter().map(|(k, _, _)| k.as_str()).collect();
    assert!(
        kinds.contains(&"circuit_open") && kinds.contains(&"budget_alert"),
        "{kinds:?}"
    );
    let alert = got.iter().find(|(k, _, _)| k == "budget_alert").unwrap();
    assert_eq!(alert.2["tenant"], "spender");
    assert_eq!(alert.2["detail"]["threshold"], 0.1);
    let metrics = support::metrics_text(&gw).await;
    assert!(
        metrics.contains("asc_notifications_total{event=")
            && metrics.contains("outcome=\"retried\""),
        "{metrics}"
    );
}
