//! Upstream providers: one closed enum of wire kinds, each with its URL, auth headers
//! and body formats, and one `match` per operation.
//!
//! | kind | chat | embeddings | auth | reference |
//! | --- | --- | --- | --- | --- |
//! | `openai` | `POST {base}/chat/completions` | `POST {base}/embeddings` | `Authorization: Bearer` | <https://platform.openai.com/docs/api-reference/chat> |
//! | `anthropic` | `POST {base}/v1/messages` | none | `x-api-key` + `anthropic-version` | <https://docs.anthropic.com/en/api/messages> |
//! | `mistral` | `POST {base}/chat/completions` | `POST {base}/embeddings` | `Authorization: Bearer` | <https://docs.mistral.ai/api/> |
//! | `openai_compatible` | as `openai` (vLLM, Ollama) | as `openai` | Bearer if a key is set | <https://docs.vllm.ai/en/latest/serving/openai_compatible_server.html> |
//! | `mock` | the flavor's own | the flavor's own | none | contract section 8 |
//!
//! Bodies are written and read by `asc_wire`; this module only moves bytes. All
//! providers share one [`Client`]: hyper's pooled client (one connection pool per
//! upstream host, keep-alive, HTTP/2 where TLS ALPN offers it, `TCP_NODELAY`, rustls
//! with the Mozilla roots). It is hyper's directly rather than reqwest's: reqwest's
//! extra layers (its redirect wrapper, which runs even with redirects off, and its
//! `Url`/`Uri` conversions) cost a tenth of the gateway's instructions per request
//! (docs/performance.md). reqwest stays for webhooks, JWKS and OTLP.

mod connect;
mod lanes;
mod stream;

use std::time::Duration;

use asc_wire::{
    ChatRequest, ChatResponse, EmbeddingsRequest, EmbeddingsResponse, Format, ProviderError,
    anthropic, mistral, openai,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;

pub use self::stream::UpstreamStream;
use crate::config::{self, ProviderKind};
use crate::mock::Flavor;
use crate::traces::Outgoing;

/// The wire a provider speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wire {
    Anthropic,
    Mistral,
    OpenAi,
    /// OpenAI's format without OpenAI-only extras (vLLM, Ollama).
    OpenAiCompatible,
}

impl Wire {
    /// The format family of its bodies.
    pub fn format(self) -> Format {
        match self {
            Self::Anthropic => Format::Anthropic,
            Self::Mistral => Format::Mistral,
            Self::OpenAi | Self::OpenAiCompatible => Format::OpenAi,
        }
    }
}

/// One configured provider, ready to call.
#[derive(Debug, Clone)]
pub struct Upstream {
    pub name: String,
    pub wire: Wire,
    pub region: String,
    /// Endpoint URLs, parsed once (not per request; a clone shares the bytes); None
    /// when the base URL is not a URL (every call then fails to connect).
    chat_url: Option<Uri>,
    embeddings_url: Option<Uri>,
    /// Every call's headers, built once: auth (marked sensitive so it never shows in
    /// debug output), `content-type`, and for streams `accept`. A request clones one
    /// map instead of building its own.
    headers: HeaderMap,
    stream_headers: HeaderMap,
    http: lanes::Lanes,
}

/// The limit on setting up one provider connection: TCP, a proxy's `CONNECT` and TLS.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The client every provider shares: [`lanes::LANES`] pooled hyper clients, so that a
/// provider speaking HTTP/2 gets another connection when one is full (see `lanes`).
pub use self::lanes::Client;

/// The variable that names the CA bundle to trust instead of the built-in Mozilla roots,
/// as OpenSSL, curl and Python read it: a provider behind a company's own CA (an
/// `https://` vLLM, a TLS-inspecting egress proxy) is reachable with it.
pub const CA_BUNDLE_VAR: &str = "SSL_CERT_FILE";

