//! Step 3 of loading: raw sections to the typed [`Config`], every error collected.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;

use sha2::{Digest, Sha256};

use super::raw::{ProviderRaw, TargetRaw, TenantRaw};
use super::{ConfigError, RawConfig};
use crate::mock::{Flavor, MockSettings};
use crate::prices::PriceBook;

/// The validated configuration one generation of the gateway runs on.
#[derive(Debug)]
pub struct Config {
    /// SHA-256 of the file text, hex.
    pub hash: String,
    pub raw: RawConfig,
    pub server: ServerSettings,
    pub providers: Vec<Provider>,
    /// Declared models first, then implicit ones (see [`Model::implicit`]).
    pub models: Vec<Model>,
    model_index: HashMap<String, usize>,
    pub tenants: Vec<Tenant>,
    tenant_index: HashMap<String, usize>,
    /// SHA-256 of a static key → the key.
    keys: HashMap<[u8; 32], StaticKey>,
}

#[derive(Debug, Clone)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub max_body_bytes: usize,
    /// `server.tls`: both listeners serve HTTPS with it.
    pub tls: Option<crate::tls::TlsSettings>,
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// Base URL without a trailing slash; for `mock` the in-process server's is set at start.
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub region: String,
}

#[derive(Debug, Clone)]
pub enum ProviderKind {
    Anthropic,
    Mistral,
    /// In-process mock speaking `flavor`'s wire format.
    Mock(MockSettings),
    OpenAi,
    OpenAiCompatible,
}

#[derive(Debug, Clone)]
pub struct Model {
    pub name: String,
    pub targets: Vec<Target>,
    pub fallbacks: Vec<Target>,
    pub strategy: Strategy,
    pub retries: u32,
    pub timeout_ms: u64,
    pub deadline_ms: u64,
    pub breaker: crate::routing::BreakerSettings,
    pub cache_ttl_s: u64,
    /// Not declared under `models`: a provider model named by some target, fallback or
    /// experiment candidate, requestable by that name (so `allowed_models: ["mistral-*"]`
    /// means something).
    pub implicit: bool,
}

/// How a model's targets are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Cheapest priced target first.
    Cost,
    /// Lowest moving average of latency and time to first token first, exploring a
    /// random target now and then.
    LeastLatency,
    /// One drawn by weight, then the rest by weight.
    Weighted,
}

#[derive(Debug, Clone)]
pub struct Target {
    /// `provider/model`: the target's name in records, health and metrics.
    pub key: String,
    /// Index into [`Config::providers`].
    pub provider: usize,
    pub model: String,
    pub weight: f64,
}

#[derive(Debug, Clone)]
pub struct Tenant {
    pub name: String,
    /// Model names or globs (`*`, `?`).
    pub allowed_models: Vec<String>,
    /// Regions prompts may be processed in; empty means any.
    pub regions: Vec<String>,
    pub log_content: bool,
    /// Built once here, never per request.
    pub guardrails: std::sync::Arc<crate::guardrails::Guardrails>,
    pub raw: TenantRaw,
}

#[derive(Debug, Clone)]
pub struct StaticKey {
    /// Stable id for records: `TENANT/NAME`, never the key.
    pub id: String,
    pub tenant: usize,
}

// === impl Config ===

impl Config {
    pub fn model(&self, name: &str) -> Option<&Model> {
        self.model_index.get(name).map(|&i| &self.models[i])
    }

    pub fn tenant(&self, name: &str) -> Option<(usize, &Tenant)> {
        self.tenant_index.get(name).map(|&i| (i, &self.tenants[i]))
    }

    /// Checks a tenant defined outside the file (admin API) against this config: the
    /// same rules as a tenant in the file.
    pub fn check_tenant(&self, t: &TenantRaw) -> Vec<ConfigError> {
        let mut errs = Vec::new();
        check_tenant(t, "tenant", &self.model_index, &self.providers, &mut errs);
        if let Ok(book) = PriceBook::new(&self.raw.prices) {
            for m in unpriced(t, &self.models, &self.providers, &book) {
                errs.push(ConfigError::new("tenant.budget", m));
            }
        }
        errs
    }

