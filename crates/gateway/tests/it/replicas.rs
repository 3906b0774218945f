//! Several replicas sharing `storage.redis` (contract section 10): a tenant's rate limit
//! and budget hold for all of them together, under concurrency, exactly as on one
//! replica. Each replica has its own store, so the records (and their costs) are an
//! account independent of Redis. Needs Redis (`ASC_TEST_REDIS_URL`); with `CI=true` an
//! unreachable Redis fails these tests.

use std::sync::Arc;
use std::time::Duration;

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{self, TestGateway};

const OPS: &str = "ops-token-replicas-0123456789";
const TENANT_KEY: &str = "sk-replicas-key-000000000000";

/// Two replicas of one config on Redis at `url`, for a tenant no earlier run used
/// (Redis outlives test runs). The mock answers after `latency_ms`.
async fn replicas(url: &str, tenant_extra: &str, latency_ms: u64) -> (String, [TestGateway; 2]) {
    let tenant = format!("r-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let yaml = format!(
        r#"
storage: {{redis: "{url}"}}
admin:
  tokens:
    - {{name: ops, token: "{OPS}", role: platform_admin}}
providers:
  - {{name: mock-openai, kind: mock, flavor: openai, region: us, latency_ms: {latency_ms}}}
models:
  - name: m
    targets: [{{provider: mock-openai, model: gpt-4o-mini}}]
prices:
  - {{provider: mock-openai, model: gpt-4o-mini, input: 1000, output: 1000}}
tenants:
  - name: {tenant}
    allowed_models: [m]
{tenant_extra}
    keys: [{{name: k, key: "{TENANT_KEY}"}}]
"#
    );
    let a = TestGateway::start(&yaml).await;
    let b = TestGateway::start(&yaml).await;
    (tenant, [a, b])
}

const BODY: &str =
    r#"{"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hello there"}]}"#;