/// The trust anchors for the gateway's own TLS calls (providers, webhooks, JWKS, OTLP):
/// the certificates of the PEM file `SSL_CERT_FILE` names, or None (the Mozilla roots)
/// when it is unset or empty. A file that cannot be read, or holds no certificate, is an
/// error at start, not a TLS failure on the first call.
pub fn ca_bundle() -> Result<Option<Vec<CertificateDer<'static>>>, String> {
    match std::env::var_os(CA_BUNDLE_VAR) {
        Some(path) if !path.is_empty() => read_ca_bundle(std::path::Path::new(&path)).map(Some),
        _ => Ok(None),
    }
}

fn read_ca_bundle(path: &std::path::Path) -> Result<Vec<CertificateDer<'static>>, String> {
    use rustls::pki_types::pem::PemObject;
    let fail = |why: String| format!("{CA_BUNDLE_VAR} ({}): {why}", path.display());
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| fail(format!("cannot read it: {e}")))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| fail("not valid PEM".into()))?;
    if certs.is_empty() {
        return Err(fail("no PEM certificate in it".into()));
    }
    Ok(certs)
}

/// Builds the providers' client: connect timeout 10 s, `TCP_NODELAY`, idle connections
/// kept 90 s (up to 1,024 per host and lane), TLS through rustls (ring) with the
/// Mozilla roots (or the `roots` of [`ca_bundle`]) and ALPN `h2, http/1.1`, plain HTTP
/// for `http://` base URLs (vLLM, Ollama, mocks), HTTP/2 lanes of [`lanes::PER_LANE`]
/// streams each.
/// Redirects are never followed: a redirect could carry a prompt to a host (and a
/// region) that policy never chose. `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and
/// `NO_PROXY` are read once, here (see `connect`).
pub fn client(roots: Option<&[CertificateDer<'static>]>) -> Result<Client, String> {
    let mut store = rustls::RootCertStore::empty();
    match roots {
        None => store.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(roots) => {
            let (_, refused) = store.add_parsable_certificates(roots.iter().cloned());
            if store.is_empty() {
                return Err(format!(
                    "{CA_BUNDLE_VAR}: none of its {refused} certificates can be a trust anchor"
                ));
            }
        }
    }
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(store)
    .with_no_client_auth();
    Ok(build(
        hyper_util::client::proxy::matcher::Matcher::from_env(),
        tls,
        lanes::LANES,
        lanes::PER_LANE,
    ))
}

fn build(
    proxies: hyper_util::client::proxy::matcher::Matcher,
    tls: rustls::ClientConfig,
    lanes: usize,
    per_lane: usize,
) -> Client {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    // As reqwest set them: a pooled connection that a NAT or load balancer dropped
    // silently is found out, not waited on for a whole attempt.
    http.set_keepalive(Some(Duration::from_secs(15)));
    http.set_keepalive_interval(Some(Duration::from_secs(15)));
    http.set_keepalive_retries(Some(3));
    #[cfg(target_os = "linux")]
    http.set_tcp_user_timeout(Some(Duration::from_secs(30)));
    http.enforce_http(false);
    let connector = connect::Connector::new(http, proxies);
    // The first lane offers `h2, http/1.1` (ALPN picks); the others are used only for a
    // host already heard speaking HTTP/2, so they speak nothing else. That also makes
    // hyper's pool open one connection for a lane's first burst of requests instead of
    // one per request until ALPN has answered.
    let first = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(connector.clone());
    let more = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http2()
        .wrap_connector(connector);
    Client::new(lanes, per_lane, |lane| {
        let mut builder = hyper_util::client::legacy::Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024);
        if lane == 0 {
            builder.build(connect::Timed::new(first.clone(), CONNECT_TIMEOUT))
        } else {
            builder
                .http2_only(true)
                .build(connect::Timed::new(more.clone(), CONNECT_TIMEOUT))
        }
    })
}

/// Why one attempt failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum AttemptError {
    /// Connection refused, reset, or the body broke off.
    #[error("connect error: {0}")]
    Connect(String),
    /// The upstream answered with something that is not its format.
    #[error("malformed reply: {0}")]
    Malformed(String),
    /// Non-success status, with the provider's error when its body said one.
    #[error("status {status}")]
    Status {
        status: u16,
        error: Option<ProviderError>,
        retry_after: Option<Duration>,
    },
    #[error("timed out")]
    Timeout,
    /// The provider cannot do this operation (embeddings on Anthropic).
    #[error("{0} is not supported by this provider")]
    Unsupported(&'static str),
}

