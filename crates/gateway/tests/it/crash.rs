//! `kill -9` during 200 concurrent requests with `strict` durability: after a restart,
//! every request whose client saw a complete response has exactly one record, and the
//! audit chain verifies.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::support;

const BIN: &str = env!("CARGO_BIN_EXE_asc");

fn start(config: &std::path::Path) -> std::process::Child {
    Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_ready(http: &reqwest::Client, url: &str) {
    for _ in 0..200 {
        if http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("gateway did not start");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_kill_9_loses_no_acknowledged_record() {
    let dir = std::env::temp_dir().join(format!("asc-crash-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (port, admin) = (support::free_port(), support::free_port());
    let config = dir.join("asc.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{listen: \"127.0.0.1:{port}\", admin_listen: \"127.0.0.1:{admin}\"}}\nstorage: {{database: \"sqlite://{d}/asc.db\"}}\naudit: {{durability: strict, checkpoint_interval_s: 1}}\nadmin:\n  tokens: [{{name: ops, token: \"ops-token-0123456789abcdef\", role: auditor}}]\nproviders:\n  - {{name: m, kind: mock, flavor: openai, region: us, latency_ms: 40, chunks: 4}}\nmodels:\n  - {{name: chat, targets: [{{provider: m, model: gpt-4o-mini}}]}}\ntenants:\n  - {{name: t, allowed_models: [\"*\"], keys: [{{name: k, key: \"sk-crash-test-key-000\"}}]}}\n",
            d = dir.display()
        ),
    )
    .unwrap();
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = start(&config);
    wait_ready(&http, &url).await;

    let mut tasks = Vec::new();
    let completed = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    for i in 0..200 {
        let (http, url, completed) = (http.clone(), url.clone(), completed.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis((i % 50) * 4)).await;
            let body = json!({"model": "chat", "stream": i % 2 == 0, "messages": [{"role": "user", "content": format!("request {i}")}]});
            let r = http
                .post(format!("{url}/v1/chat/completions"))
                .bearer_auth("sk-crash-test-key-000")
                .json(&body)
                .send()
                .await
                .ok()?;
            let id = r.headers().get("x-asc-request-id")?.to_str().ok()?.to_owned();
            let ok = r.status() == 200;
            let bytes = r.bytes().await.ok()?;
            // Complete: a whole JSON reply, or a stream that reached [DONE].
            let complete = ok
                && (bytes.ends_with(b"data: [DONE]\n\n") || serde_json::from_slice::<serde_json::Value>(&bytes).is_ok());
            if complete {
                completed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
            complete.then_some(id)
        }));
    }
    // Kill once some requests are acknowledged and others are still in flight (on a
    // loaded machine the first ones take longer than their 40 ms).
    let started = std::time::Instant::now();
    while completed.load(std::sync::atomic::Ordering::SeqCst) < 10
        && started.elapsed() < Duration::from_secs(10)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    server.kill().unwrap(); // SIGKILL
    let _ = server.wait();
    let mut acknowledged = Vec::new();
    for t in tasks {
        if let Some(id) = t.await.unwrap() {
            acknowledged.push(id);
        }
    }

    // Restart on the same database and check.
    let mut server = start(&config);
    let admin_url = format!("http://127.0.0.1:{admin}");
    wait_ready(&http, &url).await;
    let result = async {
        for id in &acknowledged {
            let r = http
                .get(format!("{admin_url}/admin/v1/records/{id}"))
                .bearer_auth("ops-token-0123456789abcdef")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "acknowledged request {id} has no record");
        }
        let v: serde_json::Value = http
            .get(format!("{admin_url}/admin/v1/audit/verify"))
            .bearer_auth("ops-token-0123456789abcdef")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["ok"], true, "{v}");
        acknowledged.len()
    };
    let outcome = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(result)).await;
    server.kill().unwrap();
    let _ = server.wait();
    std::fs::remove_dir_all(&dir).unwrap();
    match outcome {
        Ok(n) => assert!(n > 0, "some requests completed before the kill"),
        Err(p) => std::panic::resume_unwind(p),
    }
}
