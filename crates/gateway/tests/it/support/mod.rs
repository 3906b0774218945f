//! Test support: a gateway on a random loopback port, fault-injecting upstreams, and
//! readers for both surfaces' replies.

pub mod fault;

use std::time::Duration;

use asc_gateway::mock::MockStats;
use asc_gateway::state::{AppState, ConfigSource};
use asc_wire::sse::{SseEvent, SseParser};
use serde_json::Value;

pub const KEY: &str = "sk-test-key-main-000000000000";

/// A running gateway.
pub struct TestGateway {
    pub url: String,
    pub admin_url: String,
    pub state: AppState,
    pub http: reqwest::Client,
}

impl TestGateway {
    /// Starts a gateway on `yaml` (which must not set `server.listen`).
    pub async fn start(yaml: &str) -> Self {
        let cfg = asc_gateway::config::load_str(yaml, &|_| None)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        Self::start_with(cfg, ConfigSource::Inline).await
    }

    /// Starts a gateway reading its config from `path` (so it can be reloaded).
    pub async fn start_file(path: &std::path::Path) -> Self {
        let cfg = asc_gateway::config::load_file(path).unwrap();
        Self::start_with(cfg, ConfigSource::File(path.to_owned())).await
    }

    /// Starts a gateway on `yaml` with its store at `url` (a file, to restart on it).
    pub async fn start_with_store(yaml: &str, url: &str) -> Self {
        let cfg = asc_gateway::config::load_str(yaml, &|_| None)
            .unwrap_or_else(|e| panic!("test config invalid:\n{e}"));
        let store = asc_gateway::store::Store::open(url).await.unwrap();
        Self::start_on(cfg, ConfigSource::Inline, store).await
    }

    /// The store is SQLite in memory, or with `ASC_TEST_STORE=postgres` a fresh database
    /// on the test PostgreSQL (the whole suite runs on each: `scripts/test` does both).
    async fn start_with(cfg: asc_gateway::config::Config, source: ConfigSource) -> Self {
        let url = match std::env::var("ASC_TEST_STORE").as_deref() {
            Ok("postgres") => asc_gateway::store::testing::fresh_postgres()
                .await
                .expect("ASC_TEST_STORE=postgres needs the test PostgreSQL"),
            _ => "sqlite::memory:".to_owned(),
        };
        let store = asc_gateway::store::Store::open(&url).await.unwrap();
        Self::start_on(cfg, source, store).await
    }

