//! What a request reads: the live generation (config plus everything built from it),
//! swapped whole on reload through one `ArcSwap`, so a request holds one generation from
//! start to finish and never sees a mix.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::oidc::Oidc;
use crate::admin::principal::{Principal, Role};
use crate::audit::Auditor;
use crate::cache::{CacheStore, ResponseCache};
use crate::config::{self, Config, ConfigErrors, ProviderKind};
use crate::directory::Directory;
use crate::limits::{Counters, Limits};
use crate::mock::{self, Flavor, Mock};
use crate::prices::PriceBook;
use crate::providers::Upstream;
use crate::record::Recorder;
use crate::routing::{Health, TargetHealth};

/// The response cache's size bound.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;
/// How often the retention pass runs (and once at start).
const RETENTION_EVERY: Duration = Duration::from_secs(3600);
use crate::store::{ConfigVersion, Store, StoreError};
use crate::telemetry::Metrics;

/// Where the running config came from.
#[derive(Debug, Clone)]
pub enum ConfigSource {
    /// `serve --demo`: built in, nothing to reload.
    Demo,
    File(PathBuf),
    /// Given directly (tests).
    Inline,
}

impl ConfigSource {
    pub fn describe(&self) -> String {
        match self {
            Self::Demo => "demo".into(),
            Self::File(p) => p.display().to_string(),
            Self::Inline => "inline".into(),
        }
    }
}

/// Shared by every request; cheap to clone (`Arc`s inside).
#[derive(Clone)]
pub struct AppState {
    pub live: Arc<ArcSwap<Live>>,
    /// The HTTP clients (providers; the gateway's own calls).
    pub clients: Clients,
    pub store: Store,
    pub source: ConfigSource,
    /// Rate and budget counters of every tenant and provider (kept across reloads).
    pub limits: Arc<Limits>,
    /// Where finished requests' records go.
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    /// Every target's breaker and latency averages (kept across reloads).
    pub health: Arc<Health>,
    /// This replica's audit chain writer.
    pub audit: Arc<Auditor>,
    /// The exact-match response cache: in memory (size-bounded) or Redis when
    /// `storage.redis` is set; kept across reloads.
    pub cache: Arc<CacheStore>,
    /// Every experiment's runtime and controller (kept across reloads while unchanged).
    pub experiments: Arc<crate::experiments::Registry>,
    /// Serializes reloads (never taken by requests).
    reload_lock: Arc<tokio::sync::Mutex<()>>,
    /// Background tasks, drained at shutdown.
    pub tasks: TaskTracker,
    pub shutdown: CancellationToken,
}

/// One generation: the config and what was built from it.
pub struct Live {
    pub config: Arc<Config>,
    /// Indexed like `config.providers`.
    pub upstreams: Vec<Upstream>,
    /// Tenants and keys; swapped on its own when keys or API tenants change.
    pub directory: ArcSwap<Directory>,
    /// Prices: the config's over the built-in table.
    pub prices: PriceBook,
    /// Per provider (indexed like `config.providers`): the price kind ("openai", ...)
    /// and, for providers with a budget, their counters.
    pub provider_kinds: Vec<&'static str>,
    pub provider_counters: Vec<Option<Arc<Counters>>>,
    /// Health of every target and fallback, by `provider/model`.
    pub health: HashMap<String, Arc<TargetHealth>>,
    /// Static admin tokens by SHA-256.
    pub admin_tokens: HashMap<[u8; 32], Principal>,
    pub oidc: Option<Oidc>,
    /// In-process mock providers of this generation; stopped when it is dropped.
    pub mocks: Vec<MockHandle>,
    /// This generation's experiments by model, with their runtimes.
    pub experiments: crate::experiments::Active,
    /// Where sampled requests' spans go (`telemetry.otlp_endpoint`); its task stops at
    /// shutdown or once this generation and its last request are gone.
    pub traces: Option<crate::traces::Exporter>,
    /// The replicas' shared state (`storage.redis`): breaker openings are published
    /// through it.
    pub shared: Option<Arc<crate::limits::Shared>>,
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

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("building the HTTP client: {0}")]
    Http(String),
    #[error("starting in-process mock providers: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
}

