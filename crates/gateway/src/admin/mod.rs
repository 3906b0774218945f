//! The admin plane (contract section 3): authentication of admin callers, RBAC, and
//! the `/admin/v1` API.

pub mod api;
pub mod keys;
pub mod oidc;
pub mod principal;
pub mod rbac;
