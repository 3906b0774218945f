//! Dynamic configuration: the YAML file of the contract (section 4), read strictly and
//! validated whole.
//!
//! Loading runs in three steps, each collecting every error it finds rather than
//! stopping at the first (so `asc check-config` prints them all):
//! 1. YAML syntax (with the line number), then `${env:NAME}` substitution on the parsed
//!    tree (a missing variable is an error naming the field; values are substituted as
//!    data, never re-parsed as YAML, so a variable cannot inject structure);
//! 2. each section and each list item deserialized on its own into the `*Raw` types of
//!    [`raw`] (`deny_unknown_fields`), so one bad item does not hide the next;
//! 3. [`validate`]: every reference resolves, names are unique, weights are positive,
//!    values are in range, producing the typed [`Config`] the gateway runs on.
//!
//! A `Config` is immutable once built and shared as `Arc<Config>` through an `ArcSwap`
//! (see [`crate::state`]), so a reload is one pointer swap and requests never see a mix.

pub mod raw;
pub mod validate;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde_yaml::Value;
use sha2::{Digest, Sha256};

pub use self::validate::validate;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the field (`models[0].targets[1].provider`); empty for the file.
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = if self.path.is_empty() {
            "(file)"
        } else {
            &self.path
        };
        match self.line {
            Some(line) => write!(f, "{path}: {} (line {line})", self.message),
            None => write!(f, "{path}: {}", self.message),
        }
    }
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            line: None,
            message: message.into(),
        }
    }
}

/// Every error of one load.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// The whole file, as written, after env substitution.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RawConfig {
    pub server: raw::ServerRaw,
    pub notifications: Vec<raw::NotificationRaw>,
    pub storage: raw::StorageRaw,
    pub audit: raw::AuditRaw,
    pub admin: raw::AdminRaw,
    pub telemetry: raw::TelemetryRaw,
    pub providers: Vec<raw::ProviderRaw>,
    pub prices: Vec<raw::PriceRaw>,
    pub models: Vec<raw::ModelRaw>,
    pub tenants: Vec<raw::TenantRaw>,
    pub experiments: Vec<raw::ExperimentRaw>,
}

pub use self::validate::{
    Config, Model, Provider, ProviderKind, ServerSettings, StaticKey, Strategy, Target, Tenant,
};

/// Reads and validates a config file.
pub fn load_file(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError::new(
            "",
            format!("cannot read {}: {e}", path.display()),
        )])
    })?;
    load_str(&text, &|name| std::env::var(name).ok())
}

/// Parses and validates config text; `env` resolves `${env:NAME}`.
pub fn load_str(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
    let (raw, mut errors, kept) = parse_raw(text, env)?;
    let hash = hex(&Sha256::digest(text.as_bytes()));
    // Validate what did parse even when some items did not, so one run reports every
    // error (an item that failed to parse can add a follow-on "no provider named" error).
    match validate(raw, hash) {
        Ok(cfg) if errors.is_empty() => Ok(cfg),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(more) => {
            // A field already reported as not parsing is not reported again as what
            // its absence means to validation.
            let reported: Vec<String> = errors.iter().map(|e| e.path.clone()).collect();
            let follows = |path: &str| {
                reported.iter().any(|r| {
                    !r.is_empty()
                        && path.strip_prefix(r.as_str()).is_some_and(|rest| {
                            rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')
                        })
                })
            };
            let more = more.into_iter().map(|e| in_file_places(e, &kept));
            errors.extend(more.filter(|e| !follows(&e.path)));
            Err(ConfigErrors(errors))
        }
    }
}

/// What [`parse_raw`] gives: what parsed, the errors of what did not, and for each list
/// section the places in the file of the items that parsed.
pub type ParsedRaw = (
    RawConfig,
    Vec<ConfigError>,
    HashMap<&'static str, Vec<usize>>,
);