/// Why a reload was refused; the running config stays.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("the config is built in (--demo) and cannot be reloaded")]
    NotAFile,
    #[error("the new config is invalid:\n{0}")]
    Invalid(ConfigErrors),
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("starting the new config failed: {0}")]
    Build(String),
}

/// The gateway's two HTTP clients, cheap to clone (pools inside).
#[derive(Clone)]
pub struct Clients {
    /// Provider calls (hyper's pooled client, see `providers`).
    pub upstream: crate::providers::Client,
    /// The gateway's own calls: webhooks, OIDC JWKS, OTLP export.
    pub http: reqwest::Client,
}

/// The HTTP client of the gateway's own calls (webhooks, OIDC JWKS, OTLP export): one
/// pool per host, keep-alive, `TCP_NODELAY`, HTTP/2 when TLS ALPN offers it, redirects
/// not followed; the roots of `SSL_CERT_FILE` when set (see
/// [`crate::providers::ca_bundle`]). Provider calls go through
/// [`crate::providers::client`].
pub fn http_client(
    roots: Option<&[rustls::pki_types::CertificateDer<'static>]>,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder();
    if let Some(roots) = roots {
        builder = builder.tls_built_in_root_certs(false);
        for root in roots {
            builder = builder.add_root_certificate(reqwest::Certificate::from_der(root)?);
        }
    }
    builder
        .tcp_nodelay(true)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .user_agent(concat!("asc/", env!("CARGO_PKG_VERSION")))
        .build()
}

impl AppState {
    /// Builds the first generation and records it as a config version.
    pub async fn new(
        config: Config,
        store: Store,
        source: ConfigSource,
    ) -> Result<Self, StartError> {
        let roots = crate::providers::ca_bundle().map_err(StartError::Http)?;
        let clients = Clients {
            upstream: crate::providers::client(roots.as_deref()).map_err(StartError::Http)?,
            http: http_client(roots.as_deref()).map_err(|e| StartError::Http(e.to_string()))?,
        };
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let config = Arc::new(config);
        // With `storage.redis`, rate limits and budgets are shared by every replica.
        let shared = match &config.raw.storage.redis {
            Some(url) => Some(Arc::new(
                crate::limits::Shared::connect(url)
                    .await
                    .map_err(StartError::Config)?,
            )),
            None => None,
        };
        if shared.is_none() && store.backend() == crate::store::Backend::Postgres {
            tracing::warn!(
                "storage.database is PostgreSQL but storage.redis is not set: replicas sharing the database each enforce rate limits and budgets on their own; set storage.redis to share them"
            );
        }
        let limits = Arc::new(Limits::new(store.clone(), shared));
        let metrics = Arc::new(Metrics::new());
        let key = match audit_key_path(&config) {
            Some(path) => crate::audit::load_or_create_key(&path)?,
            None => ed25519_dalek::SigningKey::from_bytes(&rand::random()),
        };
        let audit = Arc::new(Auditor::open(store.clone(), key).await?);
        let (notify_tx, notify_rx) = tokio::sync::mpsc::unbounded_channel();
        let recorder = Recorder::start(
            store.clone(),
            limits.clone(),
            metrics.clone(),
            audit.clone(),
            notify_tx,
            Duration::from_secs(config.raw.audit.checkpoint_interval_s.unwrap_or(60).max(1)),
            &tasks,
            shutdown.clone(),
            Duration::from_millis(config.raw.audit.flush_ms.unwrap_or(100)),
        );
        let directory = build_directory(&config, &store, &limits).await?;
        let health = Arc::new(Health::default());
        let cache = Arc::new(match &config.raw.storage.redis {
            Some(url) => CacheStore::redis(url).await.map_err(StartError::Config)?,
            None => CacheStore::Memory(ResponseCache::new(CACHE_BYTES)),
        });
        let mut live = Live::build(
            config.clone(),
            directory,
            &clients,
            &tasks,
            &shutdown,
            &limits,
            &health,
        )
        .await?;
        let experiments = Arc::new(crate::experiments::Registry::default());
        let env = crate::experiments::Env {
            store: store.clone(),
            recorder: recorder.clone(),
            tasks: tasks.clone(),
            shutdown: shutdown.clone(),
        };
        live.attach_experiments(experiments.activate(&config, &env).await, &health);
        if let Some(sh) = limits.shared() {
            // Other replicas' breaker openings, applied here as they happen. Started once
            // the targets exist (built above), so the breakers already open when it
            // subscribes are applied to them rather than ignored as unknown.
            tasks.spawn(sh.clone().follow_circuits(health.clone(), shutdown.clone()));
        }
        let state = Self {
            live: Arc::new(ArcSwap::from_pointee(live)),
            clients,
            store,
            source,
            limits,
            recorder,
            metrics,
            health,
            cache,
            audit,
            experiments,
            reload_lock: Arc::new(tokio::sync::Mutex::new(())),
            tasks,
            shutdown,
        };
        crate::notify::start(
            notify_rx,
            state.live.clone(),
            state.clients.http.clone(),
            state.metrics.clone(),
            &state.tasks,
        );
        state.record_version(&config, "startup").await?;
        state.start_retention(RETENTION_EVERY);
        Ok(state)
    }

    async fn record_version(
        &self,
        config: &Config,
        actor: &str,
    ) -> Result<ConfigVersion, StoreError> {
        let v = self
            .store
            .add_config_version(
                &config.hash,
                actor,
                &self.source.describe(),
                &config::redacted_json(&config.raw),
            )
            .await?;
        self.event(
            "config_loaded",
            actor,
            None,
            &serde_json::json!({"seq": v.seq, "hash": v.hash, "source": v.source}),
        )
        .await?;
        Ok(v)
    }

    /// Records an admin event: in the event log (timeline) and in the audit chain.
    pub async fn event(
        &self,
        kind: &str,
        actor: &str,
        tenant: Option<&str>,
        payload: &serde_json::Value,
    ) -> Result<(), StoreError> {
        self.store.add_event(kind, actor, tenant, payload).await?;
        let ts = crate::store::timestamp(std::time::SystemTime::now());
        self.audit
            .append(vec![(
                ts,
                kind.to_owned(),
                actor.to_owned(),
                tenant.map(str::to_owned),
                payload.clone(),
            )])
            .await
    }

    /// What experiment controllers are started with.
    pub fn experiment_env(&self) -> crate::experiments::Env {
        crate::experiments::Env {
            store: self.store.clone(),
            recorder: self.recorder.clone(),
            tasks: self.tasks.clone(),
            shutdown: self.shutdown.clone(),
        }
    }

    /// Rebuilds the current generation's directory from the config and the store, so a
    /// key or tenant change counts from the next request.
    pub async fn refresh_directory(&self) -> Result<(), StoreError> {
        let live = self.live.load_full();
        let dir = build_directory(&live.config, &self.store, &self.limits).await?;
        live.directory.store(Arc::new(dir));
        Ok(())
    }

    /// Re-reads the config file, validates it whole, builds and swaps in a new
    /// generation. In-flight requests finish on the generation they started with.
    pub async fn reload(&self, actor: &str) -> Result<ConfigVersion, ReloadError> {
        let _guard = self.reload_lock.lock().await;
        let ConfigSource::File(path) = &self.source else {
            return Err(ReloadError::NotAFile);
        };
        let loaded = match config::load_file(path) {
            Ok(c) => self.api_tenants_fit(c).await?,
            Err(errs) => Err(errs),
        };
        let config = match loaded {
            Ok(c) => Arc::new(c),
            Err(errs) => {
                let _ = self.event(
                        "config_rejected",
                        actor,
                        None,
                        &serde_json::json!({"errors": errs.0.iter().map(ToString::to_string).collect::<Vec<_>>()}),
                    )
                    .await;
                return Err(ReloadError::Invalid(errs));
            }
        };
        // Tenants the file no longer has lose their keys.
        let old = self.live.load_full();
        if old.config.server.tls.is_some() != config.server.tls.is_some() {
            tracing::warn!(
                "server.tls was added or removed: the listeners change on the next start"
            );
        }
        for t in &old.config.tenants {
            if config.tenant(&t.name).is_none() {
                self.store.revoke_tenant_keys(&t.name).await?;
            }
        }
        let directory = build_directory(&config, &self.store, &self.limits).await?;
        let live = Live::build(
            config.clone(),
            directory,
            &self.clients,
            &self.tasks,
            &self.shutdown,
            &self.limits,
            &self.health,
        )
        .await
        .map_err(|e| ReloadError::Build(e.to_string()))?;
        let mut live = live;
        let active = self
            .experiments
            .activate(&config, &self.experiment_env())
            .await;
        live.attach_experiments(active, &self.health);
        self.live.store(Arc::new(live));
        let v = self.record_version(&config, actor).await?;
        tracing::info!(seq = v.seq, hash = %v.hash, %actor, "config reloaded");
        Ok(v)
    }

    /// `config`, or why the tenants the admin API made refuse it: a budgeted one would
    /// reach an unpriced model (the API refused such a tenant when it was made; a file
    /// must not open the way around its budget afterwards).
    async fn api_tenants_fit(
        &self,
        config: config::Config,
    ) -> Result<Result<config::Config, config::ConfigErrors>, StoreError> {
        let errs = api_tenant_errors(&config, &self.store).await?;
        Ok(if errs.is_empty() {
            Ok(config)
        } else {
            Err(config::ConfigErrors(errs))
        })
    }

    /// Polls the store for changes made by other processes (`asc keys ...`) and
    /// refreshes the directory when there are some.
    pub fn watch_store(&self, every: Duration) {
        let state = self.clone();
        self.tasks.spawn(async move {
            let mut last = state.store.generation().await.ok();
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    () = state.shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Ok(now) = state.store.generation().await else {
                    continue;
                };
                if last.as_ref() != Some(&now) {
                    if let Err(e) = state.refresh_directory().await {
                        tracing::warn!(error = %e, "refreshing keys and tenants failed");
                        continue;
                    }
                    last = Some(now);
                }
            }
        });
    }
}

