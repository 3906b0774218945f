//! Webhook notifications (the config's `notifications`): budget alerts, experiment
//! decisions and circuit openings, POSTed as JSON to each subscribed URL.
//!
//! Deliveries never block a request: events reach the notifier through a channel from
//! the record writer, and each delivery runs in its own task with retries (4 attempts,
//! backoff 0.5 s, 1 s, 2 s). Every body is signed: `x-asc-signature: sha256=HEX` is the
//! HMAC-SHA256 of the exact body with the target's `secret`; `x-asc-event` names the
//! event and `x-asc-delivery` identifies the delivery (the same across its retries).
//! Outcomes count in `asc_notifications_total{event,outcome}`.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use crate::config::hex;
use crate::state::Live;
use crate::telemetry::Metrics;

/// An event to deliver.
#[derive(Debug, Clone)]
pub struct Notice {
    pub kind: &'static str,
    pub tenant: Option<String>,
    pub payload: Value,
}

/// The events webhooks may subscribe to.
pub const EVENTS: [&str; 3] = ["budget_alert", "circuit_open", "experiment_decision"];

/// The HMAC-SHA256 signature header value of `body` with `secret`.
pub fn signature(secret: &str, body: &[u8]) -> String {
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret.as_bytes()) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex(&mac.finalize().into_bytes()))
}

/// Starts the notifier: it reads each notice's targets from the live config.
pub fn start(
    mut rx: mpsc::UnboundedReceiver<Notice>,
    live: Arc<ArcSwap<Live>>,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    tasks: &TaskTracker,
) {
    let spawner = tasks.clone();
    tasks.spawn(async move {
        while let Some(n) = rx.recv().await {
            let targets: Vec<(String, Option<String>)> = live
                .load()
                .config
                .raw
                .notifications
                .iter()
                .filter(|t| t.events.is_empty() || t.events.iter().any(|e| e == n.kind))
                .map(|t| (t.url.clone(), t.secret.clone()))
                .collect();
            if targets.is_empty() {
                continue;
            }
            let body = json!({
                "event": n.kind,
                "ts": crate::store::timestamp(std::time::SystemTime::now()),
                "tenant": n.tenant,
                "detail": n.payload,
            })
            .to_string();
            for (url, secret) in targets {
                let (http, body, metrics) = (http.clone(), body.clone(), metrics.clone());
                spawner.spawn(deliver(http, url, secret, n.kind, body, metrics));
            }
        }
    });
}

async fn deliver(
    http: reqwest::Client,
    url: String,
    secret: Option<String>,
    kind: &'static str,
    body: String,
    metrics: Arc<Metrics>,
) {
    let delivery = uuid::Uuid::new_v4().to_string();
    let sig = secret.as_deref().map(|s| signature(s, body.as_bytes()));
    for attempt in 0..4u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(500 << (attempt - 1))).await;
        }
        let mut rb = http
            .post(&url)
            .timeout(Duration::from_secs(10))
            .header("content-type", "application/json")
            .header("x-asc-event", kind)
            .header("x-asc-delivery", &delivery)
            .body(body.clone());
        if let Some(s) = &sig {
            rb = rb.header("x-asc-signature", s);
        }
        match rb.send().await {
            Ok(r) if r.status().is_success() => {
                metrics.notification(kind, "delivered");
                return;
            }
            Ok(r) => {
                tracing::warn!(%kind, status = r.status().as_u16(), attempt, "webhook refused")
            }
            Err(_) => tracing::warn!(%kind, attempt, "webhook unreachable"),
        }
        metrics.notification(kind, "retried");
    }
    metrics.notification(kind, "failed");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
