//! The configuration file as written (`*Raw` types): serde shapes with
//! `deny_unknown_fields`, no meaning attached yet. [`super::validate`] turns them into
//! the typed [`super::Config`].

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerRaw {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub max_body_bytes: Option<u64>,
    pub tls: Option<TlsRaw>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsRaw {
    pub cert_file: String,
    pub key_file: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationRaw {
    pub url: String,
    pub secret: Option<String>,
    #[serde(default)]
    pub events: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StorageRaw {
    pub database: Option<String>,
    pub redis: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRaw {
    pub durability: Option<String>,
    pub flush_ms: Option<u64>,
    pub signing_key_file: Option<String>,
    pub checkpoint_interval_s: Option<u64>,
    pub retention_days: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminRaw {
    #[serde(default)]
    pub tokens: Vec<AdminTokenRaw>,
    pub oidc: Option<OidcRaw>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTokenRaw {
    pub name: String,
    pub token: String,
    pub role: String,
    /// The tenants a `tenant_admin` or `viewer` token holds.
    #[serde(default)]
    pub tenants: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OidcRaw {
    pub issuer: String,
    pub audience: String,
    pub jwks_url: String,
    pub role_claim: Option<String>,
    #[serde(default)]
    pub roles: BTreeMap<String, String>,
    pub tenant_claim: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryRaw {
    pub otlp_endpoint: Option<String>,
    pub service_name: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderRaw {
    pub name: String,
    pub kind: String,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    pub region: String,
    pub budget: Option<PeriodBudgetRaw>,
    /// `kind: mock` only.
    pub flavor: Option<String>,
    pub ttft_ms: Option<u64>,
    pub latency_ms: Option<u64>,
    pub chunks: Option<u32>,
    pub fail_rate: Option<f64>,
    pub fail_status: Option<u16>,
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PeriodBudgetRaw {
    pub limit_usd: f64,
    pub period: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PriceRaw {
    pub provider: String,
    pub model: String,
    pub input: f64,
    pub output: f64,
    /// USD per million input tokens read from the provider's prompt cache; omitted: a
    /// tenth of `input` at an Anthropic provider, `input` elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ModelRaw {
    pub name: String,
    #[serde(default)]
    pub targets: Vec<TargetRaw>,
    #[serde(default)]
    pub fallbacks: Vec<TargetRaw>,
    pub strategy: Option<String>,
    pub retries: Option<u32>,
    pub timeout_ms: Option<u64>,
    /// Overall deadline of a request across all its attempts (default 120000).
    pub deadline_ms: Option<u64>,
    pub cache_ttl_s: Option<u64>,
    pub circuit_breaker: Option<BreakerSettingsRaw>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSettingsRaw {
    pub consecutive_failures: Option<u32>,
    pub error_rate: Option<f64>,
    pub window: Option<u32>,
    pub cooldown_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetRaw {
    pub provider: String,
    pub model: String,
    pub weight: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantRaw {
    pub name: String,
    #[serde(default)]
    pub allowed_models: Vec<String>,
    #[serde(default)]
    pub regions: Vec<String>,
    pub budget: Option<TenantBudgetRaw>,
    pub rate_limit: Option<RateLimitRaw>,
    pub guardrails: Option<GuardrailsRaw>,
    #[serde(default)]
    pub log_content: bool,
    #[serde(default)]
    pub keys: Vec<StaticKeyRaw>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TenantBudgetRaw {
    pub limit_usd: f64,
    pub period: String,
    #[serde(default)]
    pub alert_at: Vec<f64>,
    pub on_exceed: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitRaw {
    pub requests_per_minute: Option<u64>,
    pub tokens_per_minute: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuardrailsRaw {
    pub pii: Option<String>,
    pub max_prompt_tokens: Option<u64>,
    #[serde(default)]
    pub blocked_terms: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StaticKeyRaw {
    pub name: String,
    pub key: String,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ExperimentRaw {
    pub name: String,
    pub model: String,
    pub tenants: Option<Vec<String>>,
    pub mode: Option<String>,
    pub candidate: TargetRaw,
    #[serde(default)]
    pub sticky_by: Vec<String>,
    #[serde(default)]
    pub stages: Vec<StageRaw>,
    pub max_stage_duration_s: Option<u64>,
    pub on_inconclusive: Option<String>,
    pub guards: Option<GuardsRaw>,
    pub alpha: Option<f64>,
    pub breaker: Option<BreakerRaw>,
    pub budget_usd: Option<f64>,
    pub on_success: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StageRaw {
    pub weight: f64,
    pub min_requests: Option<u64>,
    pub min_duration_s: Option<u64>,
    pub gate: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuardsRaw {
    pub error_rate: Option<GuardRaw>,
    pub latency_p95: Option<GuardRaw>,
    pub ttft_p95: Option<GuardRaw>,
    pub cost_per_request: Option<GuardRaw>,
    pub feedback: Option<GuardRaw>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GuardRaw {
    pub max_ratio: Option<f64>,
    pub max_increase: Option<f64>,
    pub max_decrease: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerRaw {
    pub max_error_rate: f64,
    pub window: u64,
}
