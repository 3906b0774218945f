//! Experiment status, queued experiment actions, and feedback scores.

use std::time::SystemTime;

use sqlx::Row;

use super::{Pool, Store, StoreError, timestamp};

/// An experiment's status, saved (through the pool, or the leader's lock connection).
const SAVE_STATE: &str =
    "INSERT INTO experiments (name, config_hash, status, updated_at) VALUES ($1, $2, $3, $4)
     ON CONFLICT (name) DO UPDATE SET config_hash = excluded.config_hash,
         status = excluded.status, updated_at = excluded.updated_at";

/// A version's inbox batches, taken.
const TAKE_INBOX: &str =
    "DELETE FROM experiment_inbox WHERE name = $1 AND config_hash = $2 RETURNING id, items";

/// Batches `(id, items)` in the order they were sent.
fn in_order(mut taken: Vec<(i64, String)>) -> Vec<String> {
    taken.sort_by_key(|(id, _)| *id);
    taken.into_iter().map(|(_, items)| items).collect()
}

impl Store {
    /// The saved status of an experiment: (config hash, JSON).
    pub async fn experiment_state(
        &self,
        name: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        on_pool!(self, pool => {
        let row = sqlx::query("SELECT config_hash, status FROM experiments WHERE name = $1")
            .bind(name)
            .fetch_optional(pool)
            .await?;
        Ok(row.map(|r| (r.get(0), r.get(1))))
        })
    }

    pub async fn save_experiment_state(
        &self,
        name: &str,
        hash: &str,
        status: &str,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
        sqlx::query(
            SAVE_STATE,
        )
        .bind(name)
        .bind(hash)
        .bind(status)
        .bind(timestamp(SystemTime::now()))
        .execute(pool)
        .await?;
        Ok(())
        })
    }

    /// A follower's batch for the experiment's leader: a JSON array of items.
    pub async fn add_experiment_inbox(
        &self,
        name: &str,
        hash: &str,
        items: &str,
    ) -> Result<(), StoreError> {
        on_pool!(self, pool => {
        sqlx::query(
            "INSERT INTO experiment_inbox (name, config_hash, items, queued_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(name)
        .bind(hash)
        .bind(items)
        .bind(timestamp(SystemTime::now()))
        .execute(pool)
        .await?;
        Ok(())
        })
    }

    /// Takes (deletes and returns, oldest first) the batches followers sent the leader
    /// of `name` at config version `hash` (during a rolling config change, another
    /// version's leader takes its own).
    pub async fn take_experiment_inbox(
        &self,
        name: &str,
        hash: &str,
    ) -> Result<Vec<String>, StoreError> {
        on_pool!(self, pool => {
        let rows = sqlx::query(
            TAKE_INBOX,
        )
        .bind(name)
        .bind(hash)
        .fetch_all(pool)
        .await?;
        Ok(in_order(rows.iter().map(|r| (r.get(0), r.get(1))).collect()))
        })
    }

    /// As [`Self::save_experiment_state`], through `conn`: the leader's lock
    /// connection, so a replica that lost the lock (and with it the lead) cannot
    /// overwrite the new leader's status.
    pub async fn save_experiment_state_on(
        conn: &mut sqlx::PgConnection,
        name: &str,
        hash: &str,
        status: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(SAVE_STATE)
            .bind(name)
            .bind(hash)
            .bind(status)
            .bind(timestamp(SystemTime::now()))
            .execute(conn)
            .await?;
        Ok(())
    }

    /// As [`Self::take_experiment_inbox`], through the leader's lock connection (a
    /// replica that lost the lead takes nothing).
    pub async fn take_experiment_inbox_on(
        conn: &mut sqlx::PgConnection,
        name: &str,
        hash: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(TAKE_INBOX)
            .bind(name)
            .bind(hash)
            .fetch_all(conn)
            .await?;
        Ok(in_order(
            rows.iter().map(|r| (r.get(0), r.get(1))).collect(),
        ))
    }

    /// Takes queued action `id` for applying: false when another replica (or an
    /// earlier try) already took it, so no action is applied twice.
    pub async fn claim_experiment_command(&self, id: i64) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
        let done = sqlx::query(
            "UPDATE experiment_commands SET done_at = $1 WHERE id = $2 AND done_at IS NULL",
        )
        .bind(timestamp(SystemTime::now()))
        .bind(id)
        .execute(pool)
        .await?;
        Ok(done.rows_affected() == 1)
        })
    }

    /// Queues an action for the gateway running this experiment; returns its id.
    pub async fn add_experiment_command(
        &self,
        name: &str,
        action: &str,
        actor: &str,
    ) -> Result<i64, StoreError> {
        on_pool!(self, pool => {
        Ok(sqlx::query_scalar(
            "INSERT INTO experiment_commands (name, action, actor, queued_at) VALUES ($1, $2, $3, $4)
             RETURNING id",
        )
        .bind(name)
        .bind(action)
        .bind(actor)
        .bind(timestamp(SystemTime::now()))
        .fetch_one(pool)
        .await?)
        })
    }

    /// Queued actions not yet applied, oldest first: (id, action, actor).
    pub async fn pending_experiment_commands(
        &self,
        name: &str,
    ) -> Result<Vec<(i64, String, String)>, StoreError> {
        on_pool!(self, pool => {
        let rows = sqlx::query(
            "SELECT id, action, actor FROM experiment_commands
             WHERE name = $1 AND done_at IS NULL ORDER BY id",
        )
        .bind(name)
        .fetch_all(pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
        })
    }

    pub async fn finish_experiment_command(&self, id: i64, result: &str) -> Result<(), StoreError> {
        on_pool!(self, pool => {
        sqlx::query("UPDATE experiment_commands SET done_at = $1, result = $2 WHERE id = $3")
            .bind(timestamp(SystemTime::now()))
            .bind(result)
            .bind(id)
            .execute(pool)
            .await?;
        Ok(())
        })
    }

    /// The result of a queued action once applied.
    pub async fn experiment_command_result(&self, id: i64) -> Result<Option<String>, StoreError> {
        on_pool!(self, pool => {
        let row = sqlx::query("SELECT result FROM experiment_commands WHERE id = $1")
            .bind(id)
            .fetch_optional(pool)
            .await?;
        Ok(row.and_then(|r| r.get(0)))
        })
    }

    /// Stores a feedback score; false if the request already has one.
    pub async fn add_feedback(
        &self,
        request_id: &str,
        tenant: &str,
        score: f64,
        comment: Option<&str>,
    ) -> Result<bool, StoreError> {
        on_pool!(self, pool => {
        let r = sqlx::query(
            "INSERT INTO feedback (request_id, tenant, score, comment, ts) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (request_id) DO NOTHING",
        )
        .bind(request_id)
        .bind(tenant)
        .bind(score)
        .bind(comment)
        .bind(timestamp(SystemTime::now()))
        .execute(pool)
        .await?;
        Ok(r.rows_affected() == 1)
        })
    }
}
