//! The `asc` command line (contract section 1).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config};
use crate::mock::{self, Flavor, Mock, MockSettings};
use crate::state::{AppState, ConfigSource};
use crate::store::Store;
use crate::{admin, demo, http};

#[derive(Debug, Parser)]
#[command(
    name = "asc",
    version,
    about = "ASC: a self-hosted AI gateway and control plane"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs the gateway.
    Serve {
        #[arg(long, default_value = "asc.yaml")]
        config: PathBuf,
        /// Runs a built-in demo setup: no file and no keys needed.
        #[arg(long)]
        demo: bool,
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Validates a config file: exit 0, or exit 2 with every error.
    CheckConfig {
        #[arg(long, default_value = "asc.yaml")]
        config: PathBuf,
    },
    /// Creates, lists and revokes API keys in the store.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
        #[arg(long, default_value = "asc.yaml", global = true)]
        config: PathBuf,
    },
    /// Verifies, exports and identifies the audit trail.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
        #[arg(long, default_value = "asc.yaml", global = true)]
        config: PathBuf,
    },
    /// Shows an experiment's status, or queues an action for the running gateway.
    Experiments {
        #[command(subcommand)]
        command: ExperimentsCommand,
        #[arg(long, default_value = "asc.yaml", global = true)]
        config: PathBuf,
    },
    /// Runs a stand-in upstream speaking a provider's real wire format.
    MockProvider {
        #[arg(long, value_enum)]
        flavor: FlavorArg,
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 0)]
        ttft_ms: u64,
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        #[arg(long, default_value_t = 4)]
        chunks: u32,
        #[arg(long, default_value_t = 0.0)]
        fail_rate: f64,
        #[arg(long, default_value_t = 500)]
        fail_status: u16,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Require this key in the flavor's auth header.
        #[arg(long)]
        api_key: Option<String>,
        /// Serve HTTPS with this PEM certificate (ALPN `h2` and `http/1.1`, as the
        /// providers' fronts offer them); needs --tls-key.
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<std::path::PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Creates a key and prints it once.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        /// Lifetime such as 30d or 12h; none: until revoked.
        #[arg(long)]
        expires_in: Option<String>,
    },
    /// Lists keys (never the keys themselves).
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revokes a key; it stops working on the next request.
    Revoke { id: String },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Verifies the audit log, or an export offline (exit 0 intact, 3 tampered).
    Verify {
        /// A JSON Lines export to verify instead of the database.
        #[arg(long, requires = "public_key")]
        export: Option<PathBuf>,
        /// The public key (as `asc audit public-key` prints it) the export must be signed with.
        #[arg(long, requires = "export")]
        public_key: Option<PathBuf>,
    },
    /// Writes the audit log as JSON Lines on stdout, with hashes and checkpoints.
    Export {
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
    },
    /// Prints the public half of the audit signing key.
    PublicKey,
}