    /// A tenant defined outside the file (admin API) with a budget, against a new file:
    /// the unpriced models the file would let it reach (a way around its budget), as
    /// errors at `tenants[api:NAME].budget`. Other mismatches (a model it lists that the
    /// file no longer has) only narrow what it may use, and are not errors here.
    pub fn unpriced_for(&self, t: &TenantRaw) -> Vec<ConfigError> {
        let Ok(book) = PriceBook::new(&self.raw.prices) else {
            return Vec::new();
        };
        let path = format!("tenants[api:{}].budget", t.name);
        unpriced(t, &self.models, &self.providers, &book)
            .into_iter()
            .map(|m| ConfigError::new(&path, m))
            .collect()
    }

    /// Static keys: SHA-256 → key.
    pub fn static_keys(&self) -> impl Iterator<Item = (&[u8; 32], &StaticKey)> {
        self.keys.iter()
    }

    /// Looks a static key up by its SHA-256.
    pub fn static_key(&self, hash: &[u8; 32]) -> Option<&StaticKey> {
        self.keys.get(hash)
    }
}

impl ProviderKind {
    /// Which provider's list prices apply (mocks are priced like what they imitate).
    pub fn price_kind(&self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::Mistral => "mistral",
            Self::OpenAi => "openai",
            Self::OpenAiCompatible => "openai_compatible",
            Self::Mock(s) => s.flavor.as_str(),
        }
    }
}

// === impl Tenant ===

impl Tenant {
    /// Builds a tenant from its raw form; guardrails that do not build (refused by
    /// validation) fall back to none.
    pub fn from_raw(t: &TenantRaw) -> Self {
        let guardrails =
            crate::guardrails::Guardrails::from_raw(t.guardrails.as_ref()).unwrap_or_default();
        Self {
            name: t.name.clone(),
            allowed_models: t.allowed_models.clone(),
            regions: t.regions.clone(),
            log_content: t.log_content,
            guardrails: std::sync::Arc::new(guardrails),
            raw: t.clone(),
        }
    }

    pub fn may_use(&self, model: &str) -> bool {
        self.allowed_models.iter().any(|g| glob_match(g, model))
    }

    pub fn region_allowed(&self, region: &str) -> bool {
        self.regions.is_empty() || self.regions.iter().any(|r| r == region)
    }
}

/// `*` matches any run of characters, `?` one character.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?'])
}

