//! The one mapping from what went wrong to what the client reads (contract section 2).
//!
//! Domain modules return their own errors; this enum gathers them, and `status()`,
//! `code()` and the body writers are exhaustive matches, so a new variant cannot be
//! added without deciding its status and code. Messages say what was wrong and what to do
//! and never contain a secret: upstream bodies are never echoed, only the provider's
//! error message after [`crate::providers`] has read it.

use std::fmt::Write;
use std::time::Duration;

use asc_wire::openai;
use http::StatusCode;

/// Which inbound API the client spoke: decides the error body shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    Anthropic,
    OpenAi,
}

impl Surface {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anthropic => "anthropic",
            Self::OpenAi => "openai",
        }
    }

    /// The wire format of this surface's bodies (a reply in it needs no re-encoding).
    pub fn format(self) -> asc_wire::Format {
        match self {
            Self::Anthropic => asc_wire::Format::Anthropic,
            Self::OpenAi => asc_wire::Format::OpenAi,
        }
    }
}

/// One failed upstream attempt, as listed in a 502's message and in the record.
#[derive(Debug, Clone)]
pub struct AttemptSummary {
    pub provider: String,
    /// HTTP status, or `None` for a connect error or timeout.
    pub status: Option<u16>,
    pub error: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("budget exceeded")]
    BudgetExceeded { tenant: String },
    /// `POST /v1/feedback` for a request that already has a score.
    #[error("feedback exists")]
    FeedbackExists { request_id: String },
    #[error("guardrail blocked")]
    GuardrailBlocked { guardrail: String },
    #[error("internal error: {0}")]
    Internal(String),
    #[error("invalid api key")]
    InvalidApiKey,
    #[error("invalid request: {message}")]
    InvalidRequest {
        message: String,
        param: Option<String>,
    },
    #[error("model not allowed")]
    ModelNotAllowed { model: String },
    #[error("model not found")]
    ModelNotFound { model: String },
    #[error("no healthy target")]
    NoHealthyTarget { model: String },
    /// The store fails, so this request's record could not be kept (see
    /// `Recorder::refusing`): refused before any provider is called.
    #[error("records cannot be written")]
    AuditUnavailable,
    #[error("rate limited")]
    RateLimited { retry_after: Duration },
    /// `POST /v1/feedback` names a request this key's tenant did not make (or that is
    /// not recorded yet).
    #[error("request not found")]
    RequestNotFound { request_id: String },
    #[error("request too large")]
    RequestTooLarge { limit: usize },
    #[error("residency denied")]
    ResidencyDenied { model: String, regions: Vec<String> },
    /// The upstream rejected the request as malformed (4xx other than auth and 429):
    /// the client's mistake, passed on as a 400 with the provider's message.
    #[error("upstream rejected the request")]
    UpstreamRejected { provider: String, message: String },
    #[error("upstream error")]
    UpstreamFailed { attempts: Vec<AttemptSummary> },
    #[error("upstream timeout")]
    UpstreamTimeout { attempts: Vec<AttemptSummary> },
}

impl From<asc_wire::RequestError> for Error {
    fn from(e: asc_wire::RequestError) -> Self {
        Self::InvalidRequest {
            message: e.message,
            param: e.param,
        }
    }
}

impl Error {
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self::InvalidRequest {
            message: message.into(),
            param: Some(param.to_owned()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BudgetExceeded { .. } | Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::GuardrailBlocked { .. }
            | Self::ModelNotAllowed { .. }
            | Self::ResidencyDenied { .. } => StatusCode::FORBIDDEN,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            Self::InvalidApiKey => StatusCode::UNAUTHORIZED,
            Self::InvalidRequest { .. } | Self::UpstreamRejected { .. } => StatusCode::BAD_REQUEST,
            Self::ModelNotFound { .. } | Self::RequestNotFound { .. } => StatusCode::NOT_FOUND,
            Self::FeedbackExists { .. } => StatusCode::CONFLICT,
            Self::NoHealthyTarget { .. } | Self::AuditUnavailable => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Self::RequestTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::UpstreamFailed { .. } => StatusCode::BAD_GATEWAY,
            Self::UpstreamTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// The contract's error code: the client's `error.code` and the metric label.
    pub fn code(&self) -> &'static str {
        match self {
            Self::BudgetExceeded { .. } => "budget_exceeded",
            Self::FeedbackExists { .. } => "feedback_exists",
            Self::RequestNotFound { .. } => "request_not_found",
            Self::GuardrailBlocked { .. } => "guardrail_blocked",
            Self::Internal(_) => "internal_error",
            Self::InvalidApiKey => "invalid_api_key",
            Self::InvalidRequest { .. } | Self::UpstreamRejected { .. } => "invalid_request",
            Self::ModelNotAllowed { .. } => "model_not_allowed",
            Self::ModelNotFound { .. } => "model_not_found",
            Self::NoHealthyTarget { .. } => "no_healthy_target",
            Self::AuditUnavailable => "audit_unavailable",
            Self::RateLimited { .. } => "rate_limited",
            Self::RequestTooLarge { .. } => "request_too_large",
            Self::ResidencyDenied { .. } => "residency_denied",
            Self::UpstreamFailed { .. } => "upstream_error",
            Self::UpstreamTimeout { .. } => "upstream_timeout",
        }
    }

    /// OpenAI's `error.type`, as OpenAI itself sends it: `invalid_request_error` for
    /// every client error (a bad key and an unknown model included: its 401 is
    /// `{"type": "invalid_request_error", "code": "invalid_api_key"}`), `requests` for a
    /// rate limit, `insufficient_quota` for spent money, `server_error` otherwise.
    fn openai_type(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "requests",
            Self::BudgetExceeded { .. } => "insufficient_quota",
            _ if self.status().is_client_error() => "invalid_request_error",
            _ => "server_error",
        }
    }