#[derive(Debug, Subcommand)]
enum ExperimentsCommand {
    /// Prints the experiment's status (as `GET /admin/v1/experiments/NAME`).
    Status { name: String },
    /// Promotes the candidate.
    Promote { name: String },
    /// Rolls the candidate back (weight 0).
    Rollback { name: String },
    /// Pauses the experiment (weight 0 until resumed).
    Pause { name: String },
    /// Resumes a paused experiment.
    Resume { name: String },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FlavorArg {
    Anthropic,
    Mistral,
    Openai,
}

/// Runs the parsed command; returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::CheckConfig { config } => check_config(&config),
        Command::Serve {
            config,
            demo,
            log_format,
        } => {
            init_logging(log_format);
            let (cfg, source) = if demo {
                (
                    config::load_str(&demo::config_yaml(), &|_| None),
                    ConfigSource::Demo,
                )
            } else {
                (config::load_file(&config), ConfigSource::File(config))
            };
            let cfg = match cfg {
                Ok(c) => c,
                Err(errs) => {
                    let _ = writeln!(std::io::stderr(), "{errs}");
                    return ExitCode::from(2);
                }
            };
            runtime_exit(serve(cfg, source))
        }
        Command::Keys { command, config } => {
            init_logging(LogFormat::Text);
            match load_config(&config) {
                Ok(cfg) => runtime_exit(keys(cfg, command)),
                Err(code) => code,
            }
        }
        Command::Audit { command, config } => {
            init_logging(LogFormat::Text);
            audit_command(command, &config)
        }
        Command::Experiments { command, config } => {
            init_logging(LogFormat::Text);
            match load_config(&config) {
                Ok(cfg) => experiments_command(cfg, command),
                Err(code) => code,
            }
        }
        Command::MockProvider {
            flavor,
            listen,
            ttft_ms,
            latency_ms,
            chunks,
            fail_rate,
            fail_status,
            seed,
            api_key,
            tls_cert,
            tls_key,
        } => {
            init_logging(LogFormat::Text);
            let tls = match (tls_cert, tls_key) {
                (Some(cert), Some(key)) => match crate::tls::load(&cert, &key) {
                    Ok(t) => Some(t.server),
                    Err(e) => {
                        let flag = if e.field == "key_file" {
                            "--tls-key"
                        } else {
                            "--tls-cert"
                        };
                        let _ = writeln!(std::io::stderr(), "{flag}: {e}");
                        return ExitCode::from(2);
                    }
                },
                _ => None,
            };
            if !(0.0..=1.0).contains(&fail_rate) {
                let _ = writeln!(std::io::stderr(), "--fail-rate must be between 0 and 1");
                return ExitCode::from(2);
            }
            let mut s = MockSettings::new(match flavor {
                FlavorArg::Anthropic => Flavor::Anthropic,
                FlavorArg::Mistral => Flavor::Mistral,
                FlavorArg::Openai => Flavor::OpenAi,
            });
            s.ttft_ms = ttft_ms;
            s.latency_ms = latency_ms;
            s.chunks = chunks.max(1);
            s.fail_rate = fail_rate;
            s.fail_status = fail_status;
            s.seed = seed;
            s.api_key = api_key;
            runtime_exit(mock_provider(s, listen, tls))
        }
    }
}

