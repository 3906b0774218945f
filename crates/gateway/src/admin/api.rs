//! `/admin/v1`: tenants, keys, config versions and reload, `whoami`.
//!
//! Every route passes [`guard`] first: it authenticates the caller (static admin token,
//! or an OIDC JWT), finds the route's action and tenant scope in [`super::rbac::route`],
//! and asks [`super::rbac::permits`]. Failed logins and refusals are recorded as admin
//! events with the actor, like every change.

use std::collections::HashMap;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Extension, Json};
use http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::keys;
use super::oidc::looks_like_jwt;
use super::principal::Principal;
use super::rbac::{self, Scope, ScopeFrom};
use crate::config::raw::TenantRaw;
use crate::directory::ManagedBy;
use crate::state::{AppState, ReloadError};
use crate::store::StoreError;

/// An admin-plane error: `{"error": {"message", "type", "code", "details"?}}`.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    Conflict(String),
    #[error("you may not do this")]
    Forbidden,
    #[error("internal error")]
    Internal(String),
    #[error("{message}")]
    Invalid {
        message: String,
        details: Vec<String>,
    },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unauthorized(String),
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => Self::Conflict(m),
            other => Self::Internal(other.to_string()),
        }
    }
}

impl AdminError {
    fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
            details: Vec::new(),
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "forbidden"),
            Self::Internal(detail) => {
                tracing::error!(%detail, "admin internal error");
                (StatusCode::INTERNAL_SERVER_ERROR, "internal_error")
            }
            Self::Invalid { .. } => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
        };
        let mut error = json!({"message": self.to_string(), "type": code, "code": code});
        if let Self::Invalid { details, .. } = &self
            && !details.is_empty()
        {
            error["details"] = json!(details);
        }
        let mut resp = (status, Json(json!({ "error": error }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        resp
    }
}

type Result<T> = std::result::Result<T, AdminError>;

/// The `/admin/v1` router, guarded.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/admin/v1/whoami", get(whoami))
        .route("/admin/v1/tenants", get(list_tenants).post(create_tenant))
        .route(
            "/admin/v1/tenants/{t}",
            get(get_tenant).patch(patch_tenant).delete(delete_tenant),
        )
        .route(
            "/admin/v1/tenants/{t}/keys",
            get(list_keys).post(create_key),
        )
        .route("/admin/v1/keys/{id}", delete(revoke_key))
        .route("/admin/v1/config/versions", get(config_versions))
        .route("/admin/v1/usage", get(usage))
        .route("/admin/v1/audit/verify", get(audit_verify))
        .route("/admin/v1/audit/export", get(audit_export))
        .route("/admin/v1/records", get(list_records))
        .route("/admin/v1/records/{id}", get(get_record))
        .route("/admin/v1/timeline", get(timeline))
        .route("/admin/v1/config/reload", post(reload))
        .route("/admin/v1/experiments", get(list_experiments))
        .route("/admin/v1/experiments/{name}", get(get_experiment))
        .route(
            "/admin/v1/experiments/{name}/{action}",
            post(experiment_action),
        )
        .fallback(|| async { AdminError::NotFound("no such admin endpoint".into()) })
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .with_state(state)
}

/// Authentication and RBAC for every admin route, in one place.
pub async fn guard(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let (method, path, headers) = (
        req.method().clone(),
        req.uri().path().to_owned(),
        req.headers().clone(),
    );
    let tenant_query = axum::extract::Query::<HashMap<String, String>>::try_from_uri(req.uri())
        .ok()
        .and_then(|q| q.0.get("tenant").cloned());
    match authorize(&state, &method, &path, tenant_query, &headers).await {
        Ok(principal) => {
            req.extensions_mut().insert(principal);
            next.run(req).await
        }
        Err(e) => e.into_response(),
    }
}

