//! `asc-wire`: the wire formats of the LLM APIs ASC speaks, and translation between them.
//!
//! Pure: serde types and functions, no IO, no async. Fuzzable and fast to compile.
//!
//! ```text
//!     OpenAI body ──┐                        ┌── OpenAI body
//!  Anthropic body ──┼─▶ canonical (hub) ──▶──┼── Anthropic body
//!    Mistral body ──┘                        └── Mistral body
//! ```
//!
//! Each spoke module ([`openai`], [`anthropic`], [`mistral`]) parses client requests into
//! [`canonical::ChatRequest`], writes canonical requests as its upstream bodies, reads
//! upstream responses and stream events into canonical ones, and writes canonical
//! responses and stream events back for its clients. [`sse`] frames streams.

pub mod canonical;
pub mod error;
pub mod sse;

pub use canonical::*;
pub use error::{DecodeError, RequestError};
pub mod anthropic;
pub mod mistral;
pub mod openai;

#[cfg(test)]
mod document_tests;
