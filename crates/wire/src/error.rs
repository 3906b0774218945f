//! Errors of parsing and translating wire bodies. No HTTP here: the gateway maps them.

/// A client's request body is not a valid request of its format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RequestError {
    /// The offending field as a dotted path (`messages[2].role`), when known.
    pub param: Option<String>,
    /// What was wrong and what to do, naming the field. Never echoes the body.
    pub message: String,
}

impl RequestError {
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            param: Some(param.into()),
            message: message.into(),
        }
    }

    /// From a serde error with its path (`serde_path_to_error`).
    pub fn from_path(err: serde_path_to_error::Error<serde_json::Error>) -> Self {
        let path = err.path().to_string();
        let inner = err.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            return Self {
                param: None,
                message: format!("the body is not valid JSON: {inner}"),
            };
        }
        let param = if path == "." || path.is_empty() {
            None
        } else {
            Some(path)
        };
        let message = match &param {
            Some(p) => format!("invalid value for `{p}`: {inner}"),
            None => format!("invalid request body: {inner}"),
        };
        Self { param, message }
    }
}

/// An upstream body (response, stream event) could not be read as its format.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed upstream {what}: {detail}")]
pub struct DecodeError {
    pub what: &'static str,
    pub detail: String,
}

impl DecodeError {
    pub fn new(what: &'static str, detail: impl ToString) -> Self {
        Self {
            what,
            detail: detail.to_string(),
        }
    }
}