/// SHA-256 of an API key, the form keys are looked up and stored in.
pub fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Builds the typed config, or every error found.
pub fn validate(raw: RawConfig, hash: String) -> Result<Config, Vec<ConfigError>> {
    let mut errs = Vec::new();
    let server = server_settings(&raw, &mut errs);

    // Providers.
    let mut providers = Vec::new();
    let mut provider_index = HashMap::new();
    for (i, p) in raw.providers.iter().enumerate() {
        let path = format!("providers[{i}]");
        if p.name.is_empty() {
            errs.push(ConfigError::new(
                format!("{path}.name"),
                "must not be empty",
            ));
        }
        if provider_index
            .insert(p.name.clone(), providers.len())
            .is_some()
        {
            errs.push(ConfigError::new(
                format!("{path}.name"),
                format!("duplicate provider name `{}`", p.name),
            ));
        }
        if let Some(provider) = provider(p, &path, &mut errs) {
            providers.push(provider);
        }
    }
    let target = |t: &TargetRaw, path: &str, errs: &mut Vec<ConfigError>| -> Option<Target> {
        let Some(&provider) = provider_index.get(&t.provider) else {
            errs.push(ConfigError::new(
                format!("{path}.provider"),
                format!("no provider named `{}`", t.provider),
            ));
            return None;
        };
        if t.model.is_empty() {
            errs.push(ConfigError::new(
                format!("{path}.model"),
                "must not be empty",
            ));
        }
        let weight = t.weight.unwrap_or(1.0);
        if !(weight > 0.0 && weight.is_finite()) {
            errs.push(ConfigError::new(
                format!("{path}.weight"),
                "must be a positive number",
            ));
        }
        Some(Target {
            key: format!("{}/{}", t.provider, t.model),
            provider,
            model: t.model.clone(),
            weight,
        })
    };

    // Models.
    let mut models = Vec::new();
    let mut model_index = HashMap::new();
    for (i, m) in raw.models.iter().enumerate() {
        let path = format!("models[{i}]");
        if m.name.is_empty() {
            errs.push(ConfigError::new(
                format!("{path}.name"),
                "must not be empty",
            ));
        }
        if model_index.insert(m.name.clone(), models.len()).is_some() {
            errs.push(ConfigError::new(
                format!("{path}.name"),
                format!("duplicate model name `{}`", m.name),
            ));
        }
        if m.targets.is_empty() {
            errs.push(ConfigError::new(
                format!("{path}.targets"),
                "needs at least one target",
            ));
        }
        let targets = (m.targets.iter().enumerate())
            .filter_map(|(j, t)| target(t, &format!("{path}.targets[{j}]"), &mut errs))
            .collect();
        let fallbacks = (m.fallbacks.iter().enumerate())
            .filter_map(|(j, t)| target(t, &format!("{path}.fallbacks[{j}]"), &mut errs))
            .collect();
        let strategy = match m.strategy.as_deref() {
            None | Some("weighted") => Strategy::Weighted,
            Some("least_latency") => Strategy::LeastLatency,
            Some("cost") => Strategy::Cost,
            Some(_) => {
                errs.push(ConfigError::new(
                    format!("{path}.strategy"),
                    "must be weighted, least_latency or cost",
                ));
                Strategy::Weighted
            }
        };
        if let Some(b) = &m.circuit_breaker
            && b.error_rate.is_some_and(|r| !(r > 0.0 && r <= 1.0))
        {
            errs.push(ConfigError::new(
                format!("{path}.circuit_breaker.error_rate"),
                "must be a fraction in (0, 1]",
            ));
        }
        let deadline_ms = m.deadline_ms.unwrap_or(120_000);
        if deadline_ms == 0 {
            errs.push(ConfigError::new(
                format!("{path}.deadline_ms"),
                "must be positive",
            ));
        }
        let retries = m.retries.unwrap_or(1);
        if retries > 10 {
            errs.push(ConfigError::new(
                format!("{path}.retries"),
                "must be at most 10",
            ));
        }
        let timeout_ms = m.timeout_ms.unwrap_or(30_000);
        if timeout_ms == 0 {
            errs.push(ConfigError::new(
                format!("{path}.timeout_ms"),
                "must be positive",
            ));
        }
        models.push(Model {
            name: m.name.clone(),
            targets,
            fallbacks,
            strategy,
            retries,
            timeout_ms,
            deadline_ms,
            breaker: crate::routing::BreakerSettings::from_raw(m.circuit_breaker.as_ref()),
            cache_ttl_s: m.cache_ttl_s.unwrap_or(0),
            implicit: false,
        });
    }
    // Implicit models: provider model names used by targets, fallbacks and candidates.
    let mut implicit: Vec<(String, Vec<Target>)> = Vec::new();
    let candidates = raw.experiments.iter().filter_map(|e| {
        let p = *provider_index.get(&e.candidate.provider)?;
        Some(Target {
            key: format!("{}/{}", e.candidate.provider, e.candidate.model),
            provider: p,
            model: e.candidate.model.clone(),
            weight: 1.0,
        })
    });
    let used: Vec<Target> = (models.iter())
        .flat_map(|m| m.targets.iter().chain(&m.fallbacks).cloned())
        .chain(candidates)
        .collect();
    for t in used {
        if model_index.contains_key(&t.model) {
            continue;
        }
        let target = Target { weight: 1.0, ..t };
        match implicit.iter_mut().find(|(n, _)| *n == target.model) {
            Some((_, ts)) => {
                if !ts.iter().any(|x| x.provider == target.provider) {
                    ts.push(target);
                }
            }
            None => implicit.push((target.model.clone(), vec![target])),
        }
    }
    for (name, targets) in implicit {
        model_index.insert(name.clone(), models.len());
        models.push(Model {
            name,
            targets,
            fallbacks: Vec::new(),
            strategy: Strategy::Weighted,
            retries: 1,
            timeout_ms: 30_000,
            deadline_ms: 120_000,
            breaker: crate::routing::BreakerSettings::default(),
            cache_ttl_s: 0,
            implicit: true,
        });
    }

    // Tenants and their static keys.
    let mut tenants = Vec::new();
    let mut tenant_index = HashMap::new();
    let mut keys = HashMap::new();
    for (i, t) in raw.tenants.iter().enumerate() {
        let path = format!("tenants[{i}]");
        check_tenant(t, &path, &model_index, &providers, &mut errs);
        if tenant_index.insert(t.name.clone(), tenants.len()).is_some() {
            errs.push(ConfigError::new(
                format!("{path}.name"),
                format!("duplicate tenant name `{}`", t.name),
            ));
        }
        let mut names = HashSet::new();
        for (j, k) in t.keys.iter().enumerate() {
            let kp = format!("{path}.keys[{j}]");
            if !names.insert(k.name.as_str()) {
                errs.push(ConfigError::new(format!("{kp}.name"), "duplicate key name"));
            }
            if k.key.len() < 8 {
                errs.push(ConfigError::new(
                    format!("{kp}.key"),
                    "must be at least 8 characters",
                ));
            }
            let sk = StaticKey {
                id: format!("{}/{}", t.name, k.name),
                tenant: tenants.len(),
            };
            if keys.insert(key_hash(&k.key), sk).is_some() {
                errs.push(ConfigError::new(
                    format!("{kp}.key"),
                    "the same key is configured twice",
                ));
            }
        }
        tenants.push(Tenant::from_raw(t));
    }

    other_sections(
        &raw,
        &provider_index,
        &model_index,
        &tenant_index,
        &mut errs,
    );
    match PriceBook::new(&raw.prices) {
        Err(bad) => {
            for (i, m) in bad {
                errs.push(ConfigError::new(format!("prices[{i}]"), m));
            }
        }
        Ok(book) => {
            for (i, t) in raw.tenants.iter().enumerate() {
                for m in unpriced(t, &models, &providers, &book) {
                    errs.push(ConfigError::new(format!("tenants[{i}].budget"), m));
                }
            }
        }
    }

    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Config {
        hash,
        raw,
        server,
        providers,
        models,
        model_index,
        tenants,
        tenant_index,
        keys,
    })
}

