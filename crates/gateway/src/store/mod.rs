//! The store: SQLite (embedded, WAL mode) for one replica, or PostgreSQL shared by
//! several, with one set of queries and embedded migrations per database.
//!
//! It holds what must outlive a process and is not in the config file: tenants created
//! through the API, API keys (as SHA-256 hashes only), config versions, and the admin
//! event log. Nothing here is read per request: the gateway keeps a memory copy of keys
//! and tenants (see [`crate::directory`]) and refreshes it on change.
//!
//! Opening a database applies missing migrations; a database written by a newer `asc`
//! (a migration this binary does not know) is refused with a message saying so.
//! Queries are written once for both: `$N` placeholders (SQLite reads them too), types
//! both have (TEXT, 64-bit integers, doubles), `ON CONFLICT` and `RETURNING`. Each
//! operation's body is compiled for each database's own driver ([`on_pool!`]), not
//! through sqlx's `Any` driver, whose conversion of every argument and row cost the
//! record writer about a fifth more CPU per request (docs/performance.md).

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::Value;
use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Row, SqlitePool};

use crate::config::raw::TenantRaw;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Which database a store is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

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
    pool: Pool,
    /// SQLite on a file: the record writer's own connection, for every write it makes
    /// (records, audit entries, usage, spend, events). SQLite drops a connection's page
    /// cache whenever another connection has committed since its last transaction, so
    /// with the writes spread over the pool each batch read its pages again (half of
    /// the writer's `pread`s, 6% of the SQLite thread's instructions). The pool serves
    /// everything else, reads above all, which WAL lets run beside this writer.
    writes: Option<SqlitePool>,
    /// SQLite on a file: its path (beside which audit chains are claimed, see
    /// [`Store::claim_file_chain`]).
    file: Option<Arc<Path>>,
}

/// The connection pool of either database.
#[derive(Clone, Debug)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$p` bound to the store's pool of whichever database it is on: the
/// body is compiled once per database, with that database's own types.
macro_rules! on_pool {
    ($store:expr, $p:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite($p) => $body,
            Pool::Postgres($p) => $body,
        }
    };
}

/// As [`on_pool!`], for the record writer's writes: on SQLite, its own connection
/// ([`Store::writes`]).
macro_rules! on_write_pool {
    ($store:expr, $p:ident => $body:expr) => {
        match &$store.pool {
            Pool::Sqlite(pool) => {
                let $p = $store.writes.as_ref().unwrap_or(pool);
                $body
            }
            Pool::Postgres($p) => $body,
        }
    };
}

/// An API key row (`SELECT id, tenant, name, prefix, hash, created_at, expires_at,
/// revoked_at`) of either database.
macro_rules! key_row {
    ($r:expr) => {
        KeyRow {
            id: $r.get(0),
            tenant: $r.get(1),
            name: $r.get(2),
            prefix: $r.get(3),
            hash: $r.get(4),
            created_at: $r.get(5),
            expires_at: $r.get(6),
            revoked_at: $r.get(7),
        }
    };
}

/// An audit entry row (`SELECT chain, seq, ts, kind, actor, tenant, payload,
/// prev_hash, hash, pruned`) of either database.
macro_rules! audit_entry {
    ($r:expr) => {
        crate::audit::AuditEntry {
            chain: $r.get(0),
            seq: $r.get(1),
            ts: $r.get(2),
            kind: $r.get(3),
            actor: $r.get(4),
            tenant: $r.get(5),
            payload: serde_json::from_str($r.get::<&str, _>(6)).unwrap_or(Value::Null),
            prev_hash: $r.get(7),
            hash: $r.get(8),
            pruned: $r.get::<i64, _>(9) != 0,
        }
    };
}

/// Inserts record rows with their JSON in the row, as before migration 7, in
/// transaction `$tx` (tests of reading and pruning such rows).
#[cfg(test)]
macro_rules! insert_records {
    ($tx:expr, $numbered:expr, $records:expr) => {
        for chunk in insert_chunks($records) {
            let sql = format!(
                "INSERT INTO records (request_id, ts, tenant, status, body) {} ON CONFLICT (request_id) DO NOTHING",
                values(chunk.len(), 5, $numbered)
            );
            // Fixed text and numbered placeholders only.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (id, ts, tenant, status, body) in chunk {
                q = q.bind(id).bind(ts).bind(tenant).bind(status).bind(body);
            }
            q.execute(&mut *$tx).await?;
        }
    };
}

/// Inserts record rows that point at their audit entries (`$rows[i]`'s entry is
/// `$entries[i]`) in transaction `$tx`.
macro_rules! insert_record_index {
    ($tx:expr, $numbered:expr, $rows:expr, $entries:expr) => {
        let pairs: Vec<(&RecordRow, &crate::audit::AuditEntry)> =
            $rows.iter().zip($entries).collect();
        for chunk in insert_chunks(&pairs) {
            let sql = format!(
                "INSERT INTO records (request_id, ts, tenant, status, chain, seq) {} ON CONFLICT (request_id) DO NOTHING",
                values(chunk.len(), 6, $numbered)
            );
            // Fixed text and numbered placeholders only.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for ((id, ts, tenant, status, _), e) in chunk {
                q = q
                    .bind(id)
                    .bind(ts)
                    .bind(tenant)
                    .bind(status)
                    .bind(&e.chain)
                    .bind(e.seq);
            }
            q.execute(&mut *$tx).await?;
        }
    };
}

