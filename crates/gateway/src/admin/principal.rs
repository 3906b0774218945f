//! Who is calling the admin plane, and what their role lets them do.

use serde::Serialize;

/// An admin role (contract section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read everything, audit export and verify; change nothing; never sees key material.
    Auditor,
    /// Everything.
    PlatformAdmin,
    /// Its own tenants: keys, usage, records, timeline, experiments scoped to them.
    TenantAdmin,
    /// Read usage, records and timeline of its own tenants.
    Viewer,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "auditor" => Some(Self::Auditor),
            "platform_admin" => Some(Self::PlatformAdmin),
            "tenant_admin" => Some(Self::TenantAdmin),
            "viewer" => Some(Self::Viewer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auditor => "auditor",
            Self::PlatformAdmin => "platform_admin",
            Self::TenantAdmin => "tenant_admin",
            Self::Viewer => "viewer",
        }
    }

    /// Rank for choosing one role when a person holds several (highest wins).
    pub fn rank(self) -> u8 {
        match self {
            Self::PlatformAdmin => 3,
            Self::Auditor => 2,
            Self::TenantAdmin => 1,
            Self::Viewer => 0,
        }
    }
}

/// An authenticated admin caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    /// Token name (`token:ops`) or OIDC subject (`oidc:alice@example.com`): the actor
    /// written into audit entries.
    pub actor: String,
    pub role: Role,
    /// Tenants a `tenant_admin` or `viewer` holds (empty for the other roles).
    pub tenants: Vec<String>,
    /// `token` or `oidc`.
    pub via: &'static str,
}
