//! The audit trail through a running gateway: requests and admin actions chained,
//! checkpoints signed, verification over HTTP, tampering in the database detected with
//! the entry named, and an export verified offline by the CLI with the public key alone.
//! Retention: pruned payloads still verify (over HTTP and offline), and tampering with a
//! pruned entry is still named.

use std::process::Command;
use std::time::{Duration, SystemTime};

use asc_gateway::audit::{self, AuditEntry};
use reqwest::Method;
use serde_json::{Value, json};

use crate::support::{self, KEY, TestGateway};

const OPS: &str = "ops-token-0123456789abcdef";
const AUDITOR: &str = "auditor-token-0123456789ab";
const DAY: Duration = Duration::from_secs(86_400);

async fn gateway() -> (TestGateway, String) {
    gateway_with("").await
}

/// A gateway with 5 requests and a key creation chained and signed; `extra`: more
/// top-level YAML.
async fn gateway_with(extra: &str) -> (TestGateway, String) {
    let yaml = format!(
        "admin:\n  tokens:\n    - {{name: ops, token: \"{OPS}\", role: platform_admin}}\n    - {{name: aud, token: \"{AUDITOR}\", role: auditor}}\n{extra}{}",
        support::config("", "", "")
    );
    let gw = TestGateway::start(&yaml).await;
    for _ in 0..5 {
        assert_eq!(gw.chat_status(KEY, "m-openai").await, 200);
    }
    let (st, created) = gw
        .admin(
            Method::POST,
            "/admin/v1/tenants/t/keys",
            OPS,
            Some(serde_json::json!({"name": "k2"})),
        )
        .await;
    assert_eq!(st, 201);
    tokio::time::sleep(Duration::from_millis(700)).await;
    gw.state.audit.checkpoint().await.unwrap();
    (gw, created["key"].as_str().unwrap().to_owned())
}

async fn verify(gw: &TestGateway) -> Value {
    let (st, v) = gw
        .admin(Method::GET, "/admin/v1/audit/verify", AUDITOR, None)
        .await;
    assert_eq!(st, 200, "{v}");
    v
}

#[tokio::test]
async fn requests_and_admin_actions_are_chained_and_verify() {
    let (gw, created_key) = gateway().await;
    let v = verify(&gw).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["chains"], 1);
    assert!(v["checkpoints"].as_u64().unwrap() >= 1);
    assert!(
        v["entries"].as_u64().unwrap() >= 7,
        "5 requests, config_loaded, key_created: {v}"
    );
    assert!(v["first_bad"].is_null());
    let entries = gw.state.store.audit_entries(None, None).await.unwrap();
    assert_eq!(entries.iter().filter(|e| e.kind == "request").count(), 5);
    assert!(
        entries
            .iter()
            .any(|e| e.kind == "key_created" && e.actor == "token:ops")
    );
    let all = serde_json::to_string(&entries).unwrap();
    assert!(
        !all.contains(&created_key) && !all.contains(KEY),
        "no key material"
    );
    // Only readers of the audit may verify or export.
    let (st, _) = gw
        .admin(Method::GET, "/admin/v1/audit/export", KEY, None)
        .await;
    assert_eq!(st, 401);
}

#[tokio::test]
async fn tampering_in_the_database_is_detected_and_named() {
    // The fixture's chain: config_loaded, 5 requests, key_created (seq 7, signed).
    let cases: [(&str, i64, &str); 4] = [
        (
            "UPDATE audit_entries SET payload = '{\"forged\":true}' WHERE seq = 3",
            3,
            "changed",
        ),
        ("DELETE FROM audit_entries WHERE seq = 4", 4, "removed"),
        (
            "UPDATE audit_entries SET seq = -2 WHERE seq = 2; UPDATE audit_entries SET seq = 2 WHERE seq = 3; UPDATE audit_entries SET seq = 3 WHERE seq = -2",
            2,
            "inserted_or_reordered",
        ),
        (
            "DELETE FROM audit_entries WHERE seq >= (SELECT MAX(seq) - 1 FROM audit_entries)",
            7,
            "truncated",
        ),
    ];
    for (sql, seq, reason) in cases {
        let (gw, _) = gateway().await;
        assert_eq!(verify(&gw).await["ok"], true);
        for statement in sql.split("; ") {
            gw.state.store.execute_unchecked(statement).await.unwrap();
        }
        let v = verify(&gw).await;
        assert_eq!(v["ok"], false, "{sql}");
        assert_eq!(first_bad(&v), bad(seq, reason), "{sql}: {v}");
    }
}