impl AttemptError {
    /// Worth another try (same target after backoff, or the next target).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Connect(_) | Self::Malformed(_) | Self::Timeout => true,
            Self::Status { status, .. } => *status == 408 || *status == 429 || *status >= 500,
            Self::Unsupported(_) => false,
        }
    }

    /// The upstream said the request itself is malformed: the client's mistake, so no
    /// other target will do better (auth and not-found statuses are the gateway's
    /// configuration, so those move on to the next target).
    pub fn is_client_mistake(&self) -> bool {
        matches!(self, Self::Status { status, .. } if matches!(status, 400 | 413 | 422))
    }

    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// Short text for records and the 502 message: never an upstream body.
    pub fn summary(&self) -> String {
        match self {
            Self::Status {
                error: Some(e),
                status,
                ..
            } => format!("{} {}", status, e.kind),
            Self::Status { status, .. } => format!("status {status}"),
            Self::Connect(_) => "connect error".into(),
            Self::Malformed(_) => "malformed reply".into(),
            Self::Timeout => "timeout".into(),
            Self::Unsupported(what) => format!("{what} not supported"),
        }
    }
}

/// A reply to a chat request.
pub enum ChatReply {
    /// A complete reply, with the raw body for pass-through to a same-format client.
    Complete { response: ChatResponse, raw: Bytes },
    /// A stream whose status was 2xx; events are read from it.
    Stream(UpstreamStream),
}

// === impl Upstream ===

