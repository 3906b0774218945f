//! Rate limits and budgets shared by every replica, in Redis (`storage.redis`).
//!
//! Each decision is one Lua script, which Redis runs atomically: the check and the
//! charge happen in one step on one server, so replicas together hold a limit exactly
//! as one replica does on its own (peers check, then record, and overshoot under load).
//! Time is Redis's own clock (`TIME`), so replicas whose clocks drift still agree on
//! what "the last 60 seconds" is.
//!
//! - **Rate limits**: a sorted set of admissions (id → admitted at, ms) and a hash of
//!   their tokens with a running sum: the same exact sliding window as
//!   [`super::rate::RateWindow`], for every replica at once.
//! - **Budgets**: a hash per scope and period with `spent`, `reserved` and each live
//!   reservation's amount, and a sorted set of reservation expiries. A reservation that
//!   is never settled (its replica was killed mid-request) expires after
//!   [`RESERVATION_TTL`] and gives its amount back, so a crash cannot shrink a budget
//!   for good. Spend is never less than the asking replica's own figure for the period
//!   (its store's, plus what it charged alone while Redis did not answer), so a Redis
//!   that lost its data picks up where the store was.
//!
//! - **Circuit breakers**: a replica whose breaker of a target opens publishes it
//!   (`asc:circuits`, and a key `asc:circuit:TARGET` that expires with the opening, for
//!   replicas that start or reconnect meanwhile); every replica opens its own breaker of
//!   that target for the same time ([`crate::routing::TargetHealth::open_from_peer`]).
//!   Nothing is read per request: openings are pushed.
//!
//! Keys carry the scope in a hash tag (`asc:{tenant:NAME}:…`) so that every key a
//! script touches lands in one slot of a Redis Cluster.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use super::rate::WINDOW;

/// How long one Redis call may take before the replica decides alone (see
/// [`Shared::degraded`]).
pub const OP_TIMEOUT: Duration = Duration::from_millis(250);
/// How long a budget reservation lives unsettled.
pub const RESERVATION_TTL: Duration = Duration::from_secs(30 * 60);
/// Idle ledgers are dropped after this (longer than the longest period, a month).
const LEDGER_TTL: Duration = Duration::from_secs(40 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum SharedError {
    #[error("redis did not answer within {} ms", OP_TIMEOUT.as_millis())]
    Timeout,
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// What the shared window says of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateVerdict {
    /// Admitted; the id settles it.
    Admitted(u64),
    /// Refused: retry after this long.
    Wait(Duration),
}

/// A shared ledger's state (for usage, metrics and tests).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LedgerState {
    pub spent: u64,
    pub reserved: u64,
}

// KEYS: 1 admissions (zset id -> ms), 2 tokens (hash id -> tokens, "sum"), 3 sequence
// (kept a day, far longer than any request, so an id is never reused while it settles).
// ARGV: 1 window ms, 2 requests per window (0: none), 3 tokens per window (0: none),
// 4 tokens to charge. Returns {id, 0} or {0, wait ms}.
const RATE_ADMIT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local rpm, tpm, tokens = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - window)
if #gone > 0 then
  local freed = 0
  for _, id in ipairs(gone) do
    freed = freed + tonumber(redis.call('HGET', KEYS[2], id) or '0')
    redis.call('HDEL', KEYS[2], id)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
  redis.call('HINCRBY', KEYS[2], 'sum', 0 - freed)
end
if tpm > 0 and tokens > tpm then return {0, window} end
local count = redis.call('ZCARD', KEYS[1])
local sum = tonumber(redis.call('HGET', KEYS[2], 'sum') or '0')
local wait = 0
if rpm > 0 and count >= rpm then
  local nth = count - rpm
  local e = redis.call('ZRANGE', KEYS[1], nth, nth, 'WITHSCORES')
  if e[2] then wait = math.max(wait, window - (now - tonumber(e[2]))) end
end
if tpm > 0 and sum + tokens > tpm then
  local need = sum + tokens - tpm
  local freed = 0
  local all = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
  for i = 1, #all, 2 do
    freed = freed + tonumber(redis.call('HGET', KEYS[2], all[i]) or '0')
    if freed >= need then
      wait = math.max(wait, window - (now - tonumber(all[i + 1])))
      break
    end
  end