/// Steps 1 and 2: YAML, env substitution, per-item deserialization. Returns what parsed
/// and the errors of what did not; only a file that is not YAML at all is an `Err`.
pub fn parse_raw(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<ParsedRaw, ConfigErrors> {
    let mut root: Value = serde_yaml::from_str(text).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            path: String::new(),
            line: e.location().map(|l| l.line()),
            message: format!("not valid YAML: {e}"),
        }])
    })?;
    let mut errors = Vec::new();
    substitute_env(&mut root, "", env, &mut errors);
    let map = match root {
        Value::Mapping(m) => m,
        Value::Null => serde_yaml::Mapping::new(),
        _ => {
            return Err(ConfigErrors(vec![ConfigError::new(
                "",
                "the config must be a mapping of sections",
            )]));
        }
    };
    let mut sections: HashMap<String, Value> = HashMap::new();
    for (k, v) in map {
        let Some(key) = k.as_str() else {
            errors.push(ConfigError::new("", "section names must be strings"));
            continue;
        };
        const KNOWN: [&str; 11] = [
            "server",
            "notifications",
            "storage",
            "audit",
            "admin",
            "telemetry",
            "providers",
            "prices",
            "models",
            "tenants",
            "experiments",
        ];
        if !KNOWN.contains(&key) {
            errors.push(ConfigError::new(
                key,
                format!("unknown section; expected one of {}", KNOWN.join(", ")),
            ));
            continue;
        }
        sections.insert(key.to_owned(), v);
    }
    let mut take = |name: &str| sections.remove(name).unwrap_or(Value::Null);
    let mut kept = HashMap::new();
    fn listed<T: DeserializeOwned>(
        v: Value,
        name: &'static str,
        errors: &mut Vec<ConfigError>,
        kept: &mut HashMap<&'static str, Vec<usize>>,
    ) -> Vec<T> {
        let (items, places) = list(v, name, errors);
        kept.insert(name, places);
        items
    }
    let notifications = listed(
        take("notifications"),
        "notifications",
        &mut errors,
        &mut kept,
    );
    let providers = listed(take("providers"), "providers", &mut errors, &mut kept);
    let prices = listed(take("prices"), "prices", &mut errors, &mut kept);
    let models = listed(take("models"), "models", &mut errors, &mut kept);
    let tenants = listed(take("tenants"), "tenants", &mut errors, &mut kept);
    let experiments = listed(take("experiments"), "experiments", &mut errors, &mut kept);
    let raw = RawConfig {
        server: one(take("server"), "server", &mut errors),
        notifications,
        storage: one(take("storage"), "storage", &mut errors),
        audit: one(take("audit"), "audit", &mut errors),
        admin: one(take("admin"), "admin", &mut errors),
        telemetry: one(take("telemetry"), "telemetry", &mut errors),
        providers,
        prices,
        models,
        tenants,
        experiments,
    };
    Ok((raw, errors, kept))
}

fn substitute_env(
    v: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    errors: &mut Vec<ConfigError>,
) {
    match v {
        Value::String(s) if s.contains("${env:") => {
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${env:") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 6..];
                let Some(end) = after.find('}') else {
                    errors.push(ConfigError::new(path, "unterminated `${env:` reference"));
                    return;
                };
                let name = &after[..end];
                match env(name) {
                    Some(val) => out.push_str(&val),
                    None => errors.push(ConfigError::new(
                        path,
                        format!("environment variable `{name}` is not set"),
                    )),
                }
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute_env(item, &format!("{path}[{i}]"), env, errors);
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m.iter_mut() {
                let key = k.as_str().unwrap_or("?");
                let p = if path.is_empty() {
                    key.to_owned()
                } else {
                    format!("{path}.{key}")
                };
                substitute_env(item, &p, env, errors);
            }
        }
        Value::Tagged(t) => substitute_env(&mut t.value, path, env, errors),
        _ => {}
    }
}

fn one<T: DeserializeOwned + Default>(v: Value, path: &str, errors: &mut Vec<ConfigError>) -> T {
    if v.is_null() {
        return T::default();
    }
    deserialize_all(v, path, errors).unwrap_or_default()
}

/// A list section's items that parsed, each with its index in the file (an item that
/// did not parse is left out, and validation must not name the next one by its place).
fn list<T: DeserializeOwned>(
    v: Value,
    path: &str,
    errors: &mut Vec<ConfigError>,
) -> (Vec<T>, Vec<usize>) {
    match v {
        Value::Null => (Vec::new(), Vec::new()),
        Value::Sequence(items) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| {
                deserialize_all(item, &format!("{path}[{i}]"), errors).map(|t| (t, i))
            })
            .unzip(),
        _ => {
            errors.push(ConfigError::new(path, "must be a list"));
            (Vec::new(), Vec::new())
        }
    }
}

