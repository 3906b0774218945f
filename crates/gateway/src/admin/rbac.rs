//! The RBAC matrix of contract section 3, in one place.
//!
//! Every admin route names an [`Action`] and where its tenant scope comes from
//! ([`route`]); one middleware ([`super::api::guard`]) resolves the scope and asks
//! [`permits`]. Handlers never check roles themselves; list endpoints only narrow what
//! they return with [`Principal::holds`].

use http::Method;

use super::principal::{Principal, Role};

/// What a route does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Any authenticated caller (`whoami`).
    Identify,
    ReadAudit,
    ReadConfig,
    ReadExperiments,
    ReadKeys,
    ReadRecords,
    ReadTenants,
    ReadUsage,
    WriteConfig,
    WriteExperiments,
    WriteKeys,
    WriteTenants,
}

impl Action {
    fn is_read(self) -> bool {
        match self {
            Self::Identify
            | Self::ReadAudit
            | Self::ReadConfig
            | Self::ReadExperiments
            | Self::ReadKeys
            | Self::ReadRecords
            | Self::ReadTenants
            | Self::ReadUsage => true,
            Self::WriteConfig | Self::WriteExperiments | Self::WriteKeys | Self::WriteTenants => {
                false
            }
        }
    }
}

/// Which tenant a request concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// The whole gateway (config, audit, creating tenants).
    Global,
    /// A listing, narrowed to the caller's tenants for tenant-scoped roles.
    List,
    Tenant(String),
    /// Every one of these tenants (an experiment scoped to them).
    Tenants(Vec<String>),
}

/// Where a route's scope comes from, before it is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScopeFrom {
    Global,
    List,
    /// The `{t}` path segment.
    TenantParam(String),
    /// The tenant of the key `{id}` (looked up in the store).
    KeyParam(String),
    /// The `tenant` query parameter (required).
    TenantQuery(Option<String>),
    /// The `tenant` query parameter, or a listing narrowed to the caller's tenants.
    TenantQueryOrList(Option<String>),
    /// The tenant of the record `{request_id}` (looked up in the store).
    RecordParam(String),
    /// The tenants the experiment `{name}` is scoped to (global when it is not scoped).
    ExperimentParam(String),
}

impl Principal {
    /// Holds this tenant (tenant-scoped roles) or every tenant (the others).
    pub fn holds(&self, tenant: &str) -> bool {
        match self.role {
            Role::Auditor | Role::PlatformAdmin => true,
            Role::TenantAdmin | Role::Viewer => self.tenants.iter().any(|t| t == tenant),
        }
    }
}

/// For tenant-scoped roles: the request concerns one of the caller's tenants (or is a
/// listing, narrowed later, or `whoami`).
fn within_own_tenants(p: &Principal, action: Action, scope: &Scope) -> bool {
    match scope {
        Scope::Global => action == Action::Identify,
        Scope::List => true,
        Scope::Tenant(t) => p.holds(t),
        Scope::Tenants(ts) => !ts.is_empty() && ts.iter().all(|t| p.holds(t)),
    }
}

/// The matrix.
pub fn permits(p: &Principal, action: Action, scope: &Scope) -> bool {
    match p.role {
        Role::PlatformAdmin => true,
        Role::Auditor => action.is_read(),
        Role::TenantAdmin => {
            within_own_tenants(p, action, scope)
                && matches!(
                    action,
                    Action::Identify
                        | Action::ReadExperiments
                        | Action::ReadKeys
                        | Action::ReadRecords
                        | Action::ReadTenants
                        | Action::ReadUsage
                        | Action::WriteExperiments
                        | Action::WriteKeys
                )
        }
        Role::Viewer => {
            within_own_tenants(p, action, scope)
                && matches!(
                    action,
                    Action::Identify | Action::ReadRecords | Action::ReadUsage
                )
        }
    }
}

/// The admin routes: method and path → action and scope source. `None`: no such route.
/// `tenant_query` is the request's `tenant` query parameter, if any.
pub fn route(
    method: &Method,
    path: &str,
    tenant_query: Option<String>,
) -> Option<(Action, ScopeFrom)> {
    let rest = path.strip_prefix("/admin/v1/")?;
    let segs: Vec<&str> = rest.split('/').collect();
    let m = method.as_str();
    let tenant = |t: &str| ScopeFrom::TenantParam(t.to_owned());
    Some(match (m, segs.as_slice()) {
        ("GET", ["whoami"]) => (Action::Identify, ScopeFrom::Global),
        ("GET", ["tenants"]) => (Action::ReadTenants, ScopeFrom::List),
        ("POST", ["tenants"]) => (Action::WriteTenants, ScopeFrom::Global),
        ("GET", ["tenants", t]) => (Action::ReadTenants, tenant(t)),
        ("PATCH" | "DELETE", ["tenants", t]) => (Action::WriteTenants, tenant(t)),
        ("GET", ["tenants", t, "keys"]) => (Action::ReadKeys, tenant(t)),
        ("POST", ["tenants", t, "keys"]) => (Action::WriteKeys, tenant(t)),
        ("DELETE", ["keys", id]) => (Action::WriteKeys, ScopeFrom::KeyParam((*id).to_owned())),
        ("GET", ["config", "versions"]) => (Action::ReadConfig, ScopeFrom::Global),
        ("GET", ["audit", "verify" | "export"]) => (Action::ReadAudit, ScopeFrom::Global),
        ("GET", ["usage"]) => (Action::ReadUsage, ScopeFrom::TenantQuery(tenant_query)),
        ("GET", ["records"]) => (
            Action::ReadRecords,
            ScopeFrom::TenantQueryOrList(tenant_query),
        ),
        ("GET", ["records", id]) => (
            Action::ReadRecords,
            ScopeFrom::RecordParam((*id).to_owned()),
        ),
        ("GET", ["timeline"]) => (
            Action::ReadRecords,
            ScopeFrom::TenantQueryOrList(tenant_query),
        ),
        ("POST", ["config", "reload"]) => (Action::WriteConfig, ScopeFrom::Global),
        ("GET", ["experiments"]) => (Action::ReadExperiments, ScopeFrom::List),
        ("GET", ["experiments", name]) => (
            Action::ReadExperiments,
            ScopeFrom::ExperimentParam((*name).to_owned()),
        ),
        (
            "POST",
            [
                "experiments",
                name,
                "promote" | "rollback" | "pause" | "resume",
            ],
        ) => (
            Action::WriteExperiments,
            ScopeFrom::ExperimentParam((*name).to_owned()),
        ),
        _ => return None,
    })
}

