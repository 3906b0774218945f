//! HTTP/2 lanes: more than one connection to a provider that speaks HTTP/2.
//!
//! hyper's pooled client keeps one HTTP/2 connection per host and sends every request
//! over it. When the server's `SETTINGS_MAX_CONCURRENT_STREAMS` is reached (100 to 256
//! at the big providers' fronts), the next request does not open a second connection:
//! it waits in the connection's queue until a stream ends (hyperium/hyper#3623). For a
//! gateway that holds hundreds of long streams to one provider, that is a stall: the
//! 101st request waits for minutes, its first-byte timeout fires, and the provider is
//! marked failing though it never saw the request.
//!
//! So the providers' [`Client`] is a row of hyper clients (lanes), each with its own
//! pool and so its own connection. Each provider host counts its requests in flight per
//! lane ([`Lanes`]); once its replies have shown that it speaks HTTP/2, a request takes
//! the first lane with fewer than [`PER_LANE`] in flight. A host that speaks HTTP/1.1
//! (every `http://` provider, and TLS ones that do not offer `h2`) uses the first lane
//! only, whose pool opens a connection per concurrent request anyway.
//!
//! A lane counts a request from its send until its reply's body is dropped (a stream
//! holds its stream open until then), by a guard carried in the body ([`Body`]).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response, Uri, Version};
use http_body_util::Full;
use hyper::body::{Frame, Incoming, SizeHint};

use super::connect;

/// One lane: hyper's pooled client, TLS through rustls, connections through
/// [`connect::Connector`].
pub type Lane = hyper_util::client::legacy::Client<
    connect::Timed<hyper_rustls::HttpsConnector<connect::Connector>>,
    Full<Bytes>,
>;

/// Streams a lane takes before the next lane is opened: the least that RFC 9113
/// (section 6.5.2) asks a server to allow, so no provider makes a lane's request wait.
pub const PER_LANE: usize = 100;

/// Lanes per provider host: 256 × 100 streams in flight before requests queue (on the
/// least loaded lane) again. A lane that is never used holds no connection.
pub const LANES: usize = 256;

