//! Routing and resilience against faulty upstreams: circuit breakers, retries hiding
//! flaky targets, timeouts, resets, deadlines, and the latency and cost strategies.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::fault::{self, Fault};
use crate::support::{self, KEY, TestGateway};

async fn call(gw: &TestGateway, model: &str) -> (u16, reqwest::header::HeaderMap, Value) {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let r = gw
        .post_raw(
            "/v1/chat/completions",
            serde_json::to_vec(&body).unwrap(),
            KEY,
        )
        .await;
    let (st, h) = (r.status().as_u16(), r.headers().clone());
    (st, h, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_dead_primary_opens_its_circuit_and_is_probed_after_the_cooldown() {
    let dead = fault::start(Fault::Status(500)).await;
    let providers = support::fault_provider("dead", &dead.base_url);
    let models = r#"  - name: guarded
    retries: 0
    circuit_breaker: {consecutive_failures: 3, cooldown_ms: 400}
    targets: [{provider: dead, model: x}]
    fallbacks: [{provider: mock-openai, model: gpt-4o-mini}]"#;
    let gw = TestGateway::start(&support::config(&providers, models, "")).await;
    for _ in 0..10 {
        let (st, h, _) = call(&gw, "guarded").await;
        assert_eq!(st, 200);
        assert_eq!(h["x-asc-provider"], "mock-openai");
    }
    assert_eq!(
        dead.hits.load(Ordering::SeqCst),
        3,
        "the circuit opened after 3 failures"
    );
    let metrics = support::metrics_text(&gw).await;
    assert!(
        metrics.contains("asc_circuit_open{provider=\"dead\",model=\"x\"} 1"),
        "{metrics}"
    );
    tokio::time::sleep(Duration::from_millis(450)).await;
    let (st, h, _) = call(&gw, "guarded").await;
    assert_eq!(st, 200);
    assert_eq!(h["x-asc-attempts"], "2", "one probe, then the fallback");
    assert_eq!(dead.hits.load(Ordering::SeqCst), 4);
    // The probe failed: open again (for twice the cool-down).
    let (_, h, _) = call(&gw, "guarded").await;
    assert_eq!(h["x-asc-attempts"], "1");
    assert_eq!(dead.hits.load(Ordering::SeqCst), 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events = gw.state.store.events().await.unwrap();
    assert!(events.iter().filter(|e| e.kind == "circuit_open").count() >= 2);
}

#[tokio::test]
async fn every_circuit_open_answers_503_no_healthy_target() {
    let dead = fault::start(Fault::Status(503)).await;
    let providers = support::fault_provider("dead", &dead.base_url);
    let models = r#"  - name: doomed
    retries: 0
    circuit_breaker: {consecutive_failures: 2, cooldown_ms: 60000}
    targets: [{provider: dead, model: x}]"#;
    let gw = TestGateway::start(&support::config(&providers, models, "")).await;
    assert_eq!(call(&gw, "doomed").await.0, 502);
    let (st, _, v) = call(&gw, "doomed").await;
    assert_eq!(st, 502, "{v}");
    let (st, _, v) = call(&gw, "doomed").await;
    assert_eq!(st, 503, "{v}");
    assert_eq!(v["error"]["code"], "no_healthy_target");
    assert_eq!(dead.hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn retries_hide_a_flaky_target() {
    let providers = "  - {name: flaky, kind: mock, flavor: openai, region: us, fail_rate: 0.3, fail_status: 503, seed: 7}";
    let models =
        "  - name: flaky\n    retries: 4\n    targets: [{provider: flaky, model: gpt-4o-mini}]";
    let gw = TestGateway::start(&support::config(providers, models, "")).await;
    let mut retried = 0;
    for _ in 0..30 {
        let (st, h, v) = call(&gw, "flaky").await;
        assert_eq!(st, 200, "{v}");
        if h["x-asc-attempts"] != "1" {
            retried += 1;
        }
    }
    assert!(retried > 0, "some requests needed a retry");
    assert!(gw.mock("flaky").failures_injected > 0);
}

#[tokio::test]
async fn hangs_resets_and_rate_limits_fall_back() {
    let hang = fault::start(Fault::Hang).await;
    let reset = fault::start(Fault::Reset).await;
    let providers = format!(
        "  - {{name: hang, kind: openai, api_key: k, region: us, base_url: \"{}\"}}\n  - {{name: reset, kind: openai, api_key: k, region: us, base_url: \"{}\"}}\n  - {{name: limited, kind: mock, flavor: anthropic, region: us, fail_rate: 1.0, fail_status: 429}}",
        hang.base_url, reset.base_url
    );
    let models = r#"  - name: hang
    retries: 0
    timeout_ms: 200
    targets: [{provider: hang, model: x}]
    fallbacks: [{provider: mock-openai, model: gpt-4o-mini}]
  - name: reset
    retries: 0
    targets: [{provider: reset, model: x}]
    fallbacks: [{provider: mock-openai, model: gpt-4o-mini}]
  - name: limited
    retries: 1
    targets: [{provider: limited, model: claude-3-5-haiku-latest}]
    fallbacks: [{provider: mock-openai, model: gpt-4o-mini}]"#;
    let gw = TestGateway::start(&support::config(&providers, models, "")).await;
    for model in ["hang", "reset"] {
        for stream in [false, true] {
            let body = json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
            let t0 = Instant::now();
            let r = gw
                .post_raw(
                    "/v1/chat/completions",
                    serde_json::to_vec(&body).unwrap(),
                    KEY,
                )
                .await;
            assert_eq!(r.status(), 200, "{model} stream={stream}");
            assert_eq!(r.headers()["x-asc-provider"], "mock-openai");
            assert!(
                t0.elapsed() < Duration::from_secs(2),
                "{model}: {:?}",
                t0.elapsed()
            );
        }
    }
    // 429 with Retry-After 1 s: waited once on the same target, then the fallback.
    let t0 = Instant::now();
    let (st, h, _) = call(&gw, "limited").await;
    assert_eq!(st, 200);
    assert_eq!(h["x-asc-attempts"], "3");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "Retry-After honoured: {:?}",
        t0.elapsed()
    );
}

#[tokio::test]
async fn the_overall_deadline_bounds_every_attempt_together() {
    let hang = fault::start(Fault::Hang).await;
    let providers = support::fault_provider("hang", &hang.base_url);
    let models = r#"  - name: slow
    retries: 3
    timeout_ms: 250
    deadline_ms: 600
    targets: [{provider: hang, model: x}]"#;
    let gw = TestGateway::start(&support::config(&providers, models, "")).await;
    let t0 = Instant::now();
    let (st, _, v) = call(&gw, "slow").await;
    let took = t0.elapsed();
    assert_eq!(st, 504, "{v}");
    assert_eq!(v["error"]["code"], "upstream_timeout");
    assert!(
        took < Duration::from_millis(1100),
        "4 tries of 250 ms would take 1 s+: {took:?}"
    );
}

#[tokio::test]
async fn least_latency_prefers_the_fast_target_and_cost_the_cheap_one() {
    let providers = "  - {name: slow, kind: mock, flavor: openai, region: us, latency_ms: 40}\n  - {name: fast, kind: mock, flavor: openai, region: us}";
    let models = r#"  - name: quick
    strategy: least_latency
    targets: [{provider: slow, model: gpt-4o}, {provider: fast, model: gpt-4o-mini}]
  - name: thrifty
    strategy: cost
    targets: [{provider: slow, model: gpt-4o}, {provider: fast, model: gpt-4o-mini}]"#;
    let gw = TestGateway::start(&support::config(providers, models, "")).await;
    for _ in 0..40 {
        assert_eq!(call(&gw, "quick").await.0, 200);
    }
    let (slow, fast) = (gw.mock("slow").requests, gw.mock("fast").requests);
    assert!(fast >= 30 && slow <= 10, "fast {fast}, slow {slow}");
    for _ in 0..10 {
        let (_, h, _) = call(&gw, "thrifty").await;
        assert_eq!(
            h["x-asc-target-model"], "gpt-4o-mini",
            "gpt-4o-mini is cheaper than gpt-4o"
        );
    }
}

#[tokio::test]
async fn identical_requests_hit_the_cache_per_tenant_and_streams_replay_it() {
    let models = "  - name: cached\n    cache_ttl_s: 60\n    targets: [{provider: mock-anthropic, model: claude-3-5-haiku-latest}]";
    let tenants = r#"  - name: other
    allowed_models: ["*"]
    keys: [{name: k, key: "sk-other-tenant-key00"}]
  - name: eu-only
    allowed_models: ["*"]
    regions: [eu]
    keys: [{name: k, key: "sk-eu-only-tenant-00"}]"#;
    let gw = TestGateway::start(&support::config("", models, tenants)).await;
    let body = |stream: bool| {
        serde_json::to_vec(&json!({"model": "cached", "stream": stream, "max_tokens": 4096, "messages": [{"role": "user", "content": "same question"}]})).unwrap()
    };
    let r1 = gw.post_raw("/v1/chat/completions", body(false), KEY).await;
    assert_eq!(r1.headers()["x-asc-cache"], "miss");
    let v1: Value = r1.json().await.unwrap();
    let r2 = gw.post_raw("/v1/chat/completions", body(false), KEY).await;
    assert_eq!(r2.headers()["x-asc-cache"], "hit");
    assert_eq!(r2.headers()["x-asc-attempts"], "0");
    let v2: Value = r2.json().await.unwrap();
    assert_eq!(
        v1["choices"][0]["message"]["content"],
        v2["choices"][0]["message"]["content"]
    );
    assert_eq!(gw.mock("mock-anthropic").requests, 1);
    // A streaming request is answered from the cache as a stream.
    let r3 = gw.post_raw("/v1/chat/completions", body(true), KEY).await;
    assert_eq!(r3.headers()["x-asc-cache"], "hit");
    let s = support::openai_stream(&r3.bytes().await.unwrap());
    assert_eq!(s.text, "echo: same question");
    assert!(s.terminated);
    // The Anthropic surface shares the entry (same canonical request).
    let r4 = gw
        .post_raw(
            "/v1/messages",
            serde_json::to_vec(&json!({"model": "cached", "max_tokens": 4096, "messages": [{"role": "user", "content": "same question"}]})).unwrap(),
            KEY,
        )
        .await;
    assert_eq!(r4.status(), 200);
    assert_eq!(r4.headers()["x-asc-cache"], "hit");
    let m: Value = r4.json().await.unwrap();
    assert_eq!(m["content"][0]["text"], "echo: same question");
    // Another tenant never gets this tenant's entry.
    let r5 = gw
        .post_raw("/v1/chat/completions", body(false), "sk-other-tenant-key00")
        .await;
    assert_eq!(r5.headers()["x-asc-cache"], "miss");
    // no-cache bypasses.
    let r6 = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(KEY)
        .header("x-asc-cache", "no-cache")
        .body(body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(r6.headers()["x-asc-cache"], "bypass");
    let upstream_calls = gw.mock("mock-anthropic").requests;
    assert_eq!(upstream_calls, 3, "miss, the other tenant's miss, bypass");
    // A streamed miss fills the cache too.
    let streamed = serde_json::to_vec(&json!({"model": "cached", "stream": true, "messages": [{"role": "user", "content": "streamed first"}]})).unwrap();
    let r7 = gw
        .post_raw("/v1/chat/completions", streamed.clone(), KEY)
        .await;
    assert_eq!(r7.headers()["x-asc-cache"], "miss");
    let _ = r7.bytes().await.unwrap();
    let r8 = gw.post_raw("/v1/chat/completions", streamed, KEY).await;
    assert_eq!(r8.headers()["x-asc-cache"], "hit");
    // Residency: the EU-only tenant cannot even route to the US model.
    let r9 = gw
        .post_raw("/v1/chat/completions", body(false), "sk-eu-only-tenant-00")
        .await;
    assert_eq!(r9.status(), 403);
}

#[tokio::test]
async fn replicas_share_the_cache_through_redis() {
    let Some(url) = support::test_redis().await else {
        return;
    };
    let models = "  - name: cached\n    cache_ttl_s: 30\n    targets: [{provider: mock-openai, model: gpt-4o-mini}]";
    let yaml = format!(
        "storage: {{redis: \"{url}\"}}\n{}",
        support::config("", models, "")
    );
    let a = TestGateway::start(&yaml).await;
    let b = TestGateway::start(&yaml).await;
    // A question no earlier run has asked, so the key is new.
    let question = format!("unique question {}", uuid::Uuid::new_v4());
    let body = serde_json::to_vec(
        &json!({"model": "cached", "messages": [{"role": "user", "content": question}]}),
    )
    .unwrap();
    let r1 = a.post_raw("/v1/chat/completions", body.clone(), KEY).await;
    assert_eq!(r1.headers()["x-asc-cache"], "miss");
    let v1: Value = r1.json().await.unwrap();
    let r2 = b.post_raw("/v1/chat/completions", body.clone(), KEY).await;
    assert_eq!(
        r2.headers()["x-asc-cache"],
        "hit",
        "replica b sees replica a's entry"
    );
    let v2: Value = r2.json().await.unwrap();
    assert_eq!(
        v1["choices"][0]["message"]["content"],
        v2["choices"][0]["message"]["content"]
    );
    assert_eq!(a.mock("mock-openai").requests, 1);
    assert_eq!(b.mock("mock-openai").requests, 0);
    let stream = serde_json::to_vec(&json!({"model": "cached", "stream": true, "messages": [{"role": "user", "content": question}]})).unwrap();
    let r3 = b.post_raw("/v1/chat/completions", stream, KEY).await;
    assert_eq!(r3.headers()["x-asc-cache"], "hit");
    assert_eq!(
        support::openai_stream(&r3.bytes().await.unwrap()).text,
        format!("echo: {question}")
    );
}

/// A TCP relay in front of `target` that counts the connections it accepts.
async fn counting_relay(target: String) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let target = target.clone();
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (format!("http://{addr}/v1"), accepted)
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_kept_alive_across_requests_and_streams() {
    // The upstream is an in-process mock of another gateway, reached through a relay
    // that counts TCP connections.
    let upstreams = TestGateway::start(&support::config("", "", "")).await;
    let mock_url = upstreams
        .state
        .live
        .load()
        .mocks
        .iter()
        .find(|m| m.provider == "mock-openai")
        .unwrap()
        .base_url
        .clone();
    let target = mock_url
        .trim_start_matches("http://")
        .trim_end_matches("/v1")
        .to_owned();
    let (relay_url, accepted) = counting_relay(target).await;
    let providers = support::fault_provider("counted", &relay_url);
    let models = "  - name: counted\n    targets: [{provider: counted, model: gpt-4o-mini}]";
    let gw = TestGateway::start(&support::config(&providers, models, "")).await;

    for _ in 0..10 {
        let (status, _, body) = call(&gw, "counted").await;
        assert_eq!(status, 200, "{body}");
        let stream = json!({"model": "counted", "stream": true,
                            "messages": [{"role": "user", "content": "hi"}]});
        let r = gw.post("/v1/chat/completions", &stream).await;
        assert_eq!(r.status(), 200);
        let text = support::openai_stream(&r.bytes().await.unwrap()).text;
        assert_eq!(text, "echo: hi");
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "20 sequential requests, streams included, share one kept-alive connection"
    );

    // Four clients at once: at most four connections more, reused by each client's
    // following requests.
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (url, http) = (gw.url.clone(), gw.http.clone());
        clients.push(tokio::spawn(async move {
            for _ in 0..5 {
                let r = http
                    .post(format!("{url}/v1/chat/completions"))
                    .bearer_auth(KEY)
                    .json(&json!({"model": "counted", "messages": [{"role": "user", "content": "x"}]}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let total = accepted.load(Ordering::SeqCst);
    assert!(
        (1..=5).contains(&total),
        "{total} upstream connections for 20 more requests from 4 clients"
    );
}