fn audit_command(command: AuditCommand, config_path: &std::path::Path) -> ExitCode {
    let mut out = std::io::stdout();
    if let AuditCommand::Verify {
        export: Some(export),
        public_key: Some(pk),
    } = &command
    {
        // Offline: no config, no database.
        let read =
            |p: &PathBuf| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
        let result = read(export).and_then(|text| {
            let key = read(pk).and_then(|k| {
                crate::audit::parse_public_key(&k)
                    .ok_or_else(|| "not an audit public key".to_owned())
            })?;
            let (entries, checkpoints) = crate::audit::read_export(&text)?;
            Ok(crate::audit::verify(&entries, &checkpoints, Some(&key)))
        });
        return match result {
            Ok(report) => print_report(&report),
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "error: {e}");
                ExitCode::from(1)
            }
        };
    }
    let cfg = match config::load_file(config_path) {
        Ok(c) => c,
        Err(errs) => {
            let _ = writeln!(std::io::stderr(), "{errs}");
            return ExitCode::from(2);
        }
    };
    if let AuditCommand::PublicKey = command {
        return match crate::state::audit_key_path(&cfg)
            .map(|p| crate::audit::load_or_create_key(&p))
        {
            Some(Ok(key)) => {
                let _ = writeln!(out, "{}", config::hex(key.verifying_key().as_bytes()));
                ExitCode::SUCCESS
            }
            Some(Err(e)) => {
                let _ = writeln!(std::io::stderr(), "error: {e}");
                ExitCode::from(1)
            }
            None => {
                let _ = writeln!(
                    std::io::stderr(),
                    "error: an in-memory database has no lasting audit key"
                );
                ExitCode::from(2)
            }
        };
    }
    let mut command = command;
    if let AuditCommand::Export { since, until } = &mut command {
        match crate::store::time_bounds(["--since", "--until"], since.as_deref(), until.as_deref())
        {
            Ok(bounds) => (*since, *until) = bounds,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let r: anyhow::Result<ExitCode> = runtime().and_then(|rt| {
        rt.block_on(async {
            let url = database_url(&cfg);
            let store = Store::open(&url)
                .await
                .with_context(|| format!("opening the store {url}"))?;
            Ok(match command {
                AuditCommand::Export { since, until } => {
                    let text =
                        crate::audit::export(&store, since.as_deref(), until.as_deref()).await?;
                    out.write_all(text.as_bytes())?;
                    ExitCode::SUCCESS
                }
                _ => print_report(&crate::audit::verify_store(&store).await?),
            })
        })
    });
    r.unwrap_or_else(|e| {
        let _ = writeln!(std::io::stderr(), "error: {e:#}");
        ExitCode::from(1)
    })
}

/// Prints a verification report; exit 0 intact, 3 tampered.
fn print_report(r: &crate::audit::Report) -> ExitCode {
    let mut out = std::io::stdout();
    let _ = writeln!(
        out,
        "{}",
        serde_json::to_string_pretty(r).unwrap_or_default()
    );
    if r.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

/// `asc experiments`: the status is read from the store; an action is queued in the
/// store for the running gateway's controller (the one place decisions are made, so each
/// is audited in the chain), and its result awaited for a few seconds.
fn experiments_command(cfg: Config, command: ExperimentsCommand) -> ExitCode {
    use crate::experiments::{Spec, controller};
    let (name, action) = match &command {
        ExperimentsCommand::Status { name } => (name, None),
        ExperimentsCommand::Promote { name } => (name, Some("promote")),
        ExperimentsCommand::Rollback { name } => (name, Some("rollback")),
        ExperimentsCommand::Pause { name } => (name, Some("pause")),
        ExperimentsCommand::Resume { name } => (name, Some("resume")),
    };
    let Some(spec) = (cfg.raw.experiments.iter())
        .find(|e| e.name == *name)
        .and_then(|e| Spec::compile(e, &cfg))
    else {
        let _ = writeln!(
            std::io::stderr(),
            "error: no experiment `{name}` in the config"
        );
        return ExitCode::from(2);
    };
    let result = runtime().and_then(|rt| {
        rt.block_on(async {
            let url = database_url(&cfg);
            let store = Store::open(&url)
                .await
                .with_context(|| format!("opening the store {url}"))?;
            let mut out = std::io::stdout();
            let Some(action) = action else {
                let status = match store.experiment_state(&spec.name).await? {
                    Some((hash, json)) if hash == spec.hash => {
                        serde_json::from_str::<controller::Status>(&json)
                            .context("reading the saved status")?
                    }
                    _ => controller::Status::fresh(&spec, 0),
                };
                let view = controller::view(&spec, &status, 0);
                writeln!(out, "{}", serde_json::to_string_pretty(&view)?)?;
                return Ok(());
            };
            let actor = format!(
                "cli:{}",
                std::env::var("USER").unwrap_or_else(|_| "unknown".into())
            );
            let id = store
                .add_experiment_command(&spec.name, action, &actor)
                .await?;
            for _ in 0..50 {
                if let Some(result) = store.experiment_command_result(id).await? {
                    let v: serde_json::Value = serde_json::from_str(&result)?;
                    if v["ok"] == true {
                        writeln!(out, "{action}: done; the experiment is {}", v["state"])?;
                        return Ok(());
                    }
                    anyhow::bail!("{action} refused: {}", v["error"].as_str().unwrap_or("?"));
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            writeln!(
                out,
                "{action}: queued; the gateway applies it when it runs (none answered within 5 s)"
            )?;
            Ok(())
        })
    });
    runtime_exit(result)
}

/// What a valid config may still get wrong: records not stored, tenants an experiment
/// will never enrol.
fn config_warnings(cfg: &Config) -> Vec<String> {
    let mut out = Vec::new();
    if cfg.raw.audit.durability.as_deref() == Some("none") {
        out.push(
            "audit.durability: none stores no execution records and puts no request in the audit trail: for benchmarks only".into(),
        );
    }
    for (i, raw) in cfg.raw.experiments.iter().enumerate() {
        let Some(spec) = crate::experiments::Spec::compile(raw, cfg) else {
            continue;
        };
        for t in spec.ineligible_tenants(&cfg.tenants) {
            out.push(format!(
                "experiments[{i}]: tenant `{t}` may not use the candidate `{}` (model or region {}), so it is not enrolled",
                spec.candidate.key, spec.candidate_region
            ));
        }
    }
    out
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match config::load_file(path) {
        Ok(cfg) => {
            let _ = writeln!(
                std::io::stdout(),
                "{}: ok ({} providers, {} models, {} tenants, {} experiments; hash {})",
                path.display(),
                cfg.providers.len(),
                cfg.models.iter().filter(|m| !m.implicit).count(),
                cfg.tenants.len(),
                cfg.raw.experiments.len(),
                &cfg.hash[..12]
            );
            for w in config_warnings(&cfg) {
                let _ = writeln!(std::io::stderr(), "warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Err(errs) => {
            let _ = writeln!(std::io::stderr(), "{errs}");
            ExitCode::from(2)
        }
    }
}

/// The config file, or exit 2 with every error printed.
fn load_config(path: &std::path::Path) -> Result<Config, ExitCode> {
    config::load_file(path).map_err(|errs| {
        let _ = writeln!(std::io::stderr(), "{errs}");
        ExitCode::from(2)
    })
}

/// A command's argument names nothing that exists or does not parse (an unknown tenant
/// or key, a bad duration): exit 2, as for any usage error.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn runtime_exit(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            if e.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("ASC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The store URL of a config (default `sqlite://./asc-data/asc.db`).
fn database_url(cfg: &Config) -> String {
    cfg.raw
        .storage
        .database
        .clone()
        .unwrap_or_else(|| "sqlite://./asc-data/asc.db".to_owned())
}

fn serve(cfg: Config, source: ConfigSource) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let listen = cfg.server.listen;
        let admin_listen = cfg.server.admin_listen;
        // The addresses first: a gateway that cannot listen exits before it writes
        // anything (a config version, an audit entry) into the store.
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let admin_listener = tokio::net::TcpListener::bind(admin_listen)
            .await
            .with_context(|| format!("binding {admin_listen}"))?;
        let url = database_url(&cfg);
        let store = Store::open(&url)
            .await
            .with_context(|| format!("opening the store {url}"))?;
        let errs = crate::state::api_tenant_errors(&cfg, &store).await?;
        if !errs.is_empty() {
            let errs = crate::config::ConfigErrors(errs);
            return Err(UsageError(format!("the config is invalid:\n{errs}")).into());
        }
        let demo = matches!(source, ConfigSource::Demo);
        let state = AppState::new(cfg, store, source)
            .await
            .context("building the gateway")?;
        let addr = listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;
        let scheme = if state.live.load().config.server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        tracing::info!(%addr, %scheme, "data plane listening");
        tracing::info!(addr = %admin_addr, %scheme, "admin plane listening");
        if demo {
            let _ = writeln!(
                std::io::stdout(),
                "{}",
                demo::banner(&addr.to_string(), &admin_addr.to_string())
            );
        }
        let shutdown = state.shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            shutdown.cancel();
        });
        reload_on_sighup(state.clone());
        state.watch_store(std::time::Duration::from_secs(1));
        let tls = http::tls_source(&state);
        let token = state.shutdown.clone();
        let admin = http::serve(
            admin_listener,
            http::admin_router(state.clone()),
            tls.clone(),
            async move { token.cancelled().await },
        );
        let token = state.shutdown.clone();
        let data = http::serve(
            listener,
            http::data_router(state.clone()),
            tls,
            async move { token.cancelled().await },
        );
        let (a, d) = tokio::join!(admin, data);
        a?;
        d?;
        state.tasks.close();
        tracing::info!("stopped");
        Ok(())
    })
}

/// SIGHUP re-reads the config file (as `POST /admin/v1/config/reload` does).
fn reload_on_sighup(state: AppState) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            match state.reload("signal:SIGHUP").await {
                Ok(v) => tracing::info!(seq = v.seq, "reloaded on SIGHUP"),
                Err(e) => {
                    tracing::error!(error = %e, "reload on SIGHUP refused; the running config stays")
                }
            }
        }
    });
}