/// Inserts audit entries with their payloads' JSON `$texts` in transaction `$tx`.
macro_rules! insert_entries {
    ($tx:expr, $numbered:expr, $entries:expr, $texts:expr) => {
        let rows: Vec<(&crate::audit::AuditEntry, &str)> = $entries.iter().zip($texts).collect();
        for chunk in insert_chunks(&rows) {
            let sql = format!(
                "INSERT INTO audit_entries (chain, seq, ts, kind, actor, tenant, payload, prev_hash, hash) {}",
                values(chunk.len(), 9, $numbered)
            );
            // Fixed text and numbered placeholders only.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (e, text) in chunk {
                q = q
                    .bind(&e.chain)
                    .bind(e.seq)
                    .bind(&e.ts)
                    .bind(&e.kind)
                    .bind(&e.actor)
                    .bind(&e.tenant)
                    .bind(*text)
                    .bind(&e.prev_hash)
                    .bind(&e.hash);
            }
            q.execute(&mut *$tx).await?;
        }
    };
}

// After the macros above, which its operations use.
mod experiments;

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

/// A time bound given by a user (`since`, `until`): a date (`YYYY-MM-DD`, its start) or
/// an RFC 3339 time in UTC, as a stored timestamp ([`timestamp`]'s form, so bounds
/// compare with stored times as strings). Anything else is an error saying what is
/// expected.
/// Both bounds of a range given by a user, each as [`time_bound`] reads it (`names`:
/// what the user called them, for the error).
pub fn time_bounds(
    names: [&str; 2],
    since: Option<&str>,
    until: Option<&str>,
) -> Result<(Option<String>, Option<String>), String> {
    let one = |name, v: Option<&str>| v.map(|v| time_bound(name, v)).transpose();
    Ok((one(names[0], since)?, one(names[1], until)?))
}

pub fn time_bound(name: &str, v: &str) -> Result<String, String> {
    let full = if v.len() == 10 {
        format!("{v}T00:00:00Z")
    } else {
        v.to_owned()
    };
    humantime::parse_rfc3339_weak(&full)
        .ok()
        .filter(|_| full.ends_with('Z'))
        .map(timestamp)
        .ok_or_else(|| {
            format!(
                "`{name}` must be a date (YYYY-MM-DD) or an RFC 3339 time in UTC (such as 2026-12-01T09:30:00Z), got `{v}`"
            )
        })
}

impl Store {
    /// Opens the database at `url` and migrates it: `sqlite://PATH` (created if
    /// needed), `sqlite::memory:`, or `postgres://USER@HOST:PORT/DB` (which must exist).
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let migrated = |e: sqlx::migrate::MigrateError| match e {
            sqlx::migrate::MigrateError::VersionMissing(v) => StoreError::TooNew(v),
            other => StoreError::Migrate(other.to_string()),
        };
        let (mut writes, mut file) = (None, None);
        let pool = if let Some(rest) = url.strip_prefix("sqlite:") {
            let (pool, memory) = open_sqlite(url, rest, 4).await?;
            SQLITE_MIGRATIONS.run(&pool).await.map_err(migrated)?;
            if !memory {
                // (`:memory:` is one database per connection: its pool is its one.)
                writes = Some(open_sqlite(url, rest, 1).await?.0);
                file = Some(Arc::from(Path::new(sqlite_file(rest))));
            }
            Pool::Sqlite(pool)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let pool = PgPoolOptions::new()
                .max_connections(8)
                .acquire_timeout(std::time::Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(|e| StoreError::Open(redact_url(&e.to_string(), url)))?;
            POSTGRES_MIGRATIONS.run(&pool).await.map_err(migrated)?;
            Pool::Postgres(pool)
        } else {
            return Err(StoreError::Open(
                "storage.database must be a sqlite:// or postgres:// URL".into(),
            ));
        };
        Ok(Self { pool, writes, file })
    }