impl Upstream {
    /// Builds the callable provider. `base_url` overrides the configured one (in-process
    /// mocks learn their address at start).
    pub fn new(p: &config::Provider, base_url: Option<String>, http: Client) -> Self {
        let wire = match &p.kind {
            ProviderKind::Anthropic => Wire::Anthropic,
            ProviderKind::Mistral => Wire::Mistral,
            ProviderKind::OpenAi => Wire::OpenAi,
            ProviderKind::OpenAiCompatible => Wire::OpenAiCompatible,
            ProviderKind::Mock(s) => match s.flavor {
                Flavor::Anthropic => Wire::Anthropic,
                Flavor::Mistral => Wire::Mistral,
                Flavor::OpenAi => Wire::OpenAi,
            },
        };
        let mut auth = HeaderMap::new();
        auth.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        auth.insert(
            header::USER_AGENT,
            HeaderValue::from_static(concat!("asc/", env!("CARGO_PKG_VERSION"))),
        );
        if let Some(key) = &p.api_key {
            match wire {
                Wire::Anthropic => {
                    if let Ok(mut v) = HeaderValue::from_str(key) {
                        v.set_sensitive(true);
                        auth.insert("x-api-key", v);
                    }
                }
                Wire::Mistral | Wire::OpenAi | Wire::OpenAiCompatible => {
                    if let Ok(mut v) = HeaderValue::from_str(&format!("Bearer {key}")) {
                        v.set_sensitive(true);
                        auth.insert(header::AUTHORIZATION, v);
                    }
                }
            }
        }
        if wire == Wire::Anthropic {
            auth.insert(
                "anthropic-version",
                HeaderValue::from_static(anthropic::API_VERSION),
            );
        }
        let base_url = base_url
            .or_else(|| p.base_url.clone())
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned();
        let chat_url = match wire {
            Wire::Anthropic => format!("{base_url}/v1/messages"),
            Wire::Mistral | Wire::OpenAi | Wire::OpenAiCompatible => {
                format!("{base_url}/chat/completions")
            }
        };
        let mut stream_headers = auth.clone();
        stream_headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/event-stream"),
        );
        let chat_url = parse_url(&chat_url);
        Self {
            name: p.name.clone(),
            wire,
            region: p.region.clone(),
            http: http.lanes_for(chat_url.as_ref()),
            chat_url,
            embeddings_url: parse_url(&format!("{base_url}/embeddings")),
            headers: auth,
            stream_headers,
        }
    }

    /// Sends a chat request for `model`. For `req.stream`, returns once the status line
    /// and headers are in (the caller then waits for the first event under its
    /// first-byte timeout); otherwise once the whole body is read. `timeout` bounds the
    /// wait for headers (and, without streaming, for the body). `trace` is the attempt's
    /// `traceparent` (and `tracestate`).
    pub async fn chat(
        &self,
        req: &ChatRequest,
        model: &str,
        timeout: Duration,
        trace: &Outgoing,
    ) -> Result<ChatReply, AttemptError> {
        // Routing leaves out targets that cannot take the request's documents; should
        // one come here all the same, nothing is sent.
        if self.can_send(req).is_err() {
            return Err(AttemptError::Unsupported("a document of this request"));
        }
        let body = match self.wire {
            Wire::Anthropic => anthropic::encode_request(req, model),
            Wire::Mistral => mistral::encode_request(req, model),
            Wire::OpenAi => openai::encode_request(req, model, openai::Dialect::OpenAi),
            Wire::OpenAiCompatible => {
                openai::encode_request(req, model, openai::Dialect::Compatible)
            }
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let resp = self
            .post(self.chat_url.as_ref(), body, deadline, req.stream, trace)
            .await?;
        if req.stream {
            return Ok(ChatReply::Stream(UpstreamStream::new(resp, self.wire)));
        }
        let raw = read_body(resp, deadline).await?;
        let response = match self.wire {
            Wire::Anthropic => anthropic::decode_response(&raw),
            Wire::Mistral => mistral::decode_response(&raw),
            Wire::OpenAi | Wire::OpenAiCompatible => openai::decode_response(&raw),
        }
        .map_err(|e| AttemptError::Malformed(e.to_string()))?;
        Ok(ChatReply::Complete { response, raw })
    }

    /// Sends an embeddings request for `model`.
    pub async fn embeddings(
        &self,
        req: &EmbeddingsRequest,
        model: &str,
        timeout: Duration,
        trace: &Outgoing,
    ) -> Result<EmbeddingsResponse, AttemptError> {
        let body = match self.wire {
            Wire::Anthropic => return Err(AttemptError::Unsupported("embeddings")),
            Wire::Mistral => mistral::encode_embeddings_request(req, model),
            Wire::OpenAi | Wire::OpenAiCompatible => openai::encode_embeddings_request(req, model),
        };
        let deadline = tokio::time::Instant::now() + timeout;
        let resp = self
            .post(self.embeddings_url.as_ref(), body, deadline, false, trace)
            .await?;
        let raw = read_body(resp, deadline).await?;
        match self.wire {
            Wire::Mistral => mistral::decode_embeddings_response(&raw),
            _ => openai::decode_embeddings_response(&raw),
        }
        .map_err(|e| AttemptError::Malformed(e.to_string()))
    }

    /// Whether this upstream's format can carry the request's content: the format's
    /// refusal of the first document it has no counterpart for, naming the client's field
    /// (`asc_wire::*::check_documents`); Ok for every request without documents (one pass
    /// over its blocks, no allocation).
    pub fn can_send(&self, req: &ChatRequest) -> Result<(), asc_wire::RequestError> {
        match self.wire {
            Wire::Anthropic => anthropic::check_documents(req),
            Wire::Mistral => mistral::check_documents(req),
            Wire::OpenAi | Wire::OpenAiCompatible => openai::check_documents(req),
        }
    }

    pub fn supports_embeddings(&self) -> bool {
        self.wire != Wire::Anthropic
    }

    /// POSTs JSON; a non-2xx status becomes [`AttemptError::Status`] with the
    /// provider's error read from its body.
    async fn post(
        &self,
        url: Option<&Uri>,
        body: Vec<u8>,
        deadline: tokio::time::Instant,
        stream: bool,
        trace: &Outgoing,
    ) -> Result<http::Response<lanes::Body>, AttemptError> {
        let url = url.ok_or_else(|| AttemptError::Connect("the base_url is not a URL".into()))?;
        let mut req = http::Request::new(Full::new(Bytes::from(body)));
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = url.clone();
        *req.headers_mut() = if stream {
            self.stream_headers.clone()
        } else {
            self.headers.clone()
        };
        for (name, value) in trace.headers() {
            req.headers_mut().insert(name, value.clone());
        }
        let resp = tokio::time::timeout_at(deadline, self.http.request(req))
            .await
            .map_err(|_| AttemptError::Timeout)?
            .map_err(|e| {
                if connect::timed_out(&e) {
                    AttemptError::Timeout
                } else {
                    AttemptError::Connect(describe(&e))
                }
            })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let retry_after = resp
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(3600.0)));
        let raw = read_body(resp, deadline).await.unwrap_or_default();
        let error = match self.wire {
            Wire::Anthropic => anthropic::decode_error(&raw),
            Wire::Mistral => mistral::decode_error(&raw),
            Wire::OpenAi | Wire::OpenAiCompatible => openai::decode_error(&raw),
        };
        Err(AttemptError::Status {
            status: status.as_u16(),
            error,
            retry_after,
        })
    }
}