async fn authorize(
    state: &AppState,
    method: &http::Method,
    path: &str,
    tenant_query: Option<String>,
    headers: &HeaderMap,
) -> Result<Principal> {
    let principal = match authenticate(state, headers).await {
        Ok(p) => p,
        Err(reason) => {
            let _ = state
                .event(
                    "login_denied",
                    "anonymous",
                    None,
                    &json!({"reason": reason, "path": path}),
                )
                .await;
            return Err(AdminError::Unauthorized(format!(
                "admin authentication failed: {reason}; send `Authorization: Bearer TOKEN` with an admin token or an OIDC token"
            )));
        }
    };
    let Some((action, from)) = rbac::route(method, path, tenant_query) else {
        return Err(AdminError::NotFound("no such admin endpoint".into()));
    };
    let scope = match from {
        ScopeFrom::Global => Scope::Global,
        ScopeFrom::List => Scope::List,
        ScopeFrom::TenantParam(t) | ScopeFrom::TenantQuery(Some(t)) => Scope::Tenant(t),
        ScopeFrom::TenantQuery(None) => {
            return Err(AdminError::invalid(
                "the `tenant` query parameter is required",
            ));
        }
        ScopeFrom::KeyParam(id) => match state.store.key(&id).await? {
            Some(k) => Scope::Tenant(k.tenant),
            None => return Err(AdminError::NotFound(format!("no key `{id}`"))),
        },
        ScopeFrom::TenantQueryOrList(Some(t)) => Scope::Tenant(t),
        ScopeFrom::TenantQueryOrList(None) => Scope::List,
        ScopeFrom::RecordParam(id) => match state.store.record(&id).await? {
            Some((tenant, _)) => Scope::Tenant(tenant.unwrap_or_default()),
            None => return Err(AdminError::NotFound(format!("no record `{id}`"))),
        },
        ScopeFrom::ExperimentParam(name) => {
            let live = state.live.load();
            match live.experiments.find(&name) {
                Some((spec, _)) => match &spec.tenants {
                    Some(ts) => Scope::Tenants(ts.clone()),
                    None => Scope::Global,
                },
                None => return Err(AdminError::NotFound(format!("no experiment `{name}`"))),
            }
        }
    };
    if !rbac::permits(&principal, action, &scope) {
        let tenant = match &scope {
            Scope::Tenant(t) => Some(t.as_str()),
            _ => None,
        };
        let _ = state
            .event(
                "access_denied",
                &principal.actor,
                tenant,
                &json!({"method": method.as_str(), "path": path, "role": principal.role}),
            )
            .await;
        return Err(AdminError::Forbidden);
    }
    Ok(principal)
}

/// The caller: a static token (compared by SHA-256) or an OIDC JWT. The error is a
/// reason for the audit log; it never contains the token.
async fn authenticate(
    state: &AppState,
    headers: &HeaderMap,
) -> std::result::Result<Principal, String> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| "no bearer token".to_owned())?;
    let live = state.live.load_full();
    let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    if let Some(p) = live.admin_tokens.get(&hash) {
        return Ok(p.clone());
    }
    match (&live.oidc, looks_like_jwt(token)) {
        (Some(oidc), true) => oidc.verify(token).await.map_err(|e| format!("oidc: {e}")),
        (None, true) => Err("OIDC is not configured".into()),
        (_, false) => Err("unknown admin token".into()),
    }
}

// === handlers ===

async fn whoami(Extension(p): Extension<Principal>) -> Json<Value> {
    Json(json!({
        "actor": p.actor,
        "role": p.role,
        "via": p.via,
        "tenants": p.tenants,
        "may": rbac::capabilities(&p),
    }))
}

/// A tenant as the config writes it, plus `managed_by`; never key material.
fn tenant_json(raw: &TenantRaw, managed_by: ManagedBy) -> Value {
    let mut v = serde_json::to_value(raw).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("keys");
        o.insert("managed_by".into(), json!(managed_by));
    }
    v
}

async fn list_tenants(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
) -> Json<Value> {
    let live = s.live.load_full();
    let dir = live.directory.load();
    let list: Vec<Value> = dir
        .tenants()
        .filter(|(t, _)| p.holds(&t.name))
        .map(|(t, m)| tenant_json(&t.raw, m))
        .collect();
    Json(json!({ "data": list }))
}