    /// On a SQLite file: the first of the chains `base`, `base.1`, ... that no other
    /// process writes, with the lock that says this one does (an exclusive lock on the
    /// file `DB.chain-CHAIN.lock` beside the database, held while the file stays open:
    /// the operating system drops it when the process ends, however it ends). Two
    /// processes on one database (a second `asc serve`, the CLI beside a running
    /// gateway) so never write one chain. None for an in-memory database.
    pub fn claim_file_chain(
        &self,
        base: &str,
    ) -> Result<Option<(String, std::fs::File)>, StoreError> {
        let Some(db) = &self.file else {
            return Ok(None);
        };
        for slot in 0..256 {
            let chain = match slot {
                0 => base.to_owned(),
                n => format!("{base}.{n}"),
            };
            let mut name = db.as_os_str().to_owned();
            name.push(format!(".chain-{chain}.lock"));
            let path = std::path::PathBuf::from(name);
            let lock = std::fs::File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| StoreError::Open(format!("{}: {e}", path.display())))?;
            match lock.try_lock() {
                Ok(()) => return Ok(Some((chain, lock))),
                Err(std::fs::TryLockError::WouldBlock) => {}
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(StoreError::Open(format!("{}: {e}", path.display())));
                }
            }
        }
        Err(StoreError::Open(
            "256 processes already write audit chains with this signing key".into(),
        ))
    }

    /// Whether multi-row inserts number their placeholders (`$N`, PostgreSQL) or not
    /// (`?`, SQLite: see [`values`]).
    fn numbered(&self) -> bool {
        matches!(self.pool, Pool::Postgres(_))
    }

    pub fn backend(&self) -> Backend {
        match self.pool {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    /// The connection pool, for tools and tests that must reach the database directly
    /// (the tamper tests of the audit trail do).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Runs SQL text with no arguments (tools and tests: the tamper tests of the audit
    /// trail); returns the rows it changed.
    pub async fn execute_unchecked(&self, sql: &str) -> Result<u64, StoreError> {
        let sql = sql.to_owned();
        Ok(on_pool!(self, pool => {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(pool).await?.rows_affected()
        }))
    }

    /// On PostgreSQL, where replicas share the audit table: the first of `base`,
    /// `base.1`, `base.2`, … that no running process writes, with the connection that
    /// holds it (a session advisory lock, released when the connection closes, so a
    /// replica that dies frees its chain for the next one to continue).
    ///
    /// `prefer` is tried first (a replica whose connection was lost takes its own chain
    /// back when no one else took it meanwhile). The connection's `application_name` is
    /// `asc audit chain CHAIN`, so `pg_stat_activity` shows who holds which chain.
    pub async fn claim_chain(
        &self,
        base: &str,
        prefer: Option<&str>,
    ) -> Result<(String, sqlx::PgConnection), StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Err(StoreError::Open(
                "audit chains are claimed on PostgreSQL only".into(),
            ));
        };
        let mut conn = pool.acquire().await?.detach();
        let slots = (0..256).map(|slot| match slot {
            0 => base.to_owned(),
            n => format!("{base}.{n}"),
        });
        for chain in prefer.map(str::to_owned).into_iter().chain(slots) {
            let got: bool =
                sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
                    .bind(format!("asc-audit-chain:{chain}"))
                    .fetch_one(&mut conn)
                    .await?;
            if got {
                sqlx::query("SELECT set_config('application_name', $1, false)")
                    .bind(format!("asc audit chain {chain}"))
                    .execute(&mut conn)
                    .await?;
                return Ok((chain, conn));
            }
        }
        Err(StoreError::Open(
            "256 processes already write audit chains with this signing key".into(),
        ))
    }

    /// On PostgreSQL: a connection holding the session advisory lock `key` in this
    /// store's schema, or None when another process holds it. (The lock goes when the
    /// connection closes; advisory locks are per database, so the schema is part of the
    /// key, and installations in other schemas of the database never meet.) The
    /// connection's `application_name` is `asc KEY`.
    pub async fn try_lock(&self, key: &str) -> Result<Option<sqlx::PgConnection>, StoreError> {
        let Pool::Postgres(pool) = &self.pool else {
            return Err(StoreError::Open(
                "locks are taken on PostgreSQL only".into(),
            ));
        };
        // A pooled connection for the try (a follower tries often); taken out of the pool
        // only once it holds the lock.
        let mut pooled = pool.acquire().await?;
        let got: bool = sqlx::query_scalar(
            "SELECT pg_try_advisory_lock(hashtextextended('asc ' || current_schema() || ' ' || $1, 0))",
        )
        .bind(key)
        .fetch_one(&mut *pooled)
            .await?;
        if !got {
            return Ok(None);
        }
        let mut conn = pooled.detach();
        sqlx::query("SELECT set_config('application_name', $1, false)")
            .bind(format!("asc {key}"))
            .execute(&mut conn)
            .await?;
        Ok(Some(conn))
    }

    /// Which of `ids` have a stored record, with its stored status (after a write
    /// whose outcome is unknown: those were committed and are not written again).
    pub async fn stored_records(
        &self,
        ids: &[&str],
    ) -> Result<std::collections::HashMap<String, String>, StoreError> {
        let mut found = std::collections::HashMap::new();
        for chunk in ids.chunks(500) {
            let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT request_id, status FROM records WHERE request_id IN ({})",
                list.join(", ")
            );
            on_pool!(self, pool => {
                let mut q = sqlx::query_as::<_, (String, String)>(sqlx::AssertSqlSafe(sql.clone()));
                for id in chunk {
                    q = q.bind(*id);
                }
                found.extend(q.fetch_all(pool).await?);
            });
        }
        Ok(found)
    }

    /// The store is reachable (for `/readyz`).
    pub async fn ping(&self) -> bool {
        on_pool!(self, pool => {
        sqlx::query("SELECT 1").execute(pool).await.is_ok()
        })
    }

    /// A value that changes whenever keys or tenants change (by this process or another,
    /// such as `asc keys revoke`): polled to refresh the memory copy.
    pub async fn generation(&self) -> Result<String, StoreError> {
        on_pool!(self, pool => {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM api_keys), (SELECT COUNT(revoked_at) FROM api_keys),
                    (SELECT COUNT(*) FROM tenants), (SELECT COALESCE(MAX(updated_at), '') FROM tenants)",
        )
        .fetch_one(pool)
        .await?;
        Ok(format!(
            "{}:{}:{}:{}",
            row.get::<i64, _>(0),
            row.get::<i64, _>(1),
            row.get::<i64, _>(2),
            row.get::<String, _>(3)
        ))
        })
    }

    // === tenants ===

    pub async fn tenants(&self) -> Result<Vec<TenantRaw>, StoreError> {
        on_pool!(self, pool => {
        let rows = sqlx::query("SELECT spec FROM tenants ORDER BY name")
            .fetch_all(pool)
            .await?;
        Ok(rows
            .iter()
            .filter_map(|r| serde_json::from_str(r.get::<&str, _>(0)).ok())
            .collect())
        })
    }

    pub async fn create_tenant(&self, spec: &TenantRaw) -> Result<(), StoreError> {
        on_pool!(self, pool => {
        let now = timestamp(SystemTime::now());
        let json = serde_json::to_string(spec).map_err(|e| StoreError::Open(e.to_string()))?;
        let r = sqlx::query(
            "INSERT INTO tenants (name, spec, created_at, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(&spec.name)
        .bind(json)
        .bind(&now)
        .bind(&now)
        .execute(pool)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!(
                "tenant `{}` already exists",
                spec.name
            )));
        }
        Ok(())
        })
    }

    /// Replaces a stored tenant; false if there is none of that name.
    pub async fn update_tenant(&self, spec: &TenantRaw) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
        let json = serde_json::to_string(spec).map_err(|e| StoreError::Open(e.to_string()))?;
        let r = sqlx::query("UPDATE tenants SET spec = $1, updated_at = $2 WHERE name = $3")
            .bind(json)
            .bind(timestamp(SystemTime::now()))
            .bind(&spec.name)
            .execute(pool)
            .await?;
        Ok(r.rows_affected() > 0)
        })
    }

    /// Deletes a stored tenant and revokes its keys in one transaction. Returns whether
    /// it existed and how many keys were revoked.
    pub async fn delete_tenant(&self, name: &str) -> Result<(bool, u64), StoreError> {
        on_pool!(self, pool => {
        let now = timestamp(SystemTime::now());
        let mut tx = pool.begin().await?;
        let deleted = sqlx::query("DELETE FROM tenants WHERE name = $1")
            .bind(name)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let revoked = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE tenant = $2 AND revoked_at IS NULL",
        )
        .bind(&now)
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok((deleted > 0, revoked))
        })
    }

    /// Revokes every key of a tenant (used when a config tenant disappears).
    pub async fn revoke_tenant_keys(&self, tenant: &str) -> Result<u64, StoreError> {
        on_pool!(self, pool => {
        let r = sqlx::query(
            "UPDATE api_keys SET revoked_at = $1 WHERE tenant = $2 AND revoked_at IS NULL",
        )
        .bind(timestamp(SystemTime::now()))
        .bind(tenant)
        .execute(pool)
        .await?;
        Ok(r.rows_affected())
        })
    }

    // === keys ===

    pub async fn create_key(&self, k: &KeyRow) -> Result<(), StoreError> {
        on_pool!(self, pool => {
        sqlx::query(
            "INSERT INTO api_keys (id, tenant, name, prefix, hash, created_at, expires_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, NULL)",
        )
        .bind(&k.id)
        .bind(&k.tenant)
        .bind(&k.name)
        .bind(&k.prefix)
        .bind(&k.hash)
        .bind(&k.created_at)
        .bind(&k.expires_at)
        .execute(pool)
        .await?;
        Ok(())
        })
    }

    /// Keys, newest first; of one tenant when given.
    pub async fn keys(&self, tenant: Option<&str>) -> Result<Vec<KeyRow>, StoreError> {
        on_pool!(self, pool => {
        let rows = sqlx::query(
            "SELECT id, tenant, name, prefix, hash, created_at, expires_at, revoked_at FROM api_keys
             WHERE ($1 IS NULL OR tenant = $1) ORDER BY created_at DESC, id",
        )
        .bind(tenant)
        .fetch_all(pool)
        .await?;
        Ok(rows.iter().map(|r| key_row!(r)).collect())
        })
    }

    /// Keys that are not revoked (expired ones included: expiry is checked per request).
    pub async fn live_keys(&self) -> Result<Vec<KeyRow>, StoreError> {
        on_pool!(self, pool => {
        let rows = sqlx::query(
            "SELECT id, tenant, name, prefix, hash, created_at, expires_at, revoked_at FROM api_keys
             WHERE revoked_at IS NULL",
        )
        .fetch_all(pool)
        .await?;
        Ok(rows.iter().map(|r| key_row!(r)).collect())
        })
    }

    pub async fn key(&self, id: &str) -> Result<Option<KeyRow>, StoreError> {
        on_pool!(self, pool => {
        let row = sqlx::query(
            "SELECT id, tenant, name, prefix, hash, created_at, expires_at, revoked_at FROM api_keys WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(pool)
        .await?;
        Ok(row.as_ref().map(|r| key_row!(r)))
        })
    }

    /// Revokes a key; false if it does not exist or was already revoked.
    pub async fn revoke_key(&self, id: &str) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
        let r =
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
                .bind(timestamp(SystemTime::now()))
                .bind(id)
                .execute(pool)
                .await?;
        Ok(r.rows_affected() > 0)
        })
    }

    // === spend ===

    /// Micro-dollars spent by `scope` in `period` (0 if nothing is stored).
    pub async fn spent(&self, scope: &str, period: &str) -> Result<u64, StoreError> {
        on_pool!(self, pool => {
        let v: Option<i64> =
            sqlx::query_scalar("SELECT spent_micros FROM spend WHERE scope = $1 AND period = $2")
                .bind(scope)
                .bind(period)
                .fetch_optional(pool)
                .await?;
        Ok(v.map_or(0, |v| u64::try_from(v).unwrap_or(0)))
        })
    }

    /// Stores a scope's spend for a period; a smaller figure than the stored one (a
    /// replica that saw less of a shared spend) never lowers it.
    pub async fn set_spent(
        &self,
        scope: &str,
        period: &str,
        micros: u64,
    ) -> Result<(), StoreError> {
        on_write_pool!(self, pool => {
        sqlx::query(
            "INSERT INTO spend (scope, period, spent_micros) VALUES ($1, $2, $3)
             ON CONFLICT (scope, period) DO UPDATE SET spent_micros =
               CASE WHEN excluded.spent_micros > spend.spent_micros
                    THEN excluded.spent_micros ELSE spend.spent_micros END",
        )
        .bind(scope)
        .bind(period)
        .bind(i64::try_from(micros).unwrap_or(i64::MAX))
        .execute(pool)
        .await?;
        Ok(())
        })
    }

    // === usage ===

    /// Adds aggregated usage rows.
    pub async fn add_usage(&self, rows: &[(UsageKey, UsageCounts)]) -> Result<(), StoreError> {
        on_write_pool!(self, pool => {
        let mut tx = pool.begin().await?;
        for (k, c) in rows {
            sqlx::query(
                "INSERT INTO usage (tenant, day, model, provider, tags, requests, prompt_tokens, completion_tokens, cost_micros)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
                 ON CONFLICT (tenant, day, model, provider, tags) DO UPDATE SET
                   requests = usage.requests + excluded.requests,
                   prompt_tokens = usage.prompt_tokens + excluded.prompt_tokens,
                   completion_tokens = usage.completion_tokens + excluded.completion_tokens,
                   cost_micros = usage.cost_micros + excluded.cost_micros",
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
        })
    }

    /// Usage rows of a tenant with `since <= day <= until` (days as YYYY-MM-DD).
    pub async fn usage(
        &self,
        tenant: &str,
        since: &str,
        until: &str,
    ) -> Result<Vec<(UsageKey, UsageCounts)>, StoreError> {
        on_pool!(self, pool => {
        let rows = sqlx::query(
            "SELECT tenant, day, model, provider, tags, requests, prompt_tokens, completion_tokens, cost_micros
             FROM usage WHERE tenant = $1 AND day >= $2 AND day <= $3 ORDER BY day",
        )
        .bind(tenant)
        .bind(since)
        .bind(until)
        .fetch_all(pool)
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
        })
    }

    // === records ===

    /// Writes records with their JSON in the row, as before migration 7 (tests of
    /// reading and pruning such rows).
    #[cfg(test)]
    pub async fn add_records(&self, records: &[RecordRow]) -> Result<(), StoreError> {
        on_pool!(self, pool => {
        let mut tx = pool.begin().await?;
        insert_records!(tx, self.numbered(), records);
        tx.commit().await?;
        Ok(())
        })
    }

    /// One record's JSON.
    pub async fn record(
        &self,
        request_id: &str,
    ) -> Result<Option<(Option<String>, Value)>, StoreError> {
        on_pool!(self, pool => {
        let row = sqlx::query(concat!(
            "SELECT r.tenant, ",
            record_body!(),
            " WHERE r.request_id = $1"
        ))
        .bind(request_id)
        .fetch_optional(pool)
        .await?;
        Ok(row.map(|r| {
            let body: Option<String> = r.get(1);
            let body = body.and_then(|b| serde_json::from_str(&b).ok());
            (r.get(0), body.unwrap_or(Value::Null))
        }))
        })
    }

    /// Records newest first, filtered; `before` is a cursor `(ts, request_id)` to page
    /// past. `tenants`: None for every tenant.
    pub async fn records<'a>(&self, q: &RecordQuery<'a>) -> Result<Vec<Value>, StoreError> {
        on_pool!(self, pool => {
        let mut sql = String::from(concat!("SELECT ", record_body!(), " WHERE 1 = 1"));
        let mut args: Vec<&str> = Vec::new();
        // `$N` for the next argument.
        let mut arg = |sql: &mut String, v: &'a str| {
            args.push(v);
            sql.push('$');
            sql.push_str(&args.len().to_string());
        };
        if let Some(t) = q.tenants {
            if t.is_empty() {
                return Ok(Vec::new());
            }
            sql.push_str(" AND r.tenant IN (");
            for (i, tenant) in t.iter().enumerate() {
                if i > 0 {
                    sql.push_str(", ");
                }
                arg(&mut sql, tenant);
            }
            sql.push(')');
        }
        if let Some(v) = q.since {
            sql.push_str(" AND r.ts >= ");
            arg(&mut sql, v);
        }
        if let Some(v) = q.until {
            sql.push_str(" AND r.ts <= ");
            arg(&mut sql, v);
        }
        if let Some(v) = q.status {
            sql.push_str(" AND r.status = ");
            arg(&mut sql, v);
        }
        if let Some((ts, id)) = q.before {
            sql.push_str(" AND (r.ts < ");
            arg(&mut sql, ts);
            sql.push_str(" OR (r.ts = ");
            arg(&mut sql, ts);
            sql.push_str(" AND r.request_id < ");
            arg(&mut sql, id);
            sql.push_str("))");
        }
        let n = args.len() + 1;
        sql.push_str(&format!(
            " ORDER BY r.ts DESC, r.request_id DESC LIMIT ${n}"
        ));
        // Only placeholders and fixed text: every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for a in args {
            query = query.bind(a);
        }
        let rows = query.bind(q.limit).fetch_all(pool).await?;
        Ok(rows
            .iter()
            .filter_map(|r| serde_json::from_str(r.get::<Option<&str>, _>(0)?).ok())
            .collect())
        })
    }

    // === audit ===

    /// The last (seq, hash) of a chain, if it has entries.
    pub async fn audit_head(&self, chain: &str) -> Result<Option<(i64, String)>, StoreError> {
        on_pool!(self, pool => {
        let row = sqlx::query(
            "SELECT seq, hash FROM audit_entries WHERE chain = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(chain)
        .fetch_optional(pool)
        .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
        })
    }

    /// Appends entries in one transaction; `texts` are their payloads' JSON (as hashed).
    /// On PostgreSQL, `lease` is the connection that holds the chain (see
    /// [`Self::claim_chain`]): written through it, an entry is stored only while this
    /// process holds its chain.
    pub async fn add_audit_entries(
        &self,
        lease: Option<&mut sqlx::PgConnection>,
        entries: &[crate::audit::AuditEntry],
        texts: &[String],
    ) -> Result<(), StoreError> {
        if let Some(conn) = lease {
            let mut tx = sqlx::Connection::begin(conn).await?;
            insert_entries!(tx, true, entries, texts.iter().map(String::as_str));
            tx.commit().await?;
            return Ok(());
        }
        on_write_pool!(self, pool => {
        let mut tx = pool.begin().await?;
        insert_entries!(tx, self.numbered(), entries, texts.iter().map(String::as_str));
        tx.commit().await?;
        Ok(())
        })
    }

    /// Request records and their audit entries (one per record, in order; payload texts
    /// given) in one transaction. The record's JSON is stored once, as its entry's
    /// payload; the record row points at the entry. `lease` as for
    /// [`Self::add_audit_entries`].
    pub async fn add_records_and_entries(
        &self,
        lease: Option<&mut sqlx::PgConnection>,
        rows: &[RecordRow],
        entries: &[crate::audit::AuditEntry],
        texts: &[&str],
    ) -> Result<(), StoreError> {
        if let Some(conn) = lease {
            let mut tx = sqlx::Connection::begin(conn).await?;
            insert_record_index!(tx, true, rows, entries);
            insert_entries!(tx, true, entries, texts.iter().copied());
            tx.commit().await?;
            return Ok(());
        }
        on_write_pool!(self, pool => {
        let mut tx = pool.begin().await?;
        insert_record_index!(tx, self.numbered(), rows, entries);
        insert_entries!(tx, self.numbered(), entries, texts.iter().copied());
        tx.commit().await?;
        Ok(())
        })
    }

    /// Entries with `since <= ts <= until` (all when None), by chain and seq.
    pub async fn audit_entries(
        &self,
        since: Option<&str>,
        until: Option<&str>,
    ) -> Result<Vec<crate::audit::AuditEntry>, StoreError> {
        on_pool!(self, pool => {
        let rows = sqlx::query(
            "SELECT chain, seq, ts, kind, actor, tenant, payload, prev_hash, hash, pruned FROM audit_entries
             WHERE ($1 IS NULL OR ts >= $1) AND ($2 IS NULL OR ts <= $2) ORDER BY chain, seq",
        )
        .bind(since)
        .bind(until)
        .fetch_all(pool)
        .await?;
        Ok(rows.iter().map(|r| audit_entry!(r)).collect())
        })
    }

    /// Up to `limit` entries of `chain` with `from <= seq <= to`, by seq.
    pub async fn audit_span(
        &self,
        chain: &str,
        from: i64,
        to: i64,
        limit: i64,
    ) -> Result<Vec<crate::audit::AuditEntry>, StoreError> {
        on_pool!(self, pool => {
        let rows = sqlx::query(
            "SELECT chain, seq, ts, kind, actor, tenant, payload, prev_hash, hash, pruned FROM audit_entries
             WHERE chain = $1 AND seq >= $2 AND seq <= $3 ORDER BY seq LIMIT $4",
        )
        .bind(chain)
        .bind(from)
        .bind(to)
        .bind(limit)
        .fetch_all(pool)
        .await?;
        Ok(rows.iter().map(|r| audit_entry!(r)).collect())
        })
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
        on_pool!(self, pool => {
        Ok(sqlx::query_scalar(
            "SELECT MIN(seq) FROM audit_entries
             WHERE chain = $1 AND pruned = 0 AND kind = $2 AND ts < $3 AND seq <= $4",
        )
        .bind(chain)
        .bind(kind)
        .bind(cutoff)
        .bind(upto)
        .fetch_one(pool)
        .await?)
        })
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
        on_pool!(self, pool => {
        let r = sqlx::query(
            "UPDATE audit_entries SET payload = 'null', pruned = 1
             WHERE chain = $1 AND seq >= $2 AND seq <= $3 AND pruned = 0 AND kind = $4 AND ts < $5",
        )
        .bind(chain)
        .bind(from)
        .bind(to)
        .bind(kind)
        .bind(cutoff)
        .execute(pool)
        .await?;
        Ok(r.rows_affected())
        })
    }

    /// Deletes up to `limit` records older than `cutoff`; returns how many (a retention
    /// pass repeats it, so no transaction holds the database for long).
    pub async fn delete_records_before(&self, cutoff: &str, limit: i64) -> Result<u64, StoreError> {
        on_pool!(self, pool => {
        let r = sqlx::query(
            "DELETE FROM records WHERE request_id IN (SELECT request_id FROM records WHERE ts < $1 LIMIT $2)",
        )
        .bind(cutoff)
        .bind(limit)
        .execute(pool)
        .await?;
        Ok(r.rows_affected())
        })
    }

    pub async fn add_checkpoint(&self, c: &crate::audit::Checkpoint) -> Result<(), StoreError> {
        on_write_pool!(self, pool => {
        sqlx::query(
            "INSERT INTO audit_checkpoints (chain, seq, hash, ts, signature, public_key) VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (chain, seq) DO NOTHING",
        )
        .bind(&c.chain)
        .bind(c.seq)
        .bind(&c.hash)
        .bind(&c.ts)
        .bind(&c.signature)
        .bind(&c.public_key)
        .execute(pool)
        .await?;
        Ok(())
        })
    }

    pub async fn checkpoints(&self) -> Result<Vec<crate::audit::Checkpoint>, StoreError> {
        on_pool!(self, pool => {
        let rows = sqlx::query(
            "SELECT chain, seq, hash, ts, signature, public_key FROM audit_checkpoints ORDER BY chain, seq",
        )
        .fetch_all(pool)
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
        })
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
        on_pool!(self, pool => {
        let previous: Option<String> =
            sqlx::query_scalar("SELECT config FROM config_versions ORDER BY seq DESC LIMIT 1")
                .fetch_optional(pool)
                .await?;
        let diff = similar::TextDiff::from_lines(previous.as_deref().unwrap_or(""), redacted)
            .unified_diff()
            .context_radius(2)
            .header("previous", "loaded")
            .to_string();
        let loaded_at = timestamp(SystemTime::now());
        let seq: i64 = sqlx::query_scalar(
            "INSERT INTO config_versions (hash, loaded_at, actor, source, config, diff) VALUES ($1, $2, $3, $4, $5, $6)
             RETURNING seq",
        )
        .bind(hash)
        .bind(&loaded_at)
        .bind(actor)
        .bind(source)
        .bind(redacted)
        .bind(&diff)
        .fetch_one(pool)
        .await?;
        Ok(ConfigVersion {
            seq,
            hash: hash.to_owned(),
            loaded_at,
            actor: actor.to_owned(),
            source: source.to_owned(),
            diff,
        })
        })
    }

    /// Config versions, newest first.
    pub async fn config_versions(&self) -> Result<Vec<ConfigVersion>, StoreError> {
        on_pool!(self, pool => {
        let rows = sqlx::query(
            "SELECT seq, hash, loaded_at, actor, source, diff FROM config_versions ORDER BY seq DESC",
        )
        .fetch_all(pool)
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
        })
    }

    // === admin events ===

    pub async fn add_event(
        &self,
        kind: &str,
        actor: &str,
        tenant: Option<&str>,
        payload: &Value,
    ) -> Result<(), StoreError> {
        on_write_pool!(self, pool => {
        sqlx::query(
            "INSERT INTO admin_events (ts, kind, actor, tenant, payload) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(timestamp(SystemTime::now()))
        .bind(kind)
        .bind(actor)
        .bind(tenant)
        .bind(payload.to_string())
        .execute(pool)
        .await?;
        Ok(())
        })
    }

    /// Admin events, oldest first.
    pub async fn events(&self) -> Result<Vec<AdminEvent>, StoreError> {
        on_pool!(self, pool => {
        let rows = sqlx::query(
            "SELECT seq, ts, kind, actor, tenant, payload FROM admin_events ORDER BY seq",
        )
        .fetch_all(pool)
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
        })
    }
}

/// Opens a SQLite pool of up to `connections` (`url` is `sqlite:` + `rest`): the file's
/// directory and the file created if needed, WAL, `synchronous=FULL`, a 5 s busy
/// timeout. True with it when the database is `:memory:` (one connection).
/// The file of a SQLite URL's rest (after `sqlite:`): no slashes before, no options after.
fn sqlite_file(rest: &str) -> &str {
    let path = rest.trim_start_matches("//");
    path.split('?').next().unwrap_or(path)
}

async fn open_sqlite(
    url: &str,
    rest: &str,
    connections: u32,
) -> Result<(SqlitePool, bool), StoreError> {
    let file = sqlite_file(rest);
    let memory = file == ":memory:";
    if !memory
        && let Some(dir) = Path::new(file)
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
    SqlitePoolOptions::new()
        .max_connections(if memory { 1 } else { connections })
        .connect_with(opts)
        .await
        .map(|pool| (pool, memory))
        .map_err(|e| StoreError::Open(e.to_string()))
}

/// An error message with `url`'s password (if any) masked.
fn redact_url(message: &str, url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match u.password() {
            Some(p) if !p.is_empty() => message.replace(p, "***"),
            _ => message.to_owned(),
        },
        Err(_) => message.to_owned(),
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

/// `VALUES ($1, $2), ($3, $4), …` for `rows` rows of `cols` columns, or with `?` when
/// not `numbered`. SQLite reads `$N` too, but looks each such name up per argument per
/// execution, in a list as long as the statement's arguments: 576 of them in a 64-row
/// audit insert made that lookup 17k instructions per request (`bench/instructions`).
fn values(rows: usize, cols: usize, numbered: bool) -> String {
    let mut out = String::from("VALUES ");
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            if numbered {
                out.push('$');
                out.push_str(&(r * cols + c + 1).to_string());
            } else {
                out.push('?');
            }
        }
        out.push(')');
    }
    out
}