fn keys(cfg: Config, command: KeysCommand) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let url = database_url(&cfg);
        let store = Store::open(&url)
            .await
            .with_context(|| format!("opening the store {url}"))?;
        let mut out = std::io::stdout();
        match command {
            KeysCommand::Create {
                tenant,
                name,
                expires_in,
            } => {
                let known = cfg.tenant(&tenant).is_some()
                    || store.tenants().await?.iter().any(|t| t.name == tenant);
                if !known {
                    return Err(UsageError(format!("no tenant named `{tenant}`")).into());
                }
                let expires = expires_in
                    .as_deref()
                    .map(admin::keys::parse_expiry)
                    .transpose()
                    .map_err(|e| UsageError(format!("--expires-in: {e}")))?;
                let new = admin::keys::generate(&tenant, &name, expires).map_err(anyhow::Error::msg)?;
                store.create_key(&new.row).await?;
                cli_event(
                    &cfg,
                    &store,
                    "key_created",
                    &tenant,
                    serde_json::json!({"id": new.row.id, "name": name, "prefix": new.row.prefix, "expires_at": new.row.expires_at}),
                )
                .await?;
                writeln!(out, "id:         {}", new.row.id)?;
                writeln!(out, "tenant:     {tenant}")?;
                writeln!(out, "expires_at: {}", new.row.expires_at.as_deref().unwrap_or("never"))?;
                writeln!(out, "key:        {}", new.key)?;
                writeln!(out, "(the key is shown only this once; only its hash is stored)")?;
            }
            KeysCommand::List { tenant } => {
                writeln!(out, "{:<22} {:<16} {:<16} {:<14} {:<26} {:<26} revoked_at", "id", "tenant", "name", "prefix", "created_at", "expires_at")?;
                for k in store.keys(tenant.as_deref()).await? {
                    writeln!(
                        out,
                        "{:<22} {:<16} {:<16} {:<14} {:<26} {:<26} {}",
                        k.id, k.tenant, k.name, k.prefix, k.created_at,
                        k.expires_at.as_deref().unwrap_or("-"),
                        k.revoked_at.as_deref().unwrap_or("-")
                    )?;
                }
            }
            KeysCommand::Revoke { id } => {
                let key = store
                    .key(&id)
                    .await?
                    .ok_or_else(|| UsageError(format!("no key `{id}`")))?;
                if store.revoke_key(&id).await? {
                    cli_event(&cfg, &store, "key_revoked", &key.tenant, serde_json::json!({"id": id}))
                        .await?;
                    writeln!(out, "revoked {id}")?;
                } else {
                    writeln!(out, "{id} was already revoked")?;
                }
            }
        }
        Ok(())
    })
}

