//! `/metrics` carries what a sequence of requests did, value by value.

use std::time::Duration;

use crate::support::fault::{self, Fault};
use crate::support::{self, KEY, TestGateway};

#[tokio::test]
async fn metrics_count_successes_fallbacks_and_denials() {
    let failing = fault::start(Fault::Status(500)).await;
    let providers = support::fault_provider("failing", &failing.base_url);
    let models = "  - name: fb\n    retries: 0\n    targets: [{provider: failing, model: x}]\n    fallbacks: [{provider: mock-openai, model: gpt-4o-mini}]";
    let tenants = r#"  - name: r
    allowed_models: [m-openai]
    rate_limit: {requests_per_minute: 1}
    keys: [{name: k, key: "sk-r-tenant-key-00000"}]"#;
    let gw = TestGateway::start(&support::config(&providers, models, tenants)).await;
    assert_eq!(gw.chat_status(KEY, "m-openai").await, 200);
    assert_eq!(gw.chat_status(KEY, "m-openai").await, 200);
    assert_eq!(gw.chat_status(KEY, "fb").await, 200);
    assert_eq!(
        gw.chat_status("sk-r-tenant-key-00000", "m-anthropic").await,
        403
    );
    assert_eq!(
        gw.chat_status("sk-r-tenant-key-00000", "m-openai").await,
        200
    );
    assert_eq!(
        gw.chat_status("sk-r-tenant-key-00000", "m-openai").await,
        429
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let text = support::metrics_text(&gw).await;
    let ok = [
        ("tenant", "t"),
        ("model", "m-openai"),
        ("provider", "mock-openai"),
        ("status", "success"),
    ];
    assert_eq!(
        support::metric(&text, "asc_requests_total", &ok),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        support::metric(&text, "asc_fallbacks_total", &[("model", "fb")]),
        Some(1.0)
    );
    assert_eq!(
        support::metric(
            &text,
            "asc_upstream_attempts_total",
            &[("provider", "failing"), ("outcome", "failure")]
        ),
        Some(1.0)
    );
    assert_eq!(
        support::metric(
            &text,
            "asc_upstream_attempts_total",
            &[("provider", "mock-openai"), ("outcome", "success")]
        ),
        Some(4.0)
    );
    let denied = |reason| {
        support::metric(
            &text,
            "asc_policy_denials_total",
            &[("tenant", "r"), ("reason", reason)],
        )
    };
    assert_eq!(denied("allowed_models"), Some(1.0));
    assert_eq!(denied("rate_limit"), Some(1.0));
    // Two denied requests of tenant r, over two models.
    let denied_total = support::metric_sum(
        &text,
        "asc_requests_total",
        &[("tenant", "r"), ("status", "denied")],
    );
    assert_eq!(denied_total, 2.0);
    let prompt = support::metric(
        &text,
        "asc_tokens_total",
        &[("tenant", "t"), ("model", "m-openai"), ("kind", "prompt")],
    );
    assert!(prompt.unwrap() > 0.0);
    assert!(
        support::metric(
            &text,
            "asc_request_duration_seconds_count",
            &[("tenant", "t"), ("model", "m-openai")]
        ) == Some(2.0)
    );
    assert!(!text.contains("request_id"), "labels stay bounded");
}
