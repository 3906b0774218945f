//! API keys: made here, shown once, stored as SHA-256 only.
//!
//! A key is `sk-asc-` followed by 43 random alphanumeric characters (about 256 bits),
//! so a fast hash is enough (nothing to brute-force) and lookups stay one map access.
//! The first 12 characters are kept as `prefix` to recognise a key in listings.

use std::time::{Duration, SystemTime};

use rand::Rng;
use rand::distr::Alphanumeric;

use crate::config::hex;
use crate::config::validate::key_hash;
use crate::store::{KeyRow, timestamp};

pub const KEY_PREFIX: &str = "sk-asc-";

/// A new key: the row to store and the key to show once.
pub struct NewKey {
    pub row: KeyRow,
    pub key: String,
}

/// Makes a key for `tenant` named `name`, expiring after `expires_in` if given.
pub fn generate(tenant: &str, name: &str, expires_in: Option<Duration>) -> Result<NewKey, String> {
    if name.is_empty() || name.len() > 64 {
        return Err("`name` must be 1 to 64 characters".into());
    }
    let mut rng = rand::rng();
    let secret: String = (0..43)
        .map(|_| char::from(rng.sample(Alphanumeric)))
        .collect();
    let key = format!("{KEY_PREFIX}{secret}");
    let id: String = (0..16)
        .map(|_| char::from(rng.sample(Alphanumeric)).to_ascii_lowercase())
        .collect();
    let now = SystemTime::now();
    let row = KeyRow {
        id: format!("key_{id}"),
        tenant: tenant.to_owned(),
        name: name.to_owned(),
        prefix: key[..12].to_owned(),
        hash: hex(&key_hash(&key)),
        created_at: timestamp(now),
        expires_at: expires_in.map(|d| timestamp(now + d)),
        revoked_at: None,
    };
    Ok(NewKey { row, key })
}

/// `30d`, `12h`, `90m`, `1w` ... (humantime); at most ten years.
pub fn parse_expiry(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("`expires_in` must be a duration like 30d or 12h: {e}"))?;
    if d.is_zero() || d > Duration::from_secs(10 * 366 * 24 * 3600) {
        return Err("`expires_in` must be between 1 second and 10 years".into());
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_unique_prefixed_and_only_hashed() {
        let a = generate("t", "ci", Some(Duration::from_secs(60))).unwrap();
        let b = generate("t", "ci", None).unwrap();
        assert_ne!(a.key, b.key);
        assert_ne!(a.row.id, b.row.id);
        assert!(a.key.starts_with(KEY_PREFIX) && a.key.len() == 50);
        assert!(a.key.starts_with(&a.row.prefix));
        assert_eq!(a.row.hash, hex(&key_hash(&a.key)));
        assert!(!a.row.hash.contains(&a.key[7..]));
        assert!(a.row.expires_at.is_some() && b.row.expires_at.is_none());
        assert!(generate("t", "", None).is_err());
    }

    #[test]
    fn expiry_parsing() {
        assert_eq!(
            parse_expiry("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert_eq!(parse_expiry("12h").unwrap(), Duration::from_secs(12 * 3600));
        assert!(parse_expiry("soon").is_err());
        assert!(parse_expiry("0s").is_err());
        assert!(parse_expiry("100y").is_err());
    }
}