/// Fires `n` requests at once (a barrier releases them together), alternating between
/// the replicas; returns (status, body, retry-after) in the order sent.
async fn burst(gws: &[TestGateway; 2], n: usize) -> Vec<(u16, Value, Option<String>)> {
    let barrier = Arc::new(tokio::sync::Barrier::new(n));
    let mut tasks = Vec::new();
    for i in 0..n {
        let gw = &gws[i % 2];
        let (http, url, b) = (gw.http.clone(), gw.url.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            b.wait().await;
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth(TENANT_KEY)
                .header("content-type", "application/json")
                .body(BODY)
                .send()
                .await
                .unwrap();
            let status = r.status().as_u16();
            let retry = r
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, r.json().await.unwrap_or(Value::Null), retry)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

/// Every record of `tenant` on both replicas, once `expected` of them are written
/// (records are written in batches).
async fn records(gws: &[TestGateway; 2], tenant: &str, expected: usize) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut all = Vec::new();
        for gw in gws {
            let (st, v) = gw
                .admin(
                    Method::GET,
                    &format!("/admin/v1/records?tenant={tenant}&limit=1000"),
                    OPS,
                    None,
                )
                .await;
            assert_eq!(st, 200, "{v}");
            all.extend(v["data"].as_array().unwrap().iter().cloned());
        }
        if all.len() >= expected || tokio::time::Instant::now() > deadline {
            assert_eq!(all.len(), expected, "one record per request, none lost");
            return all;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn micros(usd: &Value) -> u64 {
    (usd.as_f64().unwrap() * 1_000_000.0).round() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_together_admit_exactly_the_tenants_requests_per_minute() {
    let Some(url) = support::test_redis().await else {
        return;
    };
    // A budget too: with shared limits a request asks both at once, and the
    // reservation of one the rate limit refuses must be given back.
    let (tenant, gws) = replicas(
        &url,
        "    rate_limit: {requests_per_minute: 10}\n    budget: {limit_usd: 1000, period: month}",
        0,
    )
    .await;
    let results = burst(&gws, 40).await;
    let ok = results.iter().filter(|r| r.0 == 200).count();
    assert_eq!(
        ok, 10,
        "10 per minute for both replicas together, not 10 each"
    );
    for (status, v, retry) in results.iter().filter(|r| r.0 != 200) {
        assert_eq!(*status, 429, "{v}");
        assert_eq!(v["error"]["code"], "rate_limited", "{v}");
        let secs: u64 = retry.as_deref().unwrap().parse().unwrap();
        assert!((1..=60).contains(&secs), "Retry-After {secs}");
    }
    let recs = records(&gws, &tenant, 40).await;
    let denied = recs.iter().filter(|r| r["status"] == "denied").count();
    assert_eq!(denied, 30);
    assert!(recs.iter().filter(|r| r["status"] == "denied").all(|r| {
        r["error_code"] == "rate_limited"
            && r["policy"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["check"] == "rate_limit" && c["outcome"] == "deny")
    }));
    // Still refused on either replica: the window is the same for both.
    for gw in &gws {
        assert_eq!(gw.chat_status(TENANT_KEY, "m").await, 429);
    }
    // Nothing stays reserved, and the shared spend is what the records cost.
    let recs = records(&gws, &tenant, 42).await;
    let cost: u64 = recs.iter().map(|r| micros(&r["cost_usd"])).sum();
    assert!(cost > 0);
    let shared = gws[0].state.limits.shared().unwrap().clone();
    let period = asc_gateway::prices::period_of("month", asc_gateway::limits::unix_now())
        .unwrap()
        .key;
    let scope = format!("tenant:{tenant}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let l = shared.ledger(&scope, &period, 0).await.unwrap();
        if l.reserved == 0 && l.spent == cost {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "ledger {l:?}, records cost {cost}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_together_never_spend_past_the_tenants_budget() {
    let Some(url) = support::test_redis().await else {
        return;
    };
    // $1000 per million tokens: 1,000 µ$ a token. The mock answers after two seconds, so
    // every request of the burst reserves before any settles.
    let (tenant, gws) = replicas(
        &url,
        "    budget: {limit_usd: 0.1, period: month, alert_at: [0.5], on_exceed: block}",
        2000,
    )
    .await;
    let limit = 100_000_u64;
    let results = burst(&gws, 30).await;
    let ok = results.iter().filter(|r| r.0 == 200).count();
    for (status, v, _) in results.iter().filter(|r| r.0 != 200) {
        assert_eq!(*status, 429, "{v}");
        assert_eq!(v["error"]["code"], "budget_exceeded", "{v}");
    }
    let recs = records(&gws, &tenant, 30).await;
    // What one request reserves (its worst case), from its record.
    let served = recs.iter().find(|r| r["status"] == "success").unwrap();
    let detail = served["policy"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == "budget")
        .unwrap()["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    let worst = micros(&json!(
        detail
            .strip_prefix("reserved $")
            .unwrap()
            .parse::<f64>()
            .unwrap()
    ));
    assert!(worst > 0, "{detail}");
    assert_eq!(
        ok as u64,
        limit / worst,
        "as many as fit in the budget at {worst} µ$ each, for both replicas together"
    );
    // Then, one at a time on alternate replicas, until the budget is really spent.
    let mut sent = 30;
    loop {
        let st = gws[sent % 2]
            .post_raw("/v1/chat/completions", BODY.as_bytes().to_vec(), TENANT_KEY)
            .await
            .status()
            .as_u16();
        sent += 1;
        if st != 200 {
            assert_eq!(st, 429);
            break;
        }
        assert!(sent < 200, "never refused");
    }
    let recs = records(&gws, &tenant, sent).await;
    let spent: u64 = recs.iter().map(|r| micros(&r["cost_usd"])).sum();
    assert!(
        spent <= limit && spent + worst > limit,
        "spent {spent} µ$ of {limit}: within the budget, and refused only when the next worst case did not fit"
    );
    // Both replicas report the shared spend, which is what the records add up to.
    for gw in &gws {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let (st, u) = gw
                .admin(
                    Method::GET,
                    &format!("/admin/v1/usage?tenant={tenant}"),
                    OPS,
                    None,
                )
                .await;
            assert_eq!(st, 200, "{u}");
            if micros(&u["spent_usd"]) == spent {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "usage says {} µ$, the records {spent}",
                micros(&u["spent_usd"])
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // The 50% alert fired once, on whichever replica's charge crossed it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut alerts = 0;
    for gw in &gws {
        alerts += gw
            .state
            .store
            .events()
            .await
            .unwrap()
            .iter()
            .filter(|e| e.kind == "budget_alert" && e.tenant.as_deref() == Some(tenant.as_str()))
            .count();
    }
    assert_eq!(alerts, 1);
}

/// An experiment's budget is shared by the replicas (in Redis) as a tenant's is: a
/// burst split over two replicas, every candidate request reserving its worst case
/// before any settles, admits to the candidate only as many as fit in the budget for
/// both together (each replica alone would admit as many again), and what the candidate
/// cost is what the shared ledger says was spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_together_never_spend_past_an_experiments_budget() {
    let Some(url) = support::test_redis().await else {
        return;
    };
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
    let (tenant, name) = (format!("r-{run}"), format!("exp-{run}"));
    let yaml = format!(
        r#"
storage: {{redis: "{url}"}}
admin:
  tokens:
    - {{name: ops, token: "{OPS}", role: platform_admin}}
providers:
  - {{name: base, kind: mock, flavor: openai, region: us}}
  - {{name: cand, kind: mock, flavor: openai, region: us, latency_ms: 2000}}
models:
  - name: m
    targets: [{{provider: base, model: gpt-4o-mini}}]
prices:
  - {{provider: cand, model: cand-1, input: 1000, output: 1000}}
tenants:
  - name: {tenant}
    allowed_models: ["*"]
    keys: [{{name: k, key: "{TENANT_KEY}"}}]
experiments:
  - name: {name}
    model: m
    candidate: {{provider: cand, model: cand-1}}
    stages: [{{weight: 100, min_requests: 1000000}}]
    budget_usd: 0.1
"#
    );
    let gws = [
        TestGateway::start(&yaml).await,
        TestGateway::start(&yaml).await,
    ];
    let limit = 100_000_u64;
    let results = burst(&gws, 30).await;
    assert!(
        results.iter().all(|r| r.0 == 200),
        "every request is served"
    );
    let recs = records(&gws, &tenant, 30).await;
    let budget_check = |r: &Value| {
        r["policy"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["check"] == "experiment_budget")
            .cloned()
    };
    let reserved: Vec<&Value> = recs
        .iter()
        .filter(|r| budget_check(r).is_some_and(|c| c["outcome"] == "allow"))
        .collect();
    assert!(!reserved.is_empty(), "no request reserved: {}", recs[0]);
    let detail = budget_check(reserved[0]).unwrap()["detail"].clone();
    let worst = micros(&json!(
        detail
            .as_str()
            .unwrap()
            .strip_prefix("reserved $")
            .unwrap()
            .parse::<f64>()
            .unwrap()
    ));
    assert!(worst > 0 && limit / worst < 15, "{detail}");
    assert_eq!(
        reserved.len() as u64,
        limit / worst,
        "as many as fit in the experiment's budget at {worst} µ$ each, for both replicas together"
    );
    let on_candidate: Vec<&&Value> = reserved
        .iter()
        .filter(|r| r["decision"]["chosen"] == "cand/cand-1")
        .collect();
    assert_eq!(on_candidate.len(), reserved.len());
    let skipped = recs
        .iter()
        .filter(|r| budget_check(r).is_some_and(|c| c["outcome"] == "skip"))
        .count();
    assert!(skipped > 0, "the rest found the budget spent");
    let spent: u64 = on_candidate.iter().map(|r| micros(&r["cost_usd"])).sum();
    assert!(spent > 0 && spent <= limit, "spent {spent} µ$ of {limit}");
    // The shared ledger says what the records add up to, with nothing left reserved.
    let shared = gws[0].state.live.load().shared.clone().unwrap();
    let hash = gws[0].state.live.load().experiments.by_model["m"][0]
        .1
        .hash
        .clone();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let l = shared
            .ledger(&format!("exp:{name}"), &hash, 0)
            .await
            .unwrap();
        if (l.spent, l.reserved) == (spent, 0) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ledger says {l:?}, the records {spent}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP relay to Redis that can be cut: afterwards it drops its connections and
/// accepts new ones without ever answering (a Redis that hangs).
async fn cuttable_relay(redis_url: &str) -> (String, tokio_util::sync::CancellationToken) {
    let target = reqwest::Url::parse(redis_url).unwrap();
    let target = format!(
        "{}:{}",
        target.host_str().unwrap(),
        target.port().unwrap_or(6379)
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cut = tokio_util::sync::CancellationToken::new();
    let c = cut.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut inbound, _)) = listener.accept().await {
            if c.is_cancelled() {
                held.push(inbound); // never answered
                continue;
            }
            let (target, c) = (target.clone(), c.clone());
            tokio::spawn(async move {
                let mut outbound = tokio::net::TcpStream::connect(target).await.unwrap();
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    () = c.cancelled() => {}
                }
            });
        }
    });
    (format!("redis://{addr}"), cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn while_redis_does_not_answer_a_replica_enforces_the_limit_on_its_own() {
    let Some(url) = support::test_redis().await else {
        return;
    };
    let (relay, cut) = cuttable_relay(&url).await;
    let (tenant, gws) = replicas(&relay, "    rate_limit: {requests_per_minute: 3}", 0).await;
    let gw = &gws[0];
    // Two of the three, in the shared window (the other replica sees them).
    assert_eq!(gw.chat_status(TENANT_KEY, "m").await, 200);
    assert_eq!(gws[1].chat_status(TENANT_KEY, "m").await, 200);
    cut.cancel();
    // Redis hangs: requests are neither failed nor held up for good; this replica's own
    // window decides, and it holds the limit on its own (three, then refused).
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(gw.chat_status(TENANT_KEY, "m").await);
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let recs = records(&gws, &tenant, 6).await;
    assert_eq!(recs.iter().filter(|r| r["status"] == "denied").count(), 1);
}

/// A config for replicas sharing the PostgreSQL database `db` and one audit signing key
/// (written to `key_file` by the first to start).
/// A fresh PostgreSQL store, a temporary folder, and a config whose replicas share the
/// audit key in it; None when there is no test PostgreSQL (outside CI).
async fn shared_postgres() -> Option<(String, std::path::PathBuf, String)> {
    let db = asc_gateway::store::testing::fresh_postgres().await?;
    let dir = std::env::temp_dir().join(format!("asc-replicas-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let yaml = shared_store_yaml(&dir.join("audit.key"));
    Some((db, dir, yaml))
}

fn shared_store_yaml(key_file: &std::path::Path) -> String {
    format!(
        r#"
audit:
  signing_key_file: "{}"
admin:
  tokens:
    - {{name: ops, token: "{OPS}", role: platform_admin}}
providers:
  - {{name: mock-openai, kind: mock, flavor: openai, region: us}}
models:
  - name: m
    targets: [{{provider: mock-openai, model: gpt-4o-mini}}]
tenants:
  - name: file-tenant
    allowed_models: [m]
    keys: [{{name: k, key: "{TENANT_KEY}"}}]
"#,
        key_file.display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_on_one_postgres_share_keys_records_and_a_verifiable_audit_trail() {
    let Some((db, dir, yaml)) = shared_postgres().await else {
        return;
    };
    let a = TestGateway::start_with_store(&yaml, &db).await;
    let b = TestGateway::start_with_store(&yaml, &db).await;
    assert_eq!(
        a.state.store.backend(),
        asc_gateway::store::Backend::Postgres
    );
    b.state.watch_store(Duration::from_millis(100));
    // One key, two writers: each claimed a chain of its own.
    assert_ne!(a.state.audit.chain(), b.state.audit.chain());
    assert!(
        b.state
            .audit
            .chain()
            .starts_with(a.state.audit.chain().as_str())
    );

    // A tenant and a key made through replica a serve on replica b.
    let (st, v) = a
        .admin(
            Method::POST,
            "/admin/v1/tenants",
            OPS,
            Some(json!({"name": "api-tenant", "allowed_models": ["m"]})),
        )
        .await;
    assert_eq!(st, 201, "{v}");
    let (st, k) = a
        .admin(
            Method::POST,
            "/admin/v1/tenants/api-tenant/keys",
            OPS,
            Some(json!({"name": "shared"})),
        )
        .await;
    assert_eq!(st, 201, "{k}");
    let key = k["key"].as_str().unwrap().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while b.chat_status(&key, "m").await != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "replica b never saw the key made on a"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every acknowledged request's record is in the shared store the moment its reply
    // is (strict durability): replica b lists what replica a answered, at once.
    let mut ids = Vec::new();
    for gw in [&a, &b, &a, &b] {
        let r = gw
            .post_raw("/v1/chat/completions", BODY.as_bytes().to_vec(), TENANT_KEY)
            .await;
        assert_eq!(r.status(), 200);
        ids.push(support::request_id(&r));
    }
    drop(a);
    for id in &ids {
        let (st, rec) = b
            .admin(Method::GET, &format!("/admin/v1/records/{id}"), OPS, None)
            .await;
        assert_eq!(st, 200, "record {id} of an acknowledged request: {rec}");
        assert_eq!(rec["request_id"], id.as_str());
    }
    assert_eq!(file_tenant_records(&b).await, 4);

    // The trail verifies: both chains, every entry, and any replica can say so.
    let (st, report) = b
        .admin(Method::GET, "/admin/v1/audit/verify", OPS, None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["chains"], 2, "{report}");
    // A restarted replica takes the chain a left (once a's process has let go of it)
    // and continues it.
    let a_chain = b.state.audit.chain().split('.').next().unwrap().to_owned();
    let c = start_on_chain(&yaml, &db, &a_chain).await;
    assert_eq!(c.chat_status(TENANT_KEY, "m").await, 200);
    let (_, report) = c
        .admin(Method::GET, "/admin/v1/audit/verify", OPS, None)
        .await;
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["chains"], 2, "{report}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_that_loses_its_chains_lock_writes_on_a_chain_of_its_own_and_never_forks_one() {
    let Some((db, dir, yaml)) = shared_postgres().await else {
        return;
    };
    let a = TestGateway::start_with_store(&yaml, &db).await;
    let a_chain = a.state.audit.chain();
    assert_eq!(send(&a).await.status(), 200);

    // The connection holding a's lock is cut (a network blip, a proxy restart, an
    // operator's pg_terminate_backend): the lock goes with it, and a does not know.
    let asc_gateway::store::Pool::Postgres(pool) = a.state.store.pool() else {
        panic!("not on PostgreSQL");
    };
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(format!("asc audit chain {a_chain}"))
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(cut, [true], "one connection holds a's chain");
    // Another replica with the same key starts meanwhile and takes the freed chain.
    let b = start_on_chain(&yaml, &db, &a_chain).await;

    // a's next write fails on the lost lease; a claims a chain of its own and writes
    // there (the strict response waits for that). Written on b's chain, it would have
    // taken the seq b's head expects next, and every write of b would fail after it.
    assert_eq!(send(&a).await.status(), 200);
    assert_ne!(a.state.audit.chain(), a_chain);
    for gw in [&b, &a, &b] {
        let r = tokio::time::timeout(Duration::from_secs(10), send(gw))
            .await
            .expect("a response waited for a record that cannot be written");
        assert_eq!(r.status(), 200);
    }
    let (st, report) = b
        .admin(Method::GET, "/admin/v1/audit/verify", OPS, None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["chains"], 2, "{report}");
    assert_eq!(file_tenant_records(&b).await, 5);
    std::fs::remove_dir_all(dir).unwrap();
}

/// Starts replicas on `db` until one takes chain `chain` (once its last holder has let
/// go of it).
async fn start_on_chain(yaml: &str, db: &str, chain: &str) -> TestGateway {
    for _ in 0..20 {
        let gw = TestGateway::start_with_store(yaml, db).await;
        if gw.state.audit.chain().as_str() == chain {
            return gw;
        }
        drop(gw);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("chain {chain} was never freed");
}

/// How many records the file tenant has, through `gw`.
async fn file_tenant_records(gw: &TestGateway) -> usize {
    let path = "/admin/v1/records?tenant=file-tenant&limit=100";
    let (st, list) = gw.admin(Method::GET, path, OPS, None).await;
    assert_eq!(st, 200, "{list}");
    list["data"].as_array().unwrap().len()
}

/// One chat request of the file tenant through `gw`.
async fn send(gw: &TestGateway) -> reqwest::Response {
    gw.post_raw("/v1/chat/completions", BODY.as_bytes().to_vec(), TENANT_KEY)
        .await
}

/// Waits (up to 5 s) until `gw`'s breaker of `target` is open.
async fn opened(gw: &TestGateway, target: &str, who: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !gw
        .state
        .health
        .of(target)
        .is_open(std::time::Instant::now())
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{who}'s breaker never opened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_circuit_opened_on_one_replica_is_open_on_the_others() {
    use crate::support::fault::{self, Fault};
    use std::sync::atomic::Ordering;
    let Some(url) = support::test_redis().await else {
        return;
    };
    let dead = fault::start(Fault::Status(500)).await;
    // A provider name no earlier run used: breaker news outlives a run for its cool-down.
    let name = format!("dead-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let providers = support::fault_provider(&name, &dead.base_url);
    let models = format!(
        r#"  - name: guarded
    retries: 0
    circuit_breaker: {{consecutive_failures: 2, cooldown_ms: 30000}}
    targets: [{{provider: {name}, model: x}}]
    fallbacks: [{{provider: mock-openai, model: gpt-4o-mini}}]"#
    );
    let yaml = format!(
        "storage: {{redis: \"{url}\"}}\n{}",
        support::config(&providers, &models, "")
    );
    let a = TestGateway::start(&yaml).await;
    let b = TestGateway::start(&yaml).await;
    // Two failures on a open a's breaker (the fallback serves both requests).
    for _ in 0..2 {
        let r = a.chat("guarded").await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(dead.hits.load(Ordering::SeqCst), 2);
    // b never tried the dead target, yet skips it as soon as a's news arrives.
    let target = format!("{name}/x");
    opened(&b, &target, "b").await;
    for _ in 0..5 {
        let r = b.chat("guarded").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-asc-attempts"], "1");
        assert_eq!(r.headers()["x-asc-provider"], "mock-openai");
    }
    assert_eq!(
        dead.hits.load(Ordering::SeqCst),
        2,
        "b sent the dead target nothing"
    );
    // A replica started later learns it from the key the opening left.
    let c = TestGateway::start(&yaml).await;
    opened(&c, &target, "c").await;
    assert_eq!(c.chat("guarded").await.headers()["x-asc-attempts"], "1");
    assert_eq!(dead.hits.load(Ordering::SeqCst), 2);
}

/// Replicas' config with experiment `shared-canary`: a candidate failing half its
/// requests, a breaker that rolls it back after 20.
fn experiment_yaml() -> String {
    format!(
        r#"
admin:
  tokens:
    - {{name: ops, token: "{OPS}", role: platform_admin}}
providers:
  - {{name: base, kind: mock, flavor: openai, region: us}}
  - {{name: cand, kind: mock, flavor: openai, region: us, fail_rate: 0.5, fail_status: 500, seed: 3}}
models:
  - name: m
    targets: [{{provider: base, model: gpt-4o-mini}}]
tenants:
  - name: file-tenant
    allowed_models: ["*"]
    keys: [{{name: k, key: "{TENANT_KEY}"}}]
experiments:
  - name: shared-canary
    model: m
    candidate: {{provider: cand, model: gpt-4o-mini}}
    stages: [{{weight: 50, min_requests: 1000000}}]
    breaker: {{max_error_rate: 0.3, window: 20}}
"#
    )
}

/// `gw`'s view of experiment `shared-canary`.
async fn experiment(gw: &TestGateway) -> Value {
    let (st, v) = gw
        .admin(
            Method::GET,
            "/admin/v1/experiments/shared-canary",
            OPS,
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    v
}

/// `POST …/shared-canary/ACTION` to `gw`, which must take it; its answer.
async fn command(gw: &TestGateway, action: &str) -> Value {
    let path = format!("/admin/v1/experiments/shared-canary/{action}");
    let (st, v) = gw.admin(Method::POST, &path, OPS, None).await;
    assert_eq!(st, 200, "{v}");
    v
}

/// Waits (up to 10 s) until `gw` says the experiment is in `state`.
async fn until(gw: &TestGateway, state: &str) -> Value {
    for _ in 0..100 {
        let v = experiment(gw).await;
        if v["state"] == state {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the experiment never reached {state}: {}",
        experiment(gw).await
    );
}

/// Replicas `a` (started first: it leads `shared-canary`) and `b` on one fresh
/// PostgreSQL store, after a pause given to b was applied by a. None without the test
/// PostgreSQL (outside CI).
async fn paused_through_the_follower() -> Option<(TestGateway, TestGateway)> {
    let db = asc_gateway::store::testing::fresh_postgres().await?;
    let yaml = experiment_yaml();
    let a = TestGateway::start_with_store(&yaml, &db).await;
    let b = TestGateway::start_with_store(&yaml, &db).await;
    let v = command(&b, "pause").await;
    assert_eq!(v["state"], "paused", "{v}");
    until(&a, "paused").await;
    Some((a, b))
}

/// Two replicas on one PostgreSQL share one experiment: `a` leads it (it started first
/// and holds its lock), `b` follows. Commands given to b are applied by a, and a rolls
/// the candidate back on outcomes that only b saw, after which b enrolls no one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_experiment_is_decided_once_for_all_replicas_on_what_each_of_them_saw() {
    let Some((a, b)) = paused_through_the_follower().await else {
        return;
    };
    until(&b, "paused").await;
    command(&b, "resume").await;
    until(&b, "running").await;

    // Requests through b only: a decides on what b saw (sent to it every half second),
    // and b follows.
    for i in 0..200 {
        let r = b
            .http
            .post(format!("{}/v1/chat/completions", b.url))
            .bearer_auth(TENANT_KEY)
            .header("x-asc-user", format!("user-{i}"))
            .body(BODY)
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "a client saw the candidate fail");
    }
    until(&a, "rolled_back").await;
    let decided = until(&b, "rolled_back").await;
    assert_eq!(decided["weight"], 0.0);
    let actions: Vec<&str> = decided["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["pause", "resume", "rollback"], "{decided}");
    assert!(decided["arms"]["candidate"]["errors"].as_u64().unwrap() > 0);
    assert_eq!(
        a.mock("cand").chat,
        0,
        "only b's traffic reached the candidate"
    );

    // Once b has the rollback, it enrolls no one.
    let before = b.mock("cand").chat;
    for _ in 0..20 {
        let r = b
            .post_raw("/v1/chat/completions", BODY.as_bytes().to_vec(), TENANT_KEY)
            .await;
        assert_eq!(r.status(), 200);
        assert!(r.headers().get("x-asc-experiment").is_none());
    }
    assert_eq!(b.mock("cand").chat, before);
    // One decision each, in one audit trail that verifies.
    let (_, report) = b
        .admin(Method::GET, "/admin/v1/audit/verify", OPS, None)
        .await;
    assert_eq!(report["ok"], true, "{report}");
}

/// When the leading replica goes, a follower takes the lead: it applies commands itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn when_the_leading_replica_goes_a_follower_leads_the_experiment() {
    let Some((a, b)) = paused_through_the_follower().await else {
        return;
    };
    drop(a);
    // No one else applies b's command now: it does, once it holds the lock.
    command(&b, "resume").await;
    assert_eq!(
        until(&b, "running").await["decisions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (_, report) = b
        .admin(Method::GET, "/admin/v1/audit/verify", OPS, None)
        .await;
    assert_eq!(report["ok"], true, "{report}");
}
