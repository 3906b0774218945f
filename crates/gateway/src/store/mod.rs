//! The embedded store: SQLite through sqlx, in WAL mode, with embedded migrations.
//!
//! It holds what must outlive a process and is not in the config file: tenants created
//! through the API, API keys (as SHA-256 hashes only), config versions, and the admin
//! event log. Nothing here is read per request: the gateway keeps a memory copy of keys
//! and tenants (see [`crate::directory`]) and refreshes it on change.
//!
//! Opening a database applies missing migrations; a database written by a newer `asc`
//! (a migration this binary does not know) is refused with a message saying so.
//! Multi-replica deployments will add a Postgres implementation of the same operations.

use std::path::Path;
use std::str::FromStr;
use std::time::SystemTime;

use serde_json::Value;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::config::raw::TenantRaw;

mod experiments;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    Conflict(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("cannot open the database: {0}")]
    Open(String),
    #[error(
        "the database was written by a newer version of asc (schema version {0} is unknown to this binary); upgrade asc or use another database"
    )]
    TooNew(i64),
    #[error("migrating the database failed: {0}")]
    Migrate(String),
}

/// The record's JSON: its audit entry's payload, or for rows from before migration 7,
/// its own `body`; NULL once retention pruned the entry. The `FROM` of record reads
/// (the records table is `r`).
macro_rules! record_body {
    () => {
        "COALESCE(r.body, a.payload) FROM records r
         LEFT JOIN audit_entries a ON a.chain = r.chain AND a.seq = r.seq AND a.pruned = 0"
    };
}

/// A handle to the store; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: SqlitePool,
}

/// An API key as stored: everything but the key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyRow {
    pub id: String,
    pub tenant: String,
    pub name: String,
    pub prefix: String,
    #[serde(skip)]
    pub hash: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// Filters of a records listing.
#[derive(Debug, Default)]
pub struct RecordQuery<'a> {
    pub tenants: Option<&'a [String]>,
    pub since: Option<&'a str>,
    pub until: Option<&'a str>,
    pub status: Option<&'a str>,
    pub before: Option<(&'a str, &'a str)>,
    pub limit: i64,
}

