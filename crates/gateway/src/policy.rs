//! The limits phase of a request: rate limits and budgets taken before anything goes
//! upstream, and settled exactly once when the request ends (see
//! [`Hold::settle`], called from the pipeline's single exit).
//!
//! - **Rate limits**: the tenant's sliding window admits the request and charges the
//!   prompt's token estimate; the real usage replaces it at the end.
//! - **Budgets**: the worst case (estimated prompt tokens and `max_tokens`, or the
//!   model's maximum output, at the priciest target of the plan) is reserved under the
//!   tenant ledger's lock; the real cost replaces it at the end. `on_exceed: block`
//!   refuses with `budget_exceeded`; `downgrade:MODEL` serves the request with MODEL,
//!   charged after the fact.
//! - **Provider budgets**: reserved per attempt against the provider's ledger; a
//!   provider whose budget cannot take the request is skipped by routing.
//!
//! With `storage.redis`, each of these is decided in Redis for every replica at once
//! ([`crate::limits::shared`]); settling then runs in a task of its own, after the
//! response, so the client never waits for it. A Redis that does not answer within
//! [`crate::limits::shared::OP_TIMEOUT`] leaves the decision to this replica's own
//! counters (logged), rather than failing the request.
//!
//! Every decision lands in the record's `policy` list.

use std::sync::Arc;
use std::time::Instant;

use asc_wire::{Block, ChatRequest};

use crate::config::Target;
use crate::directory::TenantEntry;
use crate::error::Error;
use crate::limits::budget::{micros_to_usd, usd_to_micros};
use crate::limits::rate::Admission;
use crate::limits::shared::{RateVerdict, crossed};
use crate::limits::{self, Counters, lock};
use crate::prices::Price;
use crate::prices::period_of;
use crate::record::{ExecutionRecord, PolicyCheck, Recorder};
use crate::state::Live;

/// What a request took from its limits, released or settled at its end.
#[derive(Debug, Default)]
pub struct Hold {
    tenant: Option<Arc<Counters>>,
    admission: Option<RateHold>,
    budget: Option<BudgetHold>,
    provider: Option<BudgetHold>,
    /// The price of the target that served the request.
    pub price: Option<Price>,
    /// Prompt tokens estimated at admission, and the output tokens assumed at worst.
    pub estimate: Estimate,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Estimate {
    pub prompt: u64,
    pub max_output: u64,
    /// The request asks for prompt caching: `Some(true)` for the one-hour cache (see
    /// [`prompt_cache`]).
    pub cache: Option<bool>,
}

/// A rate-limit admission: in this replica's window, or in the shared one.
#[derive(Debug)]
enum RateHold {
    Local(Admission),
    Shared(u64),
}

#[derive(Debug)]
struct BudgetHold {
    counters: Arc<Counters>,
    /// Reserved micro-dollars (0 when charged without a reservation).
    worst: u64,
    limit: u64,
    alert_at: Vec<f64>,
    period: String,
    tenant: Option<String>,
    /// Decided in the shared ledger: settled there.
    shared: Option<SharedReservation>,
}

#[derive(Debug)]
struct SharedReservation {
    /// The period's key (`2026-12`, …) the reservation was made in.
    period: String,
    /// `None`: charged without a reservation (a downgraded request).
    id: Option<u64>,
}

/// What the limits phase decided.
pub enum Admit {
    Go,
    /// The budget is spent and the tenant's action is `downgrade:MODEL`.
    Downgrade(String),
}

fn check(record: &mut ExecutionRecord, check: &str, outcome: &str, detail: Option<String>) {
    record.policy.push(PolicyCheck {
        check: check.into(),
        outcome: outcome.into(),
        detail,
    });
}

/// Output tokens assumed when a request does not say `max_tokens`: the model family's
/// maximum output (a short table; unknown models get 16,384).
pub fn max_output_tokens(model: &str) -> u64 {
    let m = model.to_ascii_lowercase();
    let table: [(&str, u64); 12] = [
        ("gpt-4o", 16_384),
        ("gpt-4.1", 32_768),
        ("gpt-5", 128_000),
        ("o1", 100_000),
        ("o3", 100_000),
        ("o4", 100_000),
        ("claude-3-5", 8_192),
        ("claude-3-7", 64_000),
        ("claude-sonnet-4", 64_000),
        ("claude-opus-4", 32_000),
        ("claude-haiku-4", 64_000),
        ("mistral", 32_768),
    ];
    table
        .iter()
        .find(|(p, _)| m.starts_with(p))
        .map_or(16_384, |(_, n)| *n)
}

impl Estimate {
    /// For a chat request: its prompt and its `max_tokens` (or the model's maximum).
    pub fn chat(req: &ChatRequest, upstream_model: &str) -> Self {
        Self {
            prompt: estimate_prompt_tokens(req),
            max_output: req
                .max_tokens
                .map_or_else(|| max_output_tokens(upstream_model), u64::from),
            cache: prompt_cache(req),
        }
    }

