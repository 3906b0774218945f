//! Canary and shadow experiments through the real server against mock providers: a
//! failing or slow candidate is rolled back by itself with no client seeing a failure, a
//! healthy one walks its stages and is promoted, the budget cap pauses, shadow copies
//! never reach a client, assignment is sticky and monotone, a restart resumes the
//! status, feedback is joined by request id, and the manual actions obey RBAC and land
//! in the audit trail, the timeline and the metrics.

use std::collections::HashMap;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{self, KEY, TestGateway};

const OPS: &str = "ops-token-exp-0123456789abcdef";
const AUDITOR: &str = "aud-token-exp-0123456789abcdef";
const OWN: &str = "own-token-exp-0123456789abcdef";
const OTHER: &str = "oth-token-exp-0123456789abcdef";
const KEY_U: &str = "sk-test-key-u-exp-000000000000";

/// Baseline `base` (OpenAI mock, eu), candidate `cand` (Mistral mock, eu, with
/// `cand_extra` settings), tenants `t` (eu only, in scope) and `u` (us only).
fn yaml(cand_extra: &str, experiment: &str) -> String {
    format!(
        r#"
admin:
  tokens:
    - {{name: ops, token: "{OPS}", role: platform_admin}}
    - {{name: aud, token: "{AUDITOR}", role: auditor}}
    - {{name: own, token: "{OWN}", role: tenant_admin, tenants: [t]}}
    - {{name: other, token: "{OTHER}", role: tenant_admin, tenants: [u]}}
providers:
  - {{name: base, kind: mock, flavor: openai, region: eu}}
  - {{name: cand, kind: mock, flavor: mistral, region: eu{cand_extra}}}
  - {{name: base-us, kind: mock, flavor: openai, region: us}}
prices:
  - {{provider: cand, model: cand-large, input: 10000, output: 10000}}
models:
  - name: chat
    targets: [{{provider: base, model: gpt-4o-mini}}, {{provider: base-us, model: gpt-4o-mini}}]
tenants:
  - name: t
    allowed_models: ["*"]
    regions: [eu]
    keys: [{{name: main, key: "{KEY}"}}]
  - name: u
    allowed_models: ["*"]
    regions: [us]
    keys: [{{name: u, key: "{KEY_U}"}}]
experiments:
  - name: canary
    model: chat
    candidate: {{provider: cand, model: cand-large}}
    sticky_by: [header:x-session-id, user]
{experiment}
"#
    )
}

struct Reply {
    status: u16,
    experiment: Option<String>,
    provider: Option<String>,
    request_id: String,
    body: Vec<u8>,
}

