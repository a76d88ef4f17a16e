//! The sweeper: settles what the channels never told us.
//!
//! A payment or refund still pending some time after it was made is queried at its channel, on an
//! exponential backoff, until the channel's truth is final; a payment past its expiry is closed
//! at the channel. Its work lives in the store (`next_check_at`), not in memory, so it survives
//! restarts, and rows are claimed with a lease so several gateway instances can sweep at once.

use std::time::Duration;

use paymux_core::{
    ALREADY_PAID, ChannelError, ChannelPayment, ChannelRefund, PaymentStatus, RefundRequest,
};
use paymux_store::{PaymentRecord, RefundRecord, StoreError};
use time::OffsetDateTime;

use crate::apply::{Applied, apply_payment, apply_refund};
use crate::payments::{adapter_and_attempt, payment_ref};
use crate::state::AppState;

const BATCH: u32 = 50;

/// Runs forever, one sweep per interval.
pub async fn run(state: AppState) {
    let mut tick = tokio::time::interval(state.config.sweeper.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep_once(&state).await {
            tracing::warn!(error = %e, "sweep failed; retrying next interval");
        }
    }
}

/// One pass over the due payments and refunds. Returns how many it looked at.
pub async fn sweep_once(state: &AppState) -> Result<usize, StoreError> {
    let now = OffsetDateTime::now_utc();
    let lease_until = now + state.config.sweeper.lease;
    let payments = state.store.claim_due_payments(now, lease_until, BATCH).await?;
    for p in &payments {
        sweep_payment(state, p).await;
    }
    let refunds = state.store.claim_due_refunds(now, lease_until, BATCH).await?;
    for r in &refunds {
        sweep_refund(state, r).await;
    }
    // Stored idempotent answers are replayed for the retention period only; then they go.
    state.store.purge_idempotency_keys(now - state.config.idempotency_retention).await?;
    Ok(payments.len() + refunds.len())
}

/// `first * 2^count`, capped at `max`.
pub fn backoff(first: Duration, max: Duration, count: i64) -> Duration {
    let factor =
        1u32.checked_shl(u32::try_from(count.clamp(0, 20)).unwrap_or(20)).unwrap_or(u32::MAX);
    first.saturating_mul(factor).min(max)
}

async fn reschedule_payment(state: &AppState, p: &PaymentRecord) {
    let cfg = &state.config.sweeper;
    let at =
        OffsetDateTime::now_utc() + backoff(cfg.first_check_after, cfg.max_backoff, p.check_count);
    if let Err(e) = state.store.schedule_payment_check(p.id, at).await {
        // The lease expires by itself, so the row comes back anyway.
        tracing::warn!(payment = %p.id, error = %e, "could not reschedule the payment check");
    }
}

async fn sweep_payment(state: &AppState, p: &PaymentRecord) {
    let (adapter, attempt) = match adapter_and_attempt(state, p).await {
        Ok(x) => x,
        Err(e) => {
            tracing::warn!(payment = %p.id, error = %e, "sweeper cannot reach the payment's channel");
            return reschedule_payment(state, p).await;
        }
    };
    let reference = payment_ref(p, &attempt);
    if p.status == PaymentStatus::Closed {
        return watch_closed(state, &*adapter, p, &reference).await;
    }
    let report = match adapter.query(&reference).await {
        Ok(report) => report,
        Err(e) => {
            tracing::info!(payment = %p.id, error = %e, "sweeper query gave no answer; will retry");
            return reschedule_payment(state, p).await;
        }
    };
    match apply_payment(&*state.store, p, &report).await {
        Ok(Applied::Changed) => {
            tracing::info!(payment = %p.id, "sweeper settled the payment from the channel's truth");
            return;
        }
        Ok(Applied::Mismatch(_)) | Err(_) => return reschedule_payment(state, p).await,
        Ok(Applied::Unchanged) => {}
    }
    if report != ChannelPayment::Pending || OffsetDateTime::now_utc() < p.expires_at {
        return reschedule_payment(state, p).await;
    }
    // Still unpaid past its expiry: close it at the channel so nobody can pay it any more.
    match adapter.close(&reference).await {
        Ok(()) => {
            if let Err(e) = apply_payment(&*state.store, p, &ChannelPayment::Closed).await {
                tracing::warn!(payment = %p.id, error = %e, "could not record the close");
                reschedule_payment(state, p).await;
            }
        }
        Err(ChannelError::Declined { code, .. }) if code == ALREADY_PAID => {
            // Paid at the last moment: the next query takes the success.
            reschedule_payment(state, p).await;
        }
        Err(e) => {
            tracing::info!(payment = %p.id, error = %e, "close of an expired payment did not go through");
            reschedule_payment(state, p).await;
        }
    }
}