    /// The most the request can cost at `p`: its prompt and `max_tokens` of output, and
    /// when it asks for prompt caching, the whole prompt as written to the cache (which
    /// costs more than plain input), so a reservation is never below what settles.
    pub fn worst_micros(&self, p: &Price) -> u64 {
        match self.cache {
            None => p.cost_micros(self.prompt, self.max_output),
            Some(hour) => {
                let all_written = crate::prices::Cached {
                    written: self.prompt,
                    read: 0,
                    hour,
                };
                p.cost_micros_cached(self.prompt, self.max_output, all_written)
            }
        }
    }
}

/// Whether `req` asks for Anthropic's prompt cache (`cache_control` anywhere): None if
/// not, else whether for an hour anywhere (`ttl: "1h"`, whose writes cost twice the input
/// price; the five-minute cache's cost 1.25 times).
pub fn prompt_cache(req: &ChatRequest) -> Option<bool> {
    use asc_wire::{Block, CacheControl, System};
    let mut found = None;
    let mut see = |c: &Option<CacheControl>| {
        if let Some(c) = c {
            let hour = c.0.get("ttl").and_then(serde_json::Value::as_str) == Some("1h");
            found = Some(found.unwrap_or(false) || hour);
        }
    };
    if let Some(System::Blocks(blocks)) = &req.system {
        blocks.iter().for_each(|b| see(&b.cache_control));
    }
    req.tools.iter().for_each(|t| see(&t.cache_control));
    for b in req.messages.iter().flat_map(|m| &m.content) {
        match b {
            Block::Text { cache_control, .. }
            | Block::Image { cache_control, .. }
            | Block::ToolCall { cache_control, .. }
            | Block::ToolResult { cache_control, .. } => see(cache_control),
            Block::Document(d) => see(&d.cache_control),
            Block::Thinking { .. } | Block::RedactedThinking { .. } => {}
        }
    }
    found
}

/// What an image stands for in [`estimate_prompt_tokens`] (750 tokens).
const IMAGE_CHARS: usize = 3_000;

/// What a document stands for in [`estimate_prompt_tokens`]: the characters of its
/// texts (title, context, a text document's text, custom content's blocks), and four a
/// token of what is not text (a PDF's pages, a document by URL or id: see
/// `guardrails::opaque_document_tokens`, which never counts below what can be billed).
fn document_chars(d: &asc_wire::Document) -> usize {
    use asc_wire::{Block, DocumentSource};
    let texts = d.title.as_ref().map_or(0, String::len) + d.context.as_ref().map_or(0, String::len);
    let body = match &d.source {
        DocumentSource::Text { data, .. } => data.len(),
        DocumentSource::Content { content } => content
            .iter()
            .map(|b| match b {
                Block::Text { text, .. } => text.len(),
                _ => IMAGE_CHARS,
            })
            .sum(),
        source => usize::try_from(crate::guardrails::opaque_document_tokens(source))
            .unwrap_or(usize::MAX)
            .saturating_mul(4),
    };
    texts.saturating_add(body)
}

/// A cheap prompt-token estimate (about four characters a token plus a few per
/// message), used for reservations, which only need an upper-ish bound.
pub fn estimate_prompt_tokens(req: &ChatRequest) -> u64 {
    let mut chars = req.system_text().map_or(0, |s| s.len());
    for m in &req.messages {
        for b in &m.content {
            chars = chars.saturating_add(match b {
                Block::Text { text, .. } => text.len(),
                Block::ToolCall {
                    name, arguments, ..
                } => name.len() + arguments.len(),
                Block::ToolResult { content, .. } => content.len(),
                Block::Image { .. } => IMAGE_CHARS,
                Block::Thinking { thinking, .. } => thinking.len(),
                Block::RedactedThinking { data } => data.len(),
                Block::Document(d) => document_chars(d),
            });
        }
    }
    for t in &req.tools {
        chars += t.name.len()
            + t.description.as_ref().map_or(0, String::len)
            + t.parameters.to_string().len();
    }
    if let Some(asc_wire::canonical::ResponseFormat::JsonSchema(f)) = &req.response_format {
        chars = chars.saturating_add(f.schema.to_string().len());
    }
    (chars as u64).div_ceil(4) + 4 * req.messages.len() as u64 + 3
}

/// The price of one target.
pub fn price_of(live: &Live, t: &Target) -> Option<Price> {
    let p = &live.config.providers[t.provider];
    live.prices
        .price(&p.name, live.provider_kinds[t.provider], &t.model)
}

/// Rate limit, then budget, for a request about to be routed over `order`.
pub async fn admit(
    live: &Live,
    entry: &TenantEntry,
    order: &[&Target],
    estimate: Estimate,
    record: &mut ExecutionRecord,
    hold: &mut Hold,
) -> Result<Admit, Error> {
    let raw = &entry.tenant.raw;
    let rate = raw.rate_limit.as_ref();
    let budget = raw.budget.as_ref();
    hold.estimate = estimate;
    let tokens = match rate {
        Some(r) if r.tokens_per_minute.is_some() => estimate.prompt,
        _ => 0,
    };
    let limit = budget.map_or(0, |b| usd_to_micros(b.limit_usd));
    let worst = match budget {
        Some(_) => order
            .iter()
            .filter_map(|t| price_of(live, t))
            .map(|p| estimate.worst_micros(&p))
            .max()
            .unwrap_or(0),
        None => 0,
    };
    let counters = &entry.counters;
    let rate_step = async {
        match rate {
            Some(r) => {
                Some(take_rate(counters, r.requests_per_minute, r.tokens_per_minute, tokens).await)
            }
            None => None,
        }
    };
    let budget_step = async {
        match budget {
            Some(b) => Some(reserve(counters, &b.period, worst, limit).await),
            None => None,
        }
    };
    // Shared limits: both questions go to Redis at once (the connection pipelines them:
    // one round trip), and a reservation made for a request the rate limit refuses is
    // given back. Local: the rate limit first, the budget only for an admitted request.
    let (rated, reserved) = if counters.shared.is_some() {
        tokio::join!(rate_step, budget_step)
    } else {
        let rated = rate_step.await;
        match rated {
            Some(Err(_)) => (rated, None),
            _ => (rated, budget_step.await),
        }
    };
    let held = |b: &crate::config::raw::TenantBudgetRaw, shared| BudgetHold {
        counters: counters.clone(),
        worst,
        limit,
        alert_at: b.alert_at.clone(),
        period: b.period.clone(),
        tenant: Some(entry.tenant.name.clone()),
        shared,
    };
    match rated {
        Some(Ok(a)) => {
            hold.tenant = Some(counters.clone());
            hold.admission = Some(a);
        }
        Some(Err(wait)) => {
            if let (Some(b), Some((true, shared))) = (budget, reserved) {
                held(b, shared).settle(0, None);
            }
            check(
                record,
                "rate_limit",
                "deny",
                Some(format!("retry after {} s", wait.as_secs().max(1))),
            );
            return Err(Error::RateLimited { retry_after: wait });
        }
        None => {}
    }
    let (Some(b), Some((reserved, shared))) = (budget, reserved) else {
        return Ok(Admit::Go);
    };
    let mut held = held(b, shared);
    if reserved {
        check(
            record,
            "budget",
            "allow",
            Some(format!("reserved ${:.6}", micros_to_usd(worst))),
        );
        hold.budget = Some(held);
        return Ok(Admit::Go);
    }
    match b
        .on_exceed
        .as_deref()
        .and_then(|a| a.strip_prefix("downgrade:"))
    {
        Some(model) => {
            check(record, "budget", "downgrade", Some(model.to_owned()));
            held.worst = 0;
            hold.budget = Some(held);
            Ok(Admit::Downgrade(model.to_owned()))
        }
        None => {
            check(
                record,
                "budget",
                "deny",
                Some(format!("limit ${:.2} per {}", b.limit_usd, b.period)),
            );
            Err(Error::BudgetExceeded {
                tenant: entry.tenant.name.clone(),
            })
        }
    }
}

/// Admits a request in the shared window when there is one (and it answers), else in
/// this replica's own.
async fn take_rate(
    counters: &Counters,
    rpm: Option<u64>,
    tpm: Option<u64>,
    tokens: u64,
) -> Result<RateHold, std::time::Duration> {
    if let Some(sh) = &counters.shared {
        match sh.admit(&counters.scope, rpm, tpm, tokens).await {
            Ok(RateVerdict::Admitted(id)) => return Ok(RateHold::Shared(id)),
            Ok(RateVerdict::Wait(wait)) => return Err(wait),
            Err(e) => sh.degraded("rate limit", &e),
        }
    }
    lock(&counters.rate)
        .admit(Instant::now(), rpm, tpm, tokens)
        .map(RateHold::Local)
}

/// This replica's figure for a scope's spend this period (its copy of the shared spend
/// with shared limits), rolled to the current period.
fn local_spent(counters: &Counters, period: &str) -> u64 {
    lock(&counters.budget).as_mut().map_or(0, |l| {
        limits::current(l, period);
        l.spent
    })
}

/// Takes `worst` out of a scope's budget for `period` (`day|week|month`): whether it
/// fit, and the shared reservation when the shared ledger decided.
async fn reserve(
    counters: &Counters,
    period: &str,
    worst: u64,
    limit: u64,
) -> (bool, Option<SharedReservation>) {
    if let Some(sh) = &counters.shared
        && let Some(p) = period_of(period, limits::unix_now())
    {
        let seed = local_spent(counters, period);
        let id = limits::shared::reservation_id();
        match sh
            .reserve(&counters.scope, &p.key, seed, worst, limit, id)
            .await
        {
            Ok(fits) => {
                let id = fits.then_some(id);
                return (fits, Some(SharedReservation { period: p.key, id }));
            }
            Err(e) => {
                sh.degraded("budget", &e);
                // Redis may have run it and lost the answer: give it back.
                let (sh, scope) = (sh.clone(), counters.scope.clone());
                tokio::spawn(async move { sh.release(&scope, &p.key, seed, id).await });
            }
        }
    }
    let mut ledger = lock(&counters.budget);
    let fits = match ledger.as_mut() {
        Some(l) => {
            limits::current(l, period);
            l.reserve(worst, limit)
        }
        None => true,
    };
    (fits, None)
}

/// Reserves a target's worst case against its provider's budget, if it has one.
/// `false`: the provider's budget cannot take it (skip the target).
pub async fn reserve_provider(live: &Live, t: &Target, hold: &mut Hold) -> bool {
    let Some(counters) = &live.provider_counters[t.provider] else {
        return true;
    };
    let Some(b) = &live.config.raw.providers[t.provider].budget else {
        return true;
    };
    let limit = usd_to_micros(b.limit_usd);
    let worst = price_of(live, t).map_or(0, |p| hold.estimate.worst_micros(&p));
    let (ok, shared) = reserve(counters, &b.period, worst, limit).await;
    if ok {
        hold.provider = Some(BudgetHold {
            counters: counters.clone(),
            worst,
            limit,
            alert_at: Vec::new(),
            period: b.period.clone(),
            tenant: None,
            shared,
        });
    }
    ok
}

/// Releases a provider reservation after a failed attempt.
pub fn release_provider(hold: &mut Hold) {
    if let Some(p) = hold.provider.take() {
        p.settle(0, None);
    }
}

impl BudgetHold {
    fn settle(mut self, actual: u64, recorder: Option<&Recorder>) {
        if let Some(res) = self.shared.take()
            && let Some(sh) = self.counters.shared.clone()
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            // Off the response's path: the client does not wait for Redis.
            let recorder = recorder.cloned();
            rt.spawn(async move {
                let seed = local_spent(&self.counters, &self.period);
                let scope = &self.counters.scope;
                match sh.settle(scope, &res.period, seed, res.id, actual).await {
                    Ok((before, after)) => {
                        if let Some(l) = lock(&self.counters.budget).as_mut()
                            && l.period.key == res.period
                        {
                            l.spent = l.spent.max(after);
                            l.dirty = true;
                        }
                        let fired = crossed(before, after, self.limit, &self.alert_at);
                        self.alert(fired, after, recorder.as_ref());
                    }
                    Err(e) => {
                        // The reservation expires in Redis; the cost is kept here.
                        sh.degraded("budget settle", &e);
                        self.settle_local(0, actual, recorder.as_ref());
                    }
                }
            });
            return;
        }
        let worst = self.worst;
        self.settle_local(worst, actual, recorder);
    }

