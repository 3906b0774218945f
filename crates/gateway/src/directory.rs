//! Who may call the data plane: every tenant (from the file and from the store) and
//! every API key (static ones from the file, created ones from the store), as one
//! immutable map held in memory.
//!
//! The hot path does one `ArcSwap` load and one hash-map lookup per request: no query,
//! no lock. A change (key created or revoked, tenant created, changed or deleted, config
//! reloaded) builds a new `Directory` and swaps it in, so it takes effect on the very
//! next request. Changes made by another process (`asc keys revoke`) are picked up by a
//! poll of the store's change counter (see [`crate::state::AppState::watch_store`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::raw::TenantRaw;
use crate::config::{Config, Tenant};
use crate::limits::Counters;
use crate::store::KeyRow;

/// Where a tenant's definition lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ManagedBy {
    Api,
    Config,
}

/// A tenant as requests see it: its definition and its live counters.
#[derive(Debug, Clone)]
pub struct TenantEntry {
    pub tenant: Arc<Tenant>,
    pub counters: Arc<Counters>,
}

#[derive(Debug)]
pub struct Directory {
    tenants: Vec<(TenantEntry, ManagedBy)>,
    by_name: HashMap<String, usize>,
    keys: HashMap<[u8; 32], KeyEntry>,
}

/// A key the data plane accepts.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// For records: `TENANT/NAME` for static keys, the stored id otherwise.
    pub id: String,
    tenant: usize,
    pub expires_at: Option<SystemTime>,
}

impl Directory {
    /// Builds the directory from the config and what the store holds. A stored tenant
    /// whose name is also in the file is shadowed by the file's; a stored key whose
    /// tenant no longer exists is not accepted.
    /// `counters` gives each tenant's counters by name (see [`Directory::tenant_names`]).
    pub fn build(
        config: &Config,
        stored_tenants: Vec<TenantRaw>,
        stored_keys: &[KeyRow],
        counters: &dyn Fn(&str) -> Arc<Counters>,
    ) -> Self {
        let mut tenants: Vec<(TenantEntry, ManagedBy)> = Vec::new();
        let mut by_name: HashMap<String, usize> = HashMap::new();
        let all = (config
            .tenants
            .iter()
            .map(|t| (t.clone(), ManagedBy::Config)))
        .chain(
            stored_tenants
                .iter()
                .map(|r| (Tenant::from_raw(r), ManagedBy::Api)),
        );
        for (t, managed) in all {
            if by_name.contains_key(&t.name) {
                tracing::warn!(tenant = %t.name, "a stored tenant is shadowed by the config file's");
                continue;
            }
            by_name.insert(t.name.clone(), tenants.len());
            let entry = TenantEntry {
                counters: counters(&t.name),
                tenant: Arc::new(t),
            };
            tenants.push((entry, managed));
        }
        let mut keys = HashMap::new();
        for (hash, sk) in config.static_keys() {
            keys.insert(
                *hash,
                KeyEntry {
                    id: sk.id.clone(),
                    tenant: sk.tenant,
                    expires_at: None,
                },
            );
        }
        for k in stored_keys.iter().filter(|k| k.revoked_at.is_none()) {
            let (Some(&tenant), Some(hash)) = (by_name.get(&k.tenant), parse_hash(&k.hash)) else {
                continue;
            };
            let expires_at = k
                .expires_at
                .as_deref()
                .and_then(|t| humantime::parse_rfc3339(t).ok());
            keys.insert(
                hash,
                KeyEntry {
                    id: k.id.clone(),
                    tenant,
                    expires_at,
                },
            );
        }
        Self {
            tenants,
            by_name,
            keys,
        }
    }

    /// The tenant of a key (by SHA-256), if the key is known and not expired at `now`.
    pub fn authenticate(
        &self,
        hash: &[u8; 32],
        now: SystemTime,
    ) -> Option<(&KeyEntry, &TenantEntry)> {
        let entry = self.keys.get(hash)?;
        if entry.expires_at.is_some_and(|e| e <= now) {
            return None;
        }
        Some((entry, &self.tenants[entry.tenant].0))
    }

