//! The sweeper: settles what the channels never told us.
//!
//! A payment or refund still pending some time after it was made is queried at its channel, on an
//! exponential backoff, until the channel's truth is final; a payment past its expiry is closed
//! at the channel; the attempts that lost to another are closed and watched; a refund whose
//! answer never came (a duplicate payment's among them) is asked about and sent again. Its work lives in the store (`next_check_at`), not in memory, so it survives
//! restarts, and rows are claimed with a lease so several gateway instances can sweep at once.

use std::time::Duration;

use paymux_core::{ChannelError, ChannelRefund, PaymentMethod, PaymentStatus, RefundRequest};
use paymux_store::{PaymentRecord, RefundRecord, StoreError};
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::apply::{Applied, apply_refund};
use crate::engine::{Engine, payment_ref};

const BATCH: u32 = 50;

/// Runs one sweep per interval until `stop` is cancelled; a sweep under way when it is finishes
/// the row in hand and releases the rest (see [`sweep_once`]).
pub async fn run(state: Engine, stop: CancellationToken) {
    let mut tick = tokio::time::interval(state.config.sweeper.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = sweep_once(&state, &stop).await {
            tracing::warn!(error = %e, "sweep failed; retrying next interval");
        }
    }
}

/// One pass over the due payments, then the due refunds. Returns how many it looked at; an error
/// in one pass does not keep the other from running (the first error is returned after).
///
/// Rows are claimed in batches with a lease, and each row's lease is renewed, if it is still
/// ours, just before its channel calls: a batch can take longer than one lease, and a row whose
/// lease ran out may already be in another sweeper's hands. The lease must outlast one row's
/// channel calls (a few channel timeouts).
///
/// Once `stop` is cancelled no row is started: the row in hand is finished, the leases on the
/// rest of the batch are released (made due now, for whoever sweeps next), and nothing more is
/// claimed.
pub async fn sweep_once(state: &Engine, stop: &CancellationToken) -> Result<usize, StoreError> {
    let payments = sweep_payments(state, stop).await;
    let refunds = sweep_refunds(state, stop).await;
    let settlements = sweep_settlements(state, stop).await;
    // Stored idempotent answers are replayed for the retention period only; then they go.
    let purged = if stop.is_cancelled() {
        Ok(0)
    } else {
        let now = OffsetDateTime::now_utc();
        state.store.purge_idempotency_keys(now - state.config.idempotency_retention).await
    };
    let seen = payments? + refunds? + settlements?;
    purged?;
    Ok(seen)
}

async fn sweep_payments(state: &Engine, stop: &CancellationToken) -> Result<usize, StoreError> {
    if stop.is_cancelled() {
        return Ok(0);
    }
    let lease = state.config.sweeper.lease;
    let now = OffsetDateTime::now_utc();
    let held = now + lease;
    let payments = state.store.claim_due_payments(now, held, BATCH).await.inspect_err(|e| {
        tracing::warn!(error = %e, "could not claim due payments; refunds are swept anyway");
    })?;
    for (i, p) in payments.iter().enumerate() {
        if stop.is_cancelled() {
            release_payments(state, &payments[i..], held).await;
            break;
        }
        match state.store.renew_payment_lease(p.id, held, OffsetDateTime::now_utc() + lease).await {
            Ok(true) => sweep_payment(state, p).await,
            Ok(false) => {
                tracing::info!(payment = %p.id, "lease taken over by another sweeper; skipped");
            }
            Err(e) => tracing::warn!(payment = %p.id, error = %e, "could not renew the lease"),
        }
    }
    Ok(payments.len())
}

async fn sweep_refunds(state: &Engine, stop: &CancellationToken) -> Result<usize, StoreError> {
    if stop.is_cancelled() {
        return Ok(0);
    }
    let lease = state.config.sweeper.lease;
    let now = OffsetDateTime::now_utc();
    let held = now + lease;
    let refunds = state.store.claim_due_refunds(now, held, BATCH).await.inspect_err(|e| {
        tracing::warn!(error = %e, "could not claim due refunds");
    })?;
    for (i, r) in refunds.iter().enumerate() {
        if stop.is_cancelled() {
            release_refunds(state, &refunds[i..], held).await;
            break;
        }
        match state.store.renew_refund_lease(r.id, held, OffsetDateTime::now_utc() + lease).await {
            Ok(true) => sweep_refund(state, r).await,
            Ok(false) => {
                tracing::info!(refund = %r.id, "lease taken over by another sweeper; skipped");
            }
            Err(e) => tracing::warn!(refund = %r.id, error = %e, "could not renew the lease"),
        }
    }
    Ok(refunds.len())
}

/// Settles held payments whose `auto_settle_after` has come. A claimed settlement not reached
/// before `stop` stays leased until its lease runs out, then is due again.
async fn sweep_settlements(state: &Engine, stop: &CancellationToken) -> Result<usize, StoreError> {
    if stop.is_cancelled() {
        return Ok(0);
    }
    let lease = state.config.sweeper.lease;
    let now = OffsetDateTime::now_utc();
    let due = state.store.claim_due_settlements(now, now + lease, BATCH).await?;
    let retry_in =
        time::Duration::try_from(state.config.sweeper.interval.max(Duration::from_secs(1)))
            .unwrap_or(time::Duration::SECOND);
    for s in &due {
        if stop.is_cancelled() {
            break;
        }
        state.auto_settle(s, retry_in).await;
    }
    Ok(due.len())
}

