//! Execution records: one per request, every outcome, queryable with paging and RBAC;
//! the timeline merges them with events.

use std::time::Duration;

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::fault::{self, Fault};
use crate::support::{self, KEY, TestGateway};

const OPS: &str = "ops-token-0123456789abcdef";
const OTHER_ADMIN: &str = "other-admin-token-0123456";
const VIEWER: &str = "viewer-t-token-0123456789";

/// A gateway on the standard test config with the `ops` platform admin token.
async fn ops_gateway() -> TestGateway {
    let yaml = format!(
        "admin:\n  tokens:\n    - {{name: ops, token: \"{OPS}\", role: platform_admin}}\n{}",
        support::config("", "", "")
    );
    if std::env::var("ASC_TEST_STORE").as_deref() == Ok("postgres") {
        return TestGateway::start(&yaml).await;
    }
    // SQLite on a file, as it is deployed: the record writer has its own connection
    // there, beside the pool that the admin API (and these tests' triggers) use.
    let dir = std::env::temp_dir().join(format!("asc-records-{}", uuid::Uuid::new_v4()));
    let url = format!("sqlite://{}/asc.db", dir.display());
    TestGateway::start_with_store(&yaml, &url).await
}

#[tokio::test]
async fn every_outcome_leaves_one_record_and_the_timeline_tells_the_story() {
    let failing = fault::start(Fault::Status(500)).await;
    let providers = format!(
        "  - {{name: failing, kind: openai, api_key: k, region: us, base_url: \"{}\"}}\n  - {{name: slow, kind: mock, flavor: openai, region: us, chunks: 30, latency_ms: 5000}}",
        failing.base_url
    );
    let models = r#"  - name: fb
    retries: 0
    targets: [{provider: failing, model: x}]
    fallbacks: [{provider: mock-openai, model: gpt-4o-mini}]
  - name: cached
    cache_ttl_s: 60
    targets: [{provider: mock-openai, model: gpt-4o-mini}]
  - name: slow
    targets: [{provider: slow, model: gpt-4o-mini}]"#;
    let tenants = r#"  - name: other
    allowed_models: ["*"]"#;
    let yaml = format!(
        "admin:\n  tokens:\n    - {{name: ops, token: \"{OPS}\", role: platform_admin}}\n    - {{name: oa, token: \"{OTHER_ADMIN}\", role: tenant_admin, tenants: [other]}}\n    - {{name: v, token: \"{VIEWER}\", role: viewer, tenants: [t]}}\n{}",
        support::config(&providers, models, tenants)
    );
    let gw = TestGateway::start(&yaml).await;
    let ok = gw.chat("m-openai").await;
    let ok_id = support::request_id(&ok);
    assert_eq!(gw.chat_status(KEY, "fb").await, 200);
    assert_eq!(gw.chat_status(KEY, "nope").await, 404);
    assert_eq!(gw.chat_status(KEY, "cached").await, 200);
    assert_eq!(gw.chat_status(KEY, "cached").await, 200);
    assert_eq!(gw.chat_status("wrong-key-000000000", "m-openai").await, 401);
    // A client that goes away mid-stream.
    let r = gw.post("/v1/chat/completions", &json!({"model": "slow", "stream": true, "messages": [{"role": "user", "content": "a long one please"}]})).await;
    let mut body = r.bytes_stream();
    let _ = body.next().await;
    drop(body);
    tokio::time::sleep(Duration::from_millis(800)).await;

    let (st, v) = gw
        .admin(
            Method::GET,
            "/admin/v1/records?tenant=t&limit=100",
            OPS,
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    let records = v["data"].as_array().unwrap();
    assert_eq!(records.len(), 6, "{v}");
    let statuses: Vec<&str> = records
        .iter()
        .map(|r| r["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses.iter().filter(|s| **s == "success").count(), 4);
    assert!(statuses.contains(&"error") && statuses.contains(&"client_closed"));
    // The stream cut short says the tokens so far: its prompt (estimated, and flagged
    // so: the upstream counts only at the end).
    let closed = records
        .iter()
        .find(|r| r["status"] == "client_closed")
        .unwrap();
    assert!(closed["prompt_tokens"].as_u64().unwrap() > 0, "{closed}");
    assert_eq!(closed["usage_estimated"], true, "{closed}");
    assert_eq!(closed["attempts"][0]["status"], 200, "{closed}");
    let hit = records.iter().find(|r| r["cache"] == "hit").unwrap();
    assert_eq!(hit["cost_usd"], 0.0);
    assert!(hit["attempts"].as_array().unwrap().is_empty());
    // One record in full.
    let (st, r) = gw
        .admin(
            Method::GET,
            &format!("/admin/v1/records/{ok_id}"),
            VIEWER,
            None,
        )
        .await;
    assert_eq!(st, 200);
    for field in [
        "request_id",
        "ts",
        "tenant",
        "key_id",
        "user",
        "tags",
        "surface",
        "model_requested",
        "stream",
        "decision",
        "attempts",
        "cache",
        "policy",
        "prompt_tokens",
        "completion_tokens",
        "cost_usd",
        "ttft_ms",
        "latency_ms",
        "status",
        "error_code",
    ] {
        assert!(r.get(field).is_some(), "record lacks {field}: {r}");
    }
    assert_eq!(r["request_id"], ok_id.as_str());
    assert_eq!(r["surface"], "openai");
    assert_eq!(r["decision"]["chosen"], "mock-openai/gpt-4o-mini");
    assert_eq!(r["attempts"][0]["region"], "us");
    assert!(r["prompt_tokens"].as_u64().unwrap() > 0);
    assert!(!r.to_string().contains(KEY), "no secret in a record");
    // RBAC: another tenant's admin may not read it.
    assert_eq!(
        gw.admin(
            Method::GET,
            &format!("/admin/v1/records/{ok_id}"),
            OTHER_ADMIN,
            None
        )
        .await
        .0,
        403
    );
    assert_eq!(
        gw.admin(Method::GET, "/admin/v1/records?tenant=t", OTHER_ADMIN, None)
            .await
            .0,
        403
    );
    let (_, own) = gw
        .admin(Method::GET, "/admin/v1/records", OTHER_ADMIN, None)
        .await;
    assert!(
        own["data"].as_array().unwrap().is_empty(),
        "narrowed to its own tenants"
    );
    assert_eq!(
        gw.admin(Method::GET, "/admin/v1/records/nope", OPS, None)
            .await
            .0,
        404
    );
    // Paging.
    let (_, p1) = gw
        .admin(Method::GET, "/admin/v1/records?tenant=t&limit=4", OPS, None)
        .await;
    let cursor = p1["next_cursor"].as_str().unwrap().to_owned();
    let (_, p2) = gw
        .admin(
            Method::GET,
            &format!("/admin/v1/records?tenant=t&limit=4&cursor={cursor}"),
            OPS,
            None,
        )
        .await;
    assert_eq!(
        p1["data"].as_array().unwrap().len() + p2["data"].as_array().unwrap().len(),
        6
    );
    let ids = |p: &Value| {
        p["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["request_id"].as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert!(ids(&p1).iter().all(|i| !ids(&p2).contains(i)));
    // Timeline: records and events in one order.
    let (st, t) = gw
        .admin(Method::GET, "/admin/v1/timeline?tenant=t", VIEWER, None)
        .await;
    assert_eq!(st, 200, "{t}");
    let kinds: Vec<&str> = t["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["type"].as_str().unwrap())
        .collect();
    for k in ["request", "fallback", "config_loaded"] {
        assert!(kinds.contains(&k), "{k} missing: {kinds:?}");
    }
    let ts: Vec<&str> = t["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["ts"].as_str().unwrap())
        .collect();
    assert!(ts.windows(2).all(|w| w[0] >= w[1]), "newest first");
}

/// `strict` (the default): when the client has the whole response, its record is
/// already committed, for plain and streamed replies.
#[tokio::test]
async fn with_strict_durability_a_finished_response_is_already_recorded() {
    let gw = ops_gateway().await;
    for stream in [false, true] {
        for _ in 0..5 {
            let r = gw
                .post("/v1/chat/completions", &json!({"model": "m-anthropic", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}))
                .await;
            let id = support::request_id(&r);
            let _ = r.bytes().await.unwrap();
            let (st, v) = gw
                .admin(Method::GET, &format!("/admin/v1/records/{id}"), OPS, None)
                .await;
            assert_eq!(st, 200, "stream={stream}: {v}");
            assert_eq!(v["status"], "success");
        }
    }
}

/// `durability: none` (benchmarks): requests are served, counted in usage and metrics,
/// and neither stored nor chained.
#[tokio::test]
async fn with_durability_none_records_are_counted_but_not_stored() {
    let yaml = format!(
        "audit: {{durability: none}}\nadmin:\n  tokens:\n    - {{name: ops, token: \"{OPS}\", role: platform_admin}}\n{}",
        support::config("", "", "")
    );
    let gw = TestGateway::start(&yaml).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let resp = gw.chat("m-openai").await;
        assert_eq!(resp.status(), 200);
        ids.push(support::request_id(&resp));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    for id in &ids {
        let (st, _) = gw
            .admin(Method::GET, &format!("/admin/v1/records/{id}"), OPS, None)
            .await;
        assert_eq!(st, 404, "{id} was stored");
    }
    let entries = gw.state.store.audit_entries(None, None).await.unwrap();
    assert_eq!(entries.iter().filter(|e| e.kind == "request").count(), 0);
    // Requests that use no model are not usage: the model list, a body that did not
    // parse.
    let models = gw
        .http
        .get(format!("{}/v1/models", gw.url))
        .bearer_auth(support::KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(models.status(), 200);
    let bad = gw
        .post_raw("/v1/chat/completions", b"{not json".to_vec(), support::KEY)
        .await;
    assert_eq!(bad.status(), 400);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (st, usage) = gw
        .admin(Method::GET, "/admin/v1/usage?tenant=t", OPS, None)
        .await;
    assert_eq!(st, 200, "{usage}");
    assert_eq!(usage["requests"], 3, "{usage}");
    let text = support::metrics_text(&gw).await;
    assert!(
        text.contains(r#"asc_requests_total{tenant="t",model="m-openai",provider="mock-openai",status="success"} 3"#),
        "{text}"
    );
}

/// `log_content: true` stores the prompt and the completion (plain and streamed), PII
/// redacted even when the tenant's guardrail only detects; other tenants' records hold
/// no text at all.
#[tokio::test]
async fn log_content_stores_redacted_text_only_for_tenants_that_ask() {
    let tenants = r#"  - name: logged
    allowed_models: ["*"]
    log_content: true
    guardrails: {pii: detect}
    keys: [{name: k, key: "sk-logged-key-00000000000"}]"#;
    let yaml = format!(
        "admin:\n  tokens:\n    - {{name: ops, token: \"{OPS}\", role: platform_admin}}\n{}",
        support::config("", "", tenants)
    );
    let gw = TestGateway::start(&yaml).await;
    let secret = "write to jane.doe@example.com please";
    let mut ids = Vec::new();
    for (key, stream) in [
        ("sk-logged-key-00000000000", false),
        ("sk-logged-key-00000000000", true),
        (KEY, false),
    ] {
        let body = json!({"model": "m-openai", "stream": stream,
            "messages": [{"role": "user", "content": secret}]});
        let resp = gw
            .post_raw(
                "/v1/chat/completions",
                serde_json::to_vec(&body).unwrap(),
                key,
            )
            .await;
        assert_eq!(resp.status(), 200);
        ids.push(support::request_id(&resp));
        let _ = resp.bytes().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for id in &ids[..2] {
        let (st, rec) = gw
            .admin(Method::GET, &format!("/admin/v1/records/{id}"), OPS, None)
            .await;
        assert_eq!(st, 200);
        assert_eq!(
            rec["content"]["prompt"], "write to [EMAIL_1] please",
            "{rec}"
        );
        assert_eq!(
            rec["content"]["completion"], "echo: write to [EMAIL_1] please",
            "{rec}"
        );
        assert!(!rec.to_string().contains("jane.doe"), "{rec}");
    }
    let (_, rec) = gw
        .admin(
            Method::GET,
            &format!("/admin/v1/records/{}", ids[2]),
            OPS,
            None,
        )
        .await;
    assert!(rec.get("content").is_none(), "{rec}");
    assert!(!rec.to_string().contains("jane.doe"), "{rec}");
}

/// `batched` records are committed within `audit.flush_ms` (contract section 4): with
/// 10 s a lone record is not stored yet after half a second; with 100 ms it is.
#[tokio::test]
async fn batched_records_are_committed_within_flush_ms() {
    for (flush_ms, stored) in [(10_000, false), (100, true)] {
        let yaml = format!(
            "audit: {{durability: batched, flush_ms: {flush_ms}}}\nadmin:\n  tokens:\n    - {{name: ops, token: \"{OPS}\", role: platform_admin}}\n{}",
            support::config("", "", "")
        );
        let gw = TestGateway::start(&yaml).await;
        let r = gw.chat("m-openai").await;
        assert_eq!(r.status(), 200);
        let id = support::request_id(&r);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (st, _) = gw
            .admin(Method::GET, &format!("/admin/v1/records/{id}"), OPS, None)
            .await;
        assert_eq!(st == 200, stored, "flush_ms {flush_ms}: status {st}");
    }
}

/// A client that gives up on a non-streaming request before its answer (a timeout in
/// the SDK, a closed tab) still leaves its record, `client_closed`, and what it held of
/// a budget is given back.
#[tokio::test]
async fn a_non_streaming_request_abandoned_by_its_client_leaves_its_record() {
    let providers = "  - {name: slow, kind: mock, flavor: openai, region: us, latency_ms: 3000}";
    let models = "  - name: slow\n    targets: [{provider: slow, model: gpt-4o-mini}]";
    let prices = "prices:\n  - {provider: slow, model: gpt-4o-mini, input: 1000, output: 1000}\n";
    let tenants = r#"  - name: budgeted
    allowed_models: ["*"]
    budget: {limit_usd: 100, period: month}
    keys: [{name: k, key: "sk-budgeted-abandon-000000"}]"#;
    let yaml = format!(
        "admin:\n  tokens:\n    - {{name: ops, token: \"{OPS}\", role: platform_admin}}\n{prices}{}",
        support::config(providers, models, tenants)
    );
    let gw = TestGateway::start(&yaml).await;
    let body = json!({"model": "slow", "max_tokens": 5, "messages": [{"role": "user", "content": "never mind"}]});
    let sent = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth("sk-budgeted-abandon-000000")
        .json(&body)
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(sent.is_err(), "the client gave up first");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let record = loop {
        let (st, v) = gw
            .admin(
                Method::GET,
                "/admin/v1/records?tenant=budgeted&limit=10",
                OPS,
                None,
            )
            .await;
        assert_eq!(st, 200, "{v}");
        if let Some(r) = v["data"].as_array().unwrap().first() {
            break r.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no record of the abandoned request"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(record["status"], "client_closed", "{record}");
    assert_eq!(record["error_code"], "client_closed", "{record}");
    // The attempt it cut short, and the prompt the provider was sent (estimated at
    // admission), charged at the target's price: a client that hangs up is not a way
    // around the budget.
    let attempts = record["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{record}");
    assert_eq!(attempts[0]["provider"], "slow");
    assert_eq!(attempts[0]["error"], "client_closed");
    assert!(attempts[0]["status"].is_null(), "{record}");
    let ran = attempts[0]["latency_ms"].as_f64().unwrap();
    assert!((250.0..3000.0).contains(&ran), "{record}");
    let prompt = record["prompt_tokens"].as_u64().unwrap();
    assert!(prompt > 0, "{record}");
    assert_eq!(record["completion_tokens"], 0, "{record}");
    // $1000 per million tokens: each token is 1,000 micro-dollars.
    let cost = record["cost_usd"].as_f64().unwrap();
    assert!((cost - prompt as f64 * 0.001).abs() < 1e-9, "{record}");
    let live = gw.state.live.load_full();
    let counters = live.directory.load().counters("budgeted").unwrap().clone();
    let (reserved, spent) = {
        let ledger = asc_gateway::limits::lock(&counters.budget);
        let l = ledger.as_ref().unwrap();
        (l.reserved, l.spent)
    };
    assert_eq!(reserved, 0, "the reservation was given back");
    assert_eq!(spent, prompt * 1000, "the prompt is charged");
}

/// Makes every insert into `records` fail (`on`), or stops it (a store that fails, as a
/// full disk or a lost database would, then recovers).
async fn fail_record_writes(gw: &TestGateway, on: bool) {
    let sqlite = gw.state.store.backend() == asc_gateway::store::Backend::Sqlite;
    let statements: &[&str] = match (sqlite, on) {
        (true, true) => &[
            "CREATE TRIGGER asc_test_fail BEFORE INSERT ON records BEGIN SELECT RAISE(ABORT, 'the disk is on fire'); END",
        ],
        (true, false) => &["DROP TRIGGER asc_test_fail"],
        (false, true) => &[
            "CREATE FUNCTION asc_test_fail() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the disk is on fire'; END $$",
            "CREATE TRIGGER asc_test_fail BEFORE INSERT ON records FOR EACH ROW EXECUTE FUNCTION asc_test_fail()",
        ],
        (false, false) => &["DROP TRIGGER asc_test_fail ON records"],
    };
    for sql in statements {
        gw.state.store.execute_unchecked(sql).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_loses_no_record_and_strict_requests_are_refused_until_it_answers() {
    // `strict` (the default): a response completes only once its record is committed.
    let gw = ops_gateway().await;
    assert_eq!(gw.chat("m-openai").await.status(), 200);

    fail_record_writes(&gw, true).await;
    // This request's record cannot be committed: its response waits for the store.
    let waiting = spawn_post(
        &gw,
        "/v1/chat/completions",
        json!({"model": "m-openai", "messages": [{"role": "user", "content": "kept"}]}),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let text = support::metrics_text(&gw).await;
        if support::metric_sum(
            &text,
            "asc_record_write_failures_total",
            &[("outcome", "kept")],
        ) >= 1.0
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failed write seen"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // While it fails, a new request is refused before any provider is called.
    let calls = gw.mock("mock-openai").chat;
    let refused = gw.chat("m-openai").await;
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "5");
    let refused_id = support::request_id(&refused);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "audit_unavailable", "{body}");
    assert_eq!(gw.mock("mock-openai").chat, calls, "no provider was called");
    assert!(
        !waiting.is_finished(),
        "a strict response completed uncommitted"
    );

    // The store answers again: the held records are written, the response completes.
    fail_record_writes(&gw, false).await;
    let (status, ..) = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting response never completed")
        .unwrap();
    assert_eq!(status, 200);
    assert_eq!(gw.chat("m-openai").await.status(), 200);

    // Every served request has its record: the first, the one that waited, the last.
    // The refusal is logged and counted, not held: refusals must not crowd out the
    // records of served requests while the store is away.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let records = loop {
        let (st, v) = gw
            .admin(
                Method::GET,
                "/admin/v1/records?tenant=t&limit=10",
                OPS,
                None,
            )
            .await;
        assert_eq!(st, 200, "{v}");
        let data = v["data"].as_array().unwrap().clone();
        if data.len() >= 3 || tokio::time::Instant::now() >= deadline {
            break data;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(records.len(), 3, "{records:?}");
    for r in &records {
        assert_ne!(r["request_id"], refused_id.as_str(), "{r}");
        assert_eq!(r["status"], "success", "{r}");
    }
    let (_, report) = gw
        .admin(Method::GET, "/admin/v1/audit/verify", OPS, None)
        .await;
    assert_eq!(report["ok"], true, "{report}");
    let text = support::metrics_text(&gw).await;
    assert_eq!(
        support::metric(&text, "asc_records_pending", &[]),
        Some(0.0)
    );
    let refusals = support::metric_sum(&text, "asc_requests_total", &[("status", "error")]);
    assert_eq!(refusals, 1.0, "the refusal is counted");
}

/// A strict response whose record the store does not take within 10 s is refused
/// (503 `audit_unavailable`) instead of answered; its record is written once the store
/// answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_answer_whose_record_cannot_be_committed_in_time_is_not_given() {
    let gw = ops_gateway().await;
    fail_record_writes(&gw, true).await;
    let started = tokio::time::Instant::now();
    let r = gw.chat("m-openai").await;
    let waited = started.elapsed();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "5");
    let id = support::request_id(&r);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "audit_unavailable", "{body}");
    assert!(
        waited >= Duration::from_secs(10),
        "answered after {waited:?}"
    );
    assert_eq!(gw.mock("mock-openai").chat, 1, "the provider had answered");

    // The record says what the client got, not the answer it did not get.
    fail_record_writes(&gw, false).await;
    let rec = written_record(&gw, &id).await;
    assert_eq!(rec["status"], "error", "{rec}");
    assert_eq!(rec["http_status"], 503, "{rec}");
    assert_eq!(rec["error_code"], "audit_unavailable", "{rec}");
    let text = support::metrics_text(&gw).await;
    let counted = |status| support::metric_sum(&text, "asc_requests_total", &[("status", status)]);
    assert_eq!((counted("success"), counted("error")), (0.0, 1.0), "{text}");
    let (_, report) = gw
        .admin(Method::GET, "/admin/v1/audit/verify", OPS, None)
        .await;
    assert_eq!(report["ok"], true, "{report}");
}

/// The record of request `id`, once written (within 10 s).
async fn written_record(gw: &TestGateway, id: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (st, rec) = gw
            .admin(Method::GET, &format!("/admin/v1/records/{id}"), OPS, None)
            .await;
        if st == 200 {
            assert_eq!(rec["request_id"], id, "{rec}");
            return rec;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the record of {id} was never written"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `body` to `path` in its own task: status, request id, whole body, and how long
/// the reply took to end.
fn spawn_post(
    gw: &TestGateway,
    path: &str,
    body: Value,
) -> tokio::task::JoinHandle<(reqwest::StatusCode, String, bytes::Bytes, Duration)> {
    let (http, url) = (gw.http.clone(), format!("{}{path}", gw.url));
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let r = http
            .post(url)
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let id = support::request_id(&r);
        (r.status(), id, r.bytes().await.unwrap(), started.elapsed())
    })
}

/// A strict stream whose record the store does not take within 10 s does not end as
/// complete: its end (`[DONE]`, `message_stop`) is held back and an `audit_unavailable`
/// error event ends it instead, on both surfaces, relayed as the upstream wrote it
/// (OpenAI to OpenAI, Anthropic to Anthropic) or re-encoded (OpenAI to Anthropic). The
/// records are written once the store answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_stream_whose_record_cannot_be_committed_in_time_ends_with_an_error_event() {
    let gw = ops_gateway().await;
    // The same stream on each surface: (path, body, its end marker, the reassembler).
    type Reassemble = fn(&[u8]) -> support::Reassembled;
    let surfaces: [(&str, Value, &str, Reassemble); 3] = [
        (
            "/v1/chat/completions",
            json!({"model": "m-openai", "stream": true, "messages": [{"role": "user", "content": "hi"}]}),
            "[DONE]",
            support::openai_stream,
        ),
        (
            "/v1/messages",
            json!({"model": "m-openai", "stream": true, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}),
            "message_stop",
            support::anthropic_stream,
        ),
        // Anthropic to Anthropic: relayed as the upstream wrote it.
        (
            "/v1/messages",
            json!({"model": "m-anthropic", "stream": true, "max_tokens": 50, "messages": [{"role": "user", "content": "hi"}]}),
            "message_stop",
            support::anthropic_stream,
        ),
    ];
    // Healthy store first: the streams end as complete.
    for (path, body, _, reassemble) in &surfaces {
        let r = gw.post(path, body).await;
        assert_eq!(r.status(), 200);
        let got = reassemble(&r.bytes().await.unwrap());
        assert!(got.terminated && got.error.is_none(), "{got:?}");
    }

    fail_record_writes(&gw, true).await;
    let replies: Vec<_> = surfaces
        .iter()
        .map(|(path, body, _, _)| spawn_post(&gw, path, body.clone()))
        .collect();
    let mut ids = Vec::new();
    for (reply, (path, _, end, reassemble)) in replies.into_iter().zip(&surfaces) {
        let (st, id, body, waited) = reply.await.unwrap();
        assert_eq!(st, 200, "the stream had started");
        let text = String::from_utf8_lossy(&body);
        let got = reassemble(&body);
        assert!(!got.text.is_empty(), "the reply's text was sent: {text}");
        assert!(
            !got.terminated && !text.contains(end),
            "ended as complete: {text}"
        );
        let error = got
            .error
            .unwrap_or_else(|| panic!("no error event: {text}"));
        if *path == "/v1/messages" {
            assert!(text.contains("event: error"), "{text}");
        } else {
            assert_eq!(error["code"], "audit_unavailable", "{text}");
        }
        assert!(waited >= Duration::from_secs(10), "ended after {waited:?}");
        ids.push(id);
    }

    // The store answers again: both records are written.
    fail_record_writes(&gw, false).await;
    for id in ids {
        let rec = written_record(&gw, &id).await;
        assert_eq!(rec["stream"], true, "{rec}");
        // As the client got it: a stream (200) that ended with the error event.
        assert_eq!(rec["status"], "error", "{rec}");
        assert_eq!(rec["error_code"], "audit_unavailable", "{rec}");
        assert_eq!(rec["http_status"], 200, "{rec}");
    }
    let (_, report) = gw
        .admin(Method::GET, "/admin/v1/audit/verify", OPS, None)
        .await;
    assert_eq!(report["ok"], true, "{report}");
}