    async fn start_on(
        cfg: asc_gateway::config::Config,
        source: ConfigSource,
        store: asc_gateway::store::Store,
    ) -> Self {
        let state = AppState::new(cfg, store, source).await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls = asc_gateway::http::tls_source(&state);
        let scheme = if tls.is_some() { "https" } else { "http" };
        let admin_url = format!("{scheme}://{}", admin.local_addr().unwrap());
        let token = state.shutdown.clone();
        tokio::spawn(asc_gateway::http::serve(
            admin,
            asc_gateway::http::admin_router(state.clone()),
            tls.clone(),
            async move { token.cancelled().await },
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = asc_gateway::http::data_router(state.clone());
        let token = state.shutdown.clone();
        tokio::spawn(asc_gateway::http::serve(
            listener,
            router,
            tls,
            async move { token.cancelled().await },
        ));
        Self {
            url: format!("{scheme}://{addr}"),
            admin_url,
            state,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// Stats of the in-process mock provider named `provider`.
    pub fn mock(&self, provider: &str) -> MockStats {
        let live = self.state.live.load();
        live.mocks
            .iter()
            .find(|m| m.provider == provider)
            .unwrap_or_else(|| panic!("no mock provider {provider}"))
            .mock
            .stats()
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.post_raw(path, serde_json::to_vec(body).unwrap(), KEY)
            .await
    }

    pub async fn post_raw(&self, path: &str, body: Vec<u8>, key: &str) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .header("authorization", format!("Bearer {key}"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

impl TestGateway {
    /// An admin call with a bearer token; returns status and JSON body.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut rb = self
            .http
            .request(method, format!("{}{path}", self.admin_url));
        if !token.is_empty() {
            rb = rb.bearer_auth(token);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let resp = rb.send().await.unwrap();
        let status = resp.status().as_u16();
        let v = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, v)
    }

    /// A minimal chat call (`hi` to `model`) with [`KEY`].
    pub async fn chat(&self, model: &str) -> reqwest::Response {
        let body =
            serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        self.post("/v1/chat/completions", &body).await
    }

    /// A minimal chat call with `key`; returns the status.
    pub async fn chat_status(&self, key: &str, model: &str) -> u16 {
        let body =
            serde_json::json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
        self.post_raw(
            "/v1/chat/completions",
            serde_json::to_vec(&body).unwrap(),
            key,
        )
        .await
        .status()
        .as_u16()
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.state.shutdown.cancel();
    }
}

/// A config with one in-process mock per flavor, models `m-<flavor>`, and tenant `t`
/// holding [`KEY`]; `extra_providers`/`extra_models` are appended YAML list items.
pub fn config(extra_providers: &str, extra_models: &str, tenant_extra: &str) -> String {
    format!(
        r#"
server:
  max_body_bytes: 65536
providers:
  - {{name: mock-openai, kind: mock, flavor: openai, region: us}}
  - {{name: mock-anthropic, kind: mock, flavor: anthropic, region: us}}
  - {{name: mock-mistral, kind: mock, flavor: mistral, region: eu}}
{extra_providers}
models:
  - name: m-openai
    targets: [{{provider: mock-openai, model: gpt-4o-mini}}]
  - name: m-anthropic
    targets: [{{provider: mock-anthropic, model: claude-3-5-haiku-latest}}]
  - name: m-mistral
    targets: [{{provider: mock-mistral, model: mistral-small-latest}}]
{extra_models}
tenants:
  - name: t
    allowed_models: ["*"]
    keys: [{{name: main, key: "{KEY}"}}]
{tenant_extra}
"#
    )
}

/// Runs `$body` with `$p` bound to `$gw`'s store pool, whichever database it is on
/// (tests that reach the database directly, with bound arguments).
macro_rules! on_pool {
    ($gw:expr, $p:ident => $body:expr) => {
        match $gw.state.store.pool() {
            asc_gateway::store::Pool::Sqlite($p) => $body,
            asc_gateway::store::Pool::Postgres($p) => $body,
        }
    };
}
pub(crate) use on_pool;

/// The Redis server for multi-replica tests: `ASC_TEST_REDIS_URL`, default
/// `redis://127.0.0.1:6379`. Unreachable: skipped locally, a failure when `CI=true`.
pub async fn test_redis() -> Option<String> {
    let url =
        std::env::var("ASC_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let reachable = match redis::Client::open(url.as_str()) {
        Ok(c) => matches!(
            tokio::time::timeout(Duration::from_secs(3), c.get_multiplexed_async_connection())
                .await,
            Ok(Ok(_))
        ),
        Err(_) => false,
    };
    if reachable {
        return Some(url);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "Redis at {url} is unreachable (CI=true)"
    );
    eprintln!("skipping: Redis at {url} is unreachable");
    None
}

/// A free loopback port (for processes that need a fixed address in their config).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A YAML provider item of kind `openai` pointing at a fault upstream.
pub fn fault_provider(name: &str, base_url: &str) -> String {
    format!("  - {{name: {name}, kind: openai, api_key: k, region: us, base_url: \"{base_url}\"}}")
}

/// A response's `x-asc-request-id`.
pub fn request_id(r: &reqwest::Response) -> String {
    r.headers()["x-asc-request-id"].to_str().unwrap().to_owned()
}

/// The value of the first series of metric `name` that carries every label of `labels`.
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    series(text, name, labels).next()
}

/// The sum over every series of metric `name` that carries every label of `labels`.
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    series(text, name, labels).sum()
}

fn series<'t>(
    text: &'t str,
    name: &'t str,
    labels: &'t [(&'t str, &'t str)],
) -> impl Iterator<Item = f64> + 't {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(move |l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            let all = n == name
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
            all.then(|| value.parse().ok()).flatten()
        })
}