fn parse_tenant(body: &[u8]) -> Result<TenantRaw> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let t: TenantRaw = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        AdminError::invalid(format!("invalid tenant at `{path}`: {}", e.into_inner()))
    })?;
    if !t.keys.is_empty() {
        return Err(AdminError::invalid(
            "API tenants take no static keys; create keys with POST /admin/v1/tenants/{t}/keys",
        ));
    }
    Ok(t)
}

fn check(s: &AppState, t: &TenantRaw) -> Result<()> {
    let errs = s.live.load().config.check_tenant(t);
    if errs.is_empty() {
        return Ok(());
    }
    Err(AdminError::Invalid {
        message: "the tenant is not valid".into(),
        details: errs.iter().map(ToString::to_string).collect(),
    })
}

async fn create_tenant(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>)> {
    let t = parse_tenant(&body)?;
    if let Some((_, m)) = s.live.load().directory.load().tenant(&t.name) {
        return Err(AdminError::Conflict(match m {
            ManagedBy::Config => format!("tenant `{}` is managed by the config file", t.name),
            ManagedBy::Api => format!("tenant `{}` already exists", t.name),
        }));
    }
    check(&s, &t)?;
    s.store.create_tenant(&t).await?;
    s.event(
        "tenant_created",
        &p.actor,
        Some(&t.name),
        &tenant_json(&t, ManagedBy::Api),
    )
    .await?;
    s.refresh_directory().await?;
    Ok((StatusCode::CREATED, Json(tenant_json(&t, ManagedBy::Api))))
}

/// The tenant's current definition, or 404.
fn existing(s: &AppState, name: &str) -> Result<(TenantRaw, ManagedBy)> {
    let live = s.live.load();
    let dir = live.directory.load();
    dir.tenant(name)
        .map(|(t, m)| (t.raw.clone(), m))
        .ok_or_else(|| AdminError::NotFound(format!("no tenant `{name}`")))
}

fn file_managed(name: &str) -> AdminError {
    AdminError::Conflict(format!(
        "tenant `{name}` is managed by the config file; change the file and reload"
    ))
}

async fn get_tenant(State(s): State<AppState>, Path(t): Path<String>) -> Result<Json<Value>> {
    let (raw, m) = existing(&s, &t)?;
    Ok(Json(tenant_json(&raw, m)))
}

async fn patch_tenant(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let (current, m) = existing(&s, &name)?;
    if m == ManagedBy::Config {
        return Err(file_managed(&name));
    }
    let patch: Value = serde_json::from_slice(&body)
        .map_err(|e| AdminError::invalid(format!("the body is not valid JSON: {e}")))?;
    let Value::Object(fields) = patch else {
        return Err(AdminError::invalid("the body must be a JSON object"));
    };
    let mut merged = serde_json::to_value(&current).unwrap_or_default();
    for (k, v) in fields {
        merged[k] = v;
    }
    if merged["name"] != json!(name) {
        return Err(AdminError::invalid("a tenant cannot be renamed"));
    }
    let t = parse_tenant(merged.to_string().as_bytes())?;
    check(&s, &t)?;
    if !s.store.update_tenant(&t).await? {
        return Err(AdminError::NotFound(format!("no tenant `{name}`")));
    }
    s.event(
        "tenant_updated",
        &p.actor,
        Some(&name),
        &tenant_json(&t, ManagedBy::Api),
    )
    .await?;
    s.refresh_directory().await?;
    Ok(Json(tenant_json(&t, ManagedBy::Api)))
}

async fn delete_tenant(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    let (_, m) = existing(&s, &name)?;
    if m == ManagedBy::Config {
        return Err(file_managed(&name));
    }
    let (_, revoked) = s.store.delete_tenant(&name).await?;
    s.event(
        "tenant_deleted",
        &p.actor,
        Some(&name),
        &json!({"keys_revoked": revoked}),
    )
    .await?;
    s.refresh_directory().await?;
    Ok(Json(json!({"deleted": name, "keys_revoked": revoked})))
}