/// What a principal may do, for `whoami`.
pub fn capabilities(p: &Principal) -> Vec<&'static str> {
    const ALL: [(Action, &str); 11] = [
        (Action::ReadTenants, "read_tenants"),
        (Action::WriteTenants, "write_tenants"),
        (Action::ReadKeys, "read_keys"),
        (Action::WriteKeys, "write_keys"),
        (Action::ReadUsage, "read_usage"),
        (Action::ReadRecords, "read_records"),
        (Action::ReadExperiments, "read_experiments"),
        (Action::WriteExperiments, "write_experiments"),
        (Action::ReadAudit, "read_audit"),
        (Action::ReadConfig, "read_config"),
        (Action::WriteConfig, "write_config"),
    ];
    ALL.iter()
        .filter(|(a, _)| {
            let scope = match p.tenants.first() {
                Some(t) if matches!(p.role, Role::TenantAdmin | Role::Viewer) => {
                    Scope::Tenant(t.clone())
                }
                _ => Scope::Global,
            };
            permits(p, *a, &scope)
        })
        .map(|(_, n)| *n)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(role: Role, tenants: &[&str]) -> Principal {
        Principal {
            actor: "t".into(),
            role,
            tenants: tenants.iter().map(|s| (*s).to_owned()).collect(),
            via: "token",
        }
    }

    #[test]
    fn the_matrix() {
        let a = Scope::Tenant("a".into());
        let b = Scope::Tenant("b".into());
        let admin = who(Role::PlatformAdmin, &[]);
        let auditor = who(Role::Auditor, &[]);
        let ta = who(Role::TenantAdmin, &["a"]);
        let viewer = who(Role::Viewer, &["a"]);
        assert!(permits(&admin, Action::WriteConfig, &Scope::Global));
        assert!(permits(&auditor, Action::ReadKeys, &b));
        assert!(!permits(&auditor, Action::WriteKeys, &b));
        assert!(!permits(&auditor, Action::WriteTenants, &Scope::Global));
        assert!(permits(&ta, Action::WriteKeys, &a));
        assert!(!permits(&ta, Action::WriteKeys, &b));
        assert!(!permits(&ta, Action::ReadKeys, &b));
        assert!(!permits(&ta, Action::WriteTenants, &a));
        assert!(!permits(&ta, Action::ReadConfig, &Scope::Global));
        assert!(permits(&viewer, Action::ReadUsage, &a));
        assert!(!permits(&viewer, Action::ReadKeys, &a));
        assert!(!permits(&viewer, Action::WriteKeys, &a));
        assert!(!permits(&viewer, Action::ReadUsage, &b));
        assert!(permits(&viewer, Action::Identify, &Scope::Global));
        let ab = Scope::Tenants(vec!["a".into(), "b".into()]);
        let a_only = Scope::Tenants(vec!["a".into()]);
        assert!(permits(&ta, Action::WriteExperiments, &a_only));
        assert!(!permits(&ta, Action::WriteExperiments, &ab));
        assert!(!permits(&ta, Action::WriteExperiments, &Scope::Global));
        assert!(!permits(&viewer, Action::ReadExperiments, &a_only));
        assert!(permits(&auditor, Action::ReadExperiments, &ab));
        assert!(!permits(&auditor, Action::WriteExperiments, &ab));
    }

    #[test]
    fn routes() {
        assert_eq!(
            route(&Method::DELETE, "/admin/v1/keys/key_1", None),
            Some((Action::WriteKeys, ScopeFrom::KeyParam("key_1".into())))
        );
        assert_eq!(
            route(&Method::GET, "/admin/v1/tenants/x/keys", None),
            Some((Action::ReadKeys, ScopeFrom::TenantParam("x".into())))
        );
        assert_eq!(route(&Method::PUT, "/admin/v1/tenants/x", None), None);
        assert_eq!(route(&Method::GET, "/v1/models", None), None);
        assert_eq!(
            route(&Method::GET, "/admin/v1/usage", Some("a".into())),
            Some((Action::ReadUsage, ScopeFrom::TenantQuery(Some("a".into()))))
        );
    }
}