impl AppState {
    /// Runs the retention pass (`audit.retention_days`, read from the live generation
    /// each time, so a reload changes it) at start and then every `every`. A pass that
    /// pruned something is itself an entry of the audit chain (`audit_pruned`).
    pub fn start_retention(&self, every: Duration) {
        let state = self.clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    () = state.shutdown.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let Some(days) = state.live.load().config.raw.audit.retention_days else {
                    continue;
                };
                match crate::audit::prune(&state.store, days, std::time::SystemTime::now()).await {
                    Ok(done) if done.records > 0 || done.payloads > 0 => {
                        tracing::info!(
                            records = done.records,
                            payloads = done.payloads,
                            before = %done.before,
                            "retention pass"
                        );
                        let payload = serde_json::json!({
                            "retention_days": days,
                            "before": done.before,
                            "records": done.records,
                            "payloads": done.payloads,
                        });
                        if let Err(e) = state
                            .event("audit_pruned", "retention", None, &payload)
                            .await
                        {
                            tracing::error!(error = %e, "recording the retention pass failed");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::error!(error = %e, "retention pass failed"),
                }
            }
        });
    }
}

/// What the tenants the admin API made have against `config` (see
/// [`config::Config::unpriced_for`]): checked at start and on every reload.
pub async fn api_tenant_errors(
    config: &config::Config,
    store: &Store,
) -> Result<Vec<config::ConfigError>, StoreError> {
    let mut errs = Vec::new();
    for t in store.tenants().await? {
        if config.tenant(&t.name).is_none() {
            errs.extend(config.unpriced_for(&t));
        }
    }
    Ok(errs)
}

