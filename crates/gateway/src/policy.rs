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
//! Every decision lands in the record's `policy` list.

use std::sync::Arc;
use std::time::Instant;

use asc_wire::{Block, ChatRequest};

use crate::config::Target;
use crate::directory::TenantEntry;
use crate::error::Error;
use crate::limits::budget::{micros_to_usd, usd_to_micros};
use crate::limits::rate::Admission;
use crate::limits::{self, Counters, lock};
use crate::prices::Price;
use crate::record::{ExecutionRecord, PolicyCheck, Recorder};
use crate::state::Live;

/// What a request took from its limits, released or settled at its end.
#[derive(Debug, Default)]
pub struct Hold {
    tenant: Option<Arc<Counters>>,
    admission: Option<Admission>,
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
        }
    }
}

/// A cheap prompt-token estimate (about four characters a token plus a few per
/// message), used for reservations, which only need an upper-ish bound.
pub fn estimate_prompt_tokens(req: &ChatRequest) -> u64 {
    let mut chars = req.system.as_ref().map_or(0, String::len);
    for m in &req.messages {
        for b in &m.content {
            chars += match b {
                Block::Text { text } => text.len(),
                Block::ToolCall {
                    name, arguments, ..
                } => name.len() + arguments.len(),
                Block::ToolResult { content, .. } => content.len(),
                Block::Image { .. } => 3_000,
            };
        }
    }
    for t in &req.tools {
        chars += t.name.len()
            + t.description.as_ref().map_or(0, String::len)
            + t.parameters.to_string().len();
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
pub fn admit(
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
    if let Some(r) = rate {
        let tokens = if r.tokens_per_minute.is_some() {
            hold.estimate.prompt
        } else {
            0
        };
        let admitted = lock(&entry.counters.rate).admit(
            Instant::now(),
            r.requests_per_minute,
            r.tokens_per_minute,
            tokens,
        );
        match admitted {
            Ok(a) => {
                hold.tenant = Some(entry.counters.clone());
                hold.admission = Some(a);
            }
            Err(wait) => {
                check(
                    record,
                    "rate_limit",
                    "deny",
                    Some(format!("retry after {} s", wait.as_secs().max(1))),
                );
                return Err(Error::RateLimited { retry_after: wait });
            }
        }
    }
    let Some(b) = budget else {
        return Ok(Admit::Go);
    };
    let limit = usd_to_micros(b.limit_usd);
    let worst = order
        .iter()
        .filter_map(|t| price_of(live, t))
        .map(|p| p.cost_micros(hold.estimate.prompt, hold.estimate.max_output))
        .max()
        .unwrap_or(0);
    let mut held = BudgetHold {
        counters: entry.counters.clone(),
        worst,
        limit,
        alert_at: b.alert_at.clone(),
        period: b.period.clone(),
        tenant: Some(entry.tenant.name.clone()),
    };
    let reserved = {
        let mut ledger = lock(&entry.counters.budget);
        match ledger.as_mut() {
            Some(l) => {
                limits::current(l, &b.period);
                l.reserve(worst, limit)
            }
            None => true,
        }
    };
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

/// Reserves a target's worst case against its provider's budget, if it has one.
/// `false`: the provider's budget cannot take it (skip the target).
pub fn reserve_provider(live: &Live, t: &Target, hold: &mut Hold) -> bool {
    let Some(counters) = &live.provider_counters[t.provider] else {
        return true;
    };
    let Some(b) = &live.config.raw.providers[t.provider].budget else {
        return true;
    };
    let limit = usd_to_micros(b.limit_usd);
    let worst = price_of(live, t).map_or(0, |p| {
        p.cost_micros(hold.estimate.prompt, hold.estimate.max_output)
    });
    let ok = {
        let mut ledger = lock(&counters.budget);
        match ledger.as_mut() {
            Some(l) => {
                limits::current(l, &b.period);
                l.reserve(worst, limit)
            }
            None => true,
        }
    };
    if ok {
        hold.provider = Some(BudgetHold {
            counters: counters.clone(),
            worst,
            limit,
            alert_at: Vec::new(),
            period: b.period.clone(),
            tenant: None,
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
    fn settle(self, actual: u64, recorder: Option<&Recorder>) {
        let fired = {
            let mut ledger = lock(&self.counters.budget);
            match ledger.as_mut() {
                Some(l) => {
                    limits::current(l, &self.period);
                    l.settle(self.worst, actual, self.limit, &self.alert_at)
                }
                None => Vec::new(),
            }
        };
        if let (Some(r), Some(tenant)) = (recorder, &self.tenant) {
            for threshold in fired {
                let spent = lock(&self.counters.budget).as_ref().map_or(0, |l| l.spent);
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
            p.cost_micros(record.prompt_tokens, record.completion_tokens)
        });
        record.cost_micros = cost;
        record.cost_usd = micros_to_usd(cost);
        if let (Some(c), Some(a)) = (self.tenant.take(), self.admission.take()) {
            lock(&c.rate).settle(a, record.prompt_tokens + record.completion_tokens);
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
}