/// Deserializes `v` as a `T`, reporting every field that does not fit, not only the
/// first: after each error the offending field is taken out (or, in a list, nulled)
/// and the rest tried again. What is left, if it fits, is returned (the errors are
/// reported, so the config is refused, but its other fields are still validated);
/// None when it cannot be made to fit (a required field missing).
fn deserialize_all<T: DeserializeOwned>(
    mut v: Value,
    prefix: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let mut taken: Vec<String> = Vec::new();
    // Bounded: each round takes one field out.
    for _ in 0..64 {
        let e = match serde_path_to_error::deserialize::<_, T>(v.clone()) {
            Ok(t) => return Some(t),
            Err(e) => e,
        };
        let mut segments: Vec<serde_path_to_error::Segment> = e.path().iter().cloned().collect();
        let inner = e.path().to_string();
        let message = e.into_inner().to_string();
        let at = |inner: &str| {
            if inner.is_empty() || inner == "." {
                prefix.to_owned()
            } else {
                format!("{prefix}.{inner}")
            }
        };
        if let Some(field) = quoted_after(&message, "missing field `") {
            // Not there to take out. One this pass took out is already reported.
            let full = if inner.is_empty() || inner == "." {
                field.to_owned()
            } else {
                format!("{inner}.{field}")
            };
            if !taken.contains(&full) {
                errors.push(ConfigError::new(at(&inner), message));
            }
            return None;
        }
        errors.push(ConfigError::new(at(&inner), message.clone()));
        if let Some(field) = quoted_after(&message, "unknown field `") {
            // Reported at the mapping that holds it; the field itself goes.
            if segments.last().is_none_or(
                |s| !matches!(s, serde_path_to_error::Segment::Map { key } if key == field),
            ) {
                segments.push(serde_path_to_error::Segment::Map {
                    key: field.to_owned(),
                });
            }
        }
        let full = segments
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(".");
        if segments.is_empty() || taken.contains(&full) || !take_out(&mut v, &segments) {
            return None;
        }
        taken.push(full);
    }
    None
}

/// The text between `opening` and the next backquote in `message`.
fn quoted_after<'m>(message: &'m str, opening: &str) -> Option<&'m str> {
    let rest = &message[message.find(opening)? + opening.len()..];
    rest.get(..rest.find('`')?)
}

/// Takes the value at `path` out of `v` (a list item is nulled, so the items after it
/// keep their places); false if there is nothing there.
fn take_out(v: &mut Value, path: &[serde_path_to_error::Segment]) -> bool {
    use serde_path_to_error::Segment;
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let mut at = v;
    for s in parents {
        at = match (s, at) {
            (Segment::Map { key }, Value::Mapping(m)) => match m.get_mut(key.as_str()) {
                Some(next) => next,
                None => return false,
            },
            (Segment::Seq { index }, Value::Sequence(items)) => match items.get_mut(*index) {
                Some(next) => next,
                None => return false,
            },
            (Segment::Enum { .. }, Value::Tagged(t)) => &mut t.value,
            _ => return false,
        };
    }
    match (last, at) {
        (Segment::Map { key }, Value::Mapping(m)) => m.remove(key.as_str()).is_some(),
        (Segment::Seq { index }, Value::Sequence(items)) => match items.get_mut(*index) {
            Some(item) if !item.is_null() => {
                *item = Value::Null;
                true
            }
            _ => false,
        },
        _ => false,
    }
}

