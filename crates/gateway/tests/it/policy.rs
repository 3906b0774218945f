//! Policy that holds: budgets and rate limits under concurrency, residency through
//! fallbacks, provider budgets, downgrade, alerts and usage.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{self, TestGateway};

const OPS: &str = "ops-token-0123456789abcdef";

fn yaml(providers: &str, models: &str, tenants: &str, prices: &str) -> String {
    format!(
        "admin:\n  tokens:\n    - {{name: ops, token: \"{OPS}\", role: platform_admin}}\nprices:\n{prices}\n{}",
        support::config(providers, models, tenants)
    )
}

/// Fires `n` identical requests at once (a barrier releases them together).
async fn burst(
    gw: &TestGateway,
    n: usize,
    key: &'static str,
    body: Value,
) -> Vec<(u16, Value, Option<String>)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for _ in 0..n {
        let (http, url, b, body) = (
            gw.http.clone(),
            gw.url.clone(),
            barrier.clone(),
            body.clone(),
        );
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&body)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            (
                status,
                r.json::<Value>().await.unwrap_or(Value::Null),
                retry,
            )
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hundred_concurrent_requests_cannot_spend_past_a_budget() {
    // $1000 per million tokens = 1000 micro-dollars a token; a request costs about
    // 8,000 micro-dollars and reserves at most about 10,000: $0.5 covers about 50-60.
    let prices = "  - {provider: mock-openai, model: gpt-4o-mini, input: 1000, output: 1000}";
    let tenants = r#"  - name: capped
    allowed_models: [m-openai]
    budget: {limit_usd: 0.5, period: month, alert_at: [0.5, 0.8], on_exceed: block}
    keys: [{name: k, key: "sk-capped-key-0000000"}]"#;
    let gw = TestGateway::start(&yaml("", "", tenants, prices)).await;
    let body = json!({"model": "m-openai", "max_tokens": 5, "messages": [{"role": "user", "content": "hello there"}]});
    let results = burst(&gw, 300, "sk-capped-key-0000000", body.clone()).await;
    let ok = results.iter().filter(|r| r.0 == 200).count();
    for (status, v, _) in &results {
        if *status != 200 {
            assert_eq!(*status, 429, "{v}");
            assert_eq!(v["error"]["code"], "budget_exceeded", "{v}");
        }
    }
    let live = gw.state.live.load_full();
    let counters = live.directory.load().counters("capped").unwrap().clone();
    let (spent, reserved) = {
        let b = asc_gateway::limits::lock(&counters.budget);
        let l = b.as_ref().unwrap();
        (l.spent, l.reserved)
    };
    assert!(
        spent <= 500_000,
        "spent {spent} µ$ past a 500,000 µ$ budget"
    );
    assert_eq!(reserved, 0, "every reservation was released");
    assert!(
        ok >= 30,
        "the budget should serve dozens of requests, served {ok}"
    );
    // Sequentially, requests go on until the budget is really spent, and never past it.
    let mut served = ok;
    loop {
        // The same small request (a request without max_tokens reserves for the model's
        // whole output and would be refused at once).
        let st = gw
            .post_raw(
                "/v1/chat/completions",
                serde_json::to_vec(&body).unwrap(),
                "sk-capped-key-0000000",
            )
            .await
            .status()
            .as_u16();
        if st != 200 {
            assert_eq!(st, 429);
            break;
        }
        served += 1;
        assert!(served < 200, "never refused");
    }
    let spent = asc_gateway::limits::lock(&counters.budget)
        .as_ref()
        .unwrap()
        .spent;
    assert!(spent <= 500_000 && spent > 400_000, "spent {spent}");
    // Alerts at 50% and 80%, once each, and usage reports the spend.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let events = gw.state.store.events().await.unwrap();
    let alerts: Vec<f64> = events
        .iter()
        .filter(|e| e.kind == "budget_alert")
        .map(|e| e.payload["threshold"].as_f64().unwrap())
        .collect();
    assert_eq!(alerts, [0.5, 0.8]);
    let (st, u) = gw
        .admin(
            Method::GET,
            "/admin/v1/usage?tenant=capped&group_by=model",
            OPS,
            None,
        )
        .await;
    assert_eq!(st, 200, "{u}");
    assert_eq!(u["tenant"], "capped");
    assert_eq!(u["limit_usd"], 0.5);
    assert!(u["spent_usd"].as_f64().unwrap() <= 0.5);
    assert_eq!(
        u["requests"].as_u64().unwrap(),
        300 + (served - ok) as u64 + 1
    );
    assert!(u["prompt_tokens"].as_u64().unwrap() > 0);
    assert_eq!(u["groups"][0]["key"], "m-openai");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_holds_under_a_burst() {
    let tenants = r#"  - name: limited
    allowed_models: ["*"]
    rate_limit: {requests_per_minute: 20, tokens_per_minute: 100000}
    keys: [{name: k, key: "sk-limited-key-000000"}]"#;
    let gw = TestGateway::start(&yaml("", "", tenants, "")).await;
    let body = json!({"model": "m-openai", "messages": [{"role": "user", "content": "hi"}]});
    let results = burst(&gw, 100, "sk-limited-key-000000", body).await;
    let ok = results.iter().filter(|r| r.0 == 200).count();
    assert_eq!(ok, 20, "exactly the limit is admitted");
    for (status, v, retry) in results.iter().filter(|r| r.0 != 200) {
        assert_eq!(*status, 429);
        assert_eq!(v["error"]["code"], "rate_limited");
        let secs: u64 = retry.as_deref().unwrap().parse().unwrap();
        assert!((1..=60).contains(&secs), "Retry-After {secs}");
    }
    assert_eq!(
        gw.mock("mock-openai").requests,
        20,
        "refused requests never reach upstream"
    );
}

#[tokio::test]
async fn one_prompt_over_the_token_limit_is_refused() {
    let tenants = r#"  - name: small
    allowed_models: ["*"]
    rate_limit: {tokens_per_minute: 500}
    keys: [{name: k, key: "sk-small-key-00000000"}]"#;
    let gw = TestGateway::start(&yaml("", "", tenants, "")).await;
    let body = json!({"model": "m-openai", "messages": [{"role": "user", "content": "word ".repeat(3000)}]});
    let r = gw
        .post_raw(
            "/v1/chat/completions",
            serde_json::to_vec(&body).unwrap(),
            "sk-small-key-00000000",
        )
        .await;
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(gw.mock("mock-openai").requests, 0);
}

#[tokio::test]
async fn an_eu_tenant_never_reaches_a_us_provider_even_when_the_eu_target_fails() {
    let providers = r#"  - {name: us-a, kind: mock, flavor: openai, region: us}
  - {name: us-b, kind: mock, flavor: anthropic, region: us}
  - {name: eu-bad, kind: mock, flavor: mistral, region: eu, fail_rate: 1.0, fail_status: 503}
  - {name: eu-good, kind: mock, flavor: mistral, region: eu}"#;
    let models = r#"  - name: global
    retries: 1
    circuit_breaker: {consecutive_failures: 1000, error_rate: 1.0, window: 1000}
    targets: [{provider: us-a, model: gpt-4o-mini, weight: 90}, {provider: eu-bad, model: mistral-small-latest, weight: 10}]
    fallbacks: [{provider: us-b, model: claude-3-5-haiku-latest}]
  - name: global-with-eu-fallback
    retries: 0
    circuit_breaker: {consecutive_failures: 1000, error_rate: 1.0, window: 1000}
    targets: [{provider: us-a, model: gpt-4o-mini}, {provider: eu-bad, model: mistral-small-latest}]
    fallbacks: [{provider: us-b, model: claude-3-5-haiku-latest}, {provider: eu-good, model: mistral-small-latest}]"#;
    let tenants = r#"  - name: eu
    allowed_models: ["*"]
    regions: [eu]
    keys: [{name: k, key: "sk-eu-tenant-key-0000"}]"#;
    let gw = TestGateway::start(&yaml(providers, models, tenants, "")).await;
    for _ in 0..20 {
        for stream in [false, true] {
            let body = json!({"model": "global", "stream": stream, "messages": [{"role": "user", "content": "hi"}]});
            let r = gw
                .post_raw(
                    "/v1/chat/completions",
                    serde_json::to_vec(&body).unwrap(),
                    "sk-eu-tenant-key-0000",
                )
                .await;
            assert_eq!(
                r.status(),
                502,
                "the only EU target fails; US is never an option"
            );
        }
        let r = gw
            .chat_status("sk-eu-tenant-key-0000", "global-with-eu-fallback")
            .await;
        assert_eq!(r, 200, "served by the EU fallback");
    }
    assert_eq!(gw.mock("us-a").requests, 0);
    assert_eq!(gw.mock("us-b").requests, 0);
    assert!(gw.mock("eu-bad").requests >= 60);
    assert_eq!(gw.mock("eu-good").requests, 20);
    // A model with no EU target at all: 403 naming the regions.
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let r = gw
        .post_raw(
            "/v1/chat/completions",
            serde_json::to_vec(&body).unwrap(),
            "sk-eu-tenant-key-0000",
        )
        .await;
    assert_eq!(r.status(), 403);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], "residency_denied");
    assert!(v["error"]["message"].as_str().unwrap().contains("eu"));
}