/// An endpoint URL as the client takes it: absolute, `http` or `https`.
fn parse_url(s: &str) -> Option<Uri> {
    let uri: Uri = s.parse().ok()?;
    let scheme_ok = matches!(uri.scheme_str(), Some("http" | "https"));
    (scheme_ok && uri.authority().is_some()).then_some(uri)
}

async fn read_body(
    resp: http::Response<lanes::Body>,
    deadline: tokio::time::Instant,
) -> Result<Bytes, AttemptError> {
    let body = tokio::time::timeout_at(deadline, resp.into_body().collect())
        .await
        .map_err(|_| AttemptError::Timeout)?
        .map_err(|e| AttemptError::Connect(body_failed(&e)))?;
    Ok(body.to_bytes())
}

/// A failed call's text: what failed and why, never the URL (which could carry
/// credentials) nor a body.
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let kind = if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    with_source(kind, std::error::Error::source(e))
}

/// A body that broke off.
fn body_failed(e: &hyper::Error) -> String {
    with_source("body read failed", Some(e))
}

fn with_source(kind: &str, src: Option<&(dyn std::error::Error + 'static)>) -> String {
    match src {
        Some(src) => crate::pipeline::truncate(&format!("{kind}: {src}"), 200),
        None => kind.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_bundle_loads_its_certificates_and_each_broken_file_is_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("asc-ca-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let one = rcgen::generate_simple_self_signed(vec!["a.internal".to_owned()]).unwrap();
        let two = rcgen::generate_simple_self_signed(vec!["b.internal".to_owned()]).unwrap();
        let bundle = write(
            "bundle.pem",
            &format!("{}{}", one.cert.pem(), two.cert.pem()),
        );
        let certs = read_ca_bundle(&bundle).unwrap();
        assert_eq!(certs, [one.cert.der().clone(), two.cert.der().clone()]);
        assert!(client(Some(&certs)).is_ok());

        let key_only = write("key.pem", &one.signing_key.serialize_pem());
        let garbage = write(
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nnot base64!!!\n-----END CERTIFICATE-----\n",
        );
        let cases = [
            (dir.join("missing.pem"), "cannot read it"),
            (write("empty.pem", ""), "no PEM certificate"),
            (key_only, "no PEM certificate"),
            (garbage, "not valid PEM"),
        ];
        for (path, says) in cases {
            let e = read_ca_bundle(&path).unwrap_err();
            assert!(
                e.starts_with("SSL_CERT_FILE (") && e.contains(&*path.to_string_lossy()),
                "{e}"
            );
            assert!(e.contains(says), "{path:?}: {e}");
        }
        // DER that is no certificate cannot be a trust anchor.
        let junk = [CertificateDer::from(vec![1, 2, 3])];
        assert!(client(Some(&junk)).unwrap_err().contains("trust anchor"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