/// Validation names list items by their place in what parsed; this puts back their
/// place in the file (`kept[section]` maps one to the other).
fn in_file_places(mut e: ConfigError, kept: &HashMap<&'static str, Vec<usize>>) -> ConfigError {
    let Some(open) = e.path.find('[') else {
        return e;
    };
    let section = &e.path[..open];
    let Some(close) = e.path[open..].find(']').map(|c| open + c) else {
        return e;
    };
    if let (Some(places), Ok(i)) = (kept.get(section), e.path[open + 1..close].parse::<usize>())
        && let Some(&place) = places.get(i)
    {
        e.path = format!("{section}[{place}]{}", &e.path[close + 1..]);
    }
    e
}

/// The config as JSON with every secret replaced by `<redacted>` (API keys, tokens,
/// webhook secrets, static keys), pretty-printed: what config versions store and diff.
pub fn redacted_json(raw: &RawConfig) -> String {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, item) in m.iter_mut() {
                    if matches!(k.as_str(), "api_key" | "token" | "secret" | "key")
                        && !item.is_null()
                    {
                        *item = serde_json::Value::from("<redacted>");
                    } else {
                        walk(item);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(raw).unwrap_or_default();
    walk(&mut v);
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa5, 0xff, 0x10]), "000fa5ff10");
        assert_eq!(hex(&[]), "");
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    fn env(name: &str) -> Option<String> {
        (name == "SET").then(|| "value-from-env".to_owned())
    }

    const GOOD: &str = r#"
providers:
  - {name: p, kind: openai, base_url: "http://127.0.0.1:1/v1", api_key: "${env:SET}", region: us}
  - {name: m, kind: mock, flavor: anthropic, region: eu, fail_rate: 0.5}
models:
  - name: chat
    targets: [{provider: p, model: gpt-4o-mini, weight: 3}, {provider: m, model: claude}]
    fallbacks: [{provider: m, model: claude-fallback}]
tenants:
  - name: t
    allowed_models: [chat, "claude*"]
    regions: [us, eu]
    keys: [{name: k, key: "sk-0123456789"}]