async fn list_keys(State(s): State<AppState>, Path(t): Path<String>) -> Result<Json<Value>> {
    existing(&s, &t)?;
    let keys = s.store.keys(Some(&t)).await?;
    Ok(Json(json!({ "data": keys })))
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewKeyBody {
    name: String,
    expires_in: Option<String>,
}

async fn create_key(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(t): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>)> {
    existing(&s, &t)?;
    let de = &mut serde_json::Deserializer::from_slice(&body);
    let b: NewKeyBody = serde_path_to_error::deserialize(de)
        .map_err(|e| AdminError::invalid(format!("invalid key request: {e}")))?;
    let expires_in = b
        .expires_in
        .as_deref()
        .map(keys::parse_expiry)
        .transpose()
        .map_err(AdminError::invalid)?;
    let new = keys::generate(&t, &b.name, expires_in).map_err(AdminError::invalid)?;
    s.store.create_key(&new.row).await?;
    s.event(
            "key_created",
            &p.actor,
            Some(&t),
            &json!({"id": new.row.id, "name": new.row.name, "prefix": new.row.prefix, "expires_at": new.row.expires_at}),
        )
        .await?;
    s.refresh_directory().await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "id": new.row.id, "key": new.key, "name": new.row.name,
            "tenant": new.row.tenant, "prefix": new.row.prefix, "expires_at": new.row.expires_at,
        })),
    ))
}

async fn revoke_key(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path(id): Path<String>,
) -> Result<Json<Value>> {
    let revoked = s.store.revoke_key(&id).await?;
    let key = s
        .store
        .key(&id)
        .await?
        .ok_or_else(|| AdminError::NotFound(format!("no key `{id}`")))?;
    if revoked {
        s.event(
            "key_revoked",
            &p.actor,
            Some(&key.tenant),
            &json!({"id": id}),
        )
        .await?;
        s.refresh_directory().await?;
    }
    Ok(Json(
        json!({"id": key.id, "tenant": key.tenant, "revoked_at": key.revoked_at}),
    ))
}

async fn config_versions(State(s): State<AppState>) -> Result<Json<Value>> {
    Ok(Json(json!({ "data": s.store.config_versions().await? })))
}

async fn reload(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Value>> {
    match s.reload(&p.actor).await {
        Ok(v) => Ok(Json(
            json!({"reloaded": true, "seq": v.seq, "hash": v.hash, "loaded_at": v.loaded_at}),
        )),
        Err(ReloadError::NotAFile) => Err(AdminError::Conflict(ReloadError::NotAFile.to_string())),
        Err(ReloadError::Invalid(errs)) => Err(AdminError::Invalid {
            message: "the new config is invalid; the running config stays".into(),
            details: errs.0.iter().map(ToString::to_string).collect(),
        }),
        Err(e) => Err(AdminError::Internal(e.to_string())),
    }
}

#[derive(serde::Deserialize)]
struct UsageQuery {
    tenant: String,
    since: Option<String>,
    until: Option<String>,
    group_by: Option<String>,
}

/// `GET /admin/v1/usage?tenant&since&until&group_by=model|provider|tag|day`: the
/// budget period's spend and limit, and usage between `since` and `until` (days,
/// default: the budget period so far, or today), grouped.
async fn usage(State(s): State<AppState>, Params(q): Params<UsageQuery>) -> Result<Json<Value>> {
    let (raw, _) = existing(&s, &q.tenant)?;
    let group_by = q.group_by.as_deref().unwrap_or("model");
    if !["model", "provider", "tag", "day"].contains(&group_by) {
        return Err(AdminError::invalid(
            "`group_by` must be model, provider, tag or day",
        ));
    }
    let now = crate::limits::unix_now();
    let period_name = raw.budget.as_ref().map_or("month", |b| b.period.as_str());
    let period = crate::prices::period_of(period_name, now)
        .ok_or_else(|| AdminError::Internal("bad period".into()))?;
    let day = |secs: u64| {
        crate::store::timestamp(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))[..10]
            .to_owned()
    };
    let since = q.since.as_deref().map_or_else(
        || day(period.start),
        |v| v.get(..10).unwrap_or(v).to_owned(),
    );
    let until = q
        .until
        .as_deref()
        .map_or_else(|| day(now), |v| v.get(..10).unwrap_or(v).to_owned());
    for (name, v) in [("since", &since), ("until", &until)] {
        if humantime::parse_rfc3339(&format!("{v}T00:00:00Z")).is_err() {
            return Err(AdminError::invalid(format!(
                "`{name}` must be a date (YYYY-MM-DD) or an RFC 3339 time"
            )));
        }
    }
    // Rows still in the writer's queue are flushed every half second; usage is that fresh.
    let rows = s.store.usage(&q.tenant, &since, &until).await?;
    let mut groups: std::collections::BTreeMap<String, crate::store::UsageCounts> =
        Default::default();
    let mut total = crate::store::UsageCounts::default();
    for (k, c) in &rows {
        total.requests += c.requests;
        total.prompt_tokens += c.prompt_tokens;
        total.completion_tokens += c.completion_tokens;
        total.cost_micros += c.cost_micros;
        let keys: Vec<String> = match group_by {
            "provider" => vec![k.provider.clone()],
            "day" => vec![k.day.clone()],
            "tag" if k.tags.is_empty() => vec![String::new()],
            "tag" => k.tags.split(',').map(str::to_owned).collect(),
            _ => vec![k.model.clone()],
        };
        for key in keys {
            let g = groups.entry(key).or_default();
            g.requests += c.requests;
            g.prompt_tokens += c.prompt_tokens;
            g.completion_tokens += c.completion_tokens;
            g.cost_micros += c.cost_micros;
        }
    }
    let live = s.live.load_full();
    let counters = live.directory.load().counters(&q.tenant).cloned();
    let spent = match &counters {
        Some(c) => crate::limits::spent(c, &period.key).await,
        None => None,
    }
    .unwrap_or(total.cost_micros);
    let usd = crate::limits::budget::micros_to_usd;
    Ok(Json(json!({
        "tenant": q.tenant,
        "period": period.key,
        "since": since,
        "until": until,
        "spent_usd": usd(spent),
        "limit_usd": raw.budget.as_ref().map(|b| b.limit_usd),
        "requests": total.requests,
        "prompt_tokens": total.prompt_tokens,
        "completion_tokens": total.completion_tokens,
        "cost_usd": usd(total.cost_micros),
        "group_by": group_by,
        "groups": groups.iter().map(|(k, c)| json!({
            "key": k, "requests": c.requests, "prompt_tokens": c.prompt_tokens,
            "completion_tokens": c.completion_tokens, "cost_usd": usd(c.cost_micros),
        })).collect::<Vec<_>>(),
    })))
}