#[tokio::test]
async fn downgrade_serves_with_the_cheaper_model_once_the_budget_is_spent() {
    let prices = "  - {provider: mock-openai, model: gpt-4o-mini, input: 1000, output: 1000}\n  - {provider: mock-mistral, model: mistral-small-latest, input: 1, output: 1}";
    let tenants = r#"  - name: thrifty
    allowed_models: ["*"]
    budget: {limit_usd: 0.05, period: day, on_exceed: "downgrade:m-mistral"}
    keys: [{name: k, key: "sk-thrifty-key-000000"}]"#;
    let gw = TestGateway::start(&yaml("", "", tenants, prices)).await;
    let mut downgraded = 0;
    for _ in 0..20 {
        let body = json!({"model": "m-openai", "max_tokens": 5, "messages": [{"role": "user", "content": "hello there"}]});
        let r = gw
            .post_raw(
                "/v1/chat/completions",
                serde_json::to_vec(&body).unwrap(),
                "sk-thrifty-key-000000",
            )
            .await;
        assert_eq!(r.status(), 200);
        if r.headers().get("x-asc-downgraded-to").is_some() {
            assert_eq!(r.headers()["x-asc-provider"], "mock-mistral");
            downgraded += 1;
        }
    }
    assert!(downgraded >= 10, "downgraded {downgraded} of 20");
}