/// What usage is aggregated by.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UsageKey {
    pub tenant: String,
    pub day: String,
    pub model: String,
    pub provider: String,
    pub tags: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UsageCounts {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cost_micros: u64,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ConfigVersion {
    pub seq: i64,
    pub hash: String,
    pub loaded_at: String,
    pub actor: String,
    pub source: String,
    pub diff: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct AdminEvent {
    pub seq: i64,
    pub ts: String,
    pub kind: String,
    pub actor: String,
    pub tenant: Option<String>,
    pub payload: Value,
}

/// RFC 3339 (UTC, milliseconds) of a time.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

impl Store {
    /// Opens (creating if needed) the database at `url` (`sqlite://PATH`,
    /// `sqlite::memory:`) and migrates it.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let Some(rest) = url.strip_prefix("sqlite:") else {
            return Err(StoreError::Open(format!(
                "`{url}` is not a sqlite:// URL (PostgreSQL arrives with multi-replica support)"
            )));
        };
        let path = rest.trim_start_matches("//");
        if path != ":memory:"
            && let Some(dir) = Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Open(format!("{}: {e}", dir.display())))?;
        }
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Open(e.to_string()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(5))
            .foreign_keys(true);
        let max = if path == ":memory:" { 1 } else { 4 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .connect_with(opts)
            .await
            .map_err(|e| StoreError::Open(e.to_string()))?;
        MIGRATIONS.run(&pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::VersionMissing(v) => StoreError::TooNew(v),
            other => StoreError::Migrate(other.to_string()),
        })?;
        Ok(Self { pool })
    }

    /// The connection pool, for tools and tests that must reach the database directly
    /// (the tamper tests of the audit trail do).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The store is reachable (for `/readyz`).
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// A value that changes whenever keys or tenants change (by this process or another,
    /// such as `asc keys revoke`): polled to refresh the memory copy.
    pub async fn generation(&self) -> Result<String, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM api_keys), (SELECT COUNT(revoked_at) FROM api_keys),
                    (SELECT COUNT(*) FROM tenants), (SELECT COALESCE(MAX(updated_at), '') FROM tenants)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(format!(
            "{}:{}:{}:{}",
            row.get::<i64, _>(0),
            row.get::<i64, _>(1),
            row.get::<i64, _>(2),
            row.get::<String, _>(3)
        ))
    }

    // === tenants ===

    pub async fn tenants(&self) -> Result<Vec<TenantRaw>, StoreError> {
        let rows = sqlx::query("SELECT spec FROM tenants ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| serde_json::from_str(r.get::<&str, _>(0)).ok())
            .collect())
    }

    pub async fn create_tenant(&self, spec: &TenantRaw) -> Result<(), StoreError> {
        let now = timestamp(SystemTime::now());
        let json = serde_json::to_string(spec).map_err(|e| StoreError::Open(e.to_string()))?;
        let r = sqlx::query(
            "INSERT INTO tenants (name, spec, created_at, updated_at) VALUES (?, ?, ?, ?)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&spec.name)
        .bind(json)
        .bind(&now)
        .bind(&now)
        .execute(&self.pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "tenant `{}` already exists",
                spec.name
            )));
        }
        Ok(())
    }

    /// Replaces a stored tenant; false if there is none of that name.
    pub async fn update_tenant(&self, spec: &TenantRaw) -> Result<bool, StoreError> {
        let json = serde_json::to_string(spec).map_err(|e| StoreError::Open(e.to_string()))?;
        let r = sqlx::query("UPDATE tenants SET spec = ?, updated_at = ? WHERE name = ?")
            .bind(json)
            .bind(timestamp(SystemTime::now()))
            .bind(&spec.name)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Deletes a stored tenant and revokes its keys in one transaction. Returns whether
    /// it existed and how many keys were revoked.
    pub async fn delete_tenant(&self, name: &str) -> Result<(bool, u64), StoreError> {
        let now = timestamp(SystemTime::now());
        let mut tx = self.pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM tenants WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let revoked = sqlx::query(
            "UPDATE api_keys SET revoked_at = ? WHERE tenant = ? AND revoked_at IS NULL",
        )
        .bind(&now)
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok((deleted > 0, revoked))
    }

    /// Revokes every key of a tenant (used when a config tenant disappears).
    pub async fn revoke_tenant_keys(&self, tenant: &str) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE api_keys SET revoked_at = ? WHERE tenant = ? AND revoked_at IS NULL",
        )
        .bind(timestamp(SystemTime::now()))
        .bind(tenant)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    // === keys ===

    pub async fn create_key(&self, k: &KeyRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO api_keys (id, tenant, name, prefix, hash, created_at, expires_at, revoked_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
        )
        .bind(&k.id)
        .bind(&k.tenant)
        .bind(&k.name)
        .bind(&k.prefix)
        .bind(&k.hash)
        .bind(&k.created_at)
        .bind(&k.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Keys, newest first; of one tenant when given.
    pub async fn keys(&self, tenant: Option<&str>) -> Result<Vec<KeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, tenant, name, prefix, hash, created_at, expires_at, revoked_at FROM api_keys
             WHERE (?1 IS NULL OR tenant = ?1) ORDER BY created_at DESC, id",
        )
        .bind(tenant)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(key_row).collect())
    }

    /// Keys that are not revoked (expired ones included: expiry is checked per request).
    pub async fn live_keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, tenant, name, prefix, hash, created_at, expires_at, revoked_at FROM api_keys
             WHERE revoked_at IS NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(key_row).collect())
    }

    pub async fn key(&self, id: &str) -> Result<Option<KeyRow>, StoreError> {
        let row = sqlx::query(
            "SELECT id, tenant, name, prefix, hash, created_at, expires_at, revoked_at FROM api_keys WHERE id = ?",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(key_row))
    }

    /// Revokes a key; false if it does not exist or was already revoked.
    pub async fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        let r =
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
                .bind(timestamp(SystemTime::now()))
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(r.rows_affected() > 0)
    }

    // === spend ===

    /// Micro-dollars spent by `scope` in `period` (0 if nothing is stored).
    pub async fn spent(&self, scope: &str, period: &str) -> Result<u64, StoreError> {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT spent_micros FROM spend WHERE scope = ? AND period = ?")
                .bind(scope)
                .bind(period)
                .fetch_optional(&self.pool)
                .await?;
        Ok(v.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
    }

    pub async fn set_spent(
        &self,
        scope: &str,
        period: &str,
        micros: u64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO spend (scope, period, spent_micros) VALUES (?, ?, ?)
             ON CONFLICT (scope, period) DO UPDATE SET spent_micros = excluded.spent_micros",
        )
        .bind(scope)
        .bind(period)
        .bind(i64::try_from(micros).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    // === usage ===

    /// Adds aggregated usage rows.
    pub async fn add_usage(&self, rows: &[(UsageKey, UsageCounts)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        for (k, c) in rows {
            sqlx::query(
                "INSERT INTO usage (tenant, day, model, provider, tags, requests, prompt_tokens, completion_tokens, cost_micros)
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                 ON CONFLICT (tenant, day, model, provider, tags) DO UPDATE SET
                   requests = requests + excluded.requests,
                   prompt_tokens = prompt_tokens + excluded.prompt_tokens,
                   completion_tokens = completion_tokens + excluded.completion_tokens,
                   cost_micros = cost_micros + excluded.cost_micros",
            )
            .bind(&k.tenant)
            .bind(&k.day)
            .bind(&k.model)
            .bind(&k.provider)
            .bind(&k.tags)
            .bind(c.requests as i64)
            .bind(c.prompt_tokens as i64)
            .bind(c.completion_tokens as i64)
            .bind(c.cost_micros as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Usage rows of a tenant with `since <= day <= until` (days as YYYY-MM-DD).
    pub async fn usage(
        &self,
        tenant: &str,
        since: &str,
        until: &str,
    ) -> Result<Vec<(UsageKey, UsageCounts)>, StoreError> {
        let rows = sqlx::query(
            "SELECT tenant, day, model, provider, tags, requests, prompt_tokens, completion_tokens, cost_micros
             FROM usage WHERE tenant = ? AND day >= ? AND day <= ? ORDER BY day",
        )
        .bind(tenant)
        .bind(since)
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let n = |i: usize| u64::try_from(r.get::<i64, _>(i)).unwrap_or(0);
                (
                    UsageKey {
                        tenant: r.get(0),
                        day: r.get(1),
                        model: r.get(2),
                        provider: r.get(3),
                        tags: r.get(4),
                    },
                    UsageCounts {
                        requests: n(5),
                        prompt_tokens: n(6),
                        completion_tokens: n(7),
                        cost_micros: n(8),
                    },
                )
            })
            .collect())
    }

    // === records ===

    /// Writes records with their JSON in the row, as before migration 7 (tests of
    /// reading and pruning such rows).
    #[cfg(test)]
    pub async fn add_records(&self, records: &[RecordRow]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_records(&mut tx, records).await?;
        tx.commit().await?;
        Ok(())
    }

    /// One record's JSON.
    pub async fn record(
        &self,
        request_id: &str,
    ) -> Result<Option<(Option<String>, Value)>, StoreError> {
        let row = sqlx::query(concat!(
            "SELECT r.tenant, ",
            record_body!(),
            " WHERE r.request_id = ?"
        ))
        .bind(request_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| {
            let body: Option<String> = r.get(1);
            let body = body.and_then(|b| serde_json::from_str(&b).ok());
            (r.get(0), body.unwrap_or(Value::Null))
        }))
    }

    /// Records newest first, filtered; `before` is a cursor `(ts, request_id)` to page
    /// past. `tenants`: None for every tenant.
    pub async fn records(&self, q: &RecordQuery<'_>) -> Result<Vec<Value>, StoreError> {
        let mut b = sqlx::QueryBuilder::<sqlx::Sqlite>::new(concat!(
            "SELECT ",
            record_body!(),
            " WHERE 1 = 1"
        ));
        if let Some(t) = q.tenants {
            if t.is_empty() {
                return Ok(Vec::new());
            }
            b.push(" AND r.tenant IN (");
            let mut sep = b.separated(", ");
            for tenant in t {
                sep.push_bind(tenant);
            }
            b.push(")");
        }
        if let Some(v) = q.since {
            b.push(" AND r.ts >= ").push_bind(v);
        }
        if let Some(v) = q.until {
            b.push(" AND r.ts <= ").push_bind(v);
        }
        if let Some(v) = q.status {
            b.push(" AND r.status = ").push_bind(v);
        }
        if let Some((ts, id)) = q.before {
            b.push(" AND (r.ts < ").push_bind(ts);
            b.push(" OR (r.ts = ").push_bind(ts);
            b.push(" AND r.request_id < ").push_bind(id);
            b.push("))");
        }
        b.push(" ORDER BY r.ts DESC, r.request_id DESC LIMIT ")
            .push_bind(q.limit);
        let rows = b.build().fetch_all(&self.pool).await?;
        Ok(rows
            .iter()
            .filter_map(|r| serde_json::from_str(r.get::<Option<&str>, _>(0)?).ok())
            .collect())
    }

    // === audit ===

    /// The last (seq, hash) of a chain, if it has entries.
    pub async fn audit_head(&self, chain: &str) -> Result<Option<(i64, String)>, StoreError> {
        let row = sqlx::query(
            "SELECT seq, hash FROM audit_entries WHERE chain = ? ORDER BY seq DESC LIMIT 1",
        )
        .bind(chain)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
    }

    /// Appends entries in one transaction; `texts` are their payloads' JSON (as hashed).
    pub async fn add_audit_entries(
        &self,
        entries: &[crate::audit::AuditEntry],
        texts: &[String],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_entries(&mut tx, entries, texts.iter().map(String::as_str)).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Request records and their audit entries (one per record, in order; payload texts
    /// given) in one transaction. The record's JSON is stored once, as its entry's
    /// payload; the record row points at the entry.
    pub async fn add_records_and_entries(
        &self,
        rows: &[RecordRow],
        entries: &[crate::audit::AuditEntry],
        texts: &[&str],
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        insert_record_index(&mut tx, rows, entries).await?;
        insert_entries(&mut tx, entries, texts.iter().copied()).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Entries with `since <= ts <= until` (all when None), by chain and seq.
    pub async fn audit_entries(
        &self,
        since: Option<&str>,
        until: Option<&str>,
    ) -> Result<Vec<crate::audit::AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT chain, seq, ts, kind, actor, tenant, payload, prev_hash, hash, pruned FROM audit_entries
             WHERE (?1 IS NULL OR ts >= ?1) AND (?2 IS NULL OR ts <= ?2) ORDER BY chain, seq",
        )
        .bind(since)
        .bind(until)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(audit_entry).collect())
    }

    /// Up to `limit` entries of `chain` with `from <= seq <= to`, by seq.
    pub async fn audit_span(
        &self,
        chain: &str,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<crate::audit::AuditEntry>, StoreError> {
        let rows = sqlx::query(
            "SELECT chain, seq, ts, kind, actor, tenant, payload, prev_hash, hash, pruned FROM audit_entries
             WHERE chain = ? AND seq >= ? AND seq <= ? ORDER BY seq LIMIT ?",
        )
        .bind(chain)
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(audit_entry).collect())
    }

    /// The lowest seq of `chain`, at most `upto`, of an entry of `kind` older than
    /// `cutoff` that still has its payload: where a retention pass starts.
    pub async fn first_prunable(
        &self,
        chain: &str,
        upto: i64,
        kind: &str,
        cutoff: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(seq) FROM audit_entries
             WHERE chain = ? AND pruned = 0 AND kind = ? AND ts < ? AND seq <= ?",
        )
        .bind(chain)
        .bind(kind)
        .bind(cutoff)
        .bind(upto)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Drops the payloads of the entries of `chain` with `from <= seq <= to`, of `kind`,
    /// older than `cutoff`, and marks them pruned; returns how many.
    pub async fn prune_audit_payloads(
        &self,
        chain: &str,
        from: i64,
        to: i64,
        kind: &str,
        cutoff: &str,
    ) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "UPDATE audit_entries SET payload = 'null', pruned = 1
             WHERE chain = ? AND seq >= ? AND seq <= ? AND pruned = 0 AND kind = ? AND ts < ?",
        )
        .bind(chain)
        .bind(from)
        .bind(to)
        .bind(kind)
        .bind(cutoff)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    /// Deletes up to `limit` records older than `cutoff`; returns how many (a retention
    /// pass repeats it, so no transaction holds the database for long).
    pub async fn delete_records_before(&self, cutoff: &str, limit: i64) -> Result<u64, StoreError> {
        let r = sqlx::query(
            "DELETE FROM records WHERE rowid IN (SELECT rowid FROM records WHERE ts < ? LIMIT ?)",
        )
        .bind(cutoff)
        .bind(limit)
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected())
    }

    pub async fn add_checkpoint(&self, c: &crate::audit::Checkpoint) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO audit_checkpoints (chain, seq, hash, ts, signature, public_key) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (chain, seq) DO NOTHING",
        )
        .bind(&c.chain)
        .bind(c.seq)
        .bind(&c.hash)
        .bind(&c.ts)
        .bind(&c.signature)
        .bind(&c.public_key)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn checkpoints(&self) -> Result<Vec<crate::audit::Checkpoint>, StoreError> {
        let rows = sqlx::query(
            "SELECT chain, seq, hash, ts, signature, public_key FROM audit_checkpoints ORDER BY chain, seq",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| crate::audit::Checkpoint {
                chain: r.get(0),
                seq: r.get(1),
                hash: r.get(2),
                ts: r.get(3),
                signature: r.get(4),
                public_key: r.get(5),
            })
            .collect())
    }

    // === config versions ===

    /// Stores a loaded config version; its diff is computed against the previous one.
    pub async fn add_config_version(
        &self,
        hash: &str,
        actor: &str,
        source: &str,
        redacted: &str,
    ) -> Result<ConfigVersion, StoreError> {
        let previous: Option<String> =
            sqlx::query_scalar("SELECT config FROM config_versions ORDER BY seq DESC LIMIT 1")
                .fetch_optional(&self.pool)
                .await?;
        let diff = similar::TextDiff::from_lines(previous.as_deref().unwrap_or(""), redacted)
            .unified_diff()
            .context_radius(2)
            .header("previous", "loaded")
            .to_string();
        let loaded_at = timestamp(SystemTime::now());
        let r = sqlx::query(
            "INSERT INTO config_versions (hash, loaded_at, actor, source, config, diff) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(hash)
        .bind(&loaded_at)
        .bind(actor)
        .bind(source)
        .bind(redacted)
        .bind(&diff)
        .execute(&self.pool)
        .await?;
        Ok(ConfigVersion {
            seq: r.last_insert_rowid(),
            hash: hash.to_owned(),
            loaded_at,
            actor: actor.to_owned(),
            source: source.to_owned(),
            diff,
        })
    }

    /// Config versions, newest first.
    pub async fn config_versions(&self) -> Result<Vec<ConfigVersion>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, hash, loaded_at, actor, source, diff FROM config_versions ORDER BY seq DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| ConfigVersion {
                seq: r.get(0),
                hash: r.get(1),
                loaded_at: r.get(2),
                actor: r.get(3),
                source: r.get(4),
                diff: r.get(5),
            })
            .collect())
    }

    // === admin events ===

    pub async fn add_event(
        &self,
        kind: &str,
        actor: &str,
        tenant: Option<&str>,
        payload: &Value,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO admin_events (ts, kind, actor, tenant, payload) VALUES (?, ?, ?, ?, ?)",
        )
        .bind(timestamp(SystemTime::now()))
        .bind(kind)
        .bind(actor)
        .bind(tenant)
        .bind(payload.to_string())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Admin events, oldest first.
    pub async fn events(&self) -> Result<Vec<AdminEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, ts, kind, actor, tenant, payload FROM admin_events ORDER BY seq",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| AdminEvent {
                seq: r.get(0),
                ts: r.get(1),
                kind: r.get(2),
                actor: r.get(3),
                tenant: r.get(4),
                payload: serde_json::from_str(r.get::<&str, _>(5)).unwrap_or(Value::Null),
            })
            .collect())
    }
}