#[derive(serde::Deserialize)]
struct RecordsQuery {
    tenant: Option<String>,
    since: Option<String>,
    until: Option<String>,
    status: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// The statuses a record can have.
const STATUSES: [&str; 4] = ["success", "error", "denied", "client_closed"];

impl RecordsQuery {
    /// Checked, with its time bounds in the stored form: a bound, status or limit that
    /// means nothing is a 400 saying what is expected, not an empty (or whole) answer.
    fn checked(mut self) -> Result<Self> {
        (self.since, self.until) = crate::store::time_bounds(
            ["since", "until"],
            self.since.as_deref(),
            self.until.as_deref(),
        )
        .map_err(AdminError::invalid)?;
        if let Some(st) = self.status.as_deref()
            && !STATUSES.contains(&st)
        {
            return Err(AdminError::invalid(format!(
                "`status` must be one of {}, got `{st}`",
                STATUSES.join(", ")
            )));
        }
        if let Some(n) = self.limit
            && !(1..=1000).contains(&n)
        {
            return Err(AdminError::invalid(format!(
                "`limit` must be between 1 and 1000, got {n}"
            )));
        }
        Ok(self)
    }
}

/// Query parameters; a query that does not parse (`limit=abc`) is a 400 in the API's
/// JSON error shape, as every other bad input.
struct Params<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S>
    for Params<T>
{
    type Rejection = AdminError;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _: &S,
    ) -> std::result::Result<Self, AdminError> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| Params(q.0))
            .map_err(|e| AdminError::invalid(format!("invalid query: {}", e.body_text())))
    }
}

/// The tenants a listing covers: the one asked for, else the caller's own (tenant-scoped
/// roles), else all (`None`).
fn listing_tenants(p: &Principal, asked: Option<&String>) -> Option<Vec<String>> {
    match asked {
        Some(t) => Some(vec![t.clone()]),
        None if matches!(
            p.role,
            super::principal::Role::TenantAdmin | super::principal::Role::Viewer
        ) =>
        {
            Some(p.tenants.clone())
        }
        None => None,
    }
}

