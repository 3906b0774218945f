//! Prices, costs and budget periods.
//!
//! # Unit
//!
//! A [`Price`] is two integers, **pico-dollars (1e-12 USD) per token**, for input and output
//! tokens. Nano-dollars are not enough: `$0.02` per million tokens (text-embedding-3-small) is
//! 20 nano-dollars per token, and `$0.0375`/M or `$0.075`/M would need fractions. In pico-dollars
//! every price quoted to a millionth of a dollar per million tokens is exact, and the number is
//! the same as "micro-dollars per million tokens": `$0.15`/M is `150_000`. The largest accepted
//! price (`$10,000`/M) is `10^10` pico per token, so a `u64` holds any price and the cost
//! arithmetic, done in `u128`, cannot overflow before it saturates.
//!
//! Floats appear once, when the config's `prices` (USD per million tokens, contract section 4)
//! are parsed by [`Price::from_usd_per_million`]; everything after is integer. Costs are in
//! micro-dollars (1e-6 USD) rounded up ([`Price::cost_micros`]): a budget is never undercharged.
//!
//! # The built-in table
//!
//! [`builtin`] holds the providers' list prices (standard tier, no batch or cache discounts, no
//! long-context surcharges) as of [`TABLE_DATE`]. Config `prices` override it ([`PriceBook`]).
//! The search that built it read stored copies of these pages (dates are the pages'):
//!
//! - OpenAI: <https://developers.openai.com/api/docs/pricing> as summarised (March 2026,
//!   "data from OpenAI pricing page") by <https://deploybase.ai/articles/openai-pricing>;
//!   embeddings from OpenAI's own model page
//!   <https://developers.openai.com/api/docs/models/text-embedding-3-large> ($0.13 and $0.02);
//!   GPT-5.4 also in the `adk-model` crate's table (docs.rs, March 2026); the old
//!   `gpt-4o-2024-05-13` snapshot ($5/$15) from <https://github.com/kunishou/GenerativeAI-Cost>.
//!   (Some pages quote GPT-4.1 at $1/$4: those are the Batch API prices, half the list.)
//! - Anthropic: <https://docs.anthropic.com/en/docs/about-claude/pricing> (Opus 4.1 and 4,
//!   Sonnet 4 and 3.7, Sonnet 3.5, Haiku 3.5, Opus 3, Haiku 3); its November 2025 copy at
//!   <https://www.aiwiki.dev/claude/docs/about-claude/pricing> (Sonnet 4.5 $3/$15, Haiku 4.5
//!   $1/$5); the models overview (copy at
//!   <https://learn-ai.blindshot.kz/docs/anthropic/platform/about-claude/models/overview/>:
//!   Opus 4.6 $5/$25) and <https://deploybase.ai/articles/claude-api-pricing> (March 2026:
//!   Opus 4.6 and 4.5 $5/$25, Sonnet 4.6 $3/$15); Opus 4.7 ($5/$25) from one table that cites
//!   platform.claude.com (github.com/Sraleik/undetermini PRICING.md, verified 2026-05-07).
//!   Later generations named by some pages (Sonnet 5 and 5.5, Opus 5.5) are left out: no
//!   page gave their API ids, so they need a `prices` entry.
//! - Mistral (<https://mistral.ai/pricing#api-pricing>, not itself in the stored pages): the
//!   pydantic `genai-prices` data (github.com/pydantic/genai-prices `prices/providers/mistral.yml`,
//!   checked 2026-06-09 and 2026-08-24, citing Mistral's pricing page and platform docs) and
//!   <https://developer.puter.com/tutorials/mistral-api-pricing/> (June 2026): Medium 3.5
//!   $1.5/$7.5 (`mistral-medium-latest` since 2026-06-16), Large 3 $0.5/$1.5
//!   (`mistral-large-2512`; Large 2.1 `mistral-large-2411` was retired 2026-05-31), Codestral
//!   $0.3/$0.9, Nemo $0.15/$0.15, Embed $0.10. `mistral-small-latest` (Small 4) is $0.15/$0.60 in
//!   genai-prices but $0.10/$0.30 on puter.com: the higher is kept, so budgets err on the safe
//!   side.
//!
//! `-latest` aliases move: the table prices what they pointed at on [`TABLE_DATE`].
//!
//! # Matching
//!
//! A model id matches a table id when it is the id itself, or the id followed by a snapshot
//! suffix: `-latest`, `-YYYY-MM-DD` (OpenAI) or `-YYYYMMDD` (Anthropic). The longest matching
//! id wins. Anything else (`o3-pro`, `gpt-5.4-mini`, `claude-opus-4-8`) has no built-in price,
//! so a budgeted tenant cannot reach it without a `prices` entry: a near-miss name never
//! borrows a cheaper model's price. Mistral's four-digit versions (`mistral-large-2411`,
//! `-2512`) are priced differently from one to the next and are listed one by one.
//!
//! # Periods
//!
//! [`period_of`] does its own calendar arithmetic (days-from-civil, in UTC), with no date crate.

use std::collections::HashMap;

use crate::config::raw::PriceRaw;

/// Pico-dollars (1e-12 USD) per token in one micro-dollar.
const PICO_PER_MICRO: u128 = 1_000_000;
/// Largest accepted price, USD per million tokens.
const MAX_USD_PER_MILLION: f64 = 10_000.0;

/// A model's price: pico-dollars (1e-12 USD) per token, numerically equal to micro-dollars per
/// million tokens (`$0.15`/M is `150_000`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Price {
    /// Per input (prompt) token, in pico-dollars.
    pub input: u64,
    /// Per output (completion) token, in pico-dollars.
    pub output: u64,
    /// Per input token read from the provider's prompt cache (OpenAI's `cached_tokens`,
    /// Anthropic's `cache_read_input_tokens`), in pico-dollars; never above `input`.
    pub cache_read: u64,
}

impl Price {
    /// Free: self-hosted models (`input: 0, output: 0` in `prices`).
    pub const ZERO: Price = Price {
        input: 0,
        output: 0,
        cache_read: 0,
    };