/// The providers' client: [`LANES`] hyper clients sharing one connector.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    lanes: Box<[Lane]>,
    per_lane: usize,
    /// Each provider host's counters, found when a provider is built (config load and
    /// reload, never per request), so a reload keeps counting the streams still open.
    hosts: Mutex<HashMap<String, Weak<Host>>>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("lanes", &self.inner.lanes.len())
            .field("per_lane", &self.inner.per_lane)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// `make(i)` builds lane `i`: lane 0 serves every host, the others only hosts that
    /// speak HTTP/2.
    pub fn new(lanes: usize, per_lane: usize, make: impl FnMut(usize) -> Lane) -> Self {
        let lanes = (0..lanes.max(1)).map(make).collect();
        Self {
            inner: Arc::new(Inner {
                lanes,
                per_lane: per_lane.max(1),
                hosts: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The lanes to `url`'s host (scheme and authority); one set per host, shared by
    /// every provider on it.
    pub fn lanes_for(&self, url: Option<&Uri>) -> Lanes {
        let fresh = || Arc::new(Host::new(self.inner.lanes.len()));
        let host = match url.and_then(|u| Some((u.scheme_str()?, u.authority()?))) {
            None => fresh(),
            Some((scheme, authority)) => {
                let key = format!("{scheme}://{authority}");
                let mut hosts = self.inner.hosts.lock().unwrap_or_else(|p| p.into_inner());
                hosts.retain(|_, h| h.strong_count() > 0);
                match hosts.get(&key).and_then(Weak::upgrade) {
                    Some(h) => h,
                    None => {
                        let h = fresh();
                        hosts.insert(key, Arc::downgrade(&h));
                        h
                    }
                }
            }
        };
        Lanes {
            client: self.clone(),
            host,
        }
    }
}

/// One provider host's lanes.
#[derive(Clone)]
pub struct Lanes {
    client: Client,
    host: Arc<Host>,
}

impl std::fmt::Debug for Lanes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lanes")
            .field("h2", &self.host.h2.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

struct Host {
    /// Its last reply came over HTTP/2.
    h2: AtomicBool,
    in_flight: Box<[AtomicUsize]>,
}

impl Host {
    fn new(lanes: usize) -> Self {
        Self {
            h2: AtomicBool::new(false),
            in_flight: (0..lanes).map(|_| AtomicUsize::new(0)).collect(),
        }
    }
}

/// A request counted on its lane until dropped.
struct Counted {
    host: Arc<Host>,
    lane: usize,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.host.in_flight[self.lane].fetch_sub(1, Ordering::AcqRel);
    }
}

impl Lanes {
    /// Sends `req` on a lane; the reply's body keeps the lane counted until dropped.
    pub async fn request(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<Body>, hyper_util::client::legacy::Error> {
        let counted = self.pick();
        let resp = match self.client.inner.lanes[counted.lane].request(req).await {
            Ok(resp) => resp,
            Err(e) => {
                // The lanes past the first speak only HTTP/2: after any failure there
                // (a host that stopped offering it fails at connect or at the HTTP/2
                // handshake), the host goes back to the first lane, which offers both,
                // until a reply shows HTTP/2 again. The attempt is retried as usual.
                if counted.lane > 0 {
                    self.host.h2.store(false, Ordering::Relaxed);
                }
                return Err(e);
            }
        };
        let h2 = resp.version() == Version::HTTP_2;
        if self.host.h2.load(Ordering::Relaxed) != h2 {
            self.host.h2.store(h2, Ordering::Relaxed);
        }
        Ok(resp.map(|inner| Body {
            inner,
            _counted: counted,
        }))
    }

    /// The first lane with room; the least loaded when none has. HTTP/1.1 hosts (and
    /// hosts not yet heard from) take the first.
    fn pick(&self) -> Counted {
        let lanes = if self.host.h2.load(Ordering::Relaxed) {
            &self.host.in_flight[..]
        } else {
            &self.host.in_flight[..1]
        };
        let per_lane = self.client.inner.per_lane;
        let (mut least, mut least_n) = (0, usize::MAX);
        for (i, n) in lanes.iter().enumerate() {
            // A load first: a host with thousands of streams passes its full lanes
            // without writing to them.
            let mut now = n.load(Ordering::Acquire);
            if now < per_lane {
                now = n.fetch_add(1, Ordering::AcqRel);
                if now < per_lane {
                    return self.counted(i);
                }
                n.fetch_sub(1, Ordering::AcqRel);
            }
            if now < least_n {
                (least, least_n) = (i, now);
            }
        }
        lanes[least].fetch_add(1, Ordering::AcqRel);
        self.counted(least)
    }

    fn counted(&self, lane: usize) -> Counted {
        Counted {
            host: self.host.clone(),
            lane,
        }
    }

    #[cfg(test)]
    fn in_flight(&self) -> Vec<usize> {
        let n = &self.host.in_flight;
        n.iter().map(|n| n.load(Ordering::Acquire)).collect()
    }
}

/// A reply's body, holding its lane's count.
pub struct Body {
    inner: Incoming,
    _counted: Counted,
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::time::Duration;

    use http_body_util::{BodyExt, StreamBody};
    use hyper_util::client::proxy::matcher::Matcher;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use tokio::net::TcpListener;
    use tokio::sync::watch;

    use super::*;

    /// A server whose replies send their headers at once and end their body when
    /// `release` turns true; it counts the connections that carried a request (a
    /// client may open one more and drop it once ALPN shows another is shared).
    struct Server {
        addr: SocketAddr,
        serving: Arc<AtomicUsize>,
        release: watch::Sender<bool>,
        root: rustls::pki_types::CertificateDer<'static>,
    }

    /// Over TLS with ALPN `h2`, allowing `max_streams` per connection, as a provider's
    /// front does; or plain HTTP/1.1 when `max_streams` is None.
    async fn server(max_streams: Option<u32>) -> Server {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let root = cert.cert.der().clone();
        let key =
            rustls::pki_types::PrivateKeyDer::try_from(cert.signing_key.serialize_der()).unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![root.clone()], key)
        .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = Arc::new(AtomicUsize::new(0));
        let (release, released) = watch::channel(false);
        let count = serving.clone();
        tokio::spawn(async move {
            loop {
                let (sock, _) = listener.accept().await.unwrap();
                let released = released.clone();
                let acceptor = acceptor.clone();
                let count = count.clone();
                let served = Arc::new(AtomicBool::new(false));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        if !served.swap(true, Ordering::SeqCst) {
                            count.fetch_add(1, Ordering::SeqCst);
                        }
                        let mut released = released.clone();
                        let body = futures_util::stream::once(async move {
                            let _ = released.wait_for(|r| *r).await;
                            Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"done")))
                        });
                        async move { Ok::<_, Infallible>(Response::new(StreamBody::new(body))) }
                    });
                    match max_streams {
                        Some(max) => {
                            let Ok(tls) = acceptor.accept(sock).await else {
                                return;
                            };
                            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                                .max_concurrent_streams(max)
                                .serve_connection(TokioIo::new(tls), service)
                                .await;
                        }
                        None => {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(sock), service)
                                .await;
                        }
                    }
                });
            }
        });
        Server {
            addr,
            serving,
            release,
            root,
        }
    }

    fn client(server: &Server, lanes: usize, per_lane: usize) -> Client {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(server.root.clone()).unwrap();
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        super::super::build(Matcher::builder().build(), tls, lanes, per_lane)
    }

    fn get(url: &Uri) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::default());
        *req.uri_mut() = url.clone();
        req
    }

    /// Replies whose headers arrived within `wait`, of `n` requests sent together.
    async fn started(lanes: &Lanes, url: &Uri, n: usize, wait: Duration) -> Vec<Response<Body>> {
        let sends = (0..n).map(|_| tokio::time::timeout(wait, lanes.request(get(url))));
        futures_util::future::join_all(sends)
            .await
            .into_iter()
            .filter_map(|r| r.ok().map(Result::unwrap))
            .collect()
    }

    #[tokio::test]
    async fn streams_past_an_http2_servers_limit_open_another_connection_instead_of_waiting() {
        let server = server(Some(2)).await;
        let url: Uri = format!(
            "https://localhost:{}/v1/chat/completions",
            server.addr.port()
        )
        .parse()
        .unwrap();
        let wait = Duration::from_secs(10);

        // One lane, as hyper alone: the server's limit of 2 holds the third request
        // back (so the server below really enforces its limit).
        let one = client(&server, 1, 2).lanes_for(Some(&url));
        let first = started(&one, &url, 1, wait).await;
        assert_eq!(first[0].version(), Version::HTTP_2);
        let held = started(&one, &url, 2, Duration::from_millis(500)).await;
        assert_eq!(held.len(), 1, "the server let a third stream start");
        drop((first, held));

        // Lanes: a first reply shows HTTP/2, then 6 more streams open at once on 4
        // connections in all (7 streams, 2 per connection).
        let before = server.serving.load(Ordering::SeqCst);
        let lanes = client(&server, 8, 2).lanes_for(Some(&url));
        let mut open = started(&lanes, &url, 1, wait).await;
        open.extend(started(&lanes, &url, 6, wait).await);
        assert_eq!(open.len(), 7, "a stream waited behind the server's limit");
        assert_eq!(server.serving.load(Ordering::SeqCst) - before, 4);
        assert_eq!(lanes.in_flight(), [2, 2, 2, 1, 0, 0, 0, 0]);

        // Each stream is counted until its body is read to the end and dropped.
        server.release.send(true).unwrap();
        for resp in open {
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"done");
        }
        assert_eq!(lanes.in_flight(), [0; 8]);
    }

    #[tokio::test]
    async fn an_http1_host_uses_one_lane_whose_pool_opens_a_connection_per_request() {
        let server = server(None).await;
        let url: Uri = format!(
            "http://127.0.0.1:{}/v1/chat/completions",
            server.addr.port()
        )
        .parse()
        .unwrap();
        let client = client(&server, 8, 2);
        let lanes = client.lanes_for(Some(&url));
        let open = started(&lanes, &url, 5, Duration::from_secs(10)).await;
        assert_eq!(open.len(), 5);
        assert!(open.iter().all(|r| r.version() == Version::HTTP_11));
        assert_eq!(lanes.in_flight(), [5, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(server.serving.load(Ordering::SeqCst), 5);

        // A second provider on the same host (a reload, or another name) shares the
        // counts; another host does not.
        let same = client.lanes_for(Some(&url));
        assert_eq!(same.in_flight()[0], 5);
        let other: Uri = "http://127.0.0.1:9/v1".parse().unwrap();
        assert_eq!(client.lanes_for(Some(&other)).in_flight()[0], 0);

        server.release.send(true).unwrap();
        drop(open);
        assert_eq!(same.in_flight(), [0; 8]);
    }
}
