//! The audit trail through a running gateway: requests and admin actions chained,
//! checkpoints signed, verification over HTTP, tampering in the database detected with
//! the entry named, and an export verified offline by the CLI with the public key alone.

use std::process::Command;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use crate::support::{self, KEY, TestGateway};

const OPS: &str = "ops-token-0123456789abcdef";
const AUDITOR: &str = "auditor-token-0123456789ab";

async fn gateway() -> (TestGateway, String) {
    let yaml = format!(
        "admin:\n  tokens:\n    - {{name: ops, token: \"{OPS}\", role: platform_admin}}\n    - {{name: aud, token: \"{AUDITOR}\", role: auditor}}\n{}",
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
    let cases: [(&str, &str); 4] = [
        (
            "UPDATE audit_entries SET payload = '{\"forged\":true}' WHERE seq = 3",
            "changed",
        ),
        ("DELETE FROM audit_entries WHERE seq = 4", "removed"),
        (
            "UPDATE audit_entries SET seq = -2 WHERE seq = 2; UPDATE audit_entries SET seq = 2 WHERE seq = 3; UPDATE audit_entries SET seq = 3 WHERE seq = -2",
            "inserted_or_reordered",
        ),
        (
            "DELETE FROM audit_entries WHERE seq >= (SELECT MAX(seq) - 1 FROM audit_entries)",
            "truncated",
        ),
    ];
    for (sql, reason) in cases {
        let (gw, _) = gateway().await;
        assert_eq!(verify(&gw).await["ok"], true);
        for statement in sql.split("; ") {
            sqlx::query(statement)
                .execute(gw.state.store.pool())
                .await
                .unwrap();
        }
        let v = verify(&gw).await;
        assert_eq!(v["ok"], false, "{sql}");
        assert_eq!(v["first_bad"]["reason"], reason, "{sql}: {v}");
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
