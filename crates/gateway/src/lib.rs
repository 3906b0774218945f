//! ASC: a self-hosted AI gateway and control plane.
//!
//! A request's path, phase by phase, is in [`pipeline`]; ARCHITECTURE.md at the
//! repository root maps every module.
//!
//! - [`cli`]: the `asc` commands;
//! - [`config`]: the YAML file, strictly parsed and validated into an immutable `Config`;
//! - [`state`]: the live generation (config + upstreams) behind one `ArcSwap`;
//! - [`http`]: routers and serving;
//! - [`pipeline`]: authenticate → parse → policy → route → attempt → respond → record;
//! - [`providers`]: upstream calls, one enum of wire kinds;
//! - [`record`]: the execution record of every request;
//! - [`traces`]: W3C trace context, propagation upstream, OTLP span export;
//! - [`error`]: the one mapping to the contract's statuses, codes and bodies;
//! - [`mock`]: the mock providers (`asc mock-provider`, `kind: mock`);
//! - [`demo`]: `asc serve --demo`.

pub mod admin;
pub mod audit;
pub mod cache;
pub mod cli;
pub mod config;
pub mod console;
pub mod demo;
pub mod directory;
pub mod error;
pub mod experiments;
pub mod guardrails;
pub mod http;
pub mod limits;
pub mod mock;
pub mod notify;
pub mod pipeline;
pub mod policy;
pub mod prices;
pub mod providers;
pub mod record;
pub mod routing;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod tls;
pub mod traces;