#[tokio::test]
async fn a_spent_provider_budget_moves_traffic_to_the_others() {
    let providers = r#"  - name: contracted
    kind: mock
    flavor: openai
    region: us
    budget: {limit_usd: 0.02, period: month}"#;
    let models = r#"  - name: split
    retries: 0
    targets: [{provider: contracted, model: gpt-4o-mini, weight: 1000}, {provider: mock-anthropic, model: claude-3-5-haiku-latest, weight: 1}]"#;
    let prices = "  - {provider: contracted, model: gpt-4o-mini, input: 1000, output: 1000}";
    let gw = TestGateway::start(&yaml(providers, models, "", prices)).await;
    // Without max_tokens the worst case (the model's whole output) would not fit the
    // contract at all; 5 tokens of output leave room for a couple of requests.
    for _ in 0..10 {
        let body = json!({"model": "split", "max_tokens": 5, "messages": [{"role": "user", "content": "hello"}]});
        let r = gw
            .post_raw(
                "/v1/chat/completions",
                serde_json::to_vec(&body).unwrap(),
                support::KEY,
            )
            .await;
        assert_eq!(r.status(), 200);
    }
    let contracted = gw.mock("contracted").requests;
    assert!(
        (1..10).contains(&contracted),
        "the contract ran out: {contracted}"
    );
    assert!(gw.mock("mock-anthropic").requests >= 10 - contracted);
}

