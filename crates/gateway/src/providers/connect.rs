//! How provider connections are opened: straight to the provider, or through the HTTP
//! proxy that `HTTPS_PROXY`, `HTTP_PROXY` or `ALL_PROXY` names (lower case too; hosts in
//! `NO_PROXY` go direct), read once at start, the way curl reads them. Through a proxy,
//! the connection is a `CONNECT` tunnel (TLS to the provider runs inside it, so the
//! proxy never sees a prompt), with the proxy URL's user and password as
//! `Proxy-Authorization: Basic`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tower_service::Service;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The TCP side of the providers' client (TLS is layered on it by hyper-rustls).
#[derive(Clone)]
pub struct Connector {
    direct: HttpConnector,
    proxies: Arc<Matcher>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The matcher holds proxy credentials: never printed.
        f.debug_struct("Connector").finish_non_exhaustive()
    }
}

impl Connector {
    pub fn new(direct: HttpConnector, proxies: Matcher) -> Self {
        Self {
            direct,
            proxies: Arc::new(proxies),
        }
    }
}

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.direct.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let Some(proxy) = self.proxies.intercept(&dst) else {
            let connecting = self.direct.call(dst);
            return Box::pin(async move { connecting.await.map_err(Into::into) });
        };
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::USER_AGENT,
            http::HeaderValue::from_static(concat!("asc/", env!("CARGO_PKG_VERSION"))),
        );
        let mut tunnel =
            Tunnel::new(proxy.uri().clone(), self.direct.clone()).with_headers(headers);
        if let Some(auth) = proxy.basic_auth() {
            tunnel = tunnel.with_auth(auth.clone());
        }
        Box::pin(async move {
            std::future::poll_fn(|cx| tunnel.poll_ready(cx)).await?;
            // The tunnel takes a missing port as 443; an `http://` provider's is 80.
            let dst = with_default_port(dst)?;
            Ok(tunnel.call(dst).await?)
        })
    }
}

/// Bounds the whole setup of a connection (TCP connect, the proxy's `CONNECT`, the TLS
/// handshake): a peer that accepts and then stalls cannot hold a connection attempt,
/// which the pool may finish in the background, for longer than `limit`.
#[derive(Clone, Debug)]
pub struct Timed<C> {
    inner: C,
    limit: Duration,
}

impl<C> Timed<C> {
    pub fn new(inner: C, limit: Duration) -> Self {
        Self { inner, limit }
    }
}

impl<C> Service<Uri> for Timed<C>
where
    C: Service<Uri>,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        let connecting = self.inner.call(dst);
        let limit = self.limit;
        Box::pin(async move {
            match tokio::time::timeout(limit, connecting).await {
                Ok(done) => done.map_err(Into::into),
                Err(_) => Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("connecting took longer than {} s", limit.as_secs()),
                )) as BoxError),
            }
        })
    }
}

/// The error (or one of its causes) is a timeout.
pub fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

