//! The `asc` binary itself: exit codes and output of `check-config`, and
//! `mock-provider` answering in its flavor's format.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::support;

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

/// Starts `asc mock-provider ARGS --listen 127.0.0.1:0`; returns it and the address it
/// printed (the listening line comes first; a few lines at most).
fn mock_provider<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (std::process::Child, String) {
    let mut child = Command::new(BIN)
        .arg("mock-provider")
        .args(args)
        .args(["--listen", "127.0.0.1:0"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = BufReader::new(stderr).lines().map_while(Result::ok);
    let addr = lines.take(5).find_map(|l| {
        l.split_whitespace()
            .find_map(|w| w.strip_prefix("addr=").map(str::to_owned))
    });
    let Some(addr) = addr else {
        child.kill().unwrap();
        panic!("mock-provider did not print its address");
    };
    (child, addr)
}

#[tokio::test]
async fn mock_provider_command_serves_its_flavor() {
    let (mut child, addr) = mock_provider(&["--flavor", "anthropic"]);
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

#[tokio::test]
async fn mock_provider_serves_https_and_http2_with_a_certificate_and_refuses_a_bad_one() {
    let dir = std::env::temp_dir().join(format!("asc-mock-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.signing_key.serialize_pem()).unwrap();
    let (mut child, addr) = mock_provider(&[
        "--flavor".as_ref(),
        "openai".as_ref(),
        "--tls-cert".as_ref(),
        cert_file.as_os_str(),
        "--tls-key".as_ref(),
        key_file.as_os_str(),
    ]);
    let port = addr.strip_prefix("127.0.0.1:").unwrap();
    let http = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert.cert.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let resp = http
        .post(format!("https://localhost:{port}/v1/chat/completions"))
        .bearer_auth("any")
        .json(&serde_json::json!({"model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": "ping"}]}))
        .send()
        .await;
    child.kill().unwrap();
    let _ = child.wait();
    let resp = resp.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "echo: ping");

    // A key that is not the certificate's: exit 2, naming the problem.
    let other = rcgen::generate_simple_self_signed(vec!["other".to_owned()]).unwrap();
    std::fs::write(&key_file, other.signing_key.serialize_pem()).unwrap();
    let out = Command::new(BIN)
        .args([
            "mock-provider",
            "--flavor",
            "openai",
            "--listen",
            "127.0.0.1:0",
        ])
        .arg("--tls-cert")
        .arg(&cert_file)
        .arg("--tls-key")
        .arg(&key_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("--tls-key: ") && stderr.contains("cannot serve"),
        "{stderr}"
    );
    // One flag without the other is a usage error.
    let out = Command::new(BIN)
        .args(["mock-provider", "--flavor", "openai", "--tls-cert"])
        .arg(&cert_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(dir).unwrap();
}

fn run(args: &[&str], config: &std::path::Path) -> (i32, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `asc keys` against the store of a config, and a running server that picks up a
/// revocation made by the CLI (another process) without a restart.
#[tokio::test]
async fn keys_commands_and_a_running_server_seeing_a_cli_revocation() {
    let dir = std::env::temp_dir().join(format!("asc-keys-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (port, admin_port) = (support::free_port(), support::free_port());
    let config = dir.join("asc.yaml");
    std::fs::write(
        &config,
        format!(
            "server: {{listen: \"127.0.0.1:{port}\", admin_listen: \"127.0.0.1:{admin_port}\"}}\nstorage: {{database: \"sqlite://{}/data/asc.db\"}}\nproviders:\n  - {{name: m, kind: mock, flavor: openai, region: us}}\nmodels:\n  - {{name: chat, targets: [{{provider: m, model: gpt-4o-mini}}]}}\ntenants:\n  - {{name: t, allowed_models: [\"*\"]}}\n",
            dir.display()
        ),
    )
    .unwrap();
    let (code, out, err) = run(
        &[
            "keys",
            "create",
            "--tenant",
            "t",
            "--name",
            "ci",
            "--expires-in",
            "30d",
        ],
        &config,
    );
    assert_eq!(code, 0, "{err}");
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_owned()))
            .unwrap()
    };
    let (id, key) = (field("id:"), field("key:"));
    assert!(key.starts_with("sk-asc-"));
    let (code, _, err) = run(
        &["keys", "create", "--tenant", "ghost", "--name", "x"],
        &config,
    );
    assert_eq!(code, 2, "unknown tenant: a usage error");
    assert!(err.contains("ghost"));
    let (code, _, err) = run(
        &[
            "keys",
            "create",
            "--tenant",
            "t",
            "--name",
            "x",
            "--expires-in",
            "banana",
        ],
        &config,
    );
    assert_eq!(code, 2, "a bad duration: a usage error");
    assert!(err.contains("--expires-in"), "{err}");
    let (code, _, err) = run(&["keys", "revoke", "key_nosuch"], &config);
    assert_eq!(code, 2, "an unknown key: a usage error");
    assert!(err.contains("key_nosuch"), "{err}");
    let (code, list, _) = run(&["keys", "list", "--tenant", "t"], &config);
    assert_eq!(code, 0);
    assert!(list.contains(&id) && !list.contains(&key), "{list}");

    let mut server = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..100 {
        if http
            .get(format!("{url}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            up = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let status = |key: String| {
        let http = http.clone();
        let url = url.clone();
        async move {
            http.post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&serde_json::json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let result = async {
        assert!(up, "server did not start");
        assert_eq!(status(key.clone()).await, 200);
        let (code, out, _) = run(&["keys", "revoke", &id], &config);
        assert_eq!(code, 0);
        assert!(out.contains("revoked"));
        let t0 = std::time::Instant::now();
        while status(key.clone()).await != 401 {
            assert!(
                t0.elapsed() < std::time::Duration::from_secs(3),
                "revocation not seen"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        // A second server on the same database cannot listen (the running one holds
        // the addresses) and exits without writing into the store.
        let entries = |text: &str| text.lines().filter(|l| l.contains("\"seq\"")).count();
        let (_, before, _) = run(&["audit", "export"], &config);
        let (code, _, err) = run(&["serve"], &config);
        assert_eq!(code, 1, "{err}");
        assert!(err.contains("binding"), "{err}");
        let (_, after, _) = run(&["audit", "export"], &config);
        assert_eq!(entries(&after), entries(&before), "nothing written");
        // The CLI's key actions are in the audit trail, in a chain of the CLI's own
        // beside the running gateway's, signed; the whole trail verifies.
        let lines: Vec<serde_json::Value> = after
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let cli: Vec<&serde_json::Value> = lines.iter().filter(|e| e["actor"] == "cli").collect();
        let kinds: Vec<&str> = cli.iter().map(|e| e["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["key_created", "key_revoked"], "{after}");
        assert_eq!(cli[1]["payload"]["id"], id.as_str());
        assert_eq!(cli[0]["tenant"], "t");
        let gateway_chain = lines
            .iter()
            .find(|e| e["kind"] == "config_loaded")
            .map(|e| e["chain"].clone())
            .unwrap();
        assert_ne!(
            cli[1]["chain"], gateway_chain,
            "the CLI writes a chain of its own"
        );
        let (code, out, err) = run(&["audit", "verify"], &config);
        assert_eq!(code, 0, "{out}{err}");
        let (code, out, err) = run(&["audit", "export", "--since", "garbage"], &config);
        assert_eq!(code, 2, "{out}{err}");
        assert!(err.contains("--since") && out.is_empty(), "{err}");
        let (code, some, _) = run(&["audit", "export", "--since", "2000-01-01"], &config);
        assert_eq!(code, 0);
        assert_eq!(entries(&some), entries(&after), "everything is after 2000");
    };
    let outcome = futures_util::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(result)).await;
    server.kill().unwrap();
    let _ = server.wait();
    std::fs::remove_dir_all(&dir).unwrap();
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}