    pub fn tenant(&self, name: &str) -> Option<(&Arc<Tenant>, ManagedBy)> {
        let &i = self.by_name.get(name)?;
        let (t, m) = &self.tenants[i];
        Some((&t.tenant, *m))
    }

    pub fn tenants(&self) -> impl Iterator<Item = (&Arc<Tenant>, ManagedBy)> {
        self.tenants.iter().map(|(t, m)| (&t.tenant, *m))
    }

    /// The counters of a tenant.
    pub fn counters(&self, name: &str) -> Option<&Arc<Counters>> {
        let &i = self.by_name.get(name)?;
        Some(&self.tenants[i].0.counters)
    }

    /// Every tenant name a directory built from these would hold, with the budget
    /// period of each (to create counters before building).
    pub fn tenant_names<'a>(
        config: &'a Config,
        stored: &'a [TenantRaw],
    ) -> impl Iterator<Item = (&'a str, Option<&'a str>)> {
        let from_file = config.tenants.iter().map(|t| &t.raw);
        from_file.chain(stored).map(|t| {
            (
                t.name.as_str(),
                t.budget.as_ref().map(|b| b.period.as_str()),
            )
        })
    }
}

fn parse_hash(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::validate::key_hash;

    fn row(id: &str, tenant: &str, key: &str, expires: Option<SystemTime>) -> KeyRow {
        KeyRow {
            id: id.into(),
            tenant: tenant.into(),
            name: id.into(),
            prefix: key[..8].into(),
            hash: crate::config::hex(&key_hash(key)),
            created_at: String::new(),
            expires_at: expires.map(crate::store::timestamp),
            revoked_at: None,
        }
    }

    #[test]
    fn keys_resolve_to_tenants_and_expire() {
        let cfg = crate::config::load_str(&crate::demo::config_yaml(), &|_| None).unwrap();
        let api: TenantRaw = serde_json::from_value(
            serde_json::json!({"name": "api-t", "allowed_models": ["chat"]}),
        )
        .unwrap();
        let shadow: TenantRaw =
            serde_json::from_value(serde_json::json!({"name": "prod", "allowed_models": []}))
                .unwrap();
        let now = SystemTime::now();
        let keys = vec![
            row("k1", "api-t", "sk-asc-live-key-1", None),
            row(
                "k2",
                "api-t",
                "sk-asc-old-key-22",
                Some(now - Duration::from_secs(1)),
            ),
            row("k3", "ghost", "sk-asc-ghost-key3", None),
        ];
        let limits = crate::limits::Limits::new_detached();
        let d = Directory::build(&cfg, vec![api, shadow], &keys, &|n| limits.counters_now(n));
        let (e, t) = d.authenticate(&key_hash("sk-asc-live-key-1"), now).unwrap();
        assert_eq!((e.id.as_str(), t.tenant.name.as_str()), ("k1", "api-t"));
        assert!(
            d.authenticate(&key_hash("sk-asc-old-key-22"), now)
                .is_none(),
            "expired"
        );
        assert!(
            d.authenticate(&key_hash("sk-asc-ghost-key3"), now)
                .is_none(),
            "no tenant"
        );
        let (e, t) = d
            .authenticate(&key_hash(crate::demo::PROD_KEY), now)
            .unwrap();
        assert_eq!(
            (e.id.as_str(), t.tenant.name.as_str()),
            ("prod/demo", "prod")
        );
        let (prod, managed) = d.tenant("prod").unwrap();
        assert_eq!(managed, ManagedBy::Config, "the file's tenant wins");
        assert_eq!(prod.allowed_models, ["*"]);
        assert_eq!(d.tenant("api-t").unwrap().1, ManagedBy::Api);
    }
}