fn audit_entry(r: &sqlx::sqlite::SqliteRow) -> crate::audit::AuditEntry {
    crate::audit::AuditEntry {
        chain: r.get(0),
        seq: r.get(1),
        ts: r.get(2),
        kind: r.get(3),
        actor: r.get(4),
        tenant: r.get(5),
        payload: serde_json::from_str(r.get::<&str, _>(6)).unwrap_or(Value::Null),
        prev_hash: r.get(7),
        hash: r.get(8),
        pruned: r.get::<i64, _>(9) != 0,
    }
}

/// A record as stored: request id, ts, tenant, status, the record's JSON text.
pub type RecordRow = (String, String, Option<String>, String, String);

/// The sizes of multi-row `INSERT`s: a batch goes out as statements of 64 rows, then of
/// 8, then single rows. Few rows per statement would make a round trip to the
/// connection's thread (two context switches) per row, which dominated the writer's
/// cost when records were inserted one by one; any row count as its own statement
/// would make each batch's SQL new text, prepared (parsed and planned) afresh, which
/// was 5% of a request's instructions. Three texts per table stay in the statement
/// cache.
const INSERT_SIZES: [usize; 3] = [64, 8, 1];

/// `rows` cut into chunks of [`INSERT_SIZES`], largest first.
fn insert_chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = INSERT_SIZES.into_iter().find(|&n| rows.len() >= n)?;
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some(chunk)
    })
}

