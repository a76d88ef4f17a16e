//! The webhook dispatcher: delivers the outbox to merchants' endpoints.
//!
//! Every event is written with a delivery per subscribed endpoint in the same transaction as the
//! state change it reports. The dispatcher claims due deliveries with a lease, POSTs the event
//! signed with `Paymux-Signature`, and retries anything but a 2xx with exponential backoff and
//! jitter until the retry window (3 days) closes; then the delivery is failed, and a merchant can
//! redeliver it by hand. Delivery is at least once: merchants deduplicate by event id.

use std::time::{Duration, Instant};

use paymux_store::{DeliveryAttemptRecord, DeliveryNext, DueDelivery, StoreError};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::engine::Engine;
use crate::objects::Event;
use crate::outbound;
use crate::telemetry;

const BATCH: u32 = 32;
/// What a delivery's lease adds to one attempt's timeout: the address check and the store write.
const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// The retry delay after `attempts` failed tries: exponential, capped, with ±20% jitter so a
/// merchant coming back up is not hit by every retry at once.
pub fn retry_delay(first: Duration, max: Duration, attempts: i64) -> Duration {
    let base = crate::sweeper::backoff(first, max, attempts.saturating_sub(1));
    let [r] = paymux_crypto::random_bytes::<1>();
    // r in 0..=255 maps to a factor in [0.8, 1.2].
    let factor = 0.8 + 0.4 * f64::from(r) / 255.0;
    base.mul_f64(factor)
}

/// Delivers what is due every interval with `http`, the client that
/// [`crate::outbound::webhook_client`] built (timeouts, no redirects, global addresses only),
/// until `stop` is cancelled (see [`dispatch_once`] for what happens to a batch under way).
pub async fn run(state: Engine, http: reqwest::Client, stop: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.webhooks.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = dispatch_once(&state, &http, &stop).await {
            tracing::warn!(error = %e, "webhook dispatch failed; retrying next interval");
        }
    }
}

/// Delivers every delivery due now, concurrently. Returns how many were claimed.
///
/// Once `stop` is cancelled no send starts: the sends under way finish and are recorded, and the
/// leases on the deliveries not sent yet are released (made claimable now, by any dispatcher).
pub async fn dispatch_once(
    state: &Engine,
    http: &reqwest::Client,
    stop: &CancellationToken,
) -> Result<usize, StoreError> {
    let now = OffsetDateTime::now_utc();
    // The lease outlives one attempt's timeout, so nobody else sends it while we wait.
    let lease = now + state.config.webhooks.timeout + LEASE_MARGIN;
    let due = state.store.claim_due_deliveries(now, lease, BATCH).await?;
    let n = due.len();
    let mut set = tokio::task::JoinSet::new();
    for d in due {
        let state = state.clone();
        let http = http.clone();
        let stop = stop.clone();
        set.spawn(async move {
            if stop.is_cancelled() {
                let now = OffsetDateTime::now_utc();
                if let Err(e) = state.store.renew_delivery_lease(&d.delivery_id, lease, now).await {
                    tracing::warn!(delivery = %d.delivery_id, error = %e, "could not release the lease");
                }
                return;
            }
            // Renewed just before the send, if it is still ours: a lease that ran out while the
            // batch waited (a slow store, a busy machine) may be another dispatcher's by now.
            let until = OffsetDateTime::now_utc() + state.config.webhooks.timeout + LEASE_MARGIN;
            match state.store.renew_delivery_lease(&d.delivery_id, lease, until).await {
                Ok(true) => deliver(&state, &http, d).await,
                Ok(false) => {
                    tracing::info!(delivery = %d.delivery_id, "lease taken over by another dispatcher; skipped");
                }
                Err(e) => {
                    tracing::warn!(delivery = %d.delivery_id, error = %e, "could not renew the lease");
                }
            }
        });
    }
    while set.join_next().await.is_some() {}
    Ok(n)
}

