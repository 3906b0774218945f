//! Tenant guardrails: PII detection/redaction, blocked terms and a prompt-size limit.
//!
//! A [`Guardrails`] is built once per tenant when the configuration loads
//! ([`Guardrails::from_raw`]); checking a request is pure (no IO, no async) and costs one
//! pass of each detector over the request's texts (plus one tokenization when
//! `max_prompt_tokens` is set).
//!
//! - `pii`: `off` | `detect` (count only) | `block` (a request with PII is refused) |
//!   `redact` (PII replaced by numbered typed placeholders such as `[EMAIL_1]`, in the
//!   request and in the response, streamed or not). See [`pii`](self::pii) for the
//!   detection heuristics.
//! - `blocked_terms`: a request containing any of them (whole word, any case) is refused,
//!   whatever the `pii` mode.
//! - `max_prompt_tokens`: a request whose prompt counts more tokens is refused; see
//!   [`count_prompt_tokens`].
//!
//! [`Findings`] and [`Violation`] carry types and counts only, never the matched text.

mod pii;
mod stream;
mod terms;
mod tokens;

#[cfg(test)]
mod document_tests;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use asc_wire::canonical::{Block, ChatRequest, ChatResponse, Document, DocumentSource};

use crate::config::raw::GuardrailsRaw;

pub use stream::StreamRedactor;
pub use tokens::{
    EmbeddingTokens, Encoding, PER_PDF_PAGE, UNSEEN_DOCUMENT, count_prompt_tokens, encoding_for,
    opaque_document_tokens,
};

use pii::PiiState;
use terms::BlockedTerms;

/// What the `pii` guardrail does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PiiMode {
    Block,
    Detect,
    Off,
    Redact,
}

impl PiiMode {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "block" => Some(Self::Block),
            "detect" => Some(Self::Detect),
            "off" => Some(Self::Off),
            "redact" => Some(Self::Redact),
            _ => None,
        }
    }
}

/// One tenant's guardrails, ready to check requests.
#[derive(Debug, Clone)]
pub struct Guardrails {
    pii: PiiMode,
    terms: Option<BlockedTerms>,
    max_prompt_tokens: Option<u64>,
}

/// What the guardrails saw: types and counts, never the values.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Findings {
    /// PII type (`email`, `phone`, `card`, `ssn`, `iban`, `ip`) → occurrences.
    pub pii: BTreeMap<&'static str, u32>,
    /// Whole-word occurrences of blocked terms (only responses can have any: a request
    /// with one is refused).
    pub blocked_terms: u32,
    /// The prompt's token count, when `max_prompt_tokens` is set.
    pub prompt_tokens: Option<u64>,
}

impl Findings {
    /// Nothing was found.
    pub fn is_empty(&self) -> bool {
        self.pii.is_empty() && self.blocked_terms == 0
    }
}

/// Why a request is refused (`403 guardrail_blocked`). The messages name the guardrail,
/// never the matched text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error(
        "the request contains a term this tenant blocks (guardrail blocked_terms); remove it and retry"
    )]
    BlockedTerm,
    #[error(
        "the request contains personal data ({}) and this tenant's pii guardrail blocks it; remove it and retry",
        types.join(", ")
    )]
    Pii { types: Vec<&'static str> },
    #[error(
        "the prompt is {tokens} tokens, over this tenant's limit of {max} (guardrail max_prompt_tokens); shorten it"
    )]
    PromptTooLong { tokens: u64, max: u64 },
}

impl Violation {
    /// The guardrail's name as configured: `blocked_terms`, `pii` or `max_prompt_tokens`.
    pub fn guardrail(&self) -> &'static str {
        match self {
            Violation::BlockedTerm => "blocked_terms",
            Violation::Pii { .. } => "pii",
            Violation::PromptTooLong { .. } => "max_prompt_tokens",
        }
    }
}

impl Default for Guardrails {
    fn default() -> Self {
        Self {
            pii: PiiMode::Off,
            terms: None,
            max_prompt_tokens: None,
        }
    }
}

