//! What a request reads: the live generation (config plus everything built from it),
//! swapped whole on reload through one `ArcSwap`, so a request holds one generation from
//! start to finish and never sees a mix.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{Config, ProviderKind};
use crate::mock::{self, Flavor, Mock};
use crate::providers::Upstream;

/// Shared by every request; cheap to clone (`Arc`s inside).
#[derive(Clone)]
pub struct AppState {
    pub live: Arc<ArcSwap<Live>>,
    pub http: reqwest::Client,
    /// Background tasks, drained at shutdown.
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
}

/// One generation: the config and what was built from it.
pub struct Live {
    pub config: Arc<Config>,
    /// Indexed like `config.providers`.
    pub upstreams: Vec<Upstream>,
    /// In-process mock providers of this generation; stopped when it is dropped.
    pub mocks: Vec<MockHandle>,
}

/// A running in-process mock; dropping it stops its server.
pub struct MockHandle {
    pub provider: String,
    pub mock: Arc<Mock>,
    pub base_url: String,
    stop: CancellationToken,
}

impl Drop for MockHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The HTTP client every upstream call goes through: one pool per upstream host,
/// keep-alive, `TCP_NODELAY`, HTTP/2 when TLS ALPN offers it.
pub fn http_client() -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .user_agent(concat!("asc/", env!("CARGO_PKG_VERSION")))
        .build()
}

impl AppState {
    pub async fn new(config: Config) -> std::io::Result<Self> {
        let http = http_client().map_err(std::io::Error::other)?;
        let tasks = TaskTracker::new();
        let live = Live::build(Arc::new(config), &http, &tasks).await?;
        Ok(Self {
            live: Arc::new(ArcSwap::from_pointee(live)),
            http,
            tasks,
            shutdown: CancellationToken::new(),
        })
    }
}

impl Live {
    /// Builds a generation: starts its in-process mocks on loopback and the upstreams.
    pub async fn build(
        config: Arc<Config>,
        http: &reqwest::Client,
        tasks: &TaskTracker,
    ) -> std::io::Result<Self> {
        let mut mocks = Vec::new();
        let mut upstreams = Vec::with_capacity(config.providers.len());
        for p in &config.providers {
            let base = match &p.kind {
                ProviderKind::Mock(settings) => {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                    let addr = listener.local_addr()?;
                    let m = Mock::new(settings.clone());
                    let stop = CancellationToken::new();
                    let token = stop.clone();
                    let server = mock::serve(listener, m.clone());
                    tasks.spawn(async move {
                        tokio::select! {
                            _ = server => {}
                            () = token.cancelled() => {}
                        }
                    });
                    let base_url = match settings.flavor {
                        Flavor::Anthropic => format!("http://{addr}"),
                        Flavor::Mistral | Flavor::OpenAi => format!("http://{addr}/v1"),
                    };
                    mocks.push(MockHandle {
                        provider: p.name.clone(),
                        mock: m,
                        base_url: base_url.clone(),
                        stop,
                    });
                    Some(base_url)
                }
                _ => None,
            };
            upstreams.push(Upstream::new(p, base, http.clone()));
        }
        Ok(Self {
            config,
            upstreams,
            mocks,
        })
    }
}
