//! `server.tls`: both listeners serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN), a plain or
//! silent client holds nothing up, a reload rotates the certificate for new
//! connections, and a broken file is refused with the running certificate kept.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Method;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{self, KEY, TestGateway};

const OPS: &str = "ops-token-tls-0123456789abc";

struct Pair {
    cert_pem: String,
    key_pem: String,
}

fn pair() -> Pair {
    let c =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap();
    Pair {
        cert_pem: c.cert.pem(),
        key_pem: c.signing_key.serialize_pem(),
    }
}

fn write_pair(dir: &Path, p: &Pair) -> (PathBuf, PathBuf) {
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, &p.cert_pem).unwrap();
    std::fs::write(&key, &p.key_pem).unwrap();
    (cert, key)
}

fn yaml(cert: &Path, key: &Path) -> String {
    let base = support::config("", "", "");
    let server = format!(
        "server:\n  max_body_bytes: 65536\n  tls: {{cert_file: \"{}\", key_file: \"{}\"}}",
        cert.display(),
        key.display()
    );
    format!(
        "admin:\n  tokens:\n    - {{name: ops, token: \"{OPS}\", role: platform_admin}}\n{}",
        base.replace("server:\n  max_body_bytes: 65536", &server)
    )
}

/// A client that trusts only `cert_pem`, on fresh connections each time (no pool), so
/// each request does its own handshake.
fn client_trusting(cert_pem: &str, http2: bool) -> reqwest::Client {
    let b = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10));
    let b = if http2 { b } else { b.http1_only() };
    b.build().unwrap()
}

async fn chat(http: &reqwest::Client, url: &str) -> Result<reqwest::Response, reqwest::Error> {
    http.post(format!("{url}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "m-openai", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("asc-tls-it-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn both_listeners_serve_https_over_http1_and_http2() {
    let dir = tempdir();
    let first = pair();
    let (cert, key) = write_pair(&dir, &first);
    let path = dir.join("asc.yaml");
    std::fs::write(&path, yaml(&cert, &key)).unwrap();
    let gw = TestGateway::start_file(&path).await;
    assert!(gw.url.starts_with("https://"), "{}", gw.url);
    assert!(gw.admin_url.starts_with("https://"), "{}", gw.admin_url);

    for (http2, version) in [
        (false, reqwest::Version::HTTP_11),
        (true, reqwest::Version::HTTP_2),
    ] {
        let http = client_trusting(&first.cert_pem, http2);
        let r = chat(&http, &gw.url).await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), version);
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["object"], "chat.completion", "{v}");

        let r = http
            .get(format!("{}/admin/v1/whoami", gw.admin_url))
            .bearer_auth(OPS)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.version(), version);
        let r = http
            .get(format!("{}/metrics", gw.admin_url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }

    // A streamed reply over TLS ends with [DONE].
    let http = client_trusting(&first.cert_pem, false);
    let r = http
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth(KEY)
        .json(&json!({"model": "m-openai", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.bytes().await.unwrap();
    assert!(support::openai_stream(&body).terminated);
}

#[tokio::test]
async fn plain_untrusting_and_silent_clients_get_nothing_and_hold_nothing_up() {
    let dir = tempdir();
    let first = pair();
    let (cert, key) = write_pair(&dir, &first);
    let gw = TestGateway::start(&yaml(&cert, &key)).await;
    let addr = gw.url.trim_start_matches("https://").to_owned();

    // A silent client: connected, says nothing. Opened first, kept open throughout.
    let silent = tokio::net::TcpStream::connect(&addr).await.unwrap();

    // Plain HTTP to the TLS port: no HTTP reply, the connection is closed.
    let mut plain = tokio::net::TcpStream::connect(&addr).await.unwrap();
    plain
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the plain connection was not closed");
    assert!(
        !String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"),
        "{buf:?}"
    );

    // A client that does not trust the certificate fails its handshake.
    let untrusting = reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let e = chat(&untrusting, &gw.url).await.unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    // Nothing reached the provider from any of them.
    assert_eq!(gw.mock("mock-openai").requests, 0);

    // Meanwhile a trusting client is served at once, the silent one still open.
    let http = client_trusting(&first.cert_pem, false);
    let r = chat(&http, &gw.url).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(gw.mock("mock-openai").requests, 1);
    drop(silent);
}

#[tokio::test]
async fn a_reload_rotates_the_certificate_and_a_broken_file_keeps_the_running_one() {
    let dir = tempdir();
    let first = pair();
    let (cert, key) = write_pair(&dir, &first);
    let path = dir.join("asc.yaml");
    std::fs::write(&path, yaml(&cert, &key)).unwrap();
    let mut gw = TestGateway::start_file(&path).await;
    let old = client_trusting(&first.cert_pem, false);
    gw.http = old.clone();
    assert_eq!(chat(&old, &gw.url).await.unwrap().status(), 200);

    // A key that does not match the certificate: the reload is refused, the old
    // certificate is still served.
    let second = pair();
    std::fs::write(&key, &second.key_pem).unwrap();
    let (st, v) = gw
        .admin(Method::POST, "/admin/v1/config/reload", OPS, None)
        .await;
    assert_eq!(st, 400, "{v}");
    let details = v["error"]["details"].to_string();
    assert!(details.contains("server.tls.key_file"), "{details}");
    assert!(!details.contains("PRIVATE KEY"), "{details}");
    assert_eq!(chat(&old, &gw.url).await.unwrap().status(), 200);

    // Both files replaced: new connections get the new certificate.
    std::fs::write(&cert, &second.cert_pem).unwrap();
    let (st, v) = gw
        .admin(Method::POST, "/admin/v1/config/reload", OPS, None)
        .await;
    assert_eq!(st, 200, "{v}");
    let new = client_trusting(&second.cert_pem, false);
    assert_eq!(chat(&new, &gw.url).await.unwrap().status(), 200);
    let e = chat(&old, &gw.url).await.unwrap_err();
    assert!(e.is_connect(), "{e:?}");
    gw.http = new;
    let (st, _) = gw.admin(Method::GET, "/admin/v1/whoami", OPS, None).await;
    assert_eq!(st, 200);
}

#[test]
fn a_config_with_broken_tls_files_is_refused_with_each_path() {
    let dir = tempdir();
    let p = pair();
    let (cert, key) = write_pair(&dir, &p);
    let missing = dir.join("nope.pem");
    let cases = [
        (yaml(&missing, &key), "server.tls.cert_file"),
        (yaml(&cert, &missing), "server.tls.key_file"),
        (yaml(&key, &key), "server.tls.cert_file"),
        (yaml(&cert, &cert), "server.tls.key_file"),
        (
            yaml(Path::new(""), &key).replace("cert_file: \"\"", "cert_file: \" \""),
            "server.tls.cert_file",
        ),
    ];
    for (text, path) in cases {
        let errs = asc_gateway::config::load_str(&text, &|_| None).unwrap_err();
        assert!(
            errs.0.iter().any(|e| e.path == path),
            "{path} not among {errs}"
        );
    }
    // An unknown key under server.tls is an error too.
    let text = yaml(&cert, &key).replace("key_file:", "colour: blue, key_file:");
    let errs = asc_gateway::config::load_str(&text, &|_| None).unwrap_err();
    assert!(errs.to_string().contains("colour"), "{errs}");
}