/// The gateway's `/metrics` text.
pub async fn metrics_text(gw: &TestGateway) -> String {
    gw.http
        .get(format!("{}/metrics", gw.admin_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Parses a whole SSE body.
pub fn sse_events(body: &[u8]) -> Vec<SseEvent> {
    let mut p = SseParser::new(1 << 24);
    let mut out = Vec::new();
    p.feed(body, &mut out).unwrap();
    p.finish(&mut out);
    out
}

/// What a client reassembles from a reply, on either surface.
#[derive(Debug, Default, PartialEq)]
pub struct Reassembled {
    pub text: String,
    /// (name, arguments JSON text)
    pub tool_calls: Vec<(String, String)>,
    pub stop: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The stream ended with its proper terminator (`[DONE]` / `message_stop`).
    pub terminated: bool,
    pub error: Option<Value>,
}

/// Reads an OpenAI chat completion.
pub fn openai_json(v: &Value) -> Reassembled {
    let msg = &v["choices"][0]["message"];
    Reassembled {
        text: msg["content"].as_str().unwrap_or_default().to_owned(),
        tool_calls: msg["tool_calls"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        (
                            c["function"]["name"].as_str().unwrap().to_owned(),
                            c["function"]["arguments"].as_str().unwrap().to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default(),
        stop: v["choices"][0]["finish_reason"]
            .as_str()
            .unwrap()
            .to_owned(),
        prompt_tokens: v["usage"]["prompt_tokens"].as_u64().unwrap(),
        completion_tokens: v["usage"]["completion_tokens"].as_u64().unwrap(),
        terminated: true,
        error: None,
    }
}

/// Reads an Anthropic message.
pub fn anthropic_json(v: &Value) -> Reassembled {
    let mut r = Reassembled {
        stop: v["stop_reason"].as_str().unwrap().to_owned(),
        prompt_tokens: v["usage"]["input_tokens"].as_u64().unwrap(),
        completion_tokens: v["usage"]["output_tokens"].as_u64().unwrap(),
        terminated: true,
        ..Default::default()
    };
    for b in v["content"].as_array().unwrap() {
        match b["type"].as_str().unwrap() {
            "text" => r.text.push_str(b["text"].as_str().unwrap()),
            "tool_use" => r.tool_calls.push((
                b["name"].as_str().unwrap().to_owned(),
                b["input"].to_string(),
            )),
            other => panic!("unexpected block {other}"),
        }
    }
    r
}

/// Reassembles an OpenAI chunk stream.
pub fn openai_stream(body: &[u8]) -> Reassembled {
    let mut r = Reassembled::default();
    let mut calls: Vec<(String, String)> = Vec::new();
    for ev in sse_events(body) {
        assert!(!r.terminated, "event after [DONE]");
        if ev.data == "[DONE]" {
            r.terminated = true;
            continue;
        }
        let v: Value = serde_json::from_str(&ev.data).unwrap();
        if v.get("error").is_some() {
            r.error = Some(v["error"].clone());
            continue;
        }
        assert_eq!(v["object"], "chat.completion.chunk");
        if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
            r.prompt_tokens = u["prompt_tokens"].as_u64().unwrap();
            r.completion_tokens = u["completion_tokens"].as_u64().unwrap();
        }
        let Some(choice) = v["choices"].get(0) else {
            continue;
        };
        if let Some(t) = choice["delta"]["content"].as_str() {
            r.text.push_str(t);
        }
        for tc in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = tc["index"].as_u64().unwrap() as usize;
            if calls.len() <= i {
                calls.resize(i + 1, Default::default());
            }
            if let Some(n) = tc["function"]["name"].as_str() {
                calls[i].0 = n.to_owned();
            }
            if let Some(a) = tc["function"]["arguments"].as_str() {
                calls[i].1.push_str(a);
            }
        }
        if let Some(f) = choice["finish_reason"].as_str() {
            r.stop = f.to_owned();
        }
    }
    r.tool_calls = calls;
    r
}

/// Reassembles an Anthropic event stream, checking event order.
pub fn anthropic_stream(body: &[u8]) -> Reassembled {
    let mut r = Reassembled::default();
    let mut blocks: Vec<(String, String, String)> = Vec::new(); // (type, name, text)
    let events = sse_events(body);
    if let Some(first) = events.first() {
        assert_eq!(first.event.as_deref(), Some("message_start"));
    }
    for ev in events {
        assert!(!r.terminated, "event after message_stop");
        let v: Value = serde_json::from_str(&ev.data).unwrap();
        assert_eq!(ev.event.as_deref(), v["type"].as_str(), "event name = type");
        match ev.event.as_deref().unwrap() {
            "message_start" => {
                r.prompt_tokens = v["message"]["usage"]["input_tokens"].as_u64().unwrap();
            }
            "content_block_start" => {
                let b = &v["content_block"];
                assert_eq!(v["index"].as_u64().unwrap() as usize, blocks.len());
                blocks.push((
                    b["type"].as_str().unwrap().to_owned(),
                    b["name"].as_str().unwrap_or_default().to_owned(),
                    String::new(),
                ));
            }
            "content_block_delta" => {
                let i = v["index"].as_u64().unwrap() as usize;
                let d = &v["delta"];
                match d["type"].as_str().unwrap() {
                    "text_delta" => blocks[i].2.push_str(d["text"].as_str().unwrap()),
                    "input_json_delta" => blocks[i].2.push_str(d["partial_json"].as_str().unwrap()),
                    // A citation of the block's text (documents with citations on).
                    "citations_delta" => assert!(d["citation"].is_object(), "{d}"),
                    other => panic!("unexpected delta {other}"),
                }
            }
            "content_block_stop" | "ping" => {}
            "message_delta" => {
                r.stop = v["delta"]["stop_reason"].as_str().unwrap().to_owned();
                r.completion_tokens = v["usage"]["output_tokens"].as_u64().unwrap();
                if let Some(n) = v["usage"]["input_tokens"].as_u64() {
                    r.prompt_tokens = n;
                }
            }
            "message_stop" => r.terminated = true,
            "error" => r.error = Some(v["error"].clone()),
            other => panic!("unexpected event {other}"),
        }
    }
    for (ty, name, text) in blocks {
        match ty.as_str() {
            "text" => r.text.push_str(&text),
            "tool_use" => r.tool_calls.push((name, text)),
            other => panic!("unexpected block {other}"),
        }
    }
    r
}