/// How long after its expiry a closed payment is still asked about: a payer may have paid a QR
/// code after the close, until the code expired.
const CLOSED_WATCH: Duration = Duration::from_secs(10 * 60);

/// A closed payment is queried until its expiry has passed: a payer who paid a QR code after it
/// was closed (Alipay cannot close a trade the buyer has not scanned yet) is money that moved, and
/// becomes a success with a `payment.paid_after_close` event even if the notification was lost.
async fn watch_closed(
    state: &AppState,
    adapter: &dyn paymux_core::Channel,
    p: &PaymentRecord,
    reference: &paymux_core::PaymentRef,
) {
    if let Ok(report @ ChannelPayment::Succeeded { .. }) = adapter.query(reference).await
        && matches!(apply_payment(&*state.store, p, &report).await, Ok(Applied::Changed))
    {
        return;
    }
    if OffsetDateTime::now_utc() > p.expires_at + CLOSED_WATCH {
        if let Err(e) = state.store.stop_payment_checks(p.id).await {
            tracing::warn!(payment = %p.id, error = %e, "could not stop checking a closed payment");
        }
    } else {
        reschedule_payment(state, p).await;
    }
}

async fn sweep_refund(state: &AppState, r: &RefundRecord) {
    let cfg = &state.config.sweeper;
    let next =
        OffsetDateTime::now_utc() + backoff(cfg.first_check_after, cfg.max_backoff, r.check_count);
    if !settle_refund(state, r).await
        && let Err(e) = state.store.schedule_refund_check(r.id, next).await
    {
        tracing::warn!(refund = %r.id, error = %e, "could not reschedule the refund check");
    }
}

/// Queries a pending refund; if the channel has no final answer, sends the refund again with the
/// same refund number (both channels deduplicate on it), which settles a refund whose first send
/// never arrived. Returns whether the refund reached a final state.
async fn settle_refund(state: &AppState, r: &RefundRecord) -> bool {
    let Ok(Some(p)) = state.store.payment_by_id(r.payment_id).await else {
        return false;
    };
    let Ok((adapter, attempt)) = adapter_and_attempt(state, &p).await else {
        return false;
    };
    let call = RefundRequest {
        payment: payment_ref(&p, &attempt),
        channel_refund_no: r.channel_refund_no.clone(),
        amount: r.amount,
        reason: r.reason.clone(),
        notify_url: state.notify_url(p.channel, p.account_id),
        created_at: r.created_at,
    };
    let report = match adapter.query_refund(&call).await {
        Ok(ChannelRefund::Pending { .. }) | Err(ChannelError::Unknown { .. }) => {
            match adapter.refund(&call).await {
                Ok(report) => report,
                Err(ChannelError::Declined { code, message }) => {
                    ChannelRefund::Failed { code, message }
                }
                Err(e) => {
                    tracing::info!(refund = %r.id, error = %e, "refund re-send gave no answer; will retry");
                    return false;
                }
            }
        }
        Ok(report) => report,
        Err(e) => {
            tracing::warn!(refund = %r.id, error = %e, "refund query refused; will retry");
            return false;
        }
    };
    match apply_refund(&*state.store, r, &report).await {
        Ok(Applied::Changed) => {
            tracing::info!(refund = %r.id, "sweeper settled the refund from the channel's truth");
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(60), s(900), 0), s(60));
        assert_eq!(backoff(s(60), s(900), 1), s(120));
        assert_eq!(backoff(s(60), s(900), 3), s(480));
        assert_eq!(backoff(s(60), s(900), 4), s(900));
        assert_eq!(backoff(s(60), s(900), 1000), s(900));
        assert_eq!(backoff(s(60), s(900), -1), s(60));
    }
}