    /// From USD per million tokens, as config `prices` write them. Refuses negative, non-finite
    /// and absurd (above `$10,000`/M) prices, and positive prices below the unit
    /// (`$0.000001`/M), which would otherwise round to free. Rounds to the nearest unit, so
    /// float noise (`0.30000000000000004`) lands on the intended value.
    /// Cache reads are priced as plain input (see [`Self::with_cache_read`]).
    pub fn from_usd_per_million(input: f64, output: f64) -> Result<Self, String> {
        let input = usd_per_million_to_pico(input).map_err(|e| format!("input: {e}"))?;
        Ok(Price {
            input,
            output: usd_per_million_to_pico(output).map_err(|e| format!("output: {e}"))?,
            cache_read: input,
        })
    }

    /// This price with cache reads at `usd` per million tokens (config `cached_input`),
    /// which may not be above the input price: a read from the cache is never dearer
    /// than the input it stands for, so what settles never passes what was reserved.
    pub fn with_cache_read(self, usd: f64) -> Result<Self, String> {
        let cache_read = usd_per_million_to_pico(usd).map_err(|e| format!("cached_input: {e}"))?;
        if cache_read > self.input {
            return Err(format!(
                "cached_input: {usd} is above the input price (a cache read is never dearer than input)"
            ));
        }
        Ok(Price { cache_read, ..self })
    }

    /// Anthropic's rule: cache reads at a tenth of the input price (rounded up).
    const fn anthropic_reads(self) -> Self {
        Price {
            cache_read: self.input.div_ceil(10),
            ..self
        }
    }

    /// The cost of a reply whose input was partly written to or read from the provider's
    /// prompt cache: of `input_tokens` (all of them), `cache.written` are charged at
    /// 1.25 times the input price (2 times for the one-hour cache, `cache.hour`), as
    /// Anthropic bills writes (OpenAI reports none), and `cache.read` at
    /// [`Self::cache_read`]; the rest and the output as [`Self::cost_micros`]. Rounded up.
    pub fn cost_micros_cached(&self, input_tokens: u64, output_tokens: u64, cache: Cached) -> u64 {
        if cache.written == 0 && cache.read == 0 {
            return self.cost_micros(input_tokens, output_tokens);
        }
        let plain = input_tokens.saturating_sub(cache.written.saturating_add(cache.read));
        // Plain and written input in quarters of the input price per token: 4 plain,
        // 5 or 8 written.
        let write_quarters: u128 = if cache.hour { 8 } else { 5 };
        let quarters = u128::from(plain) * 4 + u128::from(cache.written) * write_quarters;
        let pico = quarters
            .saturating_mul(u128::from(self.input))
            .div_ceil(4)
            .saturating_add(u128::from(cache.read).saturating_mul(u128::from(self.cache_read)))
            .saturating_add(u128::from(output_tokens).saturating_mul(u128::from(self.output)));
        u64::try_from(pico.div_ceil(PICO_PER_MICRO)).unwrap_or(u64::MAX)
    }

    /// The cost of `input_tokens` and `output_tokens`, in micro-dollars (1e-6 USD), rounded up
    /// (never undercharge); saturates at `u64::MAX`.
    pub fn cost_micros(&self, input_tokens: u64, output_tokens: u64) -> u64 {
        let pico = u128::from(input_tokens)
            .saturating_mul(u128::from(self.input))
            .saturating_add(u128::from(output_tokens).saturating_mul(u128::from(self.output)));
        let micros = pico.div_ceil(PICO_PER_MICRO);
        u64::try_from(micros).unwrap_or(u64::MAX)
    }
}

/// What of a reply's input went through Anthropic's prompt cache (see
/// [`Price::cost_micros_cached`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cached {
    /// Tokens written to the cache (`cache_creation_input_tokens`).
    pub written: u64,
    /// Tokens read from it (`cache_read_input_tokens`).
    pub read: u64,
    /// The request asked for the one-hour cache (`cache_control.ttl: "1h"`), whose
    /// writes cost twice the input price (the five-minute cache's 1.25 times).
    pub hour: bool,
}

fn usd_per_million_to_pico(usd: f64) -> Result<u64, String> {
    if !usd.is_finite() {
        return Err(format!("{usd} is not a price"));
    }
    if usd < 0.0 {
        return Err(format!("{usd} is negative"));
    }
    if usd > MAX_USD_PER_MILLION {
        return Err(format!(
            "{usd} USD per million tokens is above the {MAX_USD_PER_MILLION} limit"
        ));
    }
    // USD per million tokens = micro-USD per token = 1e6 pico-USD per token. Finite and within
    // [0, 1e10] here, so the cast is exact after rounding.
    let pico = (usd * 1e6).round();
    if pico == 0.0 && usd > 0.0 {
        return Err(format!(
            "{usd} USD per million tokens is below the smallest price (0.000001)"
        ));
    }
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(pico as u64)
}

/// When the built-in table was taken (see the module docs for the sources).
pub const TABLE_DATE: &str = "2026-11-29";

/// USD per million tokens written in micro-dollars (`150_000` = `$0.15`/M): the same number
/// as pico-dollars per token.
/// Cache reads (if any) at the input price: no cache discount is known.
const fn p(input: u64, output: u64) -> Price {
    Price {
        input,
        output,
        cache_read: input,
    }
}

/// An OpenAI model with its published cached-input price.
const fn pc(input: u64, output: u64, cached: u64) -> Price {
    Price {
        input,
        output,
        cache_read: cached,
    }
}

/// An Anthropic model: cache reads at a tenth of the input price.
const fn a(input: u64, output: u64) -> Price {
    p(input, output).anthropic_reads()
}