fn parse_cursor(c: Option<&String>) -> Result<Option<(String, String)>> {
    c.map(|c| {
        c.split_once(',')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .ok_or_else(|| AdminError::invalid("`cursor` is not one this API returned"))
    })
    .transpose()
}

/// The records a listing asks for (newest first), with the tenants, cursor and limit it
/// used.
async fn query_records(
    s: &AppState,
    p: &Principal,
    q: &RecordsQuery,
    status: Option<&str>,
) -> Result<(
    Vec<Value>,
    Option<Vec<String>>,
    Option<(String, String)>,
    i64,
)> {
    let tenants = listing_tenants(p, q.tenant.as_ref());
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let cursor = parse_cursor(q.cursor.as_ref())?;
    let records = s
        .store
        .records(&crate::store::RecordQuery {
            tenants: tenants.as_deref(),
            since: q.since.as_deref(),
            until: q.until.as_deref(),
            status,
            before: cursor.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
            limit,
        })
        .await?;
    Ok((records, tenants, cursor, limit))
}

/// `GET /admin/v1/records?tenant&since&until&status&limit&cursor`: newest first,
/// `next_cursor` pages on.
async fn list_records(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Params(q): Params<RecordsQuery>,
) -> Result<Json<Value>> {
    let q = q.checked()?;
    let (records, _, _, limit) = query_records(&s, &p, &q, q.status.as_deref()).await?;
    let next = (records.len() as i64 == limit)
        .then(|| records.last())
        .flatten()
        .map(|r| {
            format!(
                "{},{}",
                r["ts"].as_str().unwrap_or(""),
                r["request_id"].as_str().unwrap_or("")
            )
        });
    Ok(Json(json!({"data": records, "next_cursor": next})))
}

async fn get_record(State(s): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>> {
    match s.store.record(&id).await? {
        Some((_, body)) => Ok(Json(body)),
        None => Err(AdminError::NotFound(format!("no record `{id}`"))),
    }
}

/// `GET /admin/v1/timeline?tenant&since&until&limit&cursor`: the tenant's records and the
/// events that concern it (budget alerts, policy denials, fallbacks, circuit openings,
/// config changes) in one time order, newest first.
async fn timeline(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Params(q): Params<RecordsQuery>,
) -> Result<Json<Value>> {
    let q = q.checked()?;
    let (records, tenants, cursor, limit) = query_records(&s, &p, &q, None).await?;
    let mut items: Vec<(String, String, Value)> = records
        .into_iter()
        .map(|r| {
            let fell_back = r["attempts"].as_array().is_some_and(|a| {
                a.len() > 1 && a.last().is_some_and(|l| l["error"].is_null())
            });
            let kind = match r["status"].as_str() {
                Some("denied") => "policy_denial",
                _ if fell_back => "fallback",
                _ => "request",
            };
            let ts = r["ts"].as_str().unwrap_or_default().to_owned();
            let id = r["request_id"].as_str().unwrap_or_default().to_owned();
            let item = json!({
                "ts": ts, "type": kind, "request_id": id, "tenant": r["tenant"],
                "model": r["model_requested"], "status": r["status"], "error_code": r["error_code"],
                "provider": r["decision"]["chosen"], "cost_usd": r["cost_usd"], "policy": r["policy"],
            });
            (ts, id, item)
        })
        .collect();
    const EVENT_KINDS: [&str; 7] = [
        "budget_alert",
        "circuit_open",
        "config_loaded",
        "config_rejected",
        "experiment_decision",
        crate::record::REFUSAL_EVENT,
        "tenant_updated",
    ];
    for e in s.store.events().await? {
        let concerns = match (&tenants, &e.tenant) {
            (None, _) | (Some(_), None) => true,
            (Some(ts), Some(t)) => ts.contains(t),
        };
        let in_range = q.since.as_deref().is_none_or(|v| e.ts.as_str() >= v)
            && q.until.as_deref().is_none_or(|v| e.ts.as_str() <= v)
            && cursor.as_ref().is_none_or(|(ts, _)| e.ts < *ts);
        if concerns && in_range && EVENT_KINDS.contains(&e.kind.as_str()) {
            let id = format!("event-{}", e.seq);
            let item = json!({"ts": e.ts, "type": e.kind, "event": e.seq, "tenant": e.tenant, "actor": e.actor, "detail": e.payload});
            items.push((e.ts.clone(), id, item));
        }
    }
    items.sort_by(|a, b| (&b.0, &b.1).cmp(&(&a.0, &a.1)));
    items.truncate(limit as usize);
    let next = (items.len() as i64 == limit)
        .then(|| items.last())
        .flatten()
        .map(|(ts, id, _)| format!("{ts},{id}"));
    Ok(Json(
        json!({"data": items.into_iter().map(|i| i.2).collect::<Vec<_>>(), "next_cursor": next}),
    ))
}

async fn audit_verify(State(s): State<AppState>) -> Result<Json<Value>> {
    let report = crate::audit::verify_store(&s.store).await?;
    Ok(Json(serde_json::to_value(report).unwrap_or_default()))
}

#[derive(serde::Deserialize)]
struct ExportQuery {
    since: Option<String>,
    until: Option<String>,
}

/// JSON Lines: checkpoints, then entries; verifiable offline with the public key.
async fn audit_export(
    State(s): State<AppState>,
    Params(q): Params<ExportQuery>,
) -> Result<Response> {
    let (since, until) =
        crate::store::time_bounds(["since", "until"], q.since.as_deref(), q.until.as_deref())
            .map_err(AdminError::invalid)?;
    let text = crate::audit::export(&s.store, since.as_deref(), until.as_deref()).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-ndjson"),
        )],
        text,
    )
        .into_response())
}