end
if wait > 0 then return {0, wait} end
local id = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[1], now, id)
redis.call('HSET', KEYS[2], id, tokens)
redis.call('HINCRBY', KEYS[2], 'sum', tokens)
redis.call('PEXPIRE', KEYS[1], window * 2)
redis.call('PEXPIRE', KEYS[2], window * 2)
redis.call('PEXPIRE', KEYS[3], 86400000)
return {id, 0}
";

// KEYS: 1 tokens hash. ARGV: 1 id, 2 real tokens. An admission that left the window
// is not charged again.
const RATE_SETTLE: &str = r"
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'sum', tonumber(ARGV[2]) - tonumber(old))
end
return 0
";

// Expired reservations give their amount back; the spend is at least the caller's figure
// (the store's, or what this replica charged while Redis did not answer). Shared by the
// budget scripts. Negative amounts are written `0 - x`: Lua's `-x` of 0 is -0, which
// Redis formats as "-0" and HINCRBY refuses.
const BUDGET_PRUNE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stored = redis.call('HGET', KEYS[1], 'spent')
if not stored or tonumber(stored) < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'spent', ARGV[1])
end
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
for _, id in ipairs(expired) do
  local amount = redis.call('HGET', KEYS[1], 'r:' .. id)
  if amount then
    redis.call('HINCRBY', KEYS[1], 'reserved', 0 - tonumber(amount))
    redis.call('HDEL', KEYS[1], 'r:' .. id)
  end
end
if #expired > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now) end
";

// KEYS: 1 ledger hash, 2 reservation expiries (zset). ARGV: 1 spend to start from,
// 2 worst case, 3 limit, 4 reservation ttl ms, 5 ledger ttl ms, 6 the reservation's id
// (the caller's, so it can give the reservation back even when the answer is lost).
// Returns {1, spent, reserved} or {0, spent, reserved} when it does not fit.
const BUDGET_RESERVE: &str = r"
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent'))
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
local worst, limit = tonumber(ARGV[2]), tonumber(ARGV[3])
if spent + reserved + worst > limit then return {0, spent, reserved} end
local id = ARGV[6]
if redis.call('HEXISTS', KEYS[1], 'r:' .. id) == 1 then return {1, spent, reserved} end
redis.call('HINCRBY', KEYS[1], 'reserved', worst)
redis.call('HSET', KEYS[1], 'r:' .. id, worst)
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[4]), id)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[5])
return {1, spent, reserved + worst}
";

// KEYS: as reserve. ARGV: 1 spend to start from, 2 reservation id (0: none),
// 3 real cost, 4 ledger ttl ms. Returns {spent before, spent after}.
const BUDGET_SETTLE: &str = r"
if ARGV[2] ~= '0' then
  local amount = redis.call('HGET', KEYS[1], 'r:' .. ARGV[2])
  if amount then
    redis.call('HINCRBY', KEYS[1], 'reserved', 0 - tonumber(amount))
    redis.call('HDEL', KEYS[1], 'r:' .. ARGV[2])
    redis.call('ZREM', KEYS[2], ARGV[2])
  end