/// `(kind, model id, price)`. Keep ids unique per kind.
///
/// Cached input: OpenAI's models at their published cached-input price (`pc`; where pages
/// disagree, the higher is kept: gpt-5 and gpt-5-mini at half the input price, o3 at
/// $1.00; `gpt-5-nano`, the first gpt-4o snapshot and the embeddings have no discount
/// here); Anthropic's at a tenth of the input price (`a`), Mistral's at the input price.
const TABLE: &[(&str, &str, Price)] = &[
    // ---- OpenAI ---------------------------------------------------------------------------
    ("openai", "gpt-5.4", pc(2_500_000, 15_000_000, 250_000)),
    ("openai", "gpt-5.1", pc(1_250_000, 10_000_000, 125_000)),
    ("openai", "gpt-5", pc(1_250_000, 10_000_000, 625_000)),
    ("openai", "gpt-5-mini", pc(250_000, 2_000_000, 125_000)),
    ("openai", "gpt-5-nano", p(50_000, 400_000)),
    ("openai", "gpt-4.1", pc(2_000_000, 8_000_000, 500_000)),
    ("openai", "gpt-4.1-mini", pc(400_000, 1_600_000, 100_000)),
    ("openai", "gpt-4.1-nano", pc(100_000, 400_000, 25_000)),
    ("openai", "gpt-4o", pc(2_500_000, 10_000_000, 1_250_000)),
    // The first gpt-4o snapshot kept its launch price.
    ("openai", "gpt-4o-2024-05-13", p(5_000_000, 15_000_000)),
    ("openai", "gpt-4o-mini", pc(150_000, 600_000, 75_000)),
    ("openai", "o1", pc(15_000_000, 60_000_000, 7_500_000)),
    ("openai", "o3", pc(2_000_000, 8_000_000, 1_000_000)),
    ("openai", "o3-mini", pc(1_100_000, 4_400_000, 550_000)),
    ("openai", "o4-mini", pc(1_100_000, 4_400_000, 275_000)),
    // Embeddings have no output tokens.
    ("openai", "text-embedding-3-small", p(20_000, 0)),
    ("openai", "text-embedding-3-large", p(130_000, 0)),
    ("openai", "text-embedding-ada-002", p(100_000, 0)),
    // ---- Anthropic ------------------------------------------------------------------------
    ("anthropic", "claude-opus-4-7", a(5_000_000, 25_000_000)),
    ("anthropic", "claude-opus-4-6", a(5_000_000, 25_000_000)),
    ("anthropic", "claude-sonnet-4-6", a(3_000_000, 15_000_000)),
    ("anthropic", "claude-opus-4-5", a(5_000_000, 25_000_000)),
    ("anthropic", "claude-sonnet-4-5", a(3_000_000, 15_000_000)),
    ("anthropic", "claude-haiku-4-5", a(1_000_000, 5_000_000)),
    ("anthropic", "claude-opus-4-1", a(15_000_000, 75_000_000)),
    ("anthropic", "claude-opus-4", a(15_000_000, 75_000_000)),
    ("anthropic", "claude-opus-4-0", a(15_000_000, 75_000_000)),
    ("anthropic", "claude-sonnet-4", a(3_000_000, 15_000_000)),
    ("anthropic", "claude-sonnet-4-0", a(3_000_000, 15_000_000)),
    ("anthropic", "claude-3-7-sonnet", a(3_000_000, 15_000_000)),
    ("anthropic", "claude-3-5-sonnet", a(3_000_000, 15_000_000)),
    ("anthropic", "claude-3-5-haiku", a(800_000, 4_000_000)),
    ("anthropic", "claude-3-opus", a(15_000_000, 75_000_000)),
    ("anthropic", "claude-3-haiku", a(250_000, 1_250_000)),
    // ---- Mistral --------------------------------------------------------------------------
    ("mistral", "mistral-large-latest", p(500_000, 1_500_000)),
    ("mistral", "mistral-large-2512", p(500_000, 1_500_000)),
    ("mistral", "mistral-large-2411", p(2_000_000, 6_000_000)),
    ("mistral", "mistral-large-2407", p(2_000_000, 6_000_000)),
    ("mistral", "mistral-medium-latest", p(1_500_000, 7_500_000)),
    ("mistral", "mistral-medium-2508", p(400_000, 2_000_000)),
    ("mistral", "mistral-medium-2505", p(400_000, 2_000_000)),
    // Sources disagree ($0.15/$0.60 and $0.10/$0.30); the higher is kept.
    ("mistral", "mistral-small-latest", p(150_000, 600_000)),
    ("mistral", "mistral-small-2603", p(150_000, 600_000)),
    ("mistral", "mistral-small-2506", p(100_000, 300_000)),
    ("mistral", "codestral-latest", p(300_000, 900_000)),
    ("mistral", "codestral-2508", p(300_000, 900_000)),
    ("mistral", "codestral-2501", p(300_000, 900_000)),
    ("mistral", "open-mistral-nemo", p(150_000, 150_000)),
    ("mistral", "open-mistral-nemo-2407", p(150_000, 150_000)),
    ("mistral", "mistral-embed", p(100_000, 0)),
];

/// Whether `rest` (what follows a table id in a model id) names a snapshot of it: empty,
/// `-latest`, `-YYYY-MM-DD` or `-YYYYMMDD`.
fn is_snapshot_suffix(rest: &str) -> bool {
    let Some(s) = rest.strip_prefix('-') else {
        return rest.is_empty();
    };
    if s == "latest" {
        return true;
    }
    let b = s.as_bytes();
    match b.len() {
        8 => b.iter().all(u8::is_ascii_digit),
        10 => b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        }),
        _ => false,
    }
}

/// The longest of `ids` that `model` is, or is a snapshot of.
fn best_match<'a, T>(model: &str, entries: impl Iterator<Item = (&'a str, T)>) -> Option<T> {
    entries
        .filter(|(id, _)| model.strip_prefix(id).is_some_and(is_snapshot_suffix))
        .max_by_key(|(id, _)| id.len())
        .map(|(_, v)| v)
}

/// The built-in list price of `model` at a provider of `kind` (`openai`, `anthropic`,
/// `mistral`; other kinds, `mock` included, have none: see [`pricing_kind`]). Matches exact
/// ids and their snapshots (`gpt-4o-mini-2024-07-18`, `claude-3-5-haiku-20241022`,
/// `claude-3-5-haiku-latest`); the longest matching id wins.
pub fn builtin(kind: &str, model: &str) -> Option<Price> {
    best_match(
        model,
        TABLE
            .iter()
            .filter(|(k, _, _)| *k == kind)
            .map(|(_, id, price)| (*id, *price)),
    )
}