/// An admin action of the CLI: an admin event, and an entry in the audit trail, in a
/// chain of the CLI's own (a running gateway writes its own beside it), signed by a
/// checkpoint at once since the CLI does not stay to sign it later.
async fn cli_event(
    cfg: &Config,
    store: &Store,
    kind: &str,
    tenant: &str,
    payload: serde_json::Value,
) -> anyhow::Result<()> {
    store.add_event(kind, "cli", Some(tenant), &payload).await?;
    let key = match crate::state::audit_key_path(cfg) {
        Some(path) => crate::audit::load_or_create_key(&path)
            .with_context(|| format!("reading the audit signing key {}", path.display()))?,
        None => ed25519_dalek::SigningKey::from_bytes(&rand::random()),
    };
    let audit = crate::audit::Auditor::open(store.clone(), key).await?;
    let ts = crate::store::timestamp(std::time::SystemTime::now());
    let item = (
        ts,
        kind.to_owned(),
        "cli".to_owned(),
        Some(tenant.to_owned()),
        payload,
    );
    audit.append(vec![item]).await?;
    audit.checkpoint().await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

fn mock_provider(
    settings: MockSettings,
    listen: SocketAddr,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, flavor = ?settings.flavor, tls = tls.is_some(), "mock provider listening");
        let mock = Mock::new(settings);
        match tls {
            // HTTPS through the gateway's own listener code (HTTP/1.1 and HTTP/2).
            Some(tls) => {
                let source: crate::http::TlsSource = std::sync::Arc::new(move || tls.clone());
                crate::http::serve(listener, mock.router(), Some(source), std::future::pending())
                    .await?;
            }
            None => mock::serve(listener, mock).await?,
        }
        Ok(())
    })
}