/// `rows` cut into chunks of [`INSERT_SIZES`], largest first.
fn insert_chunks<T>(mut rows: &[T]) -> impl Iterator<Item = &[T]> {
    std::iter::from_fn(move || {
        let size = INSERT_SIZES.into_iter().find(|&n| rows.len() >= n)?;
        let (chunk, rest) = rows.split_at(size);
        rows = rest;
        Some(chunk)
    })
}

/// Support for tests of this crate and of its integration tests (not for operators).
#[doc(hidden)]
pub mod testing {
    use sqlx::Executor;

    /// A fresh, empty schema on the test PostgreSQL (`ASC_TEST_POSTGRES_URL`, default
    /// `postgres://postgres@127.0.0.1:5432/test`), created for the caller: the URL to
    /// open a store on it. Unreachable:
    /// `None` (skipped) locally, a failure when `CI=true`.
    pub async fn fresh_postgres() -> Option<String> {
        let base = std::env::var("ASC_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let connected = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            <sqlx::PgConnection as sqlx::Connection>::connect(&base),
        )
        .await;
        let mut conn = match connected {
            Ok(Ok(c)) => c,
            other => {
                let why = match other {
                    Ok(Err(e)) => e.to_string(),
                    _ => "no answer within 5 s".into(),
                };
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "PostgreSQL at {base} is unreachable (CI=true): {why}"
                );
                eprintln!("skipping PostgreSQL: {base} is unreachable: {why}");
                return None;
            }
        };
        // A schema, not a database: cheap to make (a database copies its template) and
        // nothing for later runs to clean up but a few empty tables.
        let name = format!("asc_test_{}", uuid::Uuid::new_v4().simple());
        conn.execute(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {name}")))
            .await
            .ok()?;
        let mut url = reqwest::Url::parse(&base).ok()?;
        url.query_pairs_mut()
            .append_pair("options", &format!("-c search_path={name}"));
        Some(url.to_string())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::testing::fresh_postgres;
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

    /// The stores of these tests: SQLite in memory, and a fresh database on the test
    /// PostgreSQL (see [`fresh_postgres`]) when it is reachable.
    async fn stores() -> Vec<Store> {
        let mut out = vec![Store::open("sqlite::memory:").await.unwrap()];
        if let Some(url) = fresh_postgres().await {
            out.push(Store::open(&url).await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn tenants_keys_versions_and_events_round_trip() {
        for s in stores().await {
            round_trip(s).await;
        }
    }

    async fn round_trip(s: Store) {
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

    #[test]
    fn time_bounds_are_dates_or_utc_times_in_the_stored_form() {
        for (given, stored) in [
            ("2026-12-01", "2026-12-01T00:00:00.000Z"),
            ("2026-12-01T09:30:00Z", "2026-12-01T09:30:00.000Z"),
            ("2026-12-01T09:30:00.25Z", "2026-12-01T09:30:00.250Z"),
        ] {
            assert_eq!(time_bound("since", given).as_deref(), Ok(stored), "{given}");
        }
        for bad in [
            "garbage",
            "yesterday",
            "2026-13-01",
            "2026-12-01T09:30:00+02:00",
            "",
        ] {
            let e = time_bound("until", bad).unwrap_err();
            assert!(e.contains("`until`") && e.contains(bad), "{e}");
        }
    }

    /// On a SQLite file each process claims a chain no other one writes: the first
    /// gets the base, the next `base.1`; a claim goes with its holder. In memory
    /// there is nothing to claim.
    #[tokio::test]
    async fn sqlite_chains_are_claimed_one_writer_each() {
        let dir = std::env::temp_dir().join(format!("asc-claim-{}", uuid::Uuid::new_v4()));
        let url = format!("sqlite://{}/asc.db", dir.display());
        let (a, b) = (
            Store::open(&url).await.unwrap(),
            Store::open(&url).await.unwrap(),
        );
        let (first, held) = a.claim_file_chain("c0ffee").unwrap().unwrap();
        let (second, _other) = b.claim_file_chain("c0ffee").unwrap().unwrap();
        assert_eq!((first.as_str(), second.as_str()), ("c0ffee", "c0ffee.1"));
        drop(held);
        let (again, _held) = b.claim_file_chain("c0ffee").unwrap().unwrap();
        assert_eq!(again, "c0ffee", "free again once its holder let go");
        let memory = Store::open("sqlite::memory:").await.unwrap();
        assert!(memory.claim_file_chain("c0ffee").unwrap().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A record written now keeps its JSON once, in its audit entry; one from before
    /// migration 7 keeps it in its row. Both read back the same way, and a pruned entry
    /// makes its record unreadable rather than wrong.
    #[tokio::test]
    async fn records_read_from_their_audit_entry_or_their_own_row() {
        for s in stores().await {
            records_round_trip(s).await;
        }
    }

    async fn records_round_trip(s: Store) {
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
        let body: Option<String> = on_pool!(s, pool => {
            sqlx::query_scalar("SELECT body FROM records WHERE request_id = 'new'")
                .fetch_one(pool)
                .await
                .unwrap()
        });
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
        s.execute_unchecked(
            "UPDATE audit_entries SET payload = 'null', pruned = 1 WHERE kind = 'request'",
        )
        .await
        .unwrap();
        assert_eq!(s.record("new").await.unwrap().unwrap().1, Value::Null);
        assert_eq!(s.records(&q).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn usage_spend_and_retention_on_both_databases() {
        for s in stores().await {
            let k = |model: &str| UsageKey {
                tenant: "t".into(),
                day: "2026-12-01".into(),
                model: model.into(),
                provider: "p".into(),
                tags: String::new(),
            };
            let c = UsageCounts {
                requests: 1,
                prompt_tokens: 10,
                completion_tokens: 5,
                cost_micros: 7,
            };
            s.add_usage(&[(k("a"), c), (k("b"), c)]).await.unwrap();
            s.add_usage(&[(k("a"), c)]).await.unwrap();
            let rows = s.usage("t", "2026-12-01", "2026-12-31").await.unwrap();
            let a = rows.iter().find(|(key, _)| key.model == "a").unwrap().1;
            assert_eq!((a.requests, a.prompt_tokens, a.cost_micros), (2, 20, 14));
            s.set_spent("tenant:t", "2026-12", 1_234).await.unwrap();
            s.set_spent("tenant:t", "2026-12", 2_345).await.unwrap();
            assert_eq!(s.spent("tenant:t", "2026-12").await.unwrap(), 2_345);
            // Replicas flush what they saw; one that saw less never lowers it.
            s.set_spent("tenant:t", "2026-12", 2_000).await.unwrap();
            assert_eq!(s.spent("tenant:t", "2026-12").await.unwrap(), 2_345);
            assert_eq!(s.spent("tenant:t", "2027-01").await.unwrap(), 0);
            let rows: Vec<RecordRow> = (0..70)
                .map(|i| {
                    (
                        format!("r{i:03}"),
                        format!("2026-01-01T00:00:{:02}.000Z", i % 60),
                        None,
                        "success".to_owned(),
                        "{}".to_owned(),
                    )
                })
                .collect();
            s.add_records(&rows).await.unwrap();
            assert_eq!(
                s.delete_records_before("2026-01-01T00:00:30.000Z", 1000)
                    .await
                    .unwrap(),
                40
            );
            let c = s.add_experiment_command("x", "pause", "cli").await.unwrap();
            assert_eq!(
                s.add_experiment_command("x", "resume", "cli")
                    .await
                    .unwrap(),
                c + 1
            );
        }
    }

    #[test]
    fn multi_row_values_number_their_placeholders_only_for_postgres() {
        assert_eq!(values(2, 2, true), "VALUES ($1, $2), ($3, $4)");
        assert_eq!(values(2, 2, false), "VALUES (?, ?), (?, ?)");
        assert_eq!(values(1, 3, true), "VALUES ($1, $2, $3)");
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
        s.execute_unchecked(
            "INSERT INTO _sqlx_migrations (version, description, installed_on, success, checksum, execution_time)
             VALUES (9999, 'future', CURRENT_TIMESTAMP, 1, x'00', 0)",
        )
        .await
        .unwrap();
        drop(s);
        let err = Store::open(&url).await.unwrap_err();
        assert!(matches!(err, StoreError::TooNew(9999)), "{err}");
        assert!(err.to_string().contains("newer version of asc"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