#[tokio::test]
async fn an_export_verifies_offline_and_an_edited_one_does_not() {
    let (gw, _) = gateway().await;
    let export = gw
        .http
        .get(format!("{}/admin/v1/audit/export", gw.admin_url))
        .bearer_auth(AUDITOR)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("asc-export-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (file, key) = (dir.join("audit.jsonl"), dir.join("audit.pub"));
    std::fs::write(&file, &export).unwrap();
    std::fs::write(&key, gw.state.audit.public_key_hex()).unwrap();
    let run = |f: &std::path::Path, k: &std::path::Path| {
        Command::new(env!("CARGO_BIN_EXE_asc"))
            .args(["audit", "verify", "--export"])
            .arg(f)
            .arg("--public-key")
            .arg(k)
            .output()
            .unwrap()
    };
    let out = run(&file, &key);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Edit one entry's payload in the export.
    let edited: String = export
        .lines()
        .map(|l| {
            if l.contains("\"seq\":2,") && l.contains("\"type\":\"entry\"") {
                l.replace("\"kind\":", "\"extra\":1,\"kind\":").replacen(
                    "\"payload\":{",
                    "\"payload\":{\"edited\":true,",
                    1,
                )
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&file, edited).unwrap();
    let out = run(&file, &key);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.code() == Some(3) || out.status.code() == Some(1),
        "{text}"
    );
    // Another key does not verify the genuine export.
    std::fs::write(&file, &export).unwrap();
    std::fs::write(&key, "11".repeat(32)).unwrap();
    let out = run(&file, &key);
    assert_ne!(out.status.code(), Some(0));
    std::fs::remove_dir_all(dir).unwrap();
}

/// `(seq, reason)` of a report's first bad entry.
fn first_bad(v: &Value) -> (i64, String) {
    (
        v["first_bad"]["seq"].as_i64().unwrap_or(-1),
        v["first_bad"]["reason"]
            .as_str()
            .unwrap_or("none")
            .to_owned(),
    )
}

fn bad(seq: i64, reason: &str) -> (i64, String) {
    (seq, reason.to_owned())
}

/// Runs tampering statements (the tests' own text) directly on the database.
async fn sql(gw: &TestGateway, statements: &[&str]) {
    for s in statements {
        gw.state.store.execute_unchecked(s).await.unwrap();
    }
}

async fn entries(gw: &TestGateway) -> Vec<AuditEntry> {
    gw.state.store.audit_entries(None, None).await.unwrap()
}

/// Inserts an entry row as a forger with write access to the database would.
async fn insert_entry(gw: &TestGateway, e: &AuditEntry) {
    support::on_pool!(gw, pool => {
        sqlx::query(
            "INSERT INTO audit_entries (chain, seq, ts, kind, actor, tenant, payload, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&e.chain)
        .bind(e.seq)
        .bind(&e.ts)
        .bind(&e.kind)
        .bind(&e.actor)
        .bind(&e.tenant)
        .bind(e.payload.to_string())
        .bind(&e.prev_hash)
        .bind(&e.hash)
        .execute(pool)
        .await
        .unwrap();
    });
}

/// A request entry with a plausible hash: chained after `prev`, at `seq`.
fn forged(prev: &AuditEntry, seq: i64, prev_hash: &str) -> AuditEntry {
    let mut e = AuditEntry {
        chain: prev.chain.clone(),
        seq,
        ts: prev.ts.clone(),
        kind: "request".into(),
        actor: "gateway".into(),
        tenant: Some("t".into()),
        payload: json!({"request_id": "forged", "status": "ok"}),
        prev_hash: prev_hash.to_owned(),
        hash: String::new(),
        pruned: false,
    };
    e.hash = audit::entry_hash(&e);
    e
}

async fn last_checkpoint(gw: &TestGateway) -> audit::Checkpoint {
    gw.state
        .store
        .checkpoints()
        .await
        .unwrap()
        .pop()
        .expect("a checkpoint")
}

#[tokio::test]
async fn an_entry_inserted_in_the_database_is_named() {
    // A forged entry with a plausible hash at seq 4, the later entries moved up by one.
    let (gw, _) = gateway().await;
    let list = entries(&gw).await;
    let entry = forged(&list[2], 4, &list[2].hash);
    sql(
        &gw,
        &[
            "UPDATE audit_entries SET seq = -(seq + 1) WHERE seq >= 4",
            "UPDATE audit_entries SET seq = -seq WHERE seq < 0",
        ],
    )
    .await;
    insert_entry(&gw, &entry).await;
    let v = verify(&gw).await;
    assert_eq!(v["ok"], false);
    assert_eq!(first_bad(&v), bad(4, "inserted_or_reordered"), "{v}");

    // Appended after the last checkpoint, linking past the signed head.
    let (gw, _) = gateway().await;
    let list = entries(&gw).await;
    let head = list.last().unwrap();
    assert_eq!(
        last_checkpoint(&gw).await.seq,
        head.seq,
        "the head is signed"
    );
    let before_head = &list[list.len() - 2];
    let entry = forged(head, head.seq + 1, &before_head.hash);
    insert_entry(&gw, &entry).await;
    let v = verify(&gw).await;
    assert_eq!(
        first_bad(&v),
        bad(head.seq + 1, "inserted_or_reordered"),
        "{v}"
    );

    // Appended with a made-up prev_hash.
    let (gw, _) = gateway().await;
    let head = entries(&gw).await.pop().unwrap();
    insert_entry(&gw, &forged(&head, head.seq + 1, &"ab".repeat(32))).await;
    let v = verify(&gw).await;
    assert_eq!(
        first_bad(&v),
        bad(head.seq + 1, "inserted_or_reordered"),
        "{v}"
    );
}

#[tokio::test]
async fn a_forged_checkpoint_in_the_database_is_named() {
    let other = ed25519_dalek::SigningKey::from_bytes(&[42; 32]);
    let (gw, _) = gateway().await;
    let head = last_checkpoint(&gw).await;

    // The signed hash changed to another entry's.
    sql(
        &gw,
        &["UPDATE audit_checkpoints SET hash = (SELECT hash FROM audit_entries WHERE seq = 2)"],
    )
    .await;
    let v = verify(&gw).await;
    assert_eq!(first_bad(&v), bad(head.seq, "bad_signature"), "{v}");

    // Re-signed with another key (its own public key, or the genuine one).
    for keep_public_key in [false, true] {
        let (gw, _) = gateway().await;
        let head = last_checkpoint(&gw).await;
        let mut c = audit::sign_checkpoint(&other, &head.chain, head.seq, &head.hash, &head.ts);
        if keep_public_key {
            c.public_key = head.public_key.clone();
        }
        support::on_pool!(gw, pool => {
            sqlx::query("UPDATE audit_checkpoints SET signature = $1, public_key = $2 WHERE seq = $3")
                .bind(&c.signature)
                .bind(&c.public_key)
                .bind(c.seq)
                .execute(pool)
                .await
                .unwrap();
        });
        let v = verify(&gw).await;
        assert_eq!(first_bad(&v), bad(head.seq, "bad_signature"), "{v}");
    }

    // An extra checkpoint of a genuine entry, signed by another key.
    let (gw, _) = gateway().await;
    let list = entries(&gw).await;
    let c = audit::sign_checkpoint(&other, &list[2].chain, 3, &list[2].hash, &list[2].ts);
    gw.state.store.add_checkpoint(&c).await.unwrap();
    let v = verify(&gw).await;
    assert_eq!(v["checkpoints"], 2);
    assert_eq!(first_bad(&v), bad(3, "bad_signature"), "{v}");
}

/// The export over HTTP, verified offline by `asc audit verify --export`: exit code and
/// report.
async fn verify_offline(gw: &TestGateway, export: Option<&str>) -> (Option<i32>, Value) {
    let text = match export {
        Some(t) => t.to_owned(),
        None => export_text(gw).await,
    };
    let dir = std::env::temp_dir().join(format!("asc-export-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (file, key) = (dir.join("audit.jsonl"), dir.join("audit.pub"));
    std::fs::write(&file, text).unwrap();
    std::fs::write(&key, gw.state.audit.public_key_hex()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_asc"))
        .args(["audit", "verify", "--export"])
        .arg(&file)
        .arg("--public-key")
        .arg(&key)
        .output()
        .unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code(), report)
}

async fn export_text(gw: &TestGateway) -> String {
    gw.http
        .get(format!("{}/admin/v1/audit/export", gw.admin_url))
        .bearer_auth(AUDITOR)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// A gateway whose 5 request payloads were pruned (retention 1 day, run 2 days later).
async fn pruned_gateway() -> (TestGateway, Vec<i64>) {
    let (gw, _) = gateway().await;
    let done = audit::prune(&gw.state.store, 1, SystemTime::now() + 2 * DAY)
        .await
        .unwrap();
    assert_eq!((done.records, done.payloads), (5, 5), "{done:?}");
    assert!(done.refused.is_empty());
    let requests = entries(&gw)
        .await
        .iter()
        .filter(|e| e.kind == "request")
        .map(|e| e.seq)
        .collect();
    (gw, requests)
}

#[tokio::test]
async fn after_retention_the_chain_verifies_over_http_and_offline_and_says_what_was_pruned() {
    let (gw, requests) = pruned_gateway().await;
    assert_eq!(
        requests,
        vec![2, 3, 4, 5, 6],
        "config_loaded, 5 requests, key_created"
    );
    let list = entries(&gw).await;
    for e in &list {
        assert_eq!(e.pruned, e.kind == "request", "{e:?}");
        assert_eq!(e.payload.is_null(), e.pruned, "{e:?}");
    }
    let v = verify(&gw).await;
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        (v["entries"].as_u64(), v["pruned"].as_u64()),
        (Some(7), Some(5))
    );
    let span = &v["pruned_spans"][0];
    assert_eq!(
        (span["first_seq"].as_i64(), span["last_seq"].as_i64()),
        (Some(2), Some(6))
    );
    assert_eq!(span["entries"], 5);
    assert_eq!(span["chain"], gw.state.audit.chain().as_str());
    assert!(v["first_bad"].is_null());
    // The records are gone from the API too.
    let (st, records) = gw
        .admin(Method::GET, "/admin/v1/records?tenant=t", AUDITOR, None)
        .await;
    assert_eq!(st, 200);
    assert_eq!(records["data"], json!([]), "{records}");

    let export = export_text(&gw).await;
    assert_eq!(export.matches("\"pruned\":true").count(), 5);
    let (code, report) = verify_offline(&gw, Some(&export)).await;
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(
        (report["ok"].as_bool(), report["pruned"].as_u64()),
        (Some(true), Some(5))
    );

    // New traffic after the pass is chained on, and a second pass finds nothing new.
    assert_eq!(gw.chat_status(KEY, "m-openai").await, 200);
    let again = audit::prune(&gw.state.store, 1, SystemTime::now() + 2 * DAY)
        .await
        .unwrap();
    assert_eq!(again.payloads, 0, "the new entry is not signed yet");
    let v = verify(&gw).await;
    assert_eq!(
        (v["ok"].as_bool(), v["entries"].as_u64()),
        (Some(true), Some(8))
    );
}

#[tokio::test]
async fn tampering_with_pruned_entries_is_still_named() {
    // (statement, first_bad): 6 is the last pruned request, followed by key_created
    // (7, intact and signed); 3 is followed by the pruned 4.
    let hash = "ab".repeat(32);
    let cases = [
        (
            format!("UPDATE audit_entries SET hash = '{hash}' WHERE seq = 6"),
            bad(6, "changed"),
        ),
        (
            format!("UPDATE audit_entries SET hash = '{hash}' WHERE seq = 3"),
            bad(4, "inserted_or_reordered"),
        ),
        (
            format!("UPDATE audit_entries SET prev_hash = '{hash}' WHERE seq = 3"),
            bad(3, "inserted_or_reordered"),
        ),
        (
            "UPDATE audit_entries SET payload = '{\"forged\":true}' WHERE seq = 4".into(),
            bad(4, "changed"),
        ),
        (
            "DELETE FROM audit_entries WHERE seq = 5".into(),
            bad(5, "removed"),
        ),
        (
            // An admin action's payload dropped as if by retention.
            "UPDATE audit_entries SET payload = 'null', pruned = 1 WHERE seq = 7".into(),
            bad(7, "pruned_kind"),
        ),
    ];
    for (statement, expected) in cases {
        let (gw, _) = pruned_gateway().await;
        let before = export_text(&gw).await;
        sql(&gw, &[&statement]).await;
        let v = verify(&gw).await;
        assert_eq!(v["ok"], false, "{statement}");
        assert_eq!(first_bad(&v), expected, "{statement}: {v}");
        // The same, found offline in an export taken after the edit.
        let (code, report) = verify_offline(&gw, None).await;
        assert_eq!(code, Some(3), "{statement}: {report}");
        assert_eq!(first_bad(&report), expected, "{statement}: {report}");
        // The export taken before still verifies.
        assert_eq!(verify_offline(&gw, Some(&before)).await.0, Some(0));
    }

    // A payload dropped after the last checkpoint: nothing signed vouches for it.
    let (gw, _) = pruned_gateway().await;
    assert_eq!(gw.chat_status(KEY, "m-openai").await, 200);
    sql(
        &gw,
        &["UPDATE audit_entries SET payload = 'null', pruned = 1 WHERE seq = 8"],
    )
    .await;
    let v = verify(&gw).await;
    assert_eq!(first_bad(&v), bad(8, "pruned_unanchored"), "{v}");
}

#[tokio::test]
async fn the_retention_task_prunes_what_is_old_and_signed_and_audits_the_pass() {
    let (gw, _) = gateway_with("audit: {retention_days: 30}\n").await;
    // An old request, as a gateway that ran a year ago left it, then signed.
    gw.state
        .audit
        .append(vec![(
            "2020-01-01T00:00:00.000Z".into(),
            "request".into(),
            "gateway".into(),
            Some("t".into()),
            json!({"request_id": "old"}),
        )])
        .await
        .unwrap();
    gw.state.audit.checkpoint().await.unwrap();
    gw.state.start_retention(Duration::from_millis(50));
    let mut pruned = Vec::new();
    for _ in 0..100 {
        let list = entries(&gw).await;
        if list.iter().any(|e| e.kind == "audit_pruned") {
            pruned = list;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let old = pruned
        .iter()
        .find(|e| e.seq == 8)
        .expect("the retention pass ran");
    assert!(old.pruned && old.payload.is_null());
    assert!(
        pruned
            .iter()
            .filter(|e| e.kind == "request" && e.seq < 8)
            .all(|e| !e.pruned),
        "recent requests keep their payloads"
    );
    let pass = pruned.iter().find(|e| e.kind == "audit_pruned").unwrap();
    assert_eq!(pass.actor, "retention");
    assert_eq!(
        (
            pass.payload["payloads"].as_u64(),
            pass.payload["retention_days"].as_u64()
        ),
        (Some(1), Some(30))
    );
    let v = verify(&gw).await;
    assert_eq!(
        (v["ok"].as_bool(), v["pruned"].as_u64()),
        (Some(true), Some(1)),
        "{v}"
    );
}