// === experiments ===

/// The status from the experiment's controller.
async fn experiment_view(rt: &crate::experiments::Runtime) -> Result<Value> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rt.send(crate::experiments::Msg::View(tx));
    rx.await
        .map_err(|_| AdminError::Internal("the experiment's controller is not running".into()))
}

async fn list_experiments(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
) -> Result<Json<Value>> {
    let live = s.live.load_full();
    let mut out = Vec::new();
    for (spec, rt) in live.experiments.all() {
        let visible = match &spec.tenants {
            Some(ts) => rbac::permits(
                &p,
                rbac::Action::ReadExperiments,
                &Scope::Tenants(ts.clone()),
            ),
            None => rbac::permits(&p, rbac::Action::ReadExperiments, &Scope::Global),
        };
        if visible {
            out.push(experiment_view(rt).await?);
        }
    }
    out.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
    Ok(Json(json!({ "experiments": out })))
}

async fn get_experiment(
    State(s): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>> {
    let live = s.live.load_full();
    let (_, rt) = live
        .experiments
        .find(&name)
        .ok_or_else(|| AdminError::NotFound(format!("no experiment `{name}`")))?;
    Ok(Json(experiment_view(rt).await?))
}

/// `promote`, `rollback`, `pause`, `resume`: applied by the experiment's controller (the
/// one place decisions are made), audited as an `experiment_decision` with the actor;
/// 409 when the experiment's state does not allow it.
async fn experiment_action(
    State(s): State<AppState>,
    Extension(p): Extension<Principal>,
    Path((name, action)): Path<(String, String)>,
) -> Result<Json<Value>> {
    let action = crate::experiments::controller::Action::parse(&action)
        .ok_or_else(|| AdminError::NotFound("no such admin endpoint".into()))?;
    let live = s.live.load_full();
    let (_, rt) = live
        .experiments
        .find(&name)
        .ok_or_else(|| AdminError::NotFound(format!("no experiment `{name}`")))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    rt.send(crate::experiments::Msg::Command {
        action,
        actor: p.actor.clone(),
        reply: Some(tx),
    });
    match rx.await {
        Ok(Ok(view)) => Ok(Json(view)),
        Ok(Err(reason)) => Err(AdminError::Conflict(reason)),
        Err(_) => Err(AdminError::Internal(
            "the experiment's controller is not running".into(),
        )),
    }
}