/// Where the audit signing key lives: `audit.signing_key_file`, else beside a file
/// database, or `./asc-data/` for PostgreSQL; an in-memory database gets an ephemeral
/// key (`None`).
pub fn audit_key_path(config: &Config) -> Option<PathBuf> {
    if let Some(p) = &config.raw.audit.signing_key_file {
        return Some(PathBuf::from(p));
    }
    let db = config
        .raw
        .storage
        .database
        .as_deref()
        .unwrap_or("sqlite://./asc-data/asc.db");
    if db.starts_with("postgres://") || db.starts_with("postgresql://") {
        return Some(PathBuf::from("./asc-data/audit-signing.key"));
    }
    let path = db.strip_prefix("sqlite://")?;
    (!path.contains(":memory:")).then(|| {
        std::path::Path::new(path).parent().map_or_else(
            || PathBuf::from("audit-signing.key"),
            |d| d.join("audit-signing.key"),
        )
    })
}

async fn build_directory(
    config: &Config,
    store: &Store,
    limits: &Limits,
) -> Result<Directory, StoreError> {
    let tenants = store.tenants().await?;
    let keys = store.live_keys().await?;
    for (name, period) in Directory::tenant_names(config, &tenants) {
        limits.counters(&format!("tenant:{name}"), period).await?;
    }
    Ok(Directory::build(config, tenants, &keys, &|name| {
        limits.counters_now(&format!("tenant:{name}"))
    }))
}