#[cfg(test)]
async fn insert_records(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    records: &[RecordRow],
) -> Result<(), StoreError> {
    for chunk in insert_chunks(records) {
        let mut b = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO records (request_id, ts, tenant, status, body) ",
        );
        b.push_values(chunk, |mut row, (id, ts, tenant, status, body)| {
            row.push_bind(id)
                .push_bind(ts)
                .push_bind(tenant)
                .push_bind(status)
                .push_bind(body);
        });
        b.push(" ON CONFLICT (request_id) DO NOTHING");
        b.build().execute(&mut **tx).await?;
    }
    Ok(())
}

/// Record rows that point at their audit entries (`rows[i]`'s entry is `entries[i]`).
async fn insert_record_index(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    rows: &[RecordRow],
    entries: &[crate::audit::AuditEntry],
) -> Result<(), StoreError> {
    let pairs: Vec<(&RecordRow, &crate::audit::AuditEntry)> = rows.iter().zip(entries).collect();
    for chunk in insert_chunks(&pairs) {
        let mut b = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO records (request_id, ts, tenant, status, chain, seq) ",
        );
        b.push_values(chunk, |mut row, ((id, ts, tenant, status, _), e)| {
            row.push_bind(id)
                .push_bind(ts)
                .push_bind(tenant)
                .push_bind(status)
                .push_bind(&e.chain)
                .push_bind(e.seq);
        });
        b.push(" ON CONFLICT (request_id) DO NOTHING");
        b.build().execute(&mut **tx).await?;
    }
    Ok(())
}