    /// Settles in this replica's ledger: releases `worst`, charges `actual`.
    fn settle_local(&self, worst: u64, actual: u64, recorder: Option<&Recorder>) {
        let fired = {
            let mut ledger = lock(&self.counters.budget);
            match ledger.as_mut() {
                Some(l) => {
                    limits::current(l, &self.period);
                    l.settle(worst, actual, self.limit, &self.alert_at)
                }
                None => Vec::new(),
            }
        };
        let spent = lock(&self.counters.budget).as_ref().map_or(0, |l| l.spent);
        self.alert(fired, spent, recorder);
    }

    /// Records a budget alert for each threshold crossed (tenant budgets only).
    fn alert(&self, fired: Vec<f64>, spent: u64, recorder: Option<&Recorder>) {
        if let (Some(r), Some(tenant)) = (recorder, &self.tenant) {
            for threshold in fired {
                tracing::warn!(%tenant, threshold, "budget alert");
                r.event(
                    "budget_alert",
                    Some(tenant),
                    serde_json::json!({
                        "threshold": threshold,
                        "spent_usd": micros_to_usd(spent),
                        "limit_usd": micros_to_usd(self.limit),
                        "period": self.period,
                    }),
                );
            }
        }
    }
}

impl Hold {
    /// Settles everything this request took, with its real usage and cost. Runs once,
    /// from the pipeline's single exit, whatever the outcome.
    pub fn settle(&mut self, record: &mut ExecutionRecord, recorder: &Recorder) {
        let cost = self.price.map_or(0, |p| {
            p.cost_micros_cached(
                record.prompt_tokens,
                record.completion_tokens,
                record.cached(self.estimate.cache == Some(true)),
            )
        });
        record.cost_micros = cost;
        record.cost_usd = micros_to_usd(cost);
        if let (Some(c), Some(a)) = (self.tenant.take(), self.admission.take()) {
            let tokens = record.prompt_tokens + record.completion_tokens;
            match a {
                RateHold::Local(a) => lock(&c.rate).settle(a, tokens),
                RateHold::Shared(id) => {
                    if let (Some(sh), Ok(rt)) =
                        (c.shared.clone(), tokio::runtime::Handle::try_current())
                    {
                        rt.spawn(async move {
                            if let Err(e) = sh.settle_rate(&c.scope, id, tokens).await {
                                sh.degraded("rate limit settle", &e);
                            }
                        });
                    }
                }
            }
        }
        if let Some(b) = self.budget.take() {
            b.settle(cost, Some(recorder));
        }
        if let Some(p) = self.provider.take() {
            p.settle(cost, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_assumptions() {
        assert_eq!(max_output_tokens("gpt-4o-mini"), 16_384);
        assert_eq!(max_output_tokens("claude-3-5-haiku-latest"), 8_192);
        assert_eq!(max_output_tokens("something-else"), 16_384);
    }

    #[test]
    fn estimates_grow_with_the_prompt() {
        let short: ChatRequest = asc_wire::openai::parse_request(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .unwrap();
        let long: ChatRequest = asc_wire::openai::parse_request(
            format!(
                r#"{{"model":"m","messages":[{{"role":"user","content":"{}"}}]}}"#,
                "word ".repeat(400)
            )
            .as_bytes(),
        )
        .unwrap();
        assert!(estimate_prompt_tokens(&long) > estimate_prompt_tokens(&short) + 400);
    }

    /// A request that asks for prompt caching reserves as if its whole prompt were
    /// written to the cache (1.25 times the input price, twice for the one-hour cache):
    /// what settles can never pass what was reserved.
    #[test]
    fn a_caching_request_reserves_for_its_cache_writes() {
        let req = |system: &str| -> ChatRequest {
            asc_wire::anthropic::parse_request(
                format!(
                    r#"{{"model":"m","max_tokens":10,"system":{system},"messages":[{{"role":"user","content":"hi"}}]}}"#
                )
                .as_bytes(),
            )
            .unwrap()
        };
        let plain = req(r#""be brief""#);
        let five =
            req(r#"[{"type":"text","text":"be brief","cache_control":{"type":"ephemeral"}}]"#);
        let hour = req(
            r#"[{"type":"text","text":"be brief","cache_control":{"type":"ephemeral","ttl":"1h"}}]"#,
        );
        assert_eq!(prompt_cache(&plain), None);
        assert_eq!(prompt_cache(&five), Some(false));
        assert_eq!(prompt_cache(&hour), Some(true));
        // $4 / $8 per million: 4 and 8 micro-dollars a token.
        let p = Price::from_usd_per_million(4.0, 8.0).unwrap();
        let worst = |r: &ChatRequest| Estimate::chat(r, "m").worst_micros(&p);
        let n = Estimate::chat(&plain, "m").prompt;
        assert_eq!(worst(&plain), n * 4 + 80);
        assert_eq!(worst(&five), n * 5 + 80);
        assert_eq!(worst(&hour), n * 8 + 80);
    }
}