impl Live {
    /// Builds a generation: starts its in-process mocks on loopback and the upstreams.
    pub async fn build(
        config: Arc<Config>,
        directory: Directory,
        clients: &Clients,
        tasks: &TaskTracker,
        shutdown: &CancellationToken,
        limits: &Limits,
        health: &Health,
    ) -> Result<Self, StartError> {
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
            upstreams.push(Upstream::new(p, base, clients.upstream.clone()));
        }
        let admin_tokens = config
            .raw
            .admin
            .tokens
            .iter()
            .filter_map(|t| {
                let role = Role::parse(&t.role)?;
                let principal = Principal {
                    actor: format!("token:{}", t.name),
                    role,
                    tenants: t.tenants.clone(),
                    via: "token",
                };
                Some((Sha256::digest(t.token.as_bytes()).into(), principal))
            })
            .collect();
        let oidc = config
            .raw
            .admin
            .oidc
            .as_ref()
            .map(|o| Oidc::new(o, clients.http.clone()));
        // Validation already refused bad prices; this cannot fail for a loaded config.
        let prices = PriceBook::new(&config.raw.prices)
            .map_err(|e| StartError::Config(format!("invalid prices: {e:?}")))?;
        let provider_kinds = config
            .providers
            .iter()
            .map(|p| p.kind.price_kind())
            .collect();
        let mut provider_counters = Vec::with_capacity(config.providers.len());
        for p in &config.raw.providers {
            provider_counters.push(match &p.budget {
                Some(b) => Some(
                    limits
                        .counters(&format!("provider:{}", p.name), Some(&b.period))
                        .await?,
                ),
                None => None,
            });
        }
        let health = (config.models.iter())
            .flat_map(|m| m.targets.iter().chain(&m.fallbacks))
            .map(|t| (t.key.clone(), health.of(&t.key)))
            .collect();
        let telemetry = &config.raw.telemetry;
        let traces = telemetry.otlp_endpoint.as_deref().map(|endpoint| {
            crate::traces::Exporter::start(
                endpoint,
                telemetry.service_name.as_deref().unwrap_or("asc"),
                clients.http.clone(),
                tasks,
                shutdown.clone(),
            )
        });
        Ok(Self {
            config,
            upstreams,
            health,
            prices,
            provider_kinds,
            provider_counters,
            directory: ArcSwap::from_pointee(directory),
            admin_tokens,
            oidc,
            mocks,
            experiments: crate::experiments::Active::default(),
            traces,
            shared: limits.shared().cloned(),
        })
    }

    /// Adds the generation's experiments, and their candidates to the targets whose
    /// health is tracked.
    pub fn attach_experiments(&mut self, active: crate::experiments::Active, health: &Health) {
        for (spec, _) in active.all() {
            let key = &spec.candidate.key;
            self.health
                .entry(key.clone())
                .or_insert_with(|| health.of(key));
        }
        self.experiments = active;
    }
}