async fn insert_entries(
    tx: &mut sqlx::Transaction<'_, sqlx::Sqlite>,
    entries: &[crate::audit::AuditEntry],
    texts: impl Iterator<Item = &str>,
) -> Result<(), StoreError> {
    let rows: Vec<(&crate::audit::AuditEntry, &str)> = entries.iter().zip(texts).collect();
    for chunk in insert_chunks(&rows) {
        let mut b = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO audit_entries (chain, seq, ts, kind, actor, tenant, payload, prev_hash, hash) ",
        );
        b.push_values(chunk, |mut row, (e, text)| {
            row.push_bind(&e.chain)
                .push_bind(e.seq)
                .push_bind(&e.ts)
                .push_bind(&e.kind)
                .push_bind(&e.actor)
                .push_bind(&e.tenant)
                .push_bind(*text)
                .push_bind(&e.prev_hash)
                .push_bind(&e.hash);
        });
        b.build().execute(&mut **tx).await?;
    }
    Ok(())
}

fn key_row(r: &sqlx::sqlite::SqliteRow) -> KeyRow {
    KeyRow {
        id: r.get(0),
        tenant: r.get(1),
        name: r.get(2),
        prefix: r.get(3),
        hash: r.get(4),
        created_at: r.get(5),
        expires_at: r.get(6),
        revoked_at: r.get(7),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(name: &str) -> TenantRaw {
        serde_json::from_value(serde_json::json!({"name": name, "allowed_models": ["*"]})).unwrap()
    }

    fn key(id: &str, tenant: &str) -> KeyRow {
        KeyRow {
            id: id.into(),
            tenant: tenant.into(),
            name: "n".into(),
            prefix: "sk-asc-abc".into(),
            hash: format!("hash-{id}"),
            created_at: timestamp(SystemTime::now()),
            expires_at: None,
            revoked_at: None,
        }
    }

    #[tokio::test]
    async fn tenants_keys_versions_and_events_round_trip() {
        let s = Store::open("sqlite::memory:").await.unwrap();
        let g0 = s.generation().await.unwrap();
        s.create_tenant(&tenant("a")).await.unwrap();
        assert!(matches!(
            s.create_tenant(&tenant("a")).await,
            Err(StoreError::Conflict(_))
        ));
        assert_eq!(s.tenants().await.unwrap()[0].name, "a");
        s.create_key(&key("k1", "a")).await.unwrap();
        s.create_key(&key("k2", "a")).await.unwrap();
        let g1 = s.generation().await.unwrap();
        assert_ne!(g0, g1);
        assert_eq!(s.keys(Some("a")).await.unwrap().len(), 2);
        assert!(s.keys(Some("b")).await.unwrap().is_empty());
        assert!(s.revoke_key("k1").await.unwrap());
        assert!(!s.revoke_key("k1").await.unwrap(), "revoking twice");
        assert_ne!(s.generation().await.unwrap(), g1);
        assert_eq!(s.live_keys().await.unwrap().len(), 1);
        let (existed, revoked) = s.delete_tenant("a").await.unwrap();
        assert!(existed);
        assert_eq!(revoked, 1, "deleting a tenant revokes its keys");
        assert!(s.live_keys().await.unwrap().is_empty());
        s.add_config_version("h1", "cli", "asc.yaml", "")
            .await
            .unwrap();
        s.add_config_version("h2", "token:ops", "asc.yaml", "-a\n+b")
            .await
            .unwrap();
        let v = s.config_versions().await.unwrap();
        assert_eq!((v[0].hash.as_str(), v[1].hash.as_str()), ("h2", "h1"));
        s.add_event(
            "key_created",
            "token:ops",
            Some("a"),
            &serde_json::json!({"id": "k1"}),
        )
        .await
        .unwrap();
        assert_eq!(s.events().await.unwrap()[0].payload["id"], "k1");
    }

    /// A record written now keeps its JSON once, in its audit entry; one from before
    /// migration 7 keeps it in its row. Both read back the same way, and a pruned entry
    /// makes its record unreadable rather than wrong.
    #[tokio::test]
    async fn records_read_from_their_audit_entry_or_their_own_row() {
        let s = Store::open("sqlite::memory:").await.unwrap();
        let audit =
            crate::audit::Auditor::open(s.clone(), ed25519_dalek::SigningKey::from_bytes(&[7; 32]))
                .await
                .unwrap();
        let row = |id: &str, ts: &str| {
            (
                id.to_owned(),
                ts.to_owned(),
                Some("t".to_owned()),
                "success".to_owned(),
                format!(r#"{{"request_id":"{id}"}}"#),
            )
        };
        s.add_records(&[row("old", "2026-01-01T00:00:00.000Z")])
            .await
            .unwrap();
        audit
            .append_records(&[row("new", "2026-01-02T00:00:00.000Z")])
            .await
            .unwrap();
        let (body,): (Option<String>,) =
            sqlx::query_as("SELECT body FROM records WHERE request_id = 'new'")
                .fetch_one(&s.pool)
                .await
                .unwrap();
        assert_eq!(body, None, "the JSON is stored once, in the entry");
        for id in ["old", "new"] {
            let (tenant, v) = s.record(id).await.unwrap().unwrap();
            assert_eq!(tenant.as_deref(), Some("t"));
            assert_eq!(v["request_id"], id);
        }
        let q = RecordQuery {
            tenants: None,
            since: None,
            until: None,
            status: Some("success"),
            before: None,
            limit: 10,
        };
        let ids: Vec<Value> = s
            .records(&q)
            .await
            .unwrap()
            .into_iter()
            .map(|v| v["request_id"].clone())
            .collect();
        assert_eq!(ids, ["new", "old"], "newest first");
        sqlx::query("UPDATE audit_entries SET payload = 'null', pruned = 1 WHERE kind = 'request'")
            .execute(&s.pool)
            .await
            .unwrap();
        assert_eq!(s.record("new").await.unwrap().unwrap().1, Value::Null);
        assert_eq!(s.records(&q).await.unwrap().len(), 1);
    }

    #[test]
    fn inserts_come_in_three_sizes_and_cover_every_row() {
        let rows: Vec<usize> = (0..150).collect();
        let sizes: Vec<usize> = insert_chunks(&rows).map(<[usize]>::len).collect();
        assert_eq!(sizes, [64, 64, 8, 8, 1, 1, 1, 1, 1, 1]);
        let again: Vec<usize> = insert_chunks(&rows).flatten().copied().collect();
        assert_eq!(again, rows);
        assert_eq!(insert_chunks::<usize>(&[]).count(), 0);
    }

    #[tokio::test]
    async fn a_file_database_is_created_migrated_and_reopened() {
        let dir = std::env::temp_dir().join(format!("asc-store-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/sub/asc.db", dir.display());
        {
            let s = Store::open(&url).await.unwrap();
            s.create_tenant(&tenant("kept")).await.unwrap();
        }
        let s = Store::open(&url).await.unwrap();
        assert_eq!(s.tenants().await.unwrap()[0].name, "kept");
        // A migration this binary does not know: refused with a clear message.
        sqlx::query(
            "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time)
             VALUES (9999, 'future', CURRENT_TIMESTAMP, 1, x'00', 0)",
        )
        .execute(&s.pool)
        .await
        .unwrap();
        drop(s);
        let err = Store::open(&url).await.unwrap_err();
        assert!(matches!(err, StoreError::TooNew(9999)), "{err}");
        assert!(err.to_string().contains("newer version of asc"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
