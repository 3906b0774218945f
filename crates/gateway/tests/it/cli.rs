//! The `asc` binary itself: exit codes and output of `check-config`, and
//! `mock-provider` answering in its flavor's format.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_asc");

#[test]
fn check_config_exits_0_on_a_good_file_and_2_with_every_error() {
    let dir = std::env::temp_dir().join(format!("asc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.yaml");
    std::fs::write(&good, asc_gateway::demo::config_yaml()).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok"));

    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "providers:\n  - {name: p, kind: openai, api_key: \"${env:ASC_TEST_SURELY_UNSET}\", region: us, extra: 1}\nmodels:\n  - {name: m, targets: [{provider: nobody, model: x}]}\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ASC_TEST_SURELY_UNSET"), "{err}");
    assert!(err.contains("models[0].targets[0].provider"), "{err}");

    let out = Command::new(BIN)
        .args(["check-config", "--config", "/nonexistent/asc.yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test]
async fn mock_provider_command_serves_its_flavor() {
    let mut child = Command::new(BIN)
        .args([
            "mock-provider",
            "--flavor",
            "anthropic",
            "--listen",
            "127.0.0.1:0",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = BufReader::new(stderr).lines().map_while(Result::ok);
    // The listening line comes first; a few lines at most.
    let addr = lines.take(5).find_map(|l| {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix("addr=").map(str::to_owned))
    });
    let Some(addr) = addr else {
        child.kill().unwrap();
        panic!("mock-provider did not print its address");
    };
    let resp = reqwest::Client::new()
        .post(format!("http://{addr}/v1/messages"))
        .header("x-api-key", "any")
        .header("anthropic-version", "2023-06-01")
        .json(&serde_json::json!({"model": "claude", "max_tokens": 20,
            "messages": [{"role": "user", "content": "ping"}]}))
        .send()
        .await
        .unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(resp.status(), 200);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["content"][0]["text"], "echo: ping");
}