fn with_default_port(dst: Uri) -> Result<Uri, BoxError> {
    if dst.port().is_some() || dst.scheme_str() != Some("http") {
        return Ok(dst);
    }
    let host = dst.host().unwrap_or_default();
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    Ok(format!("http://{host}:80/").parse()?)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// An upstream that answers every request on a connection with `ok`.
    async fn upstream() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = sock.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let reply = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                        if sock.write_all(reply).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    /// A CONNECT proxy that records each request head and relays the tunnel.
    async fn proxy(heads: Heads) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let heads = heads.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if sock.read_exact(&mut byte).await.is_err() {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
                    heads.lock().unwrap().push(head);
                    let Ok(mut up) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let ok = b"HTTP/1.1 200 Connection established\r\n\r\n";
                    if sock.write_all(ok).await.is_ok() {
                        let _ = tokio::io::copy_bidirectional(&mut sock, &mut up).await;
                    }
                });
            }
        });
        addr
    }

    type Heads = Arc<std::sync::Mutex<Vec<String>>>;

    /// An upstream, and a CONNECT proxy (with the heads it was sent) able to reach it.
    async fn upstream_and_proxy() -> (std::net::SocketAddr, std::net::SocketAddr, Heads) {
        let heads = Heads::default();
        (upstream().await, proxy(heads.clone()).await, heads)
    }

    async fn get(connector: Connector, url: &str, times: u64) -> String {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build::<_, Full<Bytes>>(connector);
        let mut last = String::new();
        for _ in 0..times {
            let req = http::Request::get(url).body(Full::default()).unwrap();
            let resp = client.request(req).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            last = String::from_utf8_lossy(&body).into_owned();
        }
        last
    }

    #[tokio::test]
    async fn a_provider_behind_a_proxy_is_reached_through_one_kept_alive_tunnel() {
        let (up, px, heads) = upstream_and_proxy().await;
        let matcher = Matcher::builder()
            .http(format!("http://user:secret@{px}"))
            .build();
        let connector = Connector::new(HttpConnector::new(), matcher);
        assert!(!format!("{connector:?}").contains("secret"));
        let body = get(connector, &format!("http://{up}/v1/chat/completions"), 3).await;
        assert_eq!(body, "ok");
        let heads = heads.lock().unwrap();
        assert_eq!(heads.len(), 1, "three requests, one tunnel: {heads:?}");
        assert!(
            heads[0].starts_with(&format!("CONNECT {up} HTTP/1.1\r\n")),
            "{}",
            heads[0]
        );
        // user:secret, as `Proxy-Authorization: Basic`.
        assert!(heads[0].contains("Basic dXNlcjpzZWNyZXQ="), "{}", heads[0]);
        assert!(
            heads[0].to_ascii_lowercase().contains("user-agent: asc/"),
            "{}",
            heads[0]
        );
    }

    #[tokio::test]
    async fn no_proxy_hosts_and_an_empty_environment_go_direct() {
        let (up, px, heads) = upstream_and_proxy().await;
        let bypassed = Matcher::builder()
            .http(format!("http://{px}"))
            .no("127.0.0.1")
            .build();
        let url = format!("http://{up}/");
        assert_eq!(
            get(Connector::new(HttpConnector::new(), bypassed), &url, 1).await,
            "ok"
        );
        let none = Matcher::builder().build();
        assert_eq!(
            get(Connector::new(HttpConnector::new(), none), &url, 1).await,
            "ok"
        );
        assert!(heads.lock().unwrap().is_empty(), "the proxy was used");
    }

    #[tokio::test]
    async fn a_connection_that_stalls_is_given_up_after_the_limit_as_a_timeout() {
        // Accepts, then never answers the proxy's CONNECT: the tunnel would wait forever.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stalled = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((sock, _)) = listener.accept().await {
                held.push(sock);
            }
        });
        let matcher = Matcher::builder().http(format!("http://{stalled}")).build();
        let mut timed = Timed::new(
            Connector::new(HttpConnector::new(), matcher),
            Duration::from_millis(200),
        );
        let t0 = std::time::Instant::now();
        std::future::poll_fn(|cx| timed.poll_ready(cx))
            .await
            .unwrap();
        let Err(err) = timed.call("http://127.0.0.1:9/".parse().unwrap()).await else {
            panic!("a stalled connect must fail");
        };
        assert!(timed_out(err.as_ref()), "{err}");
        assert!(t0.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn an_http_provider_without_a_port_is_tunnelled_to_port_80() {
        let dst: Uri = "http://vllm.internal/v1/chat/completions".parse().unwrap();
        assert_eq!(with_default_port(dst).unwrap().port_u16(), Some(80));
        let tls: Uri = "https://api.openai.com/v1".parse().unwrap();
        assert_eq!(with_default_port(tls.clone()).unwrap(), tls);
        let v6: Uri = "http://[::1]/v1".parse().unwrap();
        assert_eq!(with_default_port(v6).unwrap().port_u16(), Some(80));
    }
}