/// The kind whose built-in prices apply to a provider: its own, or for `kind: mock` its
/// `flavor` (mocks are priced like the provider they imitate).
pub fn pricing_kind<'a>(kind: &'a str, flavor: Option<&'a str>) -> &'a str {
    match (kind, flavor) {
        ("mock", Some(f)) => f,
        _ => kind,
    }
}

/// Config `prices` (by provider name and model) over the built-in table.
#[derive(Debug, Clone, Default)]
pub struct PriceBook {
    /// provider name → model id → price, and whether the entry priced cache reads itself
    /// (`cached_input`).
    config: HashMap<String, HashMap<String, (Price, bool)>>,
}

impl PriceBook {
    /// From the config's `prices`. Errors name the index of each bad entry: a bad price, an
    /// empty provider or model, or a provider and model priced twice.
    pub fn new(prices: &[PriceRaw]) -> Result<Self, Vec<(usize, String)>> {
        let mut config: HashMap<String, HashMap<String, (Price, bool)>> = HashMap::new();
        let mut errors = Vec::new();
        for (i, raw) in prices.iter().enumerate() {
            if raw.provider.is_empty() || raw.model.is_empty() {
                errors.push((i, "provider and model must not be empty".to_string()));
                continue;
            }
            let price = Price::from_usd_per_million(raw.input, raw.output)
                .and_then(|p| raw.cached_input.map_or(Ok(p), |usd| p.with_cache_read(usd)));
            let price = match price {
                Ok(p) => p,
                Err(e) => {
                    errors.push((i, e));
                    continue;
                }
            };
            let models = config.entry(raw.provider.clone()).or_default();
            if models.contains_key(&raw.model) {
                errors.push((
                    i,
                    format!("{}/{} is priced more than once", raw.provider, raw.model),
                ));
                continue;
            }
            models.insert(raw.model.clone(), (price, raw.cached_input.is_some()));
        }
        if errors.is_empty() {
            Ok(PriceBook { config })
        } else {
            Err(errors)
        }
    }

    /// The price of `model` at the provider named `provider`, of kind `kind` (for a mock, pass
    /// its flavor: [`pricing_kind`]). A config entry for that provider wins whenever it matches
    /// (its model, or a snapshot of it, by the same rule as [`builtin`]); otherwise the
    /// built-in table for `kind`. `None`: unpriced. A config entry without `cached_input`
    /// prices cache reads as the provider bills them when that is a fixed rule (a tenth of
    /// the input at Anthropic), else as plain input.
    pub fn price(&self, provider: &str, kind: &str, model: &str) -> Option<Price> {
        self.config
            .get(provider)
            .and_then(|models| best_match(model, models.iter().map(|(id, p)| (id.as_str(), *p))))
            .map(|(p, own_reads)| match kind {
                "anthropic" if !own_reads => p.anthropic_reads(),
                _ => p,
            })
            .or_else(|| builtin(kind, model))
    }
}

/// The period a budget counts in: `[start, end)` in unix seconds, and a stable `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Period {
    /// `"2026-11-29"` (day), `"2026-W48"` (ISO week), `"2026-11"` (month).
    pub key: String,
    /// First second of the period.
    pub start: u64,
    /// First second after it.
    pub end: u64,
}

const SECS_PER_DAY: u64 = 86_400;

/// The `period` (`day`, `week` or `month`, in UTC) holding `unix_secs`. Weeks are ISO 8601
/// weeks: they start on Monday, and belong to the year of their Thursday (so 2027-01-01 is in
/// `2026-W53`). `None` for any other `period`, or where the period does not fit in unix
/// seconds (the week of 1970-01-01, which began in 1969; the end of `u64` time).
pub fn period_of(period: &str, unix_secs: u64) -> Option<Period> {
    let day = i64::try_from(unix_secs / SECS_PER_DAY).ok()?;
    let (key, first, next) = match period {
        "day" => {
            let (y, m, d) = civil_from_days(day);
            (format!("{y:04}-{m:02}-{d:02}"), day, day + 1)
        }
        "week" => {
            // 1970-01-01 (day 0) was a Thursday; Monday = 0.
            let weekday = (day + 3).rem_euclid(7);
            let monday = day - weekday;
            let thursday = monday + 3;
            let (iso_year, _, _) = civil_from_days(thursday);
            let week = (thursday - days_from_civil(iso_year, 1, 1)) / 7 + 1;
            (format!("{iso_year:04}-W{week:02}"), monday, monday + 7)
        }
        "month" => {
            let (y, m, _) = civil_from_days(day);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            (
                format!("{y:04}-{m:02}"),
                days_from_civil(y, m, 1),
                days_from_civil(ny, nm, 1),
            )
        }
        _ => return None,
    };
    let secs = |d: i64| u64::try_from(d).ok()?.checked_mul(SECS_PER_DAY);
    Some(Period {
        key,
        start: secs(first)?,
        end: secs(next)?,
    })
}