end
local before = tonumber(redis.call('HGET', KEYS[1], 'spent'))
local after = redis.call('HINCRBY', KEYS[1], 'spent', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return {before, after}
";

// KEYS: as reserve. ARGV: 1 spend to start from, 2 ledger ttl ms. Returns
// {spent, reserved}.
const BUDGET_READ: &str = r"
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {tonumber(redis.call('HGET', KEYS[1], 'spent')), tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')}
";

/// A fresh reservation id: random, so replicas never pick the same one, and known
/// before the call, so a reservation whose answer was lost can be given back.
pub fn reservation_id() -> u64 {
    rand::random::<u64>() | 1
}

/// The pub/sub channel of breaker openings: `MILLIS TARGET`.
const CIRCUITS: &str = "asc:circuits";

fn circuit_key(target: &str) -> String {
    format!("asc:circuit:{target}")
}

/// The shared counters' connection and scripts.
pub struct Shared {
    client: redis::Client,
    conn: ConnectionManager,
    rate_admit: Script,
    rate_settle: Script,
    reserve: Script,
    settle: Script,
    read: Script,
    /// When the last "deciding alone" warning was logged (unix seconds), to log one per
    /// 10 s however many requests meet the outage.
    warned_at: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared(redis)")
    }
}

fn rate_keys(scope: &str) -> [String; 3] {
    [
        format!("asc:{{{scope}}}:rl:log"),
        format!("asc:{{{scope}}}:rl:tok"),
        format!("asc:{{{scope}}}:rl:seq"),
    ]
}

fn budget_keys(scope: &str, period: &str) -> [String; 2] {
    [
        format!("asc:{{{scope}}}:b:{period}"),
        format!("asc:{{{scope}}}:b:{period}:res"),
    ]
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Shared {
    /// Connects to Redis at `url` (within 5 s).
    pub async fn connect(url: &str) -> Result<Self, String> {
        let client = redis::Client::open(url).map_err(|e| format!("redis URL: {e}"))?;
        let conn = tokio::time::timeout(
            Duration::from_secs(5),
            ConnectionManager::new(client.clone()),
        )
        .await
        .map_err(|_| "redis did not answer within 5 s".to_owned())?
        .map_err(|e| format!("redis: {e}"))?;
        let budget = |body: &str| Script::new(&format!("{BUDGET_PRUNE}{body}"));
        Ok(Self {
            client,
            conn,
            rate_admit: Script::new(RATE_ADMIT),
            rate_settle: Script::new(RATE_SETTLE),
            reserve: budget(BUDGET_RESERVE),
            settle: budget(BUDGET_SETTLE),
            read: budget(BUDGET_READ),
            warned_at: AtomicU64::new(0),
        })
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        inv: redis::ScriptInvocation<'_>,
    ) -> Result<T, SharedError> {
        // The manager is a handle on one multiplexed connection: cloning it is an Arc.
        let mut conn = self.conn.clone();
        match tokio::time::timeout(OP_TIMEOUT, inv.invoke_async(&mut conn)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(SharedError::Timeout),
        }
    }

    /// Admits a request charging `tokens` in the shared window, or says how long to wait.
    pub async fn admit(
        &self,
        scope: &str,
        rpm: Option<u64>,
        tpm: Option<u64>,
        tokens: u64,
    ) -> Result<RateVerdict, SharedError> {
        let [log, tok, seq] = rate_keys(scope);
        let mut inv = self.rate_admit.key(log);
        inv.key(tok)
            .key(seq)
            .arg(millis(WINDOW))
            .arg(rpm.unwrap_or(0))
            .arg(tpm.unwrap_or(0))
            .arg(tokens);
        let (id, wait): (u64, u64) = self.run(inv).await?;
        Ok(if id > 0 {
            RateVerdict::Admitted(id)
        } else {
            RateVerdict::Wait(Duration::from_millis(wait.max(1)))
        })
    }

    /// Replaces an admission's tokens with the real count.
    pub async fn settle_rate(&self, scope: &str, id: u64, tokens: u64) -> Result<(), SharedError> {
        let [_, tok, _] = rate_keys(scope);
        let mut inv = self.rate_settle.key(tok);
        inv.arg(id).arg(tokens);
        self.run::<i64>(inv).await.map(|_| ())
    }

    /// Reserves `worst` in the scope's ledger for `period` if it fits under `limit`:
    /// the reservation's id, or `None` when it does not fit. `seed` is the spend the
    /// store knows for the period, used only if Redis has no ledger for it yet.
    ///
    /// `id` is the reservation's (see [`reservation_id`]): when the call fails or times
    /// out, the caller cannot know whether Redis ran it, and gives `id` back with
    /// [`Self::release`] so a reservation whose answer was lost is not held for
    /// [`RESERVATION_TTL`].
    pub async fn reserve(
        &self,
        scope: &str,
        period: &str,
        seed: u64,
        worst: u64,
        limit: u64,
        id: u64,
    ) -> Result<bool, SharedError> {
        let [ledger, res] = budget_keys(scope, period);
        let mut inv = self.reserve.key(ledger);
        inv.key(res)
            .arg(seed)
            .arg(worst)
            .arg(limit)
            .arg(millis(RESERVATION_TTL))
            .arg(millis(LEDGER_TTL))
            .arg(id);
        let (fits, _, _): (u64, u64, u64) = self.run(inv).await?;
        Ok(fits == 1)
    }

    /// Gives back reservation `id` if Redis holds it (a reserve whose answer was lost),
    /// charging nothing. Sent on the same connection as the reserve, so Redis runs it
    /// after the reserve if that reached it at all; tried up to three times.
    pub async fn release(&self, scope: &str, period: &str, seed: u64, id: u64) {
        for attempt in 0..3_u64 {
            match self.settle(scope, period, seed, Some(id), 0).await {
                Ok(_) => return,
                Err(e) if attempt == 2 => self.degraded("budget release", &e),
                Err(_) => tokio::time::sleep(Duration::from_secs(1 + attempt)).await,
            }
        }
    }

    /// Releases reservation `id` (if any, and if it has not expired) and charges
    /// `actual`: the spend before and after.
    pub async fn settle(
        &self,
        scope: &str,
        period: &str,
        seed: u64,
        id: Option<u64>,
        actual: u64,
    ) -> Result<(u64, u64), SharedError> {
        let [ledger, res] = budget_keys(scope, period);
        let mut inv = self.settle.key(ledger);
        inv.key(res)
            .arg(seed)
            .arg(id.unwrap_or(0))
            .arg(actual)
            .arg(millis(LEDGER_TTL));
        self.run(inv).await
    }

    /// The scope's ledger for `period` (expired reservations given back first).
    pub async fn ledger(
        &self,
        scope: &str,
        period: &str,
        seed: u64,
    ) -> Result<LedgerState, SharedError> {
        let [ledger, res] = budget_keys(scope, period);
        let mut inv = self.read.key(ledger);
        inv.key(res).arg(seed).arg(millis(LEDGER_TTL));
        let (spent, reserved): (u64, u64) = self.run(inv).await?;
        Ok(LedgerState { spent, reserved })
    }

    /// Tells every replica that this one's breaker of `target` opened for `open_for`.
    pub async fn publish_open(&self, target: &str, open_for: Duration) -> Result<(), SharedError> {
        let ms = millis(open_for).max(1);
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(circuit_key(target))
            .arg(ms)
            .arg("PX")
            .arg(ms)
            .ignore()
            .cmd("PUBLISH")
            .arg(CIRCUITS)
            .arg(format!("{ms} {target}"))
            .ignore();
        match tokio::time::timeout(OP_TIMEOUT, pipe.query_async::<()>(&mut conn)).await {
            Ok(r) => Ok(r?),
            Err(_) => Err(SharedError::Timeout),
        }
    }

    /// Applies other replicas' breaker openings to `health` until `shutdown`: those
    /// still open when it (re)connects, then each as it is published. A lost connection
    /// is retried every second.
    pub async fn follow_circuits(
        self: std::sync::Arc<Self>,
        health: std::sync::Arc<crate::routing::Health>,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                r = self.follow_once(&health) => {
                    if let Err(e) = r {
                        self.degraded("circuit news", &e);
                    }
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    async fn follow_once(&self, health: &crate::routing::Health) -> Result<(), SharedError> {
        use futures_util::StreamExt;
        let mut pubsub = self.client.get_async_pubsub().await?;
        pubsub.subscribe(CIRCUITS).await?;
        // Subscribed first, so nothing published from here on is missed; then what is
        // already open.
        let mut conn = self.conn.clone();
        // SCAN, not KEYS: the keyspace may hold a large cache, and KEYS blocks Redis.
        let mut keys = Vec::new();
        let mut cursor = 0_u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(circuit_key("*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut conn)
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        for key in keys {
            let ms: i64 = redis::cmd("PTTL").arg(&key).query_async(&mut conn).await?;
            if let (Some(target), Ok(ms)) = (key.strip_prefix("asc:circuit:"), u64::try_from(ms)) {
                apply(health, target, ms);
            }
        }
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let Ok(text) = msg.get_payload::<String>() else {
                continue;
            };
            if let Some((ms, target)) = text.split_once(' ')
                && let Ok(ms) = ms.parse::<u64>()
            {
                apply(health, target, ms);
            }
        }
        Ok(())
    }

    /// Logs (at most once per 10 s) that Redis failed and this replica decides alone.
    pub fn degraded(&self, what: &str, err: &SharedError) {
        let now = super::unix_now();
        let last = self.warned_at.load(Ordering::Relaxed);
        if now >= last + 10
            && self
                .warned_at
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            tracing::warn!(
                error = %err,
                what,
                "shared limits unavailable: this replica enforces rate limits and budgets on its own until Redis answers"
            );
        }
    }
}

/// Opens this replica's breaker of `target` (if it routes to it) for `ms`.
fn apply(health: &crate::routing::Health, target: &str, ms: u64) {
    if let Some(h) = health.get(target) {
        // At most an hour: news from the channel is not trusted to be sane.
        let ms = ms.min(3_600_000);
        h.open_from_peer(std::time::Instant::now(), Duration::from_millis(ms));
    }
}

/// The alert thresholds (fractions of `limit`) that a charge from `before` to `after`
/// crossed: each fires on exactly one replica, the one whose charge crossed it.
pub fn crossed(before: u64, after: u64, limit: u64, alert_at: &[f64]) -> Vec<f64> {
    alert_at
        .iter()
        .copied()
        .filter(|a| {
            let permille = (a * 1000.0).round() as u64;
            let threshold = u128::from(limit) * u128::from(permille) / 1000;
            u128::from(before) < threshold && u128::from(after) >= threshold
        })
        .collect()
}

#[cfg(test)]
impl Shared {
    /// Reserves with a fresh id: the id when it fits.
    async fn reserve_new(
        &self,
        scope: &str,
        period: &str,
        seed: u64,
        worst: u64,
        limit: u64,
    ) -> Result<Option<u64>, SharedError> {
        let id = reservation_id();
        let fits = self.reserve(scope, period, seed, worst, limit, id).await?;
        Ok(fits.then_some(id))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn thresholds_fire_once_on_the_charge_that_crosses_them() {
        let at = [0.5, 0.8];
        assert_eq!(crossed(0, 400, 1000, &at), Vec::<f64>::new());
        assert_eq!(crossed(400, 500, 1000, &at), vec![0.5]);
        assert_eq!(crossed(500, 900, 1000, &at), vec![0.8]);
        assert_eq!(crossed(100, 1000, 1000, &at), vec![0.5, 0.8]);
        assert_eq!(crossed(900, 950, 1000, &at), Vec::<f64>::new());
    }

    /// The Redis server of multi-replica tests: `ASC_TEST_REDIS_URL`, default
    /// `redis://127.0.0.1:6379`. Unreachable: skipped locally, a failure when `CI=true`.
    async fn replicas(n: usize) -> Option<Vec<Arc<Shared>>> {
        let url =
            std::env::var("ASC_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let mut out = Vec::new();
        for _ in 0..n {
            match Shared::connect(&url).await {
                Ok(s) => out.push(Arc::new(s)),
                Err(e) => {
                    assert!(
                        std::env::var("CI").as_deref() != Ok("true"),
                        "Redis at {url} is unreachable (CI=true): {e}"
                    );
                    eprintln!("skipping: Redis at {url} is unreachable: {e}");
                    return None;
                }
            }
        }
        Some(out)
    }

    /// A scope no earlier run used (Redis outlives test runs).
    fn fresh_scope() -> String {
        format!("tenant:test-{}", uuid::Uuid::new_v4())
    }

    /// Makes reservation `id` of `scope`'s `period` ledger already expired.
    async fn expire(r: &Shared, scope: &str, period: &str, id: u64) {
        let [_, res] = budget_keys(scope, period);
        let mut conn = r.conn.clone();
        let _: i64 = redis::cmd("ZADD")
            .arg(&res)
            .arg(1)
            .arg(id)
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    /// Deletes every key of `scope`.
    async fn forget(r: &Shared, scope: &str) {
        let mut conn = r.conn.clone();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("asc:{{{scope}}}:*"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(!keys.is_empty(), "the test wrote under asc:{{{scope}}}:");
        let _: i64 = redis::cmd("DEL")
            .arg(&keys)
            .query_async(&mut conn)
            .await
            .unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_replicas_together_admit_exactly_the_limit() {
        let Some(rs) = replicas(2).await else { return };
        let scope = fresh_scope();
        let mut tasks = Vec::new();
        for i in 0..40 {
            let (r, scope) = (rs[i % 2].clone(), scope.clone());
            tasks.push(tokio::spawn(async move {
                r.admit(&scope, Some(10), None, 0).await.unwrap()
            }));
        }
        let mut admitted = 0;
        for t in tasks {
            match t.await.unwrap() {
                RateVerdict::Admitted(_) => admitted += 1,
                RateVerdict::Wait(w) => {
                    assert!(w > Duration::from_secs(50) && w <= WINDOW, "{w:?}")
                }
            }
        }
        assert_eq!(admitted, 10);
        forget(&rs[0], &scope).await;
    }

    #[tokio::test]
    async fn shared_tokens_are_charged_then_settled_to_the_real_count() {
        let Some(rs) = replicas(2).await else { return };
        let scope = fresh_scope();
        // A prompt alone over the limit can never fit.
        assert_eq!(
            rs[0].admit(&scope, None, Some(100), 101).await.unwrap(),
            RateVerdict::Wait(WINDOW)
        );
        let RateVerdict::Admitted(a) = rs[0].admit(&scope, None, Some(100), 60).await.unwrap()
        else {
            panic!("the first 60 tokens fit")
        };
        assert!(matches!(
            rs[1].admit(&scope, None, Some(100), 60).await.unwrap(),
            RateVerdict::Wait(_)
        ));
        // The real usage was 30: now 60 more fit, on the other replica.
        rs[1].settle_rate(&scope, a, 30).await.unwrap();
        assert!(matches!(
            rs[1].admit(&scope, None, Some(100), 60).await.unwrap(),
            RateVerdict::Admitted(_)
        ));
        assert!(matches!(
            rs[0].admit(&scope, None, Some(100), 20).await.unwrap(),
            RateVerdict::Wait(_)
        ));
        forget(&rs[0], &scope).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_reservations_on_two_replicas_never_pass_the_budget() {
        let Some(rs) = replicas(2).await else { return };
        let scope = fresh_scope();
        let mut tasks = Vec::new();
        for i in 0..60 {
            let (r, scope) = (rs[i % 2].clone(), scope.clone());
            tasks.push(tokio::spawn(async move {
                r.reserve_new(&scope, "2026-12", 100, 90, 1_000)
                    .await
                    .unwrap()
            }));
        }
        let mut ids = Vec::new();
        for t in tasks {
            ids.extend(t.await.unwrap());
        }
        // 100 already spent (from the store), 90 each: exactly 10 fit in 1,000.
        assert_eq!(ids.len(), 10);
        let state = rs[0].ledger(&scope, "2026-12", 0).await.unwrap();
        assert_eq!(
            state,
            LedgerState {
                spent: 100,
                reserved: 900
            }
        );
        // Each costs 40 in the end: 500 freed.
        for (i, id) in ids.iter().enumerate() {
            let (before, after) = rs[i % 2]
                .settle(&scope, "2026-12", 0, Some(*id), 40)
                .await
                .unwrap();
            assert_eq!(after, before + 40);
        }
        let state = rs[1].ledger(&scope, "2026-12", 0).await.unwrap();
        assert_eq!(
            state,
            LedgerState {
                spent: 500,
                reserved: 0
            }
        );
        // Settling twice releases nothing more and charges again only the cost.
        rs[0]
            .settle(&scope, "2026-12", 0, Some(ids[0]), 0)
            .await
            .unwrap();
        assert_eq!(
            rs[0].ledger(&scope, "2026-12", 0).await.unwrap().reserved,
            0
        );
        // Another period is another ledger, started from its own seed.
        assert_eq!(
            rs[0].ledger(&scope, "2027-01", 7).await.unwrap(),
            LedgerState {
                spent: 7,
                reserved: 0
            }
        );
        forget(&rs[0], &scope).await;
    }

    /// A reserve whose answer was lost (it timed out after Redis ran it) is given back
    /// by its id, which the caller chose; the same id twice reserves once.
    #[tokio::test]
    async fn a_reservation_whose_answer_was_lost_is_given_back_by_its_id() {
        let Some(rs) = replicas(1).await else { return };
        let scope = fresh_scope();
        let r = &rs[0];
        let id = reservation_id();
        assert!(
            r.reserve(&scope, "2026-12", 0, 300, 1_000, id)
                .await
                .unwrap()
        );
        assert!(
            r.reserve(&scope, "2026-12", 0, 300, 1_000, id)
                .await
                .unwrap()
        );
        let held = r.ledger(&scope, "2026-12", 0).await.unwrap();
        assert_eq!(
            held,
            LedgerState {
                spent: 0,
                reserved: 300
            }
        );
        r.release(&scope, "2026-12", 0, id).await;
        let freed = r.ledger(&scope, "2026-12", 0).await.unwrap();
        assert_eq!(
            freed,
            LedgerState {
                spent: 0,
                reserved: 0
            }
        );
        // Releasing an id Redis never saw changes nothing.
        r.release(&scope, "2026-12", 0, reservation_id()).await;
        assert_eq!(r.ledger(&scope, "2026-12", 0).await.unwrap(), freed);
        forget(r, &scope).await;
    }

    /// A free request (an unpriced or zero-priced target) reserves 0: releasing it must
    /// not break the ledger (Lua's -0 is "-0" to Redis, which HINCRBY refuses).
    #[tokio::test]
    async fn zero_reservations_settle_and_the_ledger_goes_on() {
        let Some(rs) = replicas(1).await else { return };
        let scope = fresh_scope();
        let r = &rs[0];
        let id = r.reserve_new(&scope, "2026-12", 0, 0, 1_000).await.unwrap();
        r.settle(&scope, "2026-12", 0, id, 0).await.unwrap();
        let id = r.reserve_new(&scope, "2026-12", 0, 0, 1_000).await.unwrap();
        // Expire it, so that the prune gives 0 back too.
        expire(r, &scope, "2026-12", id.unwrap()).await;
        assert!(
            r.reserve_new(&scope, "2026-12", 0, 10, 1_000)
                .await
                .unwrap()
                .is_some()
        );
        // A replica's larger figure (charged while Redis was away) raises the spend.
        assert_eq!(r.ledger(&scope, "2026-12", 500).await.unwrap().spent, 500);
        assert_eq!(r.ledger(&scope, "2026-12", 0).await.unwrap().spent, 500);
        forget(r, &scope).await;
    }

    #[tokio::test]
    async fn a_reservation_never_settled_expires_and_gives_its_amount_back() {
        let Some(rs) = replicas(1).await else { return };
        let scope = fresh_scope();
        let [ledger, _] = budget_keys(&scope, "2026-12");
        let r = &rs[0];
        let id = r
            .reserve_new(&scope, "2026-12", 0, 600, 1_000)
            .await
            .unwrap();
        assert!(id.is_some());
        assert_eq!(
            r.reserve_new(&scope, "2026-12", 0, 600, 1_000)
                .await
                .unwrap(),
            None
        );
        // As if the replica holding it died RESERVATION_TTL ago: move its expiry back.
        expire(r, &scope, "2026-12", id.unwrap()).await;
        let mut conn = r.conn.clone();
        assert!(
            r.reserve_new(&scope, "2026-12", 0, 600, 1_000)
                .await
                .unwrap()
                .is_some()
        );
        assert_eq!(
            r.ledger(&scope, "2026-12", 0).await.unwrap(),
            LedgerState {
                spent: 0,
                reserved: 600
            },
            "the expired reservation's 600 went back"
        );
        let _: () = redis::cmd("EXISTS")
            .arg(&ledger)
            .query_async::<i64>(&mut conn)
            .await
            .map(|n| assert_eq!(n, 1))
            .unwrap();
        forget(r, &scope).await;
    }
}