impl Guardrails {
    /// From the tenant's raw settings (`None` → everything off). Err: a message naming the
    /// field.
    pub fn from_raw(raw: Option<&GuardrailsRaw>) -> Result<Self, String> {
        let Some(raw) = raw else {
            return Ok(Self::default());
        };
        let pii = match raw.pii.as_deref() {
            None => PiiMode::Off,
            Some(s) => PiiMode::parse(s).ok_or_else(|| {
                format!(
                    "guardrails.pii: unknown mode {s:?} (expected block, detect, off or redact)"
                )
            })?,
        };
        if raw.max_prompt_tokens == Some(0) {
            return Err("guardrails.max_prompt_tokens: must be at least 1".to_owned());
        }
        Ok(Self {
            pii,
            terms: BlockedTerms::new(&raw.blocked_terms)?,
            max_prompt_tokens: raw.max_prompt_tokens,
        })
    }

    /// No guardrail is active: checks can be skipped.
    pub fn is_off(&self) -> bool {
        self.pii == PiiMode::Off && self.terms.is_none() && self.max_prompt_tokens.is_none()
    }

    pub fn pii_mode(&self) -> PiiMode {
        self.pii
    }

    pub fn max_prompt_tokens(&self) -> Option<u64> {
        self.max_prompt_tokens
    }

    /// Checks a request before it goes upstream, in this order: blocked terms, PII, prompt
    /// size. In `redact` mode rewrites every user-visible text in place (system, message
    /// text blocks, tool results, tool-call arguments), replacing PII with typed numbered
    /// placeholders (`[EMAIL_1]`, `[PHONE_1]`, `[CARD_1]`, `[SSN_1]`, `[IBAN_1]`, `[IP_1]`);
    /// the same value gets the same placeholder within a request. The prompt is measured
    /// after redaction; `model` selects the tokenizer.
    pub fn check_request(&self, req: &mut ChatRequest, model: &str) -> Result<Findings, Violation> {
        if let Some(terms) = &self.terms
            && visit_texts(req, |text| terms.matches(text))
        {
            return Err(Violation::BlockedTerm);
        }
        let mut state = PiiState::default();
        if self.pii != PiiMode::Off {
            let rewrite = self.pii == PiiMode::Redact;
            rewrite_texts(req, &mut state, rewrite);
            if self.pii == PiiMode::Block && !state.findings.pii.is_empty() {
                let types = state.findings.pii.keys().copied().collect();
                return Err(Violation::Pii { types });
            }
        }
        let mut findings = state.findings;
        if let Some(max) = self.max_prompt_tokens {
            let tokens = count_prompt_tokens(model, req);
            findings.prompt_tokens = Some(tokens);
            if tokens > max {
                return Err(Violation::PromptTooLong { tokens, max });
            }
        }
        Ok(findings)
    }

    /// Scans a complete response: in `redact` mode its text and tool-call arguments are
    /// redacted in place; in `detect` and `block` mode PII is only counted (a response is
    /// never refused). Blocked terms are counted, not removed.
    pub fn redact_response(&self, resp: &mut ChatResponse) -> Findings {
        let mut state = PiiState::default();
        let rewrite = self.pii == PiiMode::Redact;
        let mut blocked = 0u32;
        for block in &mut resp.content {
            let (text, json) = match block {
                Block::Text { text, .. } => (text, false),
                // Redacting thinking text breaks its signature (the client's next turn
                // with it is refused upstream), but PII never reaches the client.
                Block::Thinking { thinking, .. } => (thinking, false),
                Block::ToolCall { arguments, .. } => (arguments, true),
                Block::ToolResult { content, .. } => (content, false),
                Block::Image { .. } | Block::RedactedThinking { .. } | Block::Document(_) => {
                    continue;
                }
            };
            if let Some(terms) = &self.terms {
                blocked = blocked.saturating_add(terms.count(text));
            }
            if self.pii != PiiMode::Off {
                rewrite_one(text, json, &mut state, rewrite);
            }
        }
        let mut findings = state.findings;
        findings.blocked_terms = blocked;
        findings
    }

    /// In `redact` mode: a redactor for one streamed response (`None` otherwise).
    pub fn stream_redactor(&self) -> Option<StreamRedactor> {
        (self.pii == PiiMode::Redact).then(StreamRedactor::new)
    }
}