/// Gives back claimed payments that were not swept: renewing a lease we still hold to now makes
/// the row due at once. One that fails stays hidden until its lease runs out, as after a crash.
async fn release_payments(state: &Engine, rest: &[PaymentRecord], held: OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    for p in rest {
        if let Err(e) = state.store.renew_payment_lease(p.id, held, now).await {
            tracing::warn!(payment = %p.id, error = %e, "could not release the lease");
        }
    }
    tracing::info!(payments = rest.len(), "stopping: released the payments not swept");
}

/// The same for claimed refunds.
async fn release_refunds(state: &Engine, rest: &[RefundRecord], held: OffsetDateTime) {
    let now = OffsetDateTime::now_utc();
    for r in rest {
        if let Err(e) = state.store.renew_refund_lease(r.id, held, now).await {
            tracing::warn!(refund = %r.id, error = %e, "could not release the lease");
        }
    }
    tracing::info!(refunds = rest.len(), "stopping: released the refunds not swept");
}

/// `first * 2^count`, capped at `max`.
pub fn backoff(first: Duration, max: Duration, count: i64) -> Duration {
    let factor =
        1u32.checked_shl(u32::try_from(count.clamp(0, 20)).unwrap_or(20)).unwrap_or(u32::MAX);
    first.saturating_mul(factor).min(max)
}

async fn reschedule_payment(state: &Engine, p: &PaymentRecord) {
    let cfg = &state.config.sweeper;
    let at =
        OffsetDateTime::now_utc() + backoff(cfg.first_check_after, cfg.max_backoff, p.check_count);
    if let Err(e) = state.store.schedule_payment_check(p.id, at).await {
        // The lease expires by itself, so the row comes back anyway.
        tracing::warn!(payment = %p.id, error = %e, "could not reschedule the payment check");
    }
}

/// Looks at every attempt of the payment still watched (see [`Engine::check_payment`]): a
/// pending payment's attempts are queried, and closed at the channel once it is past its expiry;
/// a settled payment's other attempts are closed and queried until their channels can no longer
/// take money for them (a QR code can outlive the payment's expiry: see
/// [`paymux_core::Channel::payable_until`]). A payer who paid one of those anyway is money that
/// moved, even if the notification was lost: a success after the close (`payment.paid_after_close`)
/// or a duplicate payment (`payment.duplicate_paid`, refunded).
async fn sweep_payment(state: &Engine, p: &PaymentRecord) {
    if p.method == PaymentMethod::Barcode && p.status == PaymentStatus::Pending {
        // Its own loop: poll on the channel's schedule, then cancel until confirmed.
        return match state.adapter_and_attempt(p).await {
            Ok((adapter, attempt)) => {
                let reference = payment_ref(p, &attempt);
                crate::barcode::sweep(state, &*adapter, p, &attempt, &reference).await
            }
            Err(e) => {
                tracing::warn!(payment = %p.id, error = %e, "sweeper cannot reach the payment's channel");
                reschedule_payment(state, p).await
            }
        };
    }
    match state.check_payment(p, true).await {
        Ok(true) => reschedule_payment(state, p).await,
        Ok(false) => {
            if let Err(e) = state.store.stop_payment_checks(p.id).await {
                tracing::warn!(payment = %p.id, error = %e, "could not stop checking a settled payment");
            }
        }
        Err(e) => {
            tracing::info!(payment = %p.id, error = %e, "sweeper check gave no answer; will retry");
            reschedule_payment(state, p).await;
        }
    }
}

async fn sweep_refund(state: &Engine, r: &RefundRecord) {
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
///
/// Only the query speaks about the refund itself. A re-send that is declined says nothing about
/// the original (the number is already used, the order is fully refunded, ...): the refund stays
/// pending, is never sent again, and is queried until its answer is final. A refund that needs
/// someone to act at the channel (WeChat `ABNORMAL`) is not re-sent either.
async fn settle_refund(state: &Engine, r: &RefundRecord) -> bool {
    let Ok(Some(p)) = state.store.payment_by_id(r.payment_id).await else {
        return false;
    };
    let Ok((adapter, attempt)) = state.refund_target(&p, r).await else {
        return false;
    };
    let call = RefundRequest {
        payment: payment_ref(&p, &attempt),
        channel_refund_no: r.channel_refund_no.clone(),
        amount: r.amount,
        reason: r.reason.clone(),
        notify_url: state.notify_url(attempt.channel, attempt.account_id),
        created_at: r.created_at,
    };
    let report = match adapter.query_refund(&call).await {
        Ok(ChannelRefund::Pending { .. }) | Err(ChannelError::Unknown { .. })
            if r.resend_declined_code.is_none() =>
        {
            match adapter.refund(&call).await {
                Ok(report) => report,
                Err(ChannelError::Declined { code, message }) => {
                    tracing::error!(
                        alert = "refund_resend_declined",
                        refund = %r.id,
                        %code,
                        %message,
                        "the channel declined a re-send of a pending refund; it stays pending and is only queried from now on"
                    );
                    if let Err(e) = state.store.stop_refund_resends(r.id, &code).await {
                        tracing::warn!(refund = %r.id, error = %e, "could not record the declined re-send");
                    }
                    return false;
                }
                Err(e) => {
                    tracing::info!(refund = %r.id, error = %e, "refund re-send gave no answer; will retry");
                    return false;
                }
            }
        }
        Ok(ChannelRefund::Pending { .. }) => return false,
        Ok(report) => report,
        Err(e) => {
            tracing::warn!(refund = %r.id, error = %e, "refund query gave no final answer; will retry");
            return false;
        }
    };
    match apply_refund(&*state.store, r, &report).await {
        // A refund that needs action changed too (its event went out), but is still pending.
        Ok(Applied::Changed) if !matches!(report, ChannelRefund::ActionRequired { .. }) => {
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
