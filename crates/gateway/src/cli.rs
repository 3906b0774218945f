//! The `asc` command line (contract section 1).

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::config::{self, Config};
use crate::mock::{self, Flavor, Mock, MockSettings};
use crate::state::AppState;
use crate::{demo, http};

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
    },
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
            let cfg = if demo {
                config::load_str(&demo::config_yaml(), &|_| None)
            } else {
                config::load_file(&config)
            };
            let cfg = match cfg {
                Ok(c) => c,
                Err(errs) => {
                    let _ = writeln!(std::io::stderr(), "{errs}");
                    return ExitCode::from(2);
                }
            };
            runtime_exit(serve(cfg, demo))
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
        } => {
            init_logging(LogFormat::Text);
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
            runtime_exit(mock_provider(s, listen))
        }
    }
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
            ExitCode::SUCCESS
        }
        Err(errs) => {
            let _ = writeln!(std::io::stderr(), "{errs}");
            ExitCode::from(2)
        }
    }
}

fn runtime_exit(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "error: {e:#}");
            ExitCode::from(1)
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

fn serve(cfg: Config, demo: bool) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let listen = cfg.server.listen;
        let state = AppState::new(cfg).await.context("building the gateway")?;
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, "data plane listening");
        if demo {
            let _ = writeln!(std::io::stdout(), "{}", demo::banner(&addr.to_string()));
        }
        let shutdown = state.shutdown.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            shutdown.cancel();
        });
        let token = state.shutdown.clone();
        let router = http::data_router(state.clone());
        http::serve(listener, router, async move { token.cancelled().await }).await?;
        state.tasks.close();
        tracing::info!("stopped");
        Ok(())
    })
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

fn mock_provider(settings: MockSettings, listen: SocketAddr) -> anyhow::Result<()> {
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("binding {listen}"))?;
        let addr = listener.local_addr()?;
        tracing::info!(%addr, flavor = ?settings.flavor, "mock provider listening");
        mock::serve(listener, Mock::new(settings)).await?;
        Ok(())
    })
}