/// The header for `body`: one `v1` per secret, the current one first, then every secret a
/// rotation replaced that is still inside its overlap window.
fn signature(d: &DueDelivery, timestamp: i64, body: &[u8]) -> String {
    let mut header = paymux_webhook::sign(&d.secret, timestamp, body);
    for old in &d.previous_secrets {
        let old_header = paymux_webhook::sign(old, timestamp, body);
        if let Some((_, v1)) = old_header.split_once(",v1=") {
            header.push_str(",v1=");
            header.push_str(v1);
        }
    }
    header
}

async fn deliver(state: &Engine, http: &reqwest::Client, d: DueDelivery) {
    let started = Instant::now();
    let at = OffsetDateTime::now_utc();
    // An event that cannot be encoded is never sent as an empty body (which an endpoint could
    // acknowledge, ending the delivery): the attempt fails and is retried like any other.
    let sent = match serde_json::to_string(&Event::from(&d.event)) {
        Ok(body) => send(state, http, &d, at, body).await,
        Err(e) => {
            tracing::error!(delivery = %d.delivery_id, event = %d.event.id, error = %e, "could not encode the event");
            Err(format!("the event could not be encoded: {e}"))
        }
    };
    // The answer's body is never read: its status is all delivery needs, and showing what an
    // endpoint answered would let a merchant read whatever its URL reaches.
    let (status_code, error, ok) = match sent {
        Ok(status) => (Some(status.as_u16()), None, status.is_success()),
        Err(e) => (None, Some(e), false),
    };
    let cfg = &state.config.webhooks;
    let attempts = d.attempts + 1;
    let (next, result) = if ok {
        (DeliveryNext::Delivered, "delivered")
    } else if at - d.window_started_at >= cfg.give_up_after {
        tracing::warn!(delivery = %d.delivery_id, event = %d.event.id, "webhook delivery failed for good");
        (DeliveryNext::Failed, "failed")
    } else {
        let retry_at = at + retry_delay(cfg.first_retry, cfg.max_backoff, attempts);
        (DeliveryNext::RetryAt(retry_at), "retry")
    };
    telemetry::webhook_delivery(result);
    let record = DeliveryAttemptRecord {
        at,
        status_code,
        latency_ms: i64::try_from(started.elapsed().as_millis()).unwrap_or(i64::MAX),
        error,
    };
    if let Err(e) = state.store.record_delivery_attempt(&d.delivery_id, &record, next).await {
        // The lease runs out and the delivery is tried again: at least once, never lost.
        tracing::warn!(delivery = %d.delivery_id, error = %e, "could not record a delivery attempt");
    }
}

/// POSTs one delivery and returns the answer's status, or why nothing was answered. Names are
/// resolved, and their addresses checked, by the client's resolver; an address literal, which
/// no resolver sees, is checked here.
async fn send(
    state: &Engine,
    http: &reqwest::Client,
    d: &DueDelivery,
    at: OffsetDateTime,
    body: String,
) -> Result<reqwest::StatusCode, String> {
    let url = reqwest::Url::parse(&d.url).map_err(|e| format!("refused: invalid URL: {e}"))?;
    if !state.config.webhooks.allow_private_urls {
        outbound::check_literal_host(&url).map_err(|e| format!("refused: {e}"))?;
    }
    let res = http
        .post(url)
        .header("content-type", "application/json")
        .header(
            paymux_webhook::SIGNATURE_HEADER,
            signature(d, at.unix_timestamp(), body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .map_err(|e| if e.is_timeout() { "timeout".to_owned() } else { error_chain(&e) })?;
    Ok(res.status())
}

/// An error with its causes: reqwest's own message names the URL, the cause says what failed
/// (a refused address, a lookup, a connection).
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delay_grows_with_jitter_and_caps() {
        let s = Duration::from_secs;
        for _ in 0..50 {
            let d1 = retry_delay(s(10), s(3600), 1);
            assert!(d1 >= s(8) && d1 <= s(12), "{d1:?}");
            let d3 = retry_delay(s(10), s(3600), 3);
            assert!(d3 >= s(32) && d3 <= s(48), "{d3:?}");
            let big = retry_delay(s(10), s(3600), 40);
            assert!(big <= s(4320), "{big:?}");
        }
    }
}