/// Days since 1970-01-01 of the proleptic Gregorian date `y-m-d` (H. Hinnant's
/// `days_from_civil`).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400); // [0, 399]
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 }; // March = 0
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of `days` since 1970-01-01 (H. Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = doy - (153 * mp + 2) / 5 + 1; // [1, 31]
    let m = if mp < 10 { mp + 3 } else { mp - 9 }; // [1, 12]
    let y = yoe + era * 400 + i64::from(m <= 2);
    // Both are small and positive by construction.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    (y, m as u32, d as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(provider: &str, model: &str, input: f64, output: f64) -> PriceRaw {
        PriceRaw {
            provider: provider.to_string(),
            model: model.to_string(),
            input,
            output,
            cached_input: None,
        }
    }

    /// A price's input and output rates (its cache rate aside).
    fn io(p: Price) -> (u64, u64) {
        (p.input, p.output)
    }

    fn usd(input: f64, output: f64) -> Price {
        Price::from_usd_per_million(input, output).unwrap()
    }

    #[test]
    fn units() {
        assert_eq!(usd(0.15, 0.6), p(150_000, 600_000));
        assert_eq!(usd(0.02, 0.0), p(20_000, 0));
        assert_eq!(usd(2.5, 10.0), p(2_500_000, 10_000_000));
        assert_eq!(usd(0.0375, 0.000001), p(37_500, 1));
        assert_eq!(usd(0.1 + 0.2, 0.0), p(300_000, 0)); // 0.30000000000000004
        assert_eq!(usd(10_000.0, 0.0).input, 10_000_000_000);
        assert_eq!(usd(0.0, -0.0), Price::ZERO);
    }

    #[test]
    fn from_usd_per_million_rejects() {
        for bad in [
            -0.01,
            -1.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            10_000.01,
            1e300,
            1e-9,
        ] {
            assert!(
                Price::from_usd_per_million(bad, 1.0).is_err(),
                "input {bad}"
            );
            assert!(
                Price::from_usd_per_million(1.0, bad).is_err(),
                "output {bad}"
            );
        }
        let e = Price::from_usd_per_million(1.0, -2.0).unwrap_err();
        assert!(e.starts_with("output:"), "{e}");
    }

    /// Anthropic's prompt-cache rates: writes 1.25 times the input price (the one-hour
    /// cache 2 times), reads 0.1 times; nothing cached is the plain price.
    #[test]
    fn cached_input_is_priced_as_anthropic_bills_it() {
        // $3 / $15 per million (Claude Sonnet): 3 and 15 micro-dollars a token.
        let sonnet = usd(3.0, 15.0).anthropic_reads();
        assert_eq!(sonnet, builtin("anthropic", "claude-sonnet-4-5").unwrap());
        let none = Cached::default();
        assert_eq!(
            sonnet.cost_micros_cached(1000, 100, none),
            sonnet.cost_micros(1000, 100)
        );
        // 1000 input: 100 plain, 400 written, 500 read; 100 output.
        let five = Cached {
            written: 400,
            read: 500,
            hour: false,
        };
        // 100*3 + 400*3.75 + 500*0.3 + 100*15 = 300 + 1500 + 150 + 1500
        assert_eq!(sonnet.cost_micros_cached(1000, 100, five), 3450);
        let hour = Cached { hour: true, ..five };
        // 300 + 400*6 + 150 + 1500
        assert_eq!(sonnet.cost_micros_cached(1000, 100, hour), 4350);
        // A read is a tenth, rounded up once on the whole: 1 read token at 3 → 0.3 → 1.
        let one_read = Cached {
            written: 0,
            read: 1,
            hour: false,
        };
        assert_eq!(sonnet.cost_micros_cached(1, 0, one_read), 1);
        // Counts that disagree (more cached than in all): no negative plain part, and
        // the cached counts are charged in full (10 * 3.75 + 10 * 0.3 = 40.5 → 41).
        let over = Cached {
            written: 10,
            read: 10,
            hour: false,
        };
        assert_eq!(sonnet.cost_micros_cached(5, 0, over), 41);
    }

    /// OpenAI reports cache reads (`cached_tokens`, part of `prompt_tokens`) and no
    /// writes; each model has its own cached-input price, and a model with none known is
    /// charged the plain input price for them (never undercharged).
    #[test]
    fn openai_cache_reads_at_the_model_cached_price() {
        let reads = |read| Cached {
            written: 0,
            read,
            hour: false,
        };
        // gpt-4o: $2.50 input, $1.25 cached, $10 output. 2048 prompt of which 1024 cached,
        // 10 output: 1024*2.5 + 1024*1.25 + 10*10 = 2560 + 1280 + 100.
        let gpt4o = builtin("openai", "gpt-4o-2024-08-06").unwrap();
        assert_eq!(gpt4o.cost_micros_cached(2048, 10, reads(1024)), 3940);
        assert_eq!(gpt4o.cost_micros(2048, 10), 5220);
        // gpt-4.1: a quarter of the input price.
        let g41 = builtin("openai", "gpt-4.1").unwrap();
        assert_eq!(g41.cache_read * 4, g41.input);
        // No cached price known: reads at the input price, the plain cost.
        for model in ["gpt-5-nano", "gpt-4o-2024-05-13", "text-embedding-3-small"] {
            let p = builtin("openai", model).unwrap();
            assert_eq!(p.cache_read, p.input, "{model}");
            assert_eq!(
                p.cost_micros_cached(2048, 10, reads(1024)),
                p.cost_micros(2048, 10)
            );
        }
        // Mistral reports no cache; were it to, reads would be plain input.
        let m = builtin("mistral", "mistral-small-latest").unwrap();
        assert_eq!(m.cache_read, m.input);
        // Every table price reads at most its input price.
        for (kind, id, price) in TABLE {
            assert!(price.cache_read <= price.input, "{kind}/{id}");
            if *kind == "anthropic" {
                assert_eq!(price.cache_read * 10, price.input, "{id}");
            }
        }
    }

    /// Config `cached_input`: its own rate; omitted, Anthropic's tenth at an Anthropic
    /// provider (or a mock of that flavor) and the input price elsewhere; above the input
    /// price or not a price, refused with the entry's index.
    #[test]
    fn config_cached_input() {
        let with = |provider: &str, model: &str, input, cached| PriceRaw {
            cached_input: cached,
            ..raw(provider, model, input, 1.0)
        };
        let book = PriceBook::new(&[
            with("oai", "m", 2.0, Some(0.5)),
            with("oai", "n", 2.0, None),
            with("claude", "m", 2.0, None),
            with("claude", "n", 2.0, Some(2.0)),
        ])
        .unwrap();
        assert_eq!(
            book.price("oai", "openai", "m").unwrap().cache_read,
            500_000
        );
        assert_eq!(
            book.price("oai", "openai", "n").unwrap().cache_read,
            2_000_000
        );
        assert_eq!(
            book.price("claude", "anthropic", "m").unwrap().cache_read,
            200_000
        );
        assert_eq!(
            book.price("claude", "anthropic", "n").unwrap().cache_read,
            2_000_000
        );
        let errors = PriceBook::new(&[
            with("oai", "m", 2.0, Some(2.5)),
            with("oai", "n", 2.0, Some(-1.0)),
            with("oai", "o", 2.0, Some(0.0)),
        ])
        .unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert_eq!(errors[0].0, 0);
        assert!(
            errors[0].1.starts_with("cached_input: 2.5 is above"),
            "{errors:?}"
        );
        assert_eq!(errors[1].0, 1);
        assert!(errors[1].1.starts_with("cached_input:"), "{errors:?}");
    }

    #[test]
    fn cost_rounds_up() {
        let mini = usd(0.15, 0.6);
        assert_eq!(mini.cost_micros(0, 0), 0);
        // 0.15 micro-dollars → 1.
        assert_eq!(mini.cost_micros(1, 0), 1);
        assert_eq!(mini.cost_micros(0, 1), 1);
        // Exactly $0.15 and $0.60 per million: no rounding.
        assert_eq!(mini.cost_micros(1_000_000, 0), 150_000);
        assert_eq!(mini.cost_micros(0, 1_000_000), 600_000);
        assert_eq!(mini.cost_micros(1_000_000, 1_000_000), 750_000);
        // 7 * 0.15 + 3 * 0.6 = 2.85 → 3.
        assert_eq!(mini.cost_micros(7, 3), 3);
        // Rounded once, on the sum: 0.5 + 0.5 = 1, not 2.
        let half = p(500_000, 500_000);
        assert_eq!(half.cost_micros(1, 1), 1);
        assert_eq!(Price::ZERO.cost_micros(u64::MAX, u64::MAX), 0);
    }

    #[test]
    fn cost_big_counts_exact_and_saturating() {
        // 10^12 tokens at $10/M = $10M = 10^13 micro-dollars, exactly.
        let ten = usd(10.0, 10.0);
        assert_eq!(ten.cost_micros(1_000_000_000_000, 0), 10_000_000_000_000);
        assert_eq!(
            ten.cost_micros(1_000_000_000_000, 1_000_000_000_000),
            20_000_000_000_000
        );
        // u64::MAX tokens at $0.000001/M: u64::MAX pico = ceil(u64::MAX / 10^6) micro.
        let tiny = p(1, 1);
        assert_eq!(tiny.cost_micros(u64::MAX, 0), u64::MAX / 1_000_000 + 1);
        // Products past u64 are still exact in u128: 10^15 tokens at $10,000/M is 10^25
        // pico-dollars, 10^19 micro-dollars ($10^13)...
        let max = usd(10_000.0, 10_000.0);
        assert_eq!(
            max.cost_micros(1_000_000_000_000_000, 0),
            10_000_000_000_000_000_000
        );
        assert_eq!(
            max.cost_micros(0, 1_000_000_000_000_000),
            10_000_000_000_000_000_000
        );
        // ...and past that, saturate.
        assert_eq!(max.cost_micros(2_000_000_000_000_000, 0), u64::MAX);
        assert_eq!(max.cost_micros(u64::MAX, u64::MAX), u64::MAX);
        assert_eq!(
            p(u64::MAX, u64::MAX).cost_micros(u64::MAX, u64::MAX),
            u64::MAX
        );
    }

    #[test]
    fn builtin_required_models() {
        let cases: &[(&str, &str, f64, f64)] = &[
            ("openai", "gpt-4o", 2.5, 10.0),
            ("openai", "gpt-4o-mini", 0.15, 0.6),
            ("openai", "gpt-4.1", 2.0, 8.0),
            ("openai", "gpt-4.1-mini", 0.4, 1.6),
            ("openai", "gpt-4.1-nano", 0.1, 0.4),
            ("openai", "o3", 2.0, 8.0),
            ("openai", "o4-mini", 1.1, 4.4),
            ("openai", "text-embedding-3-small", 0.02, 0.0),
            ("openai", "text-embedding-3-large", 0.13, 0.0),
            ("anthropic", "claude-3-5-haiku", 0.8, 4.0),
            ("anthropic", "claude-3-7-sonnet", 3.0, 15.0),
            ("anthropic", "claude-sonnet-4", 3.0, 15.0),
            ("anthropic", "claude-opus-4", 15.0, 75.0),
            ("anthropic", "claude-opus-4-1", 15.0, 75.0),
            ("anthropic", "claude-opus-4-5", 5.0, 25.0),
            ("anthropic", "claude-haiku-4-5", 1.0, 5.0),
            ("mistral", "mistral-large-latest", 0.5, 1.5),
            ("mistral", "mistral-medium-latest", 1.5, 7.5),
            ("mistral", "mistral-small-latest", 0.15, 0.6),
            ("mistral", "codestral-latest", 0.3, 0.9),
            ("mistral", "open-mistral-nemo", 0.15, 0.15),
            ("mistral", "mistral-embed", 0.1, 0.0),
        ];
        for &(kind, model, i, o) in cases {
            assert_eq!(
                builtin(kind, model).map(io),
                Some(io(usd(i, o))),
                "{kind}/{model}"
            );
        }
    }

    #[test]
    fn table_ids_unique_and_sane() {
        for (n, (k, id, price)) in TABLE.iter().enumerate() {
            assert!(["openai", "anthropic", "mistral"].contains(k));
            assert!(price.input <= 10_000_000_000 && price.output <= 10_000_000_000);
            assert!(
                !TABLE[n + 1..]
                    .iter()
                    .any(|(k2, id2, _)| k2 == k && id2 == id),
                "{k}/{id} twice"
            );
        }
        assert_eq!(TABLE_DATE.len(), 10);
    }

    #[test]
    fn snapshots_and_latest() {
        let mini = builtin("openai", "gpt-4o-mini");
        assert!(mini.is_some());
        assert_eq!(builtin("openai", "gpt-4o-mini-2024-07-18"), mini);
        assert_eq!(
            builtin("openai", "gpt-4.1-nano-2025-04-14"),
            builtin("openai", "gpt-4.1-nano")
        );
        assert_eq!(
            builtin("openai", "gpt-4o-2024-08-06").map(io),
            Some(io(usd(2.5, 10.0)))
        );
        // An exact id beats the shorter one it is a snapshot of.
        assert_eq!(
            builtin("openai", "gpt-4o-2024-05-13").map(io),
            Some(io(usd(5.0, 15.0)))
        );

        let haiku = builtin("anthropic", "claude-3-5-haiku");
        assert!(haiku.is_some());
        assert_eq!(builtin("anthropic", "claude-3-5-haiku-20241022"), haiku);
        assert_eq!(builtin("anthropic", "claude-3-5-haiku-latest"), haiku);
        assert_eq!(
            builtin("anthropic", "claude-3-7-sonnet-latest").map(io),
            Some(io(usd(3.0, 15.0)))
        );
        assert_eq!(
            builtin("anthropic", "claude-opus-4-20250514").map(io),
            Some(io(usd(15.0, 75.0)))
        );
        assert_eq!(
            builtin("anthropic", "claude-opus-4-0").map(io),
            Some(io(usd(15.0, 75.0)))
        );
        // Longest prefix: Opus 4.5 is not Opus 4.
        assert_eq!(
            builtin("anthropic", "claude-opus-4-5-20251101").map(io),
            Some(io(usd(5.0, 25.0)))
        );
        assert_eq!(
            builtin("anthropic", "claude-haiku-4-5-20251001").map(io),
            Some(io(usd(1.0, 5.0)))
        );
        assert_eq!(
            builtin("anthropic", "claude-sonnet-4-5-20250929").map(io),
            Some(io(usd(3.0, 15.0)))
        );
        assert_eq!(
            builtin("mistral", "mistral-large-2411").map(io),
            Some(io(usd(2.0, 6.0)))
        );
    }

    #[test]
    fn near_misses_have_no_price() {
        for (kind, model) in [
            ("openai", "o3-pro"),
            ("openai", "o3-deep-research"),
            ("openai", "gpt-5.4-mini"),
            ("openai", "gpt-4o-audio-preview"),
            ("openai", "gpt-4o-mini-2024-7-18"),
            ("openai", "gpt-4o-"),
            ("openai", "gpt-4"),
            ("openai", "GPT-4o"),
            ("anthropic", "claude-opus-4-8"),
            ("anthropic", "claude-3-5-haiku-2024102"),
            ("mistral", "mistral-large-2402"),
            ("mistral", "mistral-large"),
            // Wrong kind, and kinds with no table.
            ("anthropic", "gpt-4o"),
            ("mistral", "claude-3-5-haiku"),
            ("mock", "gpt-4o"),
            ("openai_compatible", "gpt-4o"),
            ("", "gpt-4o"),
            ("openai", ""),
        ] {
            assert_eq!(builtin(kind, model), None, "{kind}/{model}");
        }
    }

    #[test]
    fn config_overrides_builtin() {
        let book = PriceBook::new(&[
            raw("mistral-eu", "mistral-large-latest", 2.0, 6.0),
            raw("vllm", "llama-3.1-70b", 0.0, 0.0),
            raw("openai", "gpt-4o", 1.0, 2.0),
        ])
        .unwrap();
        // The contract's example: the configured price, not the table's.
        assert_eq!(
            book.price("mistral-eu", "mistral", "mistral-large-latest")
                .map(io),
            Some(io(usd(2.0, 6.0)))
        );
        // Only for that provider: another of the same kind keeps the table.
        assert_eq!(
            book.price("mistral-us", "mistral", "mistral-large-latest")
                .map(io),
            Some(io(usd(0.5, 1.5)))
        );
        // Models the config does not name fall through to the table.
        assert_eq!(
            book.price("mistral-eu", "mistral", "mistral-small-latest"),
            builtin("mistral", "mistral-small-latest")
        );
        // Self-hosted, free, and priced.
        assert_eq!(
            book.price("vllm", "openai_compatible", "llama-3.1-70b"),
            Some(Price::ZERO)
        );
        assert_eq!(book.price("vllm", "openai_compatible", "other"), None);
        // A config price covers its snapshots too, ahead of the table's exact snapshot.
        assert_eq!(
            book.price("openai", "openai", "gpt-4o-2024-05-13").map(io),
            Some(io(usd(1.0, 2.0)))
        );
        assert_eq!(
            book.price("openai", "openai", "gpt-4o-mini").map(io),
            Some(io(usd(0.15, 0.6)))
        );
        assert_eq!(book.price("nobody", "nothing", "gpt-4o"), None);
        assert_eq!(
            PriceBook::default()
                .price("openai", "openai", "gpt-4o")
                .map(io),
            Some(io(usd(2.5, 10.0)))
        );
    }

    #[test]
    fn mocks_priced_like_their_flavor() {
        let book = PriceBook::new(&[raw("mock-eu", "mistral-small-latest", 9.0, 9.0)]).unwrap();
        let kind = pricing_kind("mock", Some("mistral"));
        assert_eq!(kind, "mistral");
        assert_eq!(
            book.price("mock-eu", kind, "mistral-large-latest"),
            builtin("mistral", "mistral-large-latest")
        );
        // Config first, for mocks too.
        assert_eq!(
            book.price("mock-eu", kind, "mistral-small-latest").map(io),
            Some(io(usd(9.0, 9.0)))
        );
        assert_eq!(pricing_kind("mock", None), "mock");
        assert_eq!(pricing_kind("openai", Some("anthropic")), "openai");
        assert_eq!(book.price("mock-eu", "mock", "mistral-large-latest"), None);
    }

    #[test]
    fn bad_config_prices_name_their_index() {
        let errs = PriceBook::new(&[
            raw("a", "m", 1.0, 1.0),
            raw("a", "n", -1.0, 1.0),
            raw("a", "m", 2.0, 2.0),
            raw("", "m", 1.0, 1.0),
            raw("b", "m", 1.0, f64::NAN),
            raw("b", "m", 1.0, 1.0),
            raw("c", "m", 20_000.0, 1.0),
        ])
        .unwrap_err();
        let idx: Vec<usize> = errs.iter().map(|(i, _)| *i).collect();
        assert_eq!(idx, vec![1, 2, 3, 4, 6]);
        assert!(errs[1].1.contains("more than once"), "{}", errs[1].1);
        assert!(errs[0].1.contains("negative"), "{}", errs[0].1);
        assert!(PriceBook::new(&[]).is_ok());
    }

    fn period(kind: &str, t: u64) -> Period {
        period_of(kind, t).unwrap()
    }

    fn pd(key: &str, start: u64, end: u64) -> Period {
        Period {
            key: key.to_string(),
            start,
            end,
        }
    }

    // Timestamps from `date -u -d ... +%s`; ISO weeks from `+%G-W%V`.
    const NOV_01_2026: u64 = 1_793_491_200;
    const NOV_29_2026: u64 = 1_795_910_400;
    const DEC_01_2026: u64 = 1_796_083_200;
    const DEC_28_2026: u64 = 1_798_416_000;
    const JAN_01_2027: u64 = 1_798_761_600;
    const JAN_04_2027: u64 = 1_799_020_800;
    const FEB_01_2028: u64 = 1_832_976_000;
    const MAR_01_2028: u64 = 1_835_481_600;
    const DAY: u64 = 86_400;

    #[test]
    fn months() {
        assert_eq!(
            period("month", NOV_29_2026),
            pd("2026-11", NOV_01_2026, DEC_01_2026)
        );
        // Last second of November, first of December.
        assert_eq!(
            period("month", DEC_01_2026 - 1),
            pd("2026-11", NOV_01_2026, DEC_01_2026)
        );
        assert_eq!(period("month", DEC_01_2026).key, "2026-12");
        // December ends at the next year.
        assert_eq!(
            period("month", JAN_01_2027 - 1),
            pd("2026-12", DEC_01_2026, JAN_01_2027)
        );
        assert_eq!(period("month", JAN_01_2027).key, "2027-01");
        // A leap February has 29 days.
        let feb = period("month", MAR_01_2028 - DAY / 2); // 2028-02-29T12:00Z
        assert_eq!(feb, pd("2028-02", FEB_01_2028, MAR_01_2028));
        assert_eq!(feb.end - feb.start, 29 * DAY);
        assert_eq!(period("month", 0), pd("1970-01", 0, 31 * DAY));
    }

    #[test]
    fn days() {
        assert_eq!(
            period("day", NOV_29_2026),
            pd("2026-11-29", NOV_29_2026, NOV_29_2026 + DAY)
        );
        assert_eq!(period("day", NOV_29_2026 + DAY - 1).key, "2026-11-29");
        assert_eq!(period("day", NOV_29_2026 + DAY).key, "2026-11-30");
        assert_eq!(period("day", DEC_01_2026 - 1).key, "2026-11-30");
        let leap = period("day", 1_835_438_400); // 2028-02-29T12:00Z
        assert_eq!(leap, pd("2028-02-29", MAR_01_2028 - DAY, MAR_01_2028));
        assert_eq!(period("day", MAR_01_2028).key, "2028-03-01");
        assert_eq!(period("day", 0), pd("1970-01-01", 0, DAY));
        assert_eq!(period("day", 2_000_000_000 * 100).key, "8307-10-01");
    }

    #[test]
    fn iso_weeks() {
        // Sunday 2026-11-29 closes 2026-W48 (Monday 2026-11-23).
        assert_eq!(
            period("week", NOV_29_2026 + 3600),
            pd("2026-W48", NOV_29_2026 - 6 * DAY, NOV_29_2026 + DAY)
        );
        assert_eq!(period("week", NOV_29_2026 + DAY).key, "2026-W49");
        // 2026 starts on a Thursday: 53 weeks; 2026-12-31 and 2027-01-01 are both W53.
        let w53 = pd("2026-W53", DEC_28_2026, JAN_04_2027);
        assert_eq!(period("week", DEC_28_2026), w53);
        assert_eq!(period("week", 1_798_718_400), w53); // 2026-12-31T12:00Z
        assert_eq!(period("week", JAN_01_2027), w53);
        assert_eq!(period("week", JAN_04_2027 - 1), w53);
        assert_eq!(
            period("week", JAN_04_2027),
            pd("2027-W01", JAN_04_2027, JAN_04_2027 + 7 * DAY)
        );
        // Other crossings: 2021-01-01 is in 2020-W53; 2024-12-30 is in 2025-W01;
        // 2025-12-29 is in 2026-W01.
        assert_eq!(period("week", 1_609_459_200).key, "2020-W53");
        assert_eq!(period("week", 1_609_459_200).start, 1_609_113_600);
        assert_eq!(period("week", 1_735_516_800).key, "2025-W01");
        assert_eq!(period("week", 1_766_966_400).key, "2026-W01");
        // 2028-02-29 (Tuesday) is in 2028-W09.
        assert_eq!(period("week", 1_835_438_400).key, "2028-W09");
        // The epoch, a Thursday, is in 1970-W01, which began on Monday 1969-12-29: before
        // unix time, so not representable.
        assert_eq!(period_of("week", 0), None);
        assert_eq!(period("week", 4 * DAY), pd("1970-W02", 4 * DAY, 11 * DAY));
    }

    #[test]
    fn weeks_agree_with_days_for_years() {
        // Every day of 2024..=2032: the week holds it, starts on a Monday, is 7 days long,
        // and its number is 1..=53.
        let start = 1_704_067_200; // 2024-01-01
        for d in 0..(9 * 366) {
            let t = start + d * DAY;
            let w = period("week", t);
            assert!(w.start <= t && t < w.end);
            assert_eq!(w.end - w.start, 7 * DAY);
            assert_eq!((w.start / DAY + 3) % 7, 0, "{}", w.key);
            let n: u32 = w.key[6..].parse().unwrap();
            assert!((1..=53).contains(&n), "{}", w.key);
            let m = period("month", t);
            assert!(m.start <= t && t < m.end);
            assert_eq!(period("month", m.end).start, m.end);
        }
    }

    #[test]
    fn invalid_periods() {
        for p in [
            "", "Month", "MONTH", "year", "hour", "weekly", "days", " month",
        ] {
            assert_eq!(period_of(p, NOV_29_2026), None, "{p:?}");
        }
        // The end of time: no panic, and `None` where the end does not fit.
        assert_eq!(period_of("day", u64::MAX), None);
        assert_eq!(period_of("month", u64::MAX), None);
        assert_eq!(period_of("week", u64::MAX), None);
    }

    #[test]
    fn civil_round_trip() {
        for d in [-719_468, -1, 0, 1, 59, 365, 11_016, 20_000, 2_932_896] {
            let (y, m, dd) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, dd), d);
        }
        assert_eq!(
            days_from_civil(2028, 2, 29) + 1,
            days_from_civil(2028, 3, 1)
        );
        assert_eq!(
            days_from_civil(2100, 2, 28) + 1,
            days_from_civil(2100, 3, 1)
        );
    }
}