"#;

    #[test]
    fn a_good_config_loads_with_env_and_implicit_models() {
        let cfg = load_str(GOOD, &env).unwrap();
        assert_eq!(cfg.providers[0].api_key.as_deref(), Some("value-from-env"));
        let chat = cfg.model("chat").unwrap();
        assert_eq!(chat.targets.len(), 2);
        assert_eq!(chat.targets[0].weight, 3.0);
        assert_eq!(chat.retries, 1);
        // Provider model names are requestable too.
        assert!(cfg.model("claude").unwrap().implicit);
        assert!(cfg.model("claude-fallback").is_some());
        let (_, t) = cfg.tenant("t").unwrap();
        assert!(t.may_use("claude-fallback"));
        assert!(!t.may_use("gpt-4o-mini"));
        let key = cfg
            .static_key(&validate::key_hash("sk-0123456789"))
            .unwrap();
        assert_eq!(key.id, "t/k");
        assert_eq!(cfg.hash.len(), 64);
    }

    #[test]
    fn every_error_is_reported_with_its_path() {
        let bad = r#"
server: {listen: "nowhere", colour: blue}
audit: {retention_days: 0, flush_ms: 0}
providers:
  - {name: p, kind: openai, api_key: "${env:MISSING_VAR}", region: us}
  - {name: p, kind: quantum, region: us}
  - {name: m, kind: mock, region: eu}
  - {name: q, kind: openai, api_key: k, region: us, surprise: 1}
models:
  - name: chat
    targets: [{provider: ghost, model: x}, {provider: p, model: y, weight: -1}]
  - name: chat
    targets: []
tenants:
  - name: t
    allowed_models: [nonexistent]
    regions: [mars]
    budget: {limit_usd: 5, period: fortnight}
    guardrails: {pii: maybe}
experiments:
  - {name: e, model: nope, candidate: {provider: ghost, model: z}, stages: [{weight: 50}, {weight: 10}]}
"#;
        let errs = load_str(bad, &env).unwrap_err().0;
        let text = ConfigErrors(errs.clone()).to_string();
        for expected in [
            "server.colour",
            "providers[0].api_key: environment variable `MISSING_VAR` is not set",
            "providers[1].name: duplicate provider name `p`",
            "providers[1].kind",
            "providers[2].flavor",
            "providers[3]",
            "models[0].targets[0].provider: no provider named `ghost`",
            "models[0].targets[1].weight",
            "models[1].name: duplicate model name `chat`",
            "models[1].targets: needs at least one target",
            "tenants[0].allowed_models[0]: no model named `nonexistent`",
            "tenants[0].regions[0]",
            "tenants[0].budget.period",
            "tenants[0].guardrails.pii",
            "experiments[0].model",
            "experiments[0].candidate.provider",
            "experiments[0].stages[1].weight",
            "audit.retention_days: must be at least 1",
            "audit.flush_ms: must be between 1 and 10000",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
    }

    /// Every field that does not fit is reported, not only an item's first; and an
    /// item that did not parse does not shift the places of the items after it.
    #[test]
    fn every_field_error_of_an_item_and_the_right_places_after_a_bad_item() {
        let bad = r#"
server: {max_body_bytes: "x", bogus: 1, listen: 7}
providers:
  - {name: a, kind: openai, api_key: [1], region: us, extra: 1}
  - {name: b, kind: openai, region: us}
models:
  - {name: m, targets: [{provider: a, model: x}], retries: "many"}
  - {name: n, targets: [{provider: ghost, model: y}]}
tenants:
  - {name: t, rate_limit: {requests_per_minute: "lots"}, guardrails: {pii: maybe}}
  - {name: u, allowed_models: [nothing-here]}
"#;
        let errs = load_str(bad, &env).unwrap_err().0;
        let text = ConfigErrors(errs.clone()).to_string();
        for expected in [
            "server.max_body_bytes",
            "server.bogus",
            "server.listen",
            "providers[0].api_key",
            "providers[0].extra",
            "providers[1].api_key",
            "models[0].retries",
            "models[1].targets[0].provider: no provider named `ghost`",
            "tenants[0].rate_limit.requests_per_minute",
            "tenants[0].guardrails.pii",
            "tenants[1].allowed_models[0]: no model named `nothing-here`",
        ] {
            assert!(text.contains(expected), "missing `{expected}` in:\n{text}");
        }
        for wrong in [
            "providers[0].api_key: environment",
            "models[0].targets",
            "tenants[0].allowed_models",
        ] {
            assert!(!text.contains(wrong), "`{wrong}` in:\n{text}");
        }
    }

    #[test]
    fn yaml_syntax_errors_carry_a_line() {
        let errs = load_str("providers:\n  - {name: p\n  bad: [", &env)
            .unwrap_err()
            .0;
        assert_eq!(errs.len(), 1);
        assert!(errs[0].line.is_some(), "{errs:?}");
    }

    #[test]
    fn env_values_are_data_not_yaml() {
        let inject = |_: &str| Some("x\"}\n  injected: true".to_owned());
        let cfg = load_str(GOOD.replace("SET", "ANY").as_str(), &inject).unwrap();
        assert_eq!(
            cfg.providers[0].api_key.as_deref(),
            Some("x\"}\n  injected: true")
        );
    }
}