async fn chat(gw: &TestGateway, key: &str, user: &str, stream: bool) -> Reply {
    let body = json!({"model": "chat", "stream": stream, "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}]});
    let resp = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(key)
        .header("x-asc-user", user)
        .json(&body)
        .send()
        .await
        .unwrap();
    let h = |n: &str| {
        resp.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (experiment, provider) = (h("x-asc-experiment"), h("x-asc-provider"));
    let request_id = h("x-asc-request-id").unwrap();
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap().to_vec();
    Reply {
        status,
        experiment,
        provider,
        request_id,
        body,
    }
}

async fn view(gw: &TestGateway) -> Value {
    let (st, v) = gw
        .admin(Method::GET, "/admin/v1/experiments/canary", OPS, None)
        .await;
    assert_eq!(st, 200, "{v}");
    v
}

async fn wait_for(gw: &TestGateway, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..100 {
        let v = view(gw).await;
        if ok(&v) {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}: {}", view(gw).await);
}

fn total(v: &Value) -> u64 {
    v["arms"]["baseline"]["requests"].as_u64().unwrap()
        + v["arms"]["candidate"]["requests"].as_u64().unwrap()
}

/// Waits until the store holds a saved status with `n` outcomes (saves come every two
/// seconds, at decisions and at shutdown).
async fn wait_saved(gw: &TestGateway, n: u64) {
    for _ in 0..100 {
        if let Some((_, text)) = gw.state.store.experiment_state("canary").await.unwrap() {
            let st: Value = serde_json::from_str(&text).unwrap();
            let saved = st["baseline"]["requests"].as_u64().unwrap()
                + st["candidate"]["requests"].as_u64().unwrap();
            if saved == n {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the status with {n} outcomes was not saved");
}

#[tokio::test]
async fn a_candidate_failing_ten_percent_is_rolled_back_and_no_client_sees_a_failure() {
    let gw = TestGateway::start(&yaml(
        ", fail_rate: 0.1, fail_status: 500, seed: 11",
        "    stages: [{weight: 50, min_requests: 1000000}]
    guards: {error_rate: {max_ratio: 1.25}}
    breaker: {max_error_rate: 0.9, window: 50}
    alpha: 0.05",
    ))
    .await;
    let mut rolled_back_at = None;
    let mut rescued = None;
    for i in 0..500 {
        let r = chat(&gw, KEY, &format!("user-{i}"), false).await;
        assert_eq!(r.status, 200, "a client saw a failure at request {i}");
        if r.experiment.as_deref() == Some("canary/candidate")
            && r.provider.as_deref() == Some("base")
        {
            rescued = Some(r.request_id.clone());
        }
        if i % 10 == 9 && view(&gw).await["state"] == "rolled_back" {
            rolled_back_at = Some(i + 1);
            break;
        }
    }
    let n = rolled_back_at.expect("not rolled back within 500 requests");
    let v = view(&gw).await;

    assert_eq!(v["weight"], 0.0);
    let d = &v["decisions"][0];
    assert_eq!(d["action"], "rollback", "{v}");
    assert!(
        d["reason"].as_str().unwrap().contains("error_rate"),
        "the sequential test, not the breaker: {d}"
    );
    let ev = &d["evidence"];
    assert_eq!(ev["rule"], "abort:error_rate:cumulative");
    assert!(ev["arms"]["candidate"]["errors"].as_u64().unwrap() > 0);
    assert_eq!(ev["arms"]["baseline"]["errors"], 0);
    assert_eq!(ev["config_hash"], v["config_hash"]);
    let guard = &v["guards"][0];
    assert_eq!(guard["guard"], "error_rate");
    assert_eq!(guard["verdict"], "fail");
    // Proven: the e-value crossed 1/alpha and the ratio's lower bound is above the
    // margin (the baseline had no error, so the ratio's estimate is unbounded: null).
    assert!(guard["e_harm"].as_f64().unwrap() >= 20.0, "{guard}");
    assert!(guard["lower_bound"].as_f64().unwrap() >= 1.25, "{guard}");

    // A candidate failure was rescued by the baseline: counted against the candidate,
    // invisible to the client, both attempts in the record.
    let id = rescued.expect("no candidate failure was rescued");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let (st, rec) = gw
        .admin(Method::GET, &format!("/admin/v1/records/{id}"), OPS, None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(rec["status"], "success");
    assert_eq!(rec["decision"]["experiment"], "canary");
    assert_eq!(rec["decision"]["arm"], "candidate");
    assert_eq!(rec["decision"]["assignment_probability"], 0.5);
    assert_eq!(rec["attempts"][0]["provider"], "cand");
    assert_eq!(rec["attempts"][0]["status"], 500);
    assert_eq!(rec["attempts"][1]["provider"], "base");

    // After the rollback nobody is enrolled and the candidate receives nothing more.
    let before = gw.mock("cand").chat;
    for i in 0..30 {
        let r = chat(&gw, KEY, &format!("later-{i}"), false).await;
        assert_eq!(r.status, 200);
        assert_eq!(r.experiment, None);
    }
    assert_eq!(gw.mock("cand").chat, before);
    eprintln!("rolled back after {n} requests");
}

#[tokio::test]
async fn a_candidate_with_a_slow_first_token_is_rolled_back_on_ttft_p95() {
    let gw = TestGateway::start(&yaml(
        ", ttft_ms: 120",
        "    stages: [{weight: 50, min_requests: 1000000}]
    guards: {ttft_p95: {max_ratio: 1.25}}",
    ))
    .await;
    let mut done = false;
    for batch in 0..50 {
        let users: Vec<String> = (0..8).map(|j| format!("s-{batch}-{j}")).collect();
        let replies =
            futures_util::future::join_all(users.iter().map(|u| chat(&gw, KEY, u, true))).await;
        for r in replies {
            assert_eq!(r.status, 200);
            let s = support::openai_stream(&r.body);
            assert!(s.terminated && s.error.is_none(), "a client saw a failure");
        }
        if view(&gw).await["state"] == "rolled_back" {
            done = true;
            break;
        }
    }
    assert!(done, "not rolled back: {}", view(&gw).await);
    let v = view(&gw).await;
    let d = &v["decisions"][0];
    assert_eq!(d["action"], "rollback");
    assert!(d["reason"].as_str().unwrap().contains("ttft_p95"), "{d}");
    let share = |arm: &str| {
        v["arms"][arm]["ttft_slower_than_baseline_p95"]
            .as_f64()
            .unwrap()
    };
    // Every candidate stream is slower than the baseline's p95; the baseline's own
    // share is around 5% once its p95 settles (noisier early, under load).
    assert!(share("candidate") > 0.9, "{v}");
    assert!(share("baseline") < 0.5, "{v}");
    assert!(
        v["arms"]["candidate"]["p95_ttft_ms"].as_f64().unwrap()
            > v["arms"]["baseline"]["p95_ttft_ms"].as_f64().unwrap() + 50.0,
        "{v}"
    );
}

#[tokio::test]
async fn a_healthy_candidate_walks_every_stage_and_is_promoted() {
    let gw = TestGateway::start(&yaml(
        "",
        "    stages:
      - {weight: 20, min_requests: 30, gate: abort_only}
      - {weight: 50, min_requests: 30, gate: noninferior}
    guards: {error_rate: {max_ratio: 2.0, max_increase: 0.25}}
    on_success: promote",
    ))
    .await;
    let mut promoted = false;
    for i in 0..1500 {
        let r = chat(&gw, KEY, &format!("p-{i}"), false).await;
        assert_eq!(r.status, 200);
        if i % 10 == 9 && view(&gw).await["state"] == "promoted" {
            promoted = true;
            break;
        }
    }
    let v = view(&gw).await;
    assert!(promoted, "not promoted: {v}");
    let actions: Vec<&str> = v["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["advance", "promote"], "{v}");
    assert_eq!(v["weight"], 100.0);
    let promote = &v["decisions"][1];
    assert_eq!(promote["evidence"]["guards"][0]["verdict"], "pass");
    // Promoted: every enrolled request goes to the candidate.
    for i in 0..10 {
        let r = chat(&gw, KEY, &format!("after-{i}"), false).await;
        assert_eq!(r.experiment.as_deref(), Some("canary/candidate"));
        assert_eq!(r.provider.as_deref(), Some("cand"));
    }
}

#[tokio::test]
async fn the_budget_cap_pauses_the_experiment_without_overspending() {
    let gw = TestGateway::start(&yaml(
        "",
        "    stages: [{weight: 100, min_requests: 1000000}]
    budget_usd: 1.0",
    ))
    .await;
    for i in 0..20 {
        let r = chat(&gw, KEY, &format!("b-{i}"), false).await;
        assert_eq!(r.status, 200);
    }
    let v = wait_for(&gw, "a budget pause", |v| v["state"] == "paused").await;
    let d = &v["decisions"][0];
    assert_eq!(d["action"], "pause");
    assert!(d["reason"].as_str().unwrap().starts_with("budget"), "{d}");
    let spent = v["spent_usd"].as_f64().unwrap();
    assert!(spent > 0.0 && spent <= 1.0, "spent {spent} of 1.0");
    assert!(v["arms"]["candidate"]["requests"].as_u64().unwrap() > 0);
    let r = chat(&gw, KEY, "after", false).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.experiment, None, "a paused experiment enrols nobody");
    assert_eq!(r.provider.as_deref(), Some("base"));
}

#[tokio::test]
async fn shadow_mode_answers_from_the_baseline_while_the_candidate_gets_copies() {
    let gw = TestGateway::start(&yaml(
        "",
        "    mode: shadow
    stages: [{weight: 100, min_requests: 1000000}]",
    ))
    .await;
    for i in 0..25 {
        let stream = i % 5 == 0;
        let r = chat(&gw, KEY, &format!("sh-{i}"), stream).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.provider.as_deref(),
            Some("base"),
            "only the baseline answers"
        );
        assert_eq!(r.experiment.as_deref(), Some("canary/baseline"));
        let text = if stream {
            support::openai_stream(&r.body).text
        } else {
            support::openai_json(&serde_json::from_slice(&r.body).unwrap()).text
        };
        assert_eq!(text, "echo: hi");
    }
    let v = wait_for(&gw, "25 shadow copies", |v| {
        v["arms"]["candidate"]["requests"] == 25 && v["arms"]["baseline"]["requests"] == 25
    })
    .await;
    assert_eq!(v["state"], "shadow");
    assert_eq!(gw.mock("cand").chat, 25, "every copy reached the candidate");
    assert_eq!(v["shadow_dropped"], 0);
    // A shadow is never promoted, by hand either.
    let (st, _) = gw
        .admin(
            Method::POST,
            "/admin/v1/experiments/canary/promote",
            OPS,
            None,
        )
        .await;
    assert_eq!(st, 409);
}

/// The arm of a request in session `session` (the `x-session-id` unit).
async fn session_arm(gw: &TestGateway, session: &str) -> String {
    let resp = gw
        .http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(KEY)
        .header("x-session-id", session)
        .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    resp.headers()["x-asc-experiment"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn assignment_is_sticky_and_a_ramp_only_moves_units_into_the_candidate() {
    let gw = TestGateway::start(&yaml(
        "",
        "    stages:
      - {weight: 20, min_requests: 120}
      - {weight: 60, min_requests: 1000000}",
    ))
    .await;
    let arm = |r: &Reply| r.experiment.clone().unwrap();
    let mut first: HashMap<String, String> = HashMap::new();
    for round in 0..3 {
        for u in 0..40 {
            let session = format!("session-{u}");
            let a = session_arm(&gw, &session).await;
            if round == 0 {
                first.insert(session, a);
            } else {
                assert_eq!(first[&session], a, "a unit changed arm within a stage");
            }
        }
    }
    wait_for(&gw, "stage 1", |v| v["stage"] == 1).await;
    let mut moved_in = 0;
    for u in 0..40 {
        let session = format!("session-{u}");
        let now = session_arm(&gw, &session).await;
        let before = &first[&session];
        if before == "canary/candidate" {
            assert_eq!(now, "canary/candidate", "a ramp moved {session} back");
        } else if now == "canary/candidate" {
            moved_in += 1;
        }
    }
    assert!(moved_in > 0, "raising the weight moved nobody in");
    // Without the header, the user is the unit.
    let a1 = arm(&chat(&gw, KEY, "alice", false).await);
    for _ in 0..5 {
        assert_eq!(arm(&chat(&gw, KEY, "alice", false).await), a1);
    }
    // A rollback moves everyone back.
    let (st, v) = gw
        .admin(
            Method::POST,
            "/admin/v1/experiments/canary/rollback",
            OPS,
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["state"], "rolled_back");
    for u in 0..40 {
        let r = chat(&gw, KEY, &format!("session-{u}"), false).await;
        assert_eq!(r.experiment, None);
        assert_eq!(r.provider.as_deref(), Some("base"));
    }
}

#[tokio::test]
async fn a_restart_in_the_middle_of_a_stage_resumes_with_the_same_counts_and_tests() {
    let dir = std::env::temp_dir().join(format!("asc-exp-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}/asc.db", dir.display());
    let yaml = format!(
        "audit:\n  signing_key_file: {}/k.key\n{}",
        dir.display(),
        yaml(
            ", fail_rate: 0.05, seed: 3",
            "    stages: [{weight: 50, min_requests: 1000000}]
    guards: {error_rate: {max_ratio: 1.25}, latency_p95: {max_ratio: 1.5}}",
        )
    );
    let before = {
        let gw = TestGateway::start_with_store(&yaml, &db).await;
        for i in 0..60 {
            assert_eq!(chat(&gw, KEY, &format!("r-{i}"), false).await.status, 200);
        }
        wait_for(&gw, "60 outcomes", |v| total(v) == 60).await;
        let v = view(&gw).await;
        // Saved at the latest at shutdown.
        gw.state.shutdown.cancel();
        wait_saved(&gw, 60).await;
        v
    };
    let gw = TestGateway::start_with_store(&yaml, &db).await;
    let after = view(&gw).await;
    for field in [
        "state",
        "stage",
        "weight",
        "arms",
        "guards",
        "decisions",
        "stage_requests",
    ] {
        assert_eq!(before[field], after[field], "{field} after the restart");
    }
    assert_eq!(chat(&gw, KEY, "one-more", false).await.status, 200);
    wait_for(&gw, "61 outcomes", |v| total(v) == 61).await;
    drop(gw);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn feedback_is_joined_by_request_id_and_every_bad_input_is_refused() {
    let gw = TestGateway::start(&yaml(
        "",
        "    stages: [{weight: 50, min_requests: 1000000}]
    guards: {feedback: {max_decrease: 0.1}}",
    ))
    .await;
    let r = chat(&gw, KEY, "fb-user", false).await;
    let arm = r.experiment.clone().unwrap();
    let arm = arm.strip_prefix("canary/").unwrap().to_owned();
    let other = chat(&gw, KEY_U, "someone", false).await;
    assert_eq!(
        other.experiment, None,
        "tenant u may not use the candidate's region"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    let post = |body: Value, key: &'static str| {
        let gw = &gw;
        async move {
            let resp = gw
                .post_raw("/v1/feedback", serde_json::to_vec(&body).unwrap(), key)
                .await;
            let st = resp.status().as_u16();
            (st, resp.json::<Value>().await.unwrap())
        }
    };
    let (st, v) = post(
        json!({"request_id": r.request_id, "score": 0.8, "comment": "good"}),
        KEY,
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["recorded"], true);
    assert_eq!(v["experiment"], "canary");
    let cases: Vec<(Value, &str, u16, &str, Option<&str>)> = vec![
        (
            json!({"request_id": r.request_id, "score": 0.1}),
            KEY,
            409,
            "feedback_exists",
            Some("request_id"),
        ),
        (
            json!({"request_id": "nope", "score": 0.5}),
            KEY,
            404,
            "request_not_found",
            Some("request_id"),
        ),
        (
            json!({"request_id": other.request_id, "score": 0.5}),
            KEY,
            404,
            "request_not_found",
            Some("request_id"),
        ),
        (
            json!({"request_id": r.request_id, "score": 1.5}),
            KEY,
            400,
            "invalid_request",
            Some("score"),
        ),
        (
            json!({"request_id": r.request_id, "score": "high"}),
            KEY,
            400,
            "invalid_request",
            Some("score"),
        ),
        (
            json!({"request_id": r.request_id}),
            KEY,
            400,
            "invalid_request",
            Some("score"),
        ),
        (
            json!({"score": 0.5}),
            KEY,
            400,
            "invalid_request",
            Some("request_id"),
        ),
        (
            json!({"request_id": r.request_id, "score": 0.5, "extra": 1}),
            KEY,
            400,
            "invalid_request",
            Some("extra"),
        ),
        (json!([1, 2]), KEY, 400, "invalid_request", Some("body")),
        (
            json!({"request_id": r.request_id, "score": 0.5}),
            "sk-wrong",
            401,
            "invalid_api_key",
            None,
        ),
    ];
    for (body, key, status, code, param) in cases {
        let (st, v) = post(body.clone(), key).await;
        assert_eq!(st, status, "{body}: {v}");
        assert_eq!(v["error"]["code"], code, "{body}: {v}");
        assert_eq!(v["error"]["param"].as_str(), param, "{body}: {v}");
    }
    let resp = gw
        .post_raw("/v1/feedback", b"{not json".to_vec(), KEY)
        .await;
    assert_eq!(resp.status(), 400);
    // Exactly one score stored, and it reached the request's arm.
    let n: i64 = support::on_pool!(gw, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM feedback")
            .fetch_one(pool)
            .await
            .unwrap()
    });
    assert_eq!(n, 1);
    let v = wait_for(&gw, "the feedback", |v| {
        v["arms"][&arm]["feedback_count"] == 1
    })
    .await;
    assert_eq!(v["arms"][&arm]["feedback_mean"], 0.8);
}

#[tokio::test]
async fn manual_actions_follow_rbac_and_land_in_the_audit_trail_timeline_and_metrics() {
    let gw = TestGateway::start(&yaml(
        "",
        "    tenants: [t]
    stages: [{weight: 50, min_requests: 1000000}]",
    ))
    .await;
    let mut enrolled: HashMap<String, u64> = HashMap::new();
    for i in 0..20 {
        let r = chat(&gw, KEY, &format!("m-{i}"), false).await;
        *enrolled.entry(r.experiment.unwrap()).or_default() += 1;
    }
    let post = |path: &'static str, token: &'static str| gw.admin(Method::POST, path, token, None);
    let (st, list) = gw
        .admin(Method::GET, "/admin/v1/experiments", OTHER, None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(list["experiments"], json!([]), "not scoped to u's tenants");
    let (st, _) = gw
        .admin(Method::GET, "/admin/v1/experiments/canary", OTHER, None)
        .await;
    assert_eq!(st, 403);
    let (st, list) = gw
        .admin(Method::GET, "/admin/v1/experiments", AUDITOR, None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(list["experiments"][0]["name"], "canary");
    assert_eq!(
        post("/admin/v1/experiments/canary/pause", AUDITOR).await.0,
        403
    );
    assert_eq!(
        post("/admin/v1/experiments/canary/pause", OTHER).await.0,
        403
    );
    let (st, v) = post("/admin/v1/experiments/canary/pause", OWN).await;
    assert_eq!((st, v["state"].as_str()), (200, Some("paused")), "{v}");
    assert_eq!(post("/admin/v1/experiments/canary/pause", OWN).await.0, 409);
    let (st, v) = post("/admin/v1/experiments/canary/resume", OPS).await;
    assert_eq!((st, v["state"].as_str()), (200, Some("running")), "{v}");
    assert_eq!(
        post("/admin/v1/experiments/canary/explode", OPS).await.0,
        404
    );
    assert_eq!(post("/admin/v1/experiments/nope/pause", OPS).await.0, 404);
    let (st, v) = post("/admin/v1/experiments/canary/rollback", OPS).await;
    assert_eq!((st, v["state"].as_str()), (200, Some("rolled_back")), "{v}");
    let (st, v) = post("/admin/v1/experiments/canary/promote", OPS).await;
    assert_eq!(st, 409, "{v}");
    let actions: Vec<&str> = v["error"]["message"].as_str().into_iter().collect();
    assert!(actions[0].contains("rolled_back"), "{v}");

    // Decisions reach the chain through the record writer: wait for the three.
    let mut entries = Vec::new();
    for _ in 0..100 {
        entries = gw.state.store.audit_entries(None, None).await.unwrap();
        if entries
            .iter()
            .filter(|e| e.kind == "experiment_decision")
            .count()
            >= 3
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let decisions: Vec<(&str, &str)> = entries
        .iter()
        .filter(|e| e.kind == "experiment_decision")
        .map(|e| {
            (
                e.payload["action"].as_str().unwrap(),
                e.payload["actor"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        decisions,
        [
            ("pause", "token:own"),
            ("resume", "token:ops"),
            ("rollback", "token:ops")
        ]
    );
    let report = asc_gateway::audit::verify_store(&gw.state.store)
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    let (st, tl) = gw
        .admin(Method::GET, "/admin/v1/timeline?tenant=t", OPS, None)
        .await;
    assert_eq!(st, 200);
    let kinds = tl.to_string();
    assert_eq!(kinds.matches("experiment_decision").count(), 3, "{tl}");

    let text = support::metrics_text(&gw).await;
    for (arm, n) in &enrolled {
        let arm = arm.strip_prefix("canary/").unwrap();
        let line =
            format!("asc_experiment_requests_total{{experiment=\"canary\",arm=\"{arm}\"}} {n}");
        assert!(text.contains(&line), "missing `{line}` in\n{text}");
    }
}

/// `asc experiments` against the store a running gateway uses: the status, an action
/// applied by the gateway's controller (and audited with the CLI as actor), refusals, and
/// `check-config` warning about a tenant that can never be enrolled.
#[tokio::test]
async fn the_cli_reads_the_status_and_queues_actions_for_the_running_gateway() {
    const BIN: &str = env!("CARGO_BIN_EXE_asc");
    let dir = std::env::temp_dir().join(format!("asc-exp-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}/asc.db", dir.display());
    let yaml = format!(
        "storage: {{database: \"{db}\"}}\naudit:\n  signing_key_file: {}/k.key\n{}",
        dir.display(),
        yaml("", "    stages: [{weight: 50, min_requests: 1000000}]")
    );
    let file = dir.join("asc.yaml");
    std::fs::write(&file, &yaml).unwrap();
    let gw = TestGateway::start_with_store(&yaml, &db).await;
    for i in 0..10 {
        assert_eq!(chat(&gw, KEY, &format!("c-{i}"), false).await.status, 200);
    }
    wait_for(&gw, "10 outcomes", |v| total(v) == 10).await;
    wait_saved(&gw, 10).await;
    let run = |args: Vec<String>| {
        let file = file.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(BIN)
                .args(&args)
                .arg("--config")
                .arg(&file)
                .output()
                .unwrap()
        })
    };
    let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let out = run(args(&["experiments", "status", "canary"]))
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let status: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["state"], "running");
    assert_eq!(total(&status), 10, "the saved status: {status}");

    let out = run(args(&["experiments", "pause", "canary"]))
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("done") && stdout.contains("paused"),
        "{stdout}"
    );
    let v = view(&gw).await;
    assert_eq!(v["state"], "paused");
    assert!(
        v["decisions"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("by cli:"),
        "{v}"
    );

    let out = run(args(&["experiments", "pause", "canary"]))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "a second pause is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("already paused"));
    let out = run(args(&["experiments", "status", "nope"])).await.unwrap();
    assert_eq!(out.status.code(), Some(2));

    // Tenant `u` (region us) is in scope of an unscoped experiment whose candidate is in
    // eu: valid, with a warning.
    let out = run(args(&["check-config"])).await.unwrap();
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(
            "warning: experiments[0]: tenant `u` may not use the candidate `cand/cand-large`"
        ),
        "{err}"
    );
    assert!(!err.contains("tenant `t`"), "{err}");
    drop(gw);
    let _ = std::fs::remove_dir_all(dir);
}