    /// Anthropic's `error.type` for this status (their errors page).
    fn anthropic_type(&self) -> &'static str {
        match self.status().as_u16() {
            400 | 409 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            413 => "request_too_large",
            429 => "rate_limit_error",
            503 => "overloaded_error",
            504 => "timeout_error",
            _ => "api_error",
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            Self::InvalidRequest { param, .. } => param.as_deref(),
            Self::RequestTooLarge { .. } => None,
            Self::ModelNotAllowed { .. }
            | Self::ModelNotFound { .. }
            | Self::ResidencyDenied { .. } => Some("model"),
            Self::RequestNotFound { .. } | Self::FeedbackExists { .. } => Some("request_id"),
            _ => None,
        }
    }

    /// What the client reads: what was wrong and what to do. No secrets.
    pub fn message(&self) -> String {
        match self {
            Self::BudgetExceeded { tenant } => format!(
                "tenant `{tenant}` has spent its budget for this period; ask the platform team to raise it or wait for the next period"
            ),
            Self::GuardrailBlocked { guardrail } => format!(
                "the request was blocked by the `{guardrail}` guardrail; remove the offending content and retry"
            ),
            Self::Internal(_) => "internal gateway error; the request id identifies it in the logs".into(),
            Self::InvalidApiKey => "missing, unknown, revoked or expired API key; send `Authorization: Bearer KEY` or `x-api-key: KEY` with a valid key".into(),
            Self::InvalidRequest { message, .. } => message.clone(),
            Self::FeedbackExists { request_id } => format!(
                "request `{request_id}` already has feedback; each request takes one score"
            ),
            Self::RequestNotFound { request_id } => format!(
                "no request `{request_id}` of this key's tenant is recorded; use the x-asc-request-id of a response (records may take up to a second to be written)"
            ),
            Self::ModelNotAllowed { model } => format!(
                "this key's tenant may not use model `{model}`; GET /v1/models lists the models it may use"
            ),
            Self::ModelNotFound { model } => format!(
                "no model named `{model}`; GET /v1/models lists the models this key may use"
            ),
            Self::AuditUnavailable => "the gateway cannot store execution records right now (its database is failing), and serves no request it cannot record; retry later".into(),
            Self::NoHealthyTarget { model } => format!(
                "every target of model `{model}` is failing and temporarily taken out of service; retry later"
            ),
            Self::RateLimited { retry_after } => format!(
                "rate limit reached; retry after {} s",
                retry_after.as_secs().max(1)
            ),
            Self::RequestTooLarge { limit } => format!(
                "request body is larger than the gateway's limit of {limit} bytes"
            ),
            Self::ResidencyDenied { model, regions } => format!(
                "model `{model}` has no target in a region this tenant allows ({})",
                regions.join(", ")
            ),
            Self::UpstreamRejected { provider, message } => format!(
                "provider `{provider}` rejected the request: {message}"
            ),
            Self::UpstreamFailed { attempts } => {
                format!("every upstream attempt failed: {}", list_attempts(attempts))
            }
            Self::UpstreamTimeout { attempts } => format!(
                "the upstream did not answer in time: {}",
                list_attempts(attempts)
            ),
        }
    }

    /// The error body in the client's wire format.
    pub fn body(&self, surface: Surface) -> Vec<u8> {
        match surface {
            Surface::OpenAi => {
                openai::error_body(self.openai_type(), self.code(), &self.message(), self.param())
            }
            // Anthropic's shape, plus `code` so both surfaces carry the contract's code
            // (an extra field the SDKs ignore).
            Surface::Anthropic => serde_json::to_vec(&serde_json::json!({
                "type": "error",
                "error": {"type": self.anthropic_type(), "message": self.message(), "code": self.code()},
            }))
            .unwrap_or_default(),
        }
    }

    /// Extra headers the error carries (`Retry-After`).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            Self::RateLimited { retry_after } => Some(retry_after.as_secs().max(1)),
            Self::AuditUnavailable => Some(5),
            Self::BudgetExceeded { .. } => None,
            _ => None,
        }
    }
}

fn list_attempts(attempts: &[AttemptSummary]) -> String {
    let mut s = String::new();
    for (i, a) in attempts.iter().enumerate() {
        if i > 0 {
            s.push_str("; ");
        }
        let _ = match a.status {
            Some(st) => write!(s, "{} (status {st}: {})", a.provider, a.error),
            None => write!(s, "{} ({})", a.provider, a.error),
        };
    }
    s
}
