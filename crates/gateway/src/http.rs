//! The HTTP side: the data-plane router, its layers, and serving it.
//!
//! Handlers are thin: everything request-specific happens in [`crate::pipeline`].

use std::future::Future;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::error::Surface;
use crate::pipeline;
use crate::state::AppState;

/// The data plane: `/v1/*`, `/healthz`, `/readyz`.
pub fn data_router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/messages", post(messages))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/v1/feedback", post(feedback))
        .route("/v1/models/{id}", get(model))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// The admin plane: `/admin/v1/*` (see [`crate::admin::api`]), `/metrics`
/// (Prometheus text, unauthenticated so scrapers need no token; the admin listener is on
/// loopback unless configured otherwise) and the console at `/ui` (static files that
/// call `/admin/v1` with the operator's token; see [`crate::console`]).
pub fn admin_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state.clone())
        .merge(crate::console::router())
        .merge(crate::admin::api::router(state))
}

async fn metrics(State(s): State<AppState>) -> Response {
    let live = s.live.load_full();
    let dir = live.directory.load_full();
    for (t, _) in dir.tenants() {
        let Some(b) = &t.raw.budget else { continue };
        let period = crate::prices::period_of(&b.period, crate::limits::unix_now());
        let spent = match (dir.counters(&t.name), &period) {
            (Some(c), Some(p)) => crate::limits::spent(c, &p.key).await.unwrap_or(0),
            _ => 0,
        };
        s.metrics.budget(
            &t.name,
            crate::limits::budget::micros_to_usd(spent),
            b.limit_usd,
        );
    }
    s.metrics
        .circuits(&s.health.snapshot(std::time::Instant::now()));
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn chat_completions(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    pipeline::chat(&s, Surface::OpenAi, headers, body).await
}

async fn messages(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    pipeline::chat(&s, Surface::Anthropic, headers, body).await
}

async fn embeddings(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    pipeline::embeddings(&s, headers, body).await
}

async fn feedback(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    crate::pipeline::feedback(&s, headers, body).await
}

async fn models(State(s): State<AppState>, headers: HeaderMap) -> Response {
    pipeline::models(&s, headers).await
}

async fn model(
    State(s): State<AppState>,
    headers: HeaderMap,
    axum::extract::Path(id): axum::extract::Path<String>,
) -> Response {
    pipeline::model(&s, headers, &id).await
}

async fn count_tokens(State(s): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    pipeline::count_tokens(&s, headers, body).await
}

async fn healthz() -> Response {
    pipeline::stamped(json(StatusCode::OK, r#"{"status":"ok"}"#), Surface::OpenAi)
}

async fn readyz(State(s): State<AppState>) -> Response {
    let hash = s.live.load().config.hash.clone();
    if !s.store.ping().await {
        let body =
            serde_json::json!({"status": "unavailable", "reason": "the store is unreachable"});
        return pipeline::stamped(
            json(StatusCode::SERVICE_UNAVAILABLE, &body.to_string()),
            Surface::OpenAi,
        );
    }
    let body = serde_json::json!({"status": "ready", "config_hash": hash});
    pipeline::stamped(json(StatusCode::OK, &body.to_string()), Surface::OpenAi)
}

async fn not_found(uri: http::Uri) -> Response {
    route_error(
        StatusCode::NOT_FOUND,
        &uri,
        "not_found_error",
        "not_found",
        &format!("no route for {}", uri.path()),
    )
}

async fn method_not_allowed(method: http::Method, uri: http::Uri) -> Response {
    route_error(
        StatusCode::METHOD_NOT_ALLOWED,
        &uri,
        "invalid_request_error",
        "method_not_allowed",
        &format!("{} does not take {method}", uri.path()),
    )
}

/// An error of the route itself, in the format of the surface the path belongs to
/// (Anthropic's under `/v1/messages`, else OpenAI's).
fn route_error(
    status: StatusCode,
    uri: &http::Uri,
    kind: &str,
    code: &str,
    message: &str,
) -> Response {
    let surface = if uri.path().starts_with("/v1/messages") {
        Surface::Anthropic
    } else {
        Surface::OpenAi
    };
    let body = match surface {
        Surface::Anthropic => asc_wire::anthropic::error_body(kind, message),
        Surface::OpenAi => asc_wire::openai::error_body(kind, code, message, None),
    };
    let resp = (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response();
    pipeline::stamped(resp, surface)
}

fn json(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_owned(),
    )
        .into_response()
}

/// Where a TLS listener takes its server config from, once per accepted connection
/// (the current config generation's, so a reload rotates the certificate).
pub type TlsSource = std::sync::Arc<dyn Fn() -> std::sync::Arc<rustls::ServerConfig> + Send + Sync>;

/// With `server.tls`, both listeners take the live generation's certificate for each
/// new connection, so a reload with new files rotates it. Whether TLS is on is fixed at
/// start: a reload that drops `server.tls` keeps serving the last certificate loaded.
pub fn tls_source(state: &AppState) -> Option<TlsSource> {
    let first = state.live.load().config.server.tls.as_ref()?.server.clone();
    let state = state.clone();
    Some(std::sync::Arc::new(move || {
        state
            .live
            .load()
            .config
            .server
            .tls
            .as_ref()
            .map_or_else(|| first.clone(), |t| t.server.clone())
    }))
}

/// How long a client may take over its TLS handshake before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `router` on `listener` with `TCP_NODELAY` on every connection, over TLS when
/// `tls` is given, until `shutdown` completes; then in-flight requests and streams
/// finish.
///
/// Not `axum::serve`: that calls `Router::with_state` for every connection (rebuilding
/// the route table, ~5 KB per connection) and lets nobody configure hyper. Here the
/// routes are finished once, each connection gets an `Arc` clone, and HTTP/1's read
/// buffer is capped at 8 KiB (hyper's minimum; with HTTP/1-vs-2 detection the first
/// read otherwise doubles it to 16 KiB for the connection's whole life).
///
/// A TLS handshake runs in the connection's own task (bounded by 10 s), so a slow or
/// silent client never holds up the accept loop; a failed one is logged at debug level
/// and dropped.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<TlsSource>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::server::conn::auto::Builder;
    use hyper_util::server::graceful::GracefulShutdown;
    use hyper_util::service::TowerToHyperService;

    // Every handler becomes a route once; each connection gets an `Arc` clone.
    let router: Router = router.with_state(());
    let mut builder = Builder::new(TokioExecutor::new());
    // CONNECT protocol for HTTP/2 websockets, as `axum::serve` sets it.
    builder.http2().enable_connect_protocol();
    builder.http1().max_buf_size(8 * 1024);
    let builder = std::sync::Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let tcp = tokio::select! {
            r = listener.accept() => match r {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    if !matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionRefused
                            | std::io::ErrorKind::ConnectionAborted
                            | std::io::ErrorKind::ConnectionReset
                    ) {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let Some(tls) = &tls else {
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(tcp), service)
                .into_owned();
            // Spawned as is: wrapping it in `async move { conn.await }` doubles the task.
            tokio::spawn(graceful.watch(conn));
            continue;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls());
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => stream,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!("TLS handshake timed out");
                        return;
                    }
                };
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let _ = watcher.watch(conn).await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