fn server_settings(raw: &RawConfig, errs: &mut Vec<ConfigError>) -> ServerSettings {
    let addr = |v: &Option<String>, default: &str, path: &str, errs: &mut Vec<ConfigError>| {
        let s = v.as_deref().unwrap_or(default);
        s.parse::<SocketAddr>().unwrap_or_else(|_| {
            errs.push(ConfigError::new(
                path,
                format!("`{s}` is not an address like 127.0.0.1:8080"),
            ));
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    };
    let listen = addr(&raw.server.listen, "127.0.0.1:8080", "server.listen", errs);
    let admin_listen = addr(
        &raw.server.admin_listen,
        "127.0.0.1:8081",
        "server.admin_listen",
        errs,
    );
    let max_body_bytes = raw.server.max_body_bytes.unwrap_or(4 * 1024 * 1024);
    if max_body_bytes == 0 {
        errs.push(ConfigError::new(
            "server.max_body_bytes",
            "must be positive",
        ));
    }
    let tls = raw.server.tls.as_ref().and_then(|t| {
        let mut empty = false;
        for (field, v) in [("cert_file", &t.cert_file), ("key_file", &t.key_file)] {
            if v.trim().is_empty() {
                errs.push(ConfigError::new(
                    format!("server.tls.{field}"),
                    "must not be empty",
                ));
                empty = true;
            }
        }
        if empty {
            return None;
        }
        crate::tls::load(t.cert_file.as_ref(), t.key_file.as_ref())
            .map_err(|e| {
                errs.push(ConfigError::new(
                    format!("server.tls.{}", e.field),
                    e.message,
                ))
            })
            .ok()
    });
    ServerSettings {
        listen,
        admin_listen,
        max_body_bytes: usize::try_from(max_body_bytes).unwrap_or(usize::MAX),
        tls,
    }
}

fn provider(p: &ProviderRaw, path: &str, errs: &mut Vec<ConfigError>) -> Option<Provider> {
    if p.region.is_empty() {
        errs.push(ConfigError::new(
            format!("{path}.region"),
            "must not be empty",
        ));
    }
    let mock_knobs = p.flavor.is_some()
        || p.ttft_ms.is_some()
        || p.latency_ms.is_some()
        || p.chunks.is_some()
        || p.fail_rate.is_some()
        || p.fail_status.is_some()
        || p.seed.is_some();
    let (kind, default_url) = match p.kind.as_str() {
        "openai" => (ProviderKind::OpenAi, Some("https://api.openai.com/v1")),
        "anthropic" => (ProviderKind::Anthropic, Some("https://api.anthropic.com")),
        "mistral" => (ProviderKind::Mistral, Some("https://api.mistral.ai/v1")),
        "openai_compatible" => (ProviderKind::OpenAiCompatible, None),
        "mock" => {
            let flavor = match p.flavor.as_deref() {
                Some("openai") => Flavor::OpenAi,
                Some("anthropic") => Flavor::Anthropic,
                Some("mistral") => Flavor::Mistral,
                Some(other) => {
                    errs.push(ConfigError::new(
                        format!("{path}.flavor"),
                        format!("`{other}` is not openai, anthropic or mistral"),
                    ));
                    return None;
                }
                None => {
                    errs.push(ConfigError::new(
                        format!("{path}.flavor"),
                        "a mock provider needs a flavor: openai, anthropic or mistral",
                    ));
                    return None;
                }
            };
            let mut s = MockSettings::new(flavor);
            s.ttft_ms = p.ttft_ms.unwrap_or(s.ttft_ms);
            s.latency_ms = p.latency_ms.unwrap_or(s.latency_ms);
            s.chunks = p.chunks.unwrap_or(s.chunks).max(1);
            s.fail_rate = p.fail_rate.unwrap_or(s.fail_rate);
            s.fail_status = p.fail_status.unwrap_or(s.fail_status);
            s.seed = p.seed.unwrap_or(s.seed);
            if !(0.0..=1.0).contains(&s.fail_rate) {
                errs.push(ConfigError::new(
                    format!("{path}.fail_rate"),
                    "must be between 0 and 1",
                ));
            }
            if !(400..=599).contains(&s.fail_status) {
                errs.push(ConfigError::new(
                    format!("{path}.fail_status"),
                    "must be an HTTP error status (400-599)",
                ));
            }
            if p.base_url.is_some() {
                errs.push(ConfigError::new(
                    format!("{path}.base_url"),
                    "a mock provider runs in-process and takes no base_url",
                ));
            }
            return Some(Provider {
                name: p.name.clone(),
                kind: ProviderKind::Mock(s),
                base_url: None,
                api_key: p.api_key.clone(),
                region: p.region.clone(),
            });
        }
        other => {
            errs.push(ConfigError::new(
                format!("{path}.kind"),
                format!(
                    "`{other}` is not a provider kind; expected openai, anthropic, mistral, openai_compatible or mock"
                ),
            ));
            return None;
        }
    };
    if mock_knobs {
        errs.push(ConfigError::new(
            path,
            "flavor, ttft_ms, latency_ms, chunks, fail_rate, fail_status and seed are for kind: mock only",
        ));
    }
    let base_url = match (&p.base_url, default_url) {
        (Some(u), _) => u.trim_end_matches('/').to_owned(),
        (None, Some(d)) => d.to_owned(),
        (None, None) => {
            errs.push(ConfigError::new(
                format!("{path}.base_url"),
                "is required for openai_compatible",
            ));
            String::new()
        }
    };
    if !(base_url.is_empty() || base_url.starts_with("http://") || base_url.starts_with("https://"))
    {
        errs.push(ConfigError::new(
            format!("{path}.base_url"),
            "must start with http:// or https://",
        ));
    }
    let needs_key = !matches!(kind, ProviderKind::OpenAiCompatible);
    if needs_key && p.api_key.as_deref().is_none_or(str::is_empty) {
        errs.push(ConfigError::new(
            format!("{path}.api_key"),
            format!("is required for kind {}", p.kind),
        ));
    }
    Some(Provider {
        name: p.name.clone(),
        kind,
        base_url: Some(base_url),
        api_key: p.api_key.clone().filter(|k| !k.is_empty()),
        region: p.region.clone(),
    })
}

/// A budgeted tenant must not reach an unpriced model: that would be a way around its
/// budget. Returns one message per unpriced target it can reach.
fn unpriced(
    t: &TenantRaw,
    models: &[Model],
    providers: &[Provider],
    book: &PriceBook,
) -> Vec<String> {
    if t.budget.is_none() {
        return Vec::new();
    }
    let tenant = Tenant::from_raw(t);
    let mut out = Vec::new();
    for m in models.iter().filter(|m| tenant.may_use(&m.name)) {
        for target in m.targets.iter().chain(&m.fallbacks) {
            let p = &providers[target.provider];
            if tenant.region_allowed(&p.region)
                && book
                    .price(&p.name, p.kind.price_kind(), &target.model)
                    .is_none()
            {
                let msg = format!(
                    "model `{}` can reach `{}/{}`, which has no price; a budgeted tenant may only reach priced models (add it under `prices`, with 0 for self-hosted models)",
                    m.name, p.name, target.model
                );
                if !out.contains(&msg) {
                    out.push(msg);
                }
            }
        }
    }
    out
}

/// The checks a tenant passes, from the file or from the admin API.
fn check_tenant(
    t: &TenantRaw,
    path: &str,
    models: &HashMap<String, usize>,
    providers: &[Provider],
    errs: &mut Vec<ConfigError>,
) {
    if t.name.is_empty() || t.name.len() > 64 || t.name.contains(['/', ' ']) {
        errs.push(ConfigError::new(
            format!("{path}.name"),
            "must be 1 to 64 characters, without spaces or slashes",
        ));
    }
    for (j, m) in t.allowed_models.iter().enumerate() {
        if !is_glob(m) && !models.contains_key(m) {
            errs.push(ConfigError::new(
                format!("{path}.allowed_models[{j}]"),
                format!("no model named `{m}`"),
            ));
        }
    }
    for (j, r) in t.regions.iter().enumerate() {
        if !providers.iter().any(|p| &p.region == r) {
            errs.push(ConfigError::new(
                format!("{path}.regions[{j}]"),
                format!("no provider is in region `{r}`"),
            ));
        }
    }
    tenant_sections(t, path, models, errs);
}

fn tenant_sections(
    t: &TenantRaw,
    path: &str,
    models: &HashMap<String, usize>,
    errs: &mut Vec<ConfigError>,
) {
    if let Some(b) = &t.budget {
        period(&b.period, &format!("{path}.budget.period"), errs);
        if !(b.limit_usd >= 0.0 && b.limit_usd.is_finite()) {
            errs.push(ConfigError::new(
                format!("{path}.budget.limit_usd"),
                "must be a non-negative number",
            ));
        }
        for (j, a) in b.alert_at.iter().enumerate() {
            if !(*a > 0.0 && *a <= 1.0) {
                errs.push(ConfigError::new(
                    format!("{path}.budget.alert_at[{j}]"),
                    "must be a fraction in (0, 1]",
                ));
            }
        }
        match b.on_exceed.as_deref() {
            None | Some("block") => {}
            Some(s) => match s.strip_prefix("downgrade:") {
                Some(m) if models.contains_key(m) => {}
                Some(m) => errs.push(ConfigError::new(
                    format!("{path}.budget.on_exceed"),
                    format!("no model named `{m}` to downgrade to"),
                )),
                None => errs.push(ConfigError::new(
                    format!("{path}.budget.on_exceed"),
                    "must be block or downgrade:MODEL",
                )),
            },
        }
    }
    if let Some(r) = &t.rate_limit
        && (r.requests_per_minute == Some(0) || r.tokens_per_minute == Some(0))
    {
        errs.push(ConfigError::new(
            format!("{path}.rate_limit"),
            "limits must be positive (omit one for no limit)",
        ));
    }
    if let Some(g) = &t.guardrails
        && let Some(pii) = &g.pii
        && !["off", "detect", "redact", "block"].contains(&pii.as_str())
    {
        errs.push(ConfigError::new(
            format!("{path}.guardrails.pii"),
            "must be off, detect, redact or block",
        ));
    } else if let Err(e) = crate::guardrails::Guardrails::from_raw(t.guardrails.as_ref()) {
        // Its messages start with `guardrails.`.
        errs.push(ConfigError::new(path, e));
    }
}

fn period(p: &str, path: &str, errs: &mut Vec<ConfigError>) {
    if !["day", "week", "month"].contains(&p) {
        errs.push(ConfigError::new(path, "must be day, week or month"));
    }
}

fn other_sections(
    raw: &RawConfig,
    providers: &HashMap<String, usize>,
    models: &HashMap<String, usize>,
    tenants: &HashMap<String, usize>,
    errs: &mut Vec<ConfigError>,
) {
    for (i, p) in raw.providers.iter().enumerate() {
        if let Some(b) = &p.budget {
            period(&b.period, &format!("providers[{i}].budget.period"), errs);
        }
    }
    for (i, p) in raw.prices.iter().enumerate() {
        if !providers.contains_key(&p.provider) {
            errs.push(ConfigError::new(
                format!("prices[{i}].provider"),
                format!("no provider named `{}`", p.provider),
            ));
        }
        if !(p.input >= 0.0 && p.output >= 0.0) {
            errs.push(ConfigError::new(
                format!("prices[{i}]"),
                "prices must be >= 0",
            ));
        }
    }
    for (i, n) in raw.notifications.iter().enumerate() {
        if !(n.url.starts_with("http://") || n.url.starts_with("https://")) {
            errs.push(ConfigError::new(
                format!("notifications[{i}].url"),
                "must start with http:// or https://",
            ));
        }
        for (j, e) in n.events.iter().enumerate() {
            if !["budget_alert", "experiment_decision", "circuit_open"].contains(&e.as_str()) {
                errs.push(ConfigError::new(
                    format!("notifications[{i}].events[{j}]"),
                    "must be budget_alert, experiment_decision or circuit_open",
                ));
            }
        }
    }
    if let Some(e) = &raw.telemetry.otlp_endpoint
        && !(e.starts_with("http://") || e.starts_with("https://"))
    {
        errs.push(ConfigError::new(
            "telemetry.otlp_endpoint",
            "must start with http:// or https:// (OTLP over HTTP, e.g. http://127.0.0.1:4318)",
        ));
    }
    if raw
        .telemetry
        .service_name
        .as_deref()
        .is_some_and(|n| n.trim().is_empty())
    {
        errs.push(ConfigError::new(
            "telemetry.service_name",
            "must not be empty (leave it out for `asc`)",
        ));
    }
    if let Some(d) = &raw.audit.durability
        && !["strict", "batched", "none"].contains(&d.as_str())
    {
        errs.push(ConfigError::new(
            "audit.durability",
            "must be strict, batched or none (none: benchmarks only, records are not stored)",
        ));
    }
    if raw
        .audit
        .flush_ms
        .is_some_and(|ms| !(1..=10_000).contains(&ms))
    {
        errs.push(ConfigError::new(
            "audit.flush_ms",
            "must be between 1 and 10000 (milliseconds; leave it out for 100)",
        ));
    }
    if raw.audit.retention_days == Some(0) {
        errs.push(ConfigError::new(
            "audit.retention_days",
            "must be at least 1 (leave it out to keep everything)",
        ));
    }
    const ROLES: [&str; 4] = ["platform_admin", "tenant_admin", "auditor", "viewer"];
    let mut token_names = HashSet::new();
    for (i, t) in raw.admin.tokens.iter().enumerate() {
        if !ROLES.contains(&t.role.as_str()) {
            errs.push(ConfigError::new(
                format!("admin.tokens[{i}].role"),
                "must be platform_admin, tenant_admin, auditor or viewer",
            ));
        }
        if matches!(t.role.as_str(), "tenant_admin" | "viewer") && t.tenants.is_empty() {
            errs.push(ConfigError::new(
                format!("admin.tokens[{i}].tenants"),
                "a tenant_admin or viewer token needs the tenants it holds",
            ));
        }
        if !token_names.insert(t.name.as_str()) {
            errs.push(ConfigError::new(
                format!("admin.tokens[{i}].name"),
                "duplicate name",
            ));
        }
        if t.token.len() < 16 {
            errs.push(ConfigError::new(
                format!("admin.tokens[{i}].token"),
                "must be at least 16 characters",
            ));
        }
    }
    if let Some(o) = &raw.admin.oidc {
        for (claim, role) in &o.roles {
            if !ROLES.contains(&role.as_str()) {
                errs.push(ConfigError::new(
                    format!("admin.oidc.roles.{claim}"),
                    "must be platform_admin, tenant_admin, auditor or viewer",
                ));
            }
        }
    }
    let mut names = HashSet::new();
    for (i, e) in raw.experiments.iter().enumerate() {
        let path = format!("experiments[{i}]");
        if !names.insert(e.name.as_str()) {
            errs.push(ConfigError::new(
                format!("{path}.name"),
                "duplicate experiment name",
            ));
        }
        if !models.contains_key(&e.model) {
            errs.push(ConfigError::new(
                format!("{path}.model"),
                format!("no model named `{}`", e.model),
            ));
        }
        if !providers.contains_key(&e.candidate.provider) {
            errs.push(ConfigError::new(
                format!("{path}.candidate.provider"),
                format!("no provider named `{}`", e.candidate.provider),
            ));
        }
        for (j, t) in e.tenants.iter().flatten().enumerate() {
            if !tenants.contains_key(t) {
                errs.push(ConfigError::new(
                    format!("{path}.tenants[{j}]"),
                    format!("no tenant named `{t}`"),
                ));
            }
        }
        let choice =
            |v: &Option<String>, field: &str, allowed: &[&str], errs: &mut Vec<ConfigError>| {
                if let Some(v) = v
                    && !allowed.contains(&v.as_str())
                {
                    errs.push(ConfigError::new(
                        format!("{path}.{field}"),
                        format!("must be one of {}", allowed.join(", ")),
                    ));
                }
            };
        choice(&e.mode, "mode", &["canary", "shadow"], errs);
        choice(
            &e.on_inconclusive,
            "on_inconclusive",
            &["pause", "rollback"],
            errs,
        );
        choice(
            &e.on_success,
            "on_success",
            &["promote", "await_approval", "hold"],
            errs,
        );
        for (j, s) in e.sticky_by.iter().enumerate() {
            if s != "user" && !s.starts_with("header:") {
                errs.push(ConfigError::new(
                    format!("{path}.sticky_by[{j}]"),
                    "must be `user` or `header:NAME`",
                ));
            }
        }
        if e.stages.is_empty() {
            errs.push(ConfigError::new(
                format!("{path}.stages"),
                "an experiment needs at least one stage",
            ));
        }
        if let Some(b) = &e.breaker
            && !(b.max_error_rate > 0.0 && b.max_error_rate <= 1.0 && b.window > 0)
        {
            errs.push(ConfigError::new(
                format!("{path}.breaker"),
                "max_error_rate must be in (0, 1] and window positive",
            ));
        }
        if let Some(b) = e.budget_usd
            && !(b >= 0.0 && b.is_finite())
        {
            errs.push(ConfigError::new(
                format!("{path}.budget_usd"),
                "must be a non-negative number",
            ));
        }
        let mut last = 0.0;
        for (j, s) in e.stages.iter().enumerate() {
            if !(s.weight > last && s.weight <= 100.0) {
                errs.push(ConfigError::new(
                    format!("{path}.stages[{j}].weight"),
                    "stage weights must rise, each in (0, 100]",
                ));
            }
            last = s.weight;
            choice(
                &s.gate,
                &format!("stages[{j}].gate"),
                &["abort_only", "noninferior"],
                errs,
            );
        }
        if let Some(a) = e.alpha
            && !(a > 0.0 && a < 1.0)
        {
            errs.push(ConfigError::new(
                format!("{path}.alpha"),
                "must be in (0, 1)",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("mistral-*", "mistral-large-latest"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("gpt-4?-mini", "gpt-4o-mini"));
        assert!(glob_match("chat", "chat"));
        assert!(!glob_match("chat", "chat2"));
        assert!(!glob_match("mistral-*", "gpt-4o"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
    }
}
