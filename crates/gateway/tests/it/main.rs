//! Integration tests: the real server on loopback ports against mock upstreams.
//! One binary (fast to link); each module is one area of the contract.

mod chat;
mod errors;
mod streaming;
mod support;