/// What `log_content: true` stores: a request's texts (system, messages, tool calls
/// and results), one per line, with PII redacted whatever the tenant's `pii` mode.
pub fn loggable_request(req: &ChatRequest) -> String {
    let mut out = String::new();
    visit_texts(req, |text| {
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(text);
        false
    });
    loggable(out)
}

/// A completion's text for the record, PII redacted.
pub fn loggable(mut text: String) -> String {
    rewrite_one(&mut text, false, &mut PiiState::default(), true);
    text
}

/// Calls `f(text)` on every user-visible text of a request, in order, until it
/// returns true; returns whether it did.
fn visit_texts(req: &ChatRequest, mut f: impl FnMut(&str) -> bool) -> bool {
    if let Some(system) = req.system_text()
        && f(&system)
    {
        return true;
    }
    req.messages
        .iter()
        .flat_map(|m| &m.content)
        .any(|block| visit_block(block, &mut f))
}

/// [`visit_texts`] for one block.
fn visit_block<F: FnMut(&str) -> bool>(block: &Block, f: &mut F) -> bool {
    match block {
        Block::Text { text, .. } => f(text),
        Block::ToolCall { arguments, .. } => f(arguments),
        Block::ToolResult { content, .. } => f(content),
        Block::Document(d) => visit_document(d, f),
        // The model's own earlier thinking, signed by the provider: not the user's.
        Block::Image { .. } | Block::Thinking { .. } | Block::RedactedThinking { .. } => false,
    }
}

/// The texts of a document the model reads, in order: its title and context, a text
/// document's text, a custom-content document's text blocks. PDFs and documents by URL
/// or file id are bytes the gateway does not read (as images).
fn visit_document<F: FnMut(&str) -> bool>(d: &Document, f: &mut F) -> bool {
    if d.title.as_deref().is_some_and(&mut *f) || d.context.as_deref().is_some_and(&mut *f) {
        return true;
    }
    match &d.source {
        DocumentSource::Text { data, .. } => f(data),
        DocumentSource::Content { content } => content.iter().any(|b| visit_block(b, f)),
        DocumentSource::Base64 { .. }
        | DocumentSource::Url { .. }
        | DocumentSource::File { .. } => false,
    }
}

/// Scans (and, when `rewrite`, redacts) every user-visible text of a request, in order.
fn rewrite_texts(req: &mut ChatRequest, state: &mut PiiState, rewrite: bool) {
    if let Some(system) = &mut req.system {
        // Block by block, so each keeps its `cache_control`.
        for text in system.texts_mut() {
            rewrite_one(text, false, state, rewrite);
        }
    }
    for msg in &mut req.messages {
        for block in &mut msg.content {
            rewrite_block(block, state, rewrite);
        }
    }
}

/// [`rewrite_texts`] for one block: the texts [`visit_block`] visits, in the same order.
fn rewrite_block(block: &mut Block, state: &mut PiiState, rewrite: bool) {
    match block {
        Block::Text { text, .. } => rewrite_one(text, false, state, rewrite),
        Block::ToolCall { arguments, .. } => rewrite_one(arguments, true, state, rewrite),
        Block::ToolResult { content, .. } => rewrite_one(content, false, state, rewrite),
        Block::Document(d) => {
            for text in [d.title.as_mut(), d.context.as_mut()].into_iter().flatten() {
                rewrite_one(text, false, state, rewrite);
            }
            match &mut d.source {
                DocumentSource::Text { data, .. } => rewrite_one(data, false, state, rewrite),
                DocumentSource::Content { content } => {
                    for b in content {
                        rewrite_block(b, state, rewrite);
                    }
                }
                DocumentSource::Base64 { .. }
                | DocumentSource::Url { .. }
                | DocumentSource::File { .. } => {}
            }
        }
        // Thinking sent back must stay byte for byte what the provider signed.
        Block::Image { .. } | Block::Thinking { .. } | Block::RedactedThinking { .. } => {}
    }
}

fn rewrite_one(text: &mut String, json: bool, state: &mut PiiState, rewrite: bool) {
    let new = if json {
        state.process_json(text, rewrite)
    } else {
        state.process(text, rewrite)
    };
    if let Some(new) = new {
        *text = new;
    }
}