#[tokio::test]
async fn a_budgeted_tenant_cannot_reach_an_unpriced_model() {
    let providers = "  - {name: selfhosted, kind: openai_compatible, base_url: \"http://127.0.0.1:9/v1\", region: us}";
    let models = "  - name: local\n    targets: [{provider: selfhosted, model: llama-3}]";
    let tenants = r#"  - name: budgeted
    allowed_models: ["*"]
    budget: {limit_usd: 10, period: month}"#;
    let err = asc_gateway::config::load_str(&yaml(providers, models, tenants, ""), &|_| None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tenants[1].budget") && err.contains("selfhosted/llama-3"),
        "{err}"
    );
    // With a price (0 for self-hosted) it loads.
    let priced = "  - {provider: selfhosted, model: llama-3, input: 0, output: 0}";
    assert!(
        asc_gateway::config::load_str(&yaml(providers, models, tenants, priced), &|_| None).is_ok()
    );
}

#[tokio::test]
async fn without_max_tokens_the_reservation_assumes_the_models_whole_output() {
    // 16,384 output tokens at $1000/M is $16: more than a $1 budget can reserve, while
    // the same request with max_tokens 5 costs about a cent.
    let prices = "  - {provider: mock-openai, model: gpt-4o-mini, input: 1000, output: 1000}";
    let tenants = r#"  - name: small-budget
    allowed_models: ["*"]
    budget: {limit_usd: 1, period: week}
    keys: [{name: k, key: "sk-small-budget-00000"}]"#;
    let gw = TestGateway::start(&yaml("", "", tenants, prices)).await;
    let key = "sk-small-budget-00000";
    assert_eq!(gw.chat_status(key, "m-openai").await, 429);
    let body = json!({"model": "m-openai", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    let r = gw
        .post_raw(
            "/v1/chat/completions",
            serde_json::to_vec(&body).unwrap(),
            key,
        )
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn prices_changing_mid_period_keep_the_spend_and_apply_from_the_next_request() {
    let dir = std::env::temp_dir().join(format!("asc-prices-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("asc.yaml");
    let tenants = r#"  - name: priced
    allowed_models: ["*"]
    budget: {limit_usd: 100, period: month}
    keys: [{name: k, key: "sk-priced-key-0000000"}]"#;
    let cheap = "  - {provider: mock-openai, model: gpt-4o-mini, input: 1, output: 1}";
    let dear = "  - {provider: mock-openai, model: gpt-4o-mini, input: 1000, output: 1000}";
    std::fs::write(&path, yaml("", "", tenants, cheap)).unwrap();
    let gw = TestGateway::start_file(&path).await;
    let body = json!({"model": "m-openai", "max_tokens": 5, "messages": [{"role": "user", "content": "hello"}]});
    let spent = || {
        let live = gw.state.live.load_full();
        let c = live.directory.load().counters("priced").unwrap().clone();
        asc_gateway::limits::lock(&c.budget).as_ref().unwrap().spent
    };
    let call = || {
        gw.post_raw(
            "/v1/chat/completions",
            serde_json::to_vec(&body).unwrap(),
            "sk-priced-key-0000000",
        )
    };
    assert_eq!(call().await.status(), 200);
    let after_cheap = spent();
    assert!(after_cheap > 0 && after_cheap < 100, "{after_cheap}");
    std::fs::write(&path, yaml("", "", tenants, dear)).unwrap();
    let (st, v) = gw
        .admin(Method::POST, "/admin/v1/config/reload", OPS, None)
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(spent(), after_cheap, "a reload keeps what was spent");
    assert_eq!(call().await.status(), 200);
    let delta = spent() - after_cheap;
    assert_eq!(
        delta,
        after_cheap * 1000,
        "the new price applies to the next request"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
