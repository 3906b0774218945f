//! Rate limits and budgets that hold under concurrency.
//!
//! Counters live outside the config generation (a reload keeps them) in [`Limits`],
//! one [`Counters`] per tenant and per provider, each behind its own small lock: no lock
//! is shared by all requests. The directory hands a request its tenant's counters
//! together with the tenant, so the hot path does no lookup here. Spend is persisted
//! per period in the store by a background flush (every second and at shutdown), so a
//! restart keeps what was spent.
//!
//! With `storage.redis`, every scope's counters also hold the [`Shared`] handle: rate
//! limits and budgets are then decided in Redis for all replicas at once (see
//! [`shared`]), and the in-memory window and ledger are what this replica falls back to
//! while Redis does not answer.

pub mod budget;
pub mod rate;
pub mod shared;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

pub use self::budget::Ledger;
pub use self::rate::RateWindow;
pub use self::shared::Shared;
use crate::prices::period_of;
use crate::store::{Store, StoreError};

/// One scope's counters: a tenant's or a provider's.
#[derive(Debug)]
pub struct Counters {
    /// `tenant:NAME` or `provider:NAME`.
    pub scope: String,
    pub rate: Mutex<RateWindow>,
    /// The budget ledger, once a budget applies (created with its period's spend).
    /// With shared limits, a copy of the shared spend as this replica last saw it.
    pub budget: Mutex<Option<Ledger>>,
    /// The replicas' shared counters, when `storage.redis` is set.
    pub shared: Option<Arc<Shared>>,
}

/// Every scope's counters; locked only when a scope is first seen and when flushing.
#[derive(Debug)]
pub struct Limits {
    scopes: Mutex<HashMap<String, Arc<Counters>>>,
    store: Option<Store>,
    shared: Option<Arc<Shared>>,
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Limits {
    pub fn new(store: Store, shared: Option<Arc<Shared>>) -> Self {
        Self {
            scopes: Mutex::new(HashMap::new()),
            store: Some(store),
            shared,
        }
    }

    /// Counters with no store behind them (tests, tools).
    pub fn new_detached() -> Self {
        Self {
            scopes: Mutex::new(HashMap::new()),
            store: None,
            shared: None,
        }
    }

    /// The shared counters, when replicas share them.
    pub fn shared(&self) -> Option<&Arc<Shared>> {
        self.shared.as_ref()
    }

    /// The counters of `scope` if they exist, else new ones without a budget ledger
    /// (registered). Never touches the store.
    pub fn counters_now(&self, scope: &str) -> Arc<Counters> {
        let mut map = self.lock();
        map.entry(scope.to_owned())
            .or_insert_with(|| {
                Arc::new(Counters {
                    scope: scope.to_owned(),
                    rate: Mutex::new(RateWindow::default()),
                    budget: Mutex::new(None),
                    shared: self.shared.clone(),
                })
            })
            .clone()
    }

    /// The counters of `scope`, created on first use. With `period` (the budget's
    /// `day|week|month`), the ledger is loaded with this period's stored spend.
    pub async fn counters(
        &self,
        scope: &str,
        period: Option<&str>,
    ) -> Result<Arc<Counters>, StoreError> {
        let counters = self.counters_now(scope);
        if let Some(p) = period.and_then(|p| period_of(p, unix_now()))
            && lock(&counters.budget).is_none()
        {
            let spent = match &self.store {
                Some(s) => s.spent(scope, &p.key).await?,
                None => 0,
            };
            let mut b = lock(&counters.budget);
            if b.is_none() {
                *b = Some(Ledger::new(p, spent));
            }
        }
        Ok(counters)
    }

    /// Writes every changed ledger's spend to the store.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let scopes: Vec<Arc<Counters>> = self.lock().values().cloned().collect();
        for c in scopes {
            let snapshot = {
                let mut b = lock(&c.budget);
                match b.as_mut() {
                    Some(l) if l.dirty => {
                        l.dirty = false;
                        Some((l.period.key.clone(), l.spent))
                    }
                    _ => None,
                }
            };
            if let Some((period, spent)) = snapshot {
                store.set_spent(&c.scope, &period, spent).await?;
            }
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Counters>>> {
        lock(&self.scopes)
    }
}

/// A scope's spend in the period keyed `period_key`: the shared ledger's when replicas
/// share one (and Redis answers), else this replica's; `None` when neither knows it.
pub async fn spent(counters: &Counters, period_key: &str) -> Option<u64> {
    let local = lock(&counters.budget)
        .as_ref()
        .filter(|l| l.period.key == period_key)
        .map(|l| l.spent);
    if let Some(sh) = &counters.shared {
        match sh
            .ledger(&counters.scope, period_key, local.unwrap_or(0))
            .await
        {
            Ok(l) => return Some(l.spent),
            Err(e) => sh.degraded("usage", &e),
        }
    }
    local
}

/// Locks a mutex, recovering from poisoning (a panicked holder cannot leave a counter
/// half-written: every update is a single assignment).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The current period of a ledger, rolled forward if time moved on.
pub fn current(ledger: &mut Ledger, period: &str) {
    if let Some(p) = period_of(period, unix_now()) {
        ledger.roll(p);
    }
}
