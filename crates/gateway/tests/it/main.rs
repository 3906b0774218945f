//! Integration tests: the real server on loopback ports against mock upstreams.
//! One binary (fast to link); each module is one area of the contract.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "tests fail loudly on anything unexpected"
)]

mod admin;
mod audit;
mod chat;
mod cli;
mod crash;
mod documents;
mod errors;
mod experiments;
mod guardrails;
mod metrics;
mod notify;
mod policy;
mod records;
mod replicas;
mod routing;
mod streaming;
mod structured;
mod support;
mod tls;
mod traces;
mod upstream;
