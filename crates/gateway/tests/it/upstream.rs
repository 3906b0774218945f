//! The gateway as a client of an HTTPS provider that speaks HTTP/2 behind a company's
//! own CA (`SSL_CERT_FILE`): more concurrent streams than the provider allows on one
//! connection all start (HTTP/2 lanes), and without the CA the provider is refused.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use tokio::sync::watch;

use crate::support;

const BIN: &str = env!("CARGO_BIN_EXE_asc");
const KEY: &str = "sk-upstream-test-key-0001";
/// Streams the provider allows per connection (the least RFC 9113 asks for).
const MAX_STREAMS: u32 = 100;

const FIRST: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"hi\"},\"finish_reason\":null}]}\n\n";
const LAST: &str = "data: {\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\ndata: [DONE]\n\n";

/// An OpenAI-compatible provider over TLS with ALPN `h2` only and a self-signed
/// certificate for `localhost`: each stream sends its first chunk at once and the rest
/// when `release` turns true. Counts the connections that carried a request.
struct Provider {
    addr: SocketAddr,
    ca_pem: String,
    serving: Arc<AtomicUsize>,
    release: watch::Sender<bool>,
}

async fn provider() -> Provider {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
    let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.cert.der().clone()], key)
    .unwrap();
    tls.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = Arc::new(AtomicUsize::new(0));
    let (release, released) = watch::channel(false);
    let count = serving.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            let (acceptor, released, count) = (acceptor.clone(), released.clone(), count.clone());
            let served = Arc::new(AtomicBool::new(false));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(sock).await else {
                    return;
                };
                let service = hyper::service::service_fn(move |req: http::Request<_>| {
                    assert_eq!(req.uri().path(), "/v1/chat/completions");
                    if !served.swap(true, Ordering::SeqCst) {
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                    let mut released = released.clone();
                    let first = futures_util::stream::once(async {
                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(FIRST.as_bytes())))
                    });
                    let last = futures_util::stream::once(async move {
                        let _ = released.wait_for(|r| *r).await;
                        Ok::<_, Infallible>(Frame::data(Bytes::from_static(LAST.as_bytes())))
                    });
                    let body = StreamBody::new(futures_util::StreamExt::chain(first, last));
                    async move {
                        Ok::<_, Infallible>(
                            http::Response::builder()
                                .header("content-type", "text/event-stream")
                                .body(body)
                                .unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                    .max_concurrent_streams(MAX_STREAMS)
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Provider {
        addr,
        ca_pem: cert.cert.pem(),
        serving,
        release,
    }
}

/// `asc serve` routing `chat` to the provider, with `ca_file` as `SSL_CERT_FILE`.
struct Gateway {
    child: std::process::Child,
    url: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(dir: &std::path::Path, provider: SocketAddr) -> (std::path::PathBuf, String) {
    let (port, admin) = (support::free_port(), support::free_port());
    let path = dir.join("asc.yaml");
    std::fs::write(
        &path,
        format!(
            r#"server: {{listen: "127.0.0.1:{port}", admin_listen: "127.0.0.1:{admin}"}}
storage: {{database: "sqlite://{d}/asc.db"}}
audit: {{durability: batched}}
providers:
  - {{name: company, kind: openai_compatible, base_url: "https://localhost:{p}/v1", region: us}}
models:
  - {{name: chat, retries: 0, timeout_ms: 10000, targets: [{{provider: company, model: m}}]}}
tenants:
  - {{name: t, allowed_models: ["*"], keys: [{{name: k, key: "{KEY}"}}]}}
"#,
            d = dir.display(),
            p = provider.port()
        ),
    )
    .unwrap();
    (path, format!("http://127.0.0.1:{port}"))
}

async fn serve(dir: &std::path::Path, provider: SocketAddr, ca_file: Option<&str>) -> Gateway {
    let (path, url) = config(dir, provider);
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--config"])
        .arg(&path)
        .env_remove("SSL_CERT_FILE")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(ca) = ca_file {
        cmd.env("SSL_CERT_FILE", ca);
    }
    let gw = Gateway {
        child: cmd.spawn().unwrap(),
        url,
    };
    let http = reqwest::Client::new();
    for _ in 0..400 {
        if let Ok(r) = http.get(format!("{}/readyz", gw.url)).send().await
            && r.status() == 200
        {
            return gw;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("gateway did not start");
}

fn chat(http: &reqwest::Client, url: &str, stream: bool) -> reqwest::RequestBuilder {
    http.post(format!("{url}/v1/chat/completions"))
        .bearer_auth(KEY)
        .json(&json!({"model": "chat", "stream": stream, "messages": [{"role": "user", "content": "hello"}]}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_past_an_http2_providers_limit_per_connection_all_start() {
    let dir = std::env::temp_dir().join(format!("asc-upstream-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let provider = provider().await;
    let ca = dir.join("company-ca.pem");
    std::fs::write(&ca, &provider.ca_pem).unwrap();
    let gw = serve(&dir, provider.addr, Some(ca.to_str().unwrap())).await;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();

    // One stream first: its reply shows the provider speaks HTTP/2.
    let n = MAX_STREAMS as usize * 3 / 2;
    let mut first = chat(&http, &gw.url, true).send().await.unwrap();
    assert_eq!(first.status(), 200);
    let chunk = first.chunk().await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&chunk).contains("\"hi\""),
        "{chunk:?}"
    );

    // Then half as many again as one connection allows, at once: each gets its first
    // event well within the 10 s first-byte timeout, over two connections.
    let starts = (1..n).map(|_| {
        let req = chat(&http, &gw.url, true);
        async move {
            tokio::time::timeout(Duration::from_secs(8), async move {
                let mut r = req.send().await.unwrap();
                assert_eq!(r.status(), 200);
                let chunk = r.chunk().await.unwrap().unwrap();
                assert!(String::from_utf8_lossy(&chunk).contains("\"hi\""));
                r
            })
            .await
        }
    });
    let open: Vec<_> = futures_util::future::join_all(starts).await;
    let started = open.iter().filter(|r| r.is_ok()).count();
    assert_eq!(started, n - 1, "streams waited behind the provider's limit");
    assert_eq!(provider.serving.load(Ordering::SeqCst), 2);

    // Each finishes once the provider sends the rest.
    provider.release.send(true).unwrap();
    for r in std::iter::once(first).chain(open.into_iter().map(Result::unwrap)) {
        let rest = tokio::time::timeout(Duration::from_secs(10), r.bytes())
            .await
            .unwrap()
            .unwrap();
        assert!(rest.ends_with(b"data: [DONE]\n\n"), "{rest:?}");
    }
    drop(gw);
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_behind_an_unknown_ca_is_refused_and_a_broken_ca_file_stops_the_start() {
    let dir = std::env::temp_dir().join(format!("asc-upstream-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let provider = provider().await;

    // Without the CA, the Mozilla roots do not trust the provider: a 502, and the
    // provider served nothing.
    let gw = serve(&dir, provider.addr, None).await;
    let r = chat(&reqwest::Client::new(), &gw.url, false)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_error", "{body}");
    assert_eq!(provider.serving.load(Ordering::SeqCst), 0);
    drop(gw);

    // A CA file that holds no certificate: `asc serve` names it and exits.
    let (path, _) = config(&dir, provider.addr);
    let empty = dir.join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&path)
            .env("SSL_CERT_FILE", &empty)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("SSL_CERT_FILE") && stderr.contains("no PEM certificate"),
        "{stderr}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}
