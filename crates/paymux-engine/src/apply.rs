//! Applying a channel's truth (from an answer, a notification or a query) to the store.
//!
//! One place applies every payment and refund state change, whoever learned of it: the notification
//! handler, a merchant's sync, a create or refund answer, the sweeper. What a report does is
//! decided by `paymux_core::{decide_attempt, decide_refund}` (pure, tested without I/O); here it
//! is written as a compare-and-set with its events in one transaction, so duplicates and races
//! change state once.

use paymux_core::{
    AttemptDecision, AttemptStatus, AttemptView, ChannelOrderNo, ChannelPayment, ChannelRefund,
    EventId, EventType, Money, PaymentStatus, RefundDecision, RefundId, RefundStatus, ReportSource,
    decide_attempt, decide_refund,
};
use paymux_store::{
    AttemptChange, AttemptRecord, DuplicatePaid, InboundRecord, NewEvent, PaymentRecord,
    PaymentTransition, RefundRecord, RefundTransition, Store,
};
use time::OffsetDateTime;

use crate::objects::EventObject;
use crate::telemetry::{self, Anomaly};

/// What applying a report did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// The state changed (and its event was written).
    Changed,
    /// A second attempt was found paid after another had won: recorded with
    /// `payment.duplicate_paid`, and with the refund of it (pending, to be sent now) when the
    /// merchant refunds duplicates automatically.
    Duplicate(Option<Box<RefundRecord>>),
    /// Nothing to do: already in that state, or the report says "not yet".
    Unchanged,
    /// The report contradicts what we hold (amount, currency): nothing changed; an operator must look.
    Mismatch(String),
}

/// How many times a compare-and-set that lost a race is retried against the fresh row.
const CAS_RETRIES: usize = 3;

/// The reason on paymux's automatic refund of a duplicate payment.
pub const DUPLICATE_REFUND_REASON: &str = "duplicate";

fn event(kind: EventType, object_id: String, data: serde_json::Value) -> NewEvent {
    NewEvent { id: EventId::new(), kind, object_id, data }
}

/// Applies what the channel says about one attempt of a payment (`source`: the channel said
/// it, or our own close went through). The decision is `paymux_core::decide_attempt`'s; here it
/// is written as a compare-and-set with its events, retried against fresh rows when it loses a
/// race.
///
/// `first_check` is when the sweeper first looks at the refund of a duplicate payment, should
/// its send be lost (the sweeper's `first_check_after`).
pub async fn apply_attempt(
    store: &dyn Store,
    first_check: std::time::Duration,
    payment: &PaymentRecord,
    attempt: &AttemptRecord,
    report: &ChannelPayment,
    source: ReportSource,
) -> Result<Applied, paymux_store::StoreError> {
    let (applied, _) =
        apply_attempt_notified(store, first_check, payment, attempt, report, source, None).await?;
    Ok(applied)
}

/// [`apply_attempt`] for a report that came in `inbound`, a channel notification: if the report
/// moves the payment, the notification is logged in the same transaction as the change and its
/// events (one commit for all three). Says whether it was so logged; otherwise the caller logs
/// it with what became of it.
pub(crate) async fn apply_attempt_notified(
    store: &dyn Store,
    first_check: std::time::Duration,
    payment: &PaymentRecord,
    attempt: &AttemptRecord,
    report: &ChannelPayment,
    source: ReportSource,
    inbound: Option<&InboundRecord>,
) -> Result<(Applied, bool), paymux_store::StoreError> {
    let mut current = payment.clone();
    for _ in 0..CAS_RETRIES {
        let attempts = store.attempts(current.id).await?;
        let Some(a) = attempts.iter().find(|a| a.id == attempt.id) else {
            return Ok((Applied::Unchanged, false));
        };
        let view = AttemptView {
            payment: current.status,
            attempt: a.status,
            watching: a.watching,
            others_open: attempts
                .iter()
                .any(|o| o.id != a.id && o.status == AttemptStatus::Pending),
            amount: current.amount,
        };
        let decision = decide_attempt(view, report, source);
        let paid_after_close = decision.is_paid_after_close();
        let applied = match decision {
            AttemptDecision::Unchanged => return Ok((Applied::Unchanged, false)),
            AttemptDecision::AmountMismatch { reported, expected } => {
                let why = format!(
                    "channel reports {} paid for payment {} (attempt {}) of {}",
                    reported, payment.id, a.id, expected
                );
                tracing::error!(alert = "amount_mismatch", payment = %payment.id, "{why}");
                telemetry::anomaly(Anomaly::AmountMismatch);
                return Ok((Applied::Mismatch(why), false));
            }
            AttemptDecision::Payment { to, attempt: attempt_to, events, watch } => {
                let change = attempt_change(a, attempt_to, watch, report);
                let Some(mut t) = transition_for(&current, &attempts, change, report, to, &events)
                else {
                    return Ok((Applied::Unchanged, false));
                };
                t.inbound = inbound.cloned();
                if store.transition_payment(&t).await? {
                    // Counted here, where the compare-and-set applied: a duplicate report or the
                    // loser of a race never gets this far, so each transition counts once.
                    telemetry::payment_final(a, t.to);
                    if paid_after_close {
                        telemetry::anomaly(Anomaly::PaidAfterClose);
                        tracing::error!(
                            alert = "paid_after_close",
                            payment = %payment.id,
                            from = %t.from,
                            "a verified payment arrived for a payment that was no longer pending"
                        );
                    }
                    return Ok((Applied::Changed, t.inbound.is_some()));
                }
                false
            }
            AttemptDecision::Attempt { to, watch } => {
                store.transition_attempt(&attempt_change(a, to, watch, report)).await?
            }
            AttemptDecision::StopWatching => {
                store.transition_attempt(&attempt_change(a, a.status, false, report)).await?
            }
            AttemptDecision::Duplicate => {
                let d = duplicate_for(store, first_check, &current, &attempts, a, report).await?;
                if store.record_duplicate(&d).await? {
                    telemetry::anomaly(Anomaly::DuplicatePaid);
                    tracing::error!(
                        alert = "duplicate_paid",
                        payment = %payment.id,
                        attempt = %a.id,
                        refunded = d.refund.is_some(),
                        "a second attempt of a succeeded payment was paid"
                    );
                    return Ok((Applied::Duplicate(d.refund.map(|(r, _)| Box::new(r))), false));
                }
                false
            }
        };
        if applied {
            return Ok((Applied::Changed, false));
        }
        // Lost a race: read the row again and decide against what is there now.
        match store.payment(payment.merchant_id, payment.id).await? {
            Some(fresh) => current = fresh,
            None => return Ok((Applied::Unchanged, false)),
        }
    }
    Ok((Applied::Unchanged, false))
}

/// The compare-and-set moving `a` to `to`, with the trade number a success reports.
fn attempt_change(
    a: &AttemptRecord,
    to: AttemptStatus,
    watching: bool,
    report: &ChannelPayment,
) -> AttemptChange {
    let channel_trade_no = match report {
        ChannelPayment::Succeeded { channel_trade_no, .. } => Some(channel_trade_no.clone()),
        _ => None,
    };
    AttemptChange { attempt_id: a.id, from: a.status, to, watching, channel_trade_no }
}

/// The attempts as they are after `change`.
fn attempts_after(attempts: &[AttemptRecord], change: &AttemptChange) -> Vec<AttemptRecord> {
    attempts
        .iter()
        .map(|a| {
            let mut a = a.clone();
            if a.id == change.attempt_id {
                a.status = change.to;
                a.watching = change.watching;
                if change.channel_trade_no.is_some() {
                    a.channel_trade_no = change.channel_trade_no.clone();
                }
            }
            a
        })
        .collect()
}

/// The store's compare-and-set for a decided transition of `p` to `to` with its attempt's
/// `change`, with `events`, each carrying the payment as it is after.
fn transition_for(
    p: &PaymentRecord,
    attempts: &[AttemptRecord],
    change: AttemptChange,
    report: &ChannelPayment,
    to: PaymentStatus,
    events: &[EventType],
) -> Option<PaymentTransition> {
    let now = OffsetDateTime::now_utc();
    let (trade_no, paid_at, failure) = match report {
        ChannelPayment::Pending => return None,
        ChannelPayment::Succeeded { channel_trade_no, paid_at, .. } => {
            (Some(channel_trade_no.clone()), Some(paid_at.unwrap_or(now)), None)
        }
        ChannelPayment::Closed => (None, None, None),
        ChannelPayment::Failed { code, message } => {
            (None, None, Some((code.clone(), message.clone())))
        }
    };
    let attempts = attempts_after(attempts, &change);
    let mut after = p.clone();
    after.status = to;
    if to == PaymentStatus::Succeeded
        && let Some(won) = attempts.iter().find(|a| a.id == change.attempt_id)
    {
        // The payment shows the attempt it succeeded with.
        after.channel = won.channel;
        after.method = won.method;
        after.account_id = won.account_id;
        after.channel_order_no = won.channel_order_no.clone();
        after.action = won.action.clone().or(after.action);
    }
    if trade_no.is_some() {
        after.channel_trade_no = trade_no.clone();
    }
    if paid_at.is_some() {
        after.paid_at = paid_at;
    }
    if let Some((code, message)) = &failure {
        after.failure_code = Some(code.clone());
        after.failure_message = Some(message.clone());
    }
    after.updated_at = now;
    let data = EventObject::payment(&after, &attempts).to_value();
    let id = p.id.to_string();
    let events = events.iter().map(|kind| event(*kind, id.clone(), data.clone())).collect();
    Some(PaymentTransition {
        payment_id: p.id,
        merchant_id: p.merchant_id,
        from: p.status,
        to,
        channel_trade_no: trade_no,
        paid_at,
        failure_code: failure.as_ref().map(|f| f.0.clone()),
        failure_message: failure.map(|f| f.1),
        at: now,
        events,
        attempt: change,
        inbound: None,
    })
}

/// The record of attempt `a` paid after another attempt won `p`: its event and, when the
/// merchant refunds duplicates automatically, the refund of all of it.
async fn duplicate_for(
    store: &dyn Store,
    first_check: std::time::Duration,
    p: &PaymentRecord,
    attempts: &[AttemptRecord],
    a: &AttemptRecord,
    report: &ChannelPayment,
) -> Result<DuplicatePaid, paymux_store::StoreError> {
    let now = crate::engine::now_ms();
    let change = attempt_change(a, AttemptStatus::DuplicatePaid, false, report);
    let attempts = attempts_after(attempts, &change);
    let mut after = p.clone();
    after.updated_at = now;
    let data = EventObject::payment(&after, &attempts).to_value();
    let events = vec![event(EventType::PaymentDuplicatePaid, p.id.to_string(), data)];
    let auto_refund = store.merchant(p.merchant_id).await?.is_none_or(|m| m.duplicate_auto_refund);
    // Sent right after the commit; the sweeper's first look comes later, like any refund's.
    let refund = auto_refund.then(|| (duplicate_refund(p, a, p.amount, now), now + first_check));
    Ok(DuplicatePaid { change, merchant_id: p.merchant_id, at: now, events, refund })
}

/// paymux's own refund of a duplicate attempt, in full, pending. Its merchant refund number is
/// made from the attempt, so the store's uniqueness makes one such refund per attempt at most.
fn duplicate_refund(
    p: &PaymentRecord,
    a: &AttemptRecord,
    amount: Money,
    now: OffsetDateTime,
) -> RefundRecord {
    RefundRecord {
        id: RefundId::new(),
        merchant_id: p.merchant_id,
        payment_id: p.id,
        merchant_refund_no: format!("duplicate_{}", a.id),
        channel_refund_no: ChannelOrderNo::generate(),
        amount,
        status: RefundStatus::Pending,
        reason: Some(DUPLICATE_REFUND_REASON.to_owned()),
        channel_refund_id: None,
        failure_code: None,
        failure_message: None,
        created_at: now,
        succeeded_at: None,
        updated_at: now,
        check_count: 0,
        livemode: p.livemode,
        resend_declined_code: None,
        action_required_at: None,
        attempt_id: Some(a.id),
    }
}

/// Applies what the channel says about a refund.
///
/// A refund becomes failed only on a definitive answer about it; a verified success for one held
/// as failed makes it succeeded after all, with `refund.succeeded_after_failure` (and
/// `payment.over_refunded` if the payment's refunds then exceed its amount). A refund that needs
/// someone to act at the channel stays pending and says so once, with `refund.action_required`.
pub async fn apply_refund(
    store: &dyn Store,
    refund: &RefundRecord,
    report: &ChannelRefund,
) -> Result<Applied, paymux_store::StoreError> {
    if let Some(why) = refund_mismatch(store, refund, report).await? {
        tracing::error!(alert = "refund_amount_mismatch", refund = %refund.id, "{why}");
        telemetry::anomaly(Anomaly::AmountMismatch);
        return Ok(Applied::Mismatch(why));
    }
    let mut current = refund.clone();
    for _ in 0..CAS_RETRIES {
        let decision = decide_refund(
            current.status,
            current.action_required_at.is_some(),
            current.amount,
            report,
        );
        let applied = match decision {
            RefundDecision::Unchanged | RefundDecision::AmountMismatch { .. } => {
                return Ok(Applied::Unchanged);
            }
            RefundDecision::Contradiction { held, reported } => {
                tracing::error!(
                    alert = "refund_contradiction",
                    refund = %current.id,
                    %held,
                    %reported,
                    "the channel reports a refund state that contradicts a final one we hold"
                );
                return Ok(Applied::Unchanged);
            }
            RefundDecision::ActionRequired => {
                let channel_refund_id = match report {
                    ChannelRefund::ActionRequired { channel_refund_id } => {
                        channel_refund_id.clone()
                    }
                    _ => None,
                };
                return mark_action_required(store, &current, channel_refund_id).await;
            }
            RefundDecision::Transition { to, events, after_failure } => {
                let Some(change) =
                    refund_transition_for(store, &current, report, to, &events, after_failure)
                        .await?
                else {
                    return Ok(Applied::Unchanged);
                };
                store.transition_refund(&change).await?
            }
        };
        if applied {
            if current.status == RefundStatus::Failed {
                tracing::error!(
                    alert = "refund_succeeded_after_failure",
                    refund = %current.id,
                    "a verified success arrived for a refund held as failed"
                );
                report_over_refund(store, &current).await;
            }
            return Ok(Applied::Changed);
        }
        // Lost a race: read the row again and decide against what is there now.
        match store.refund(refund.merchant_id, refund.id).await? {
            Some(fresh) => current = fresh,
            None => return Ok(Applied::Unchanged),
        }
    }
    Ok(Applied::Unchanged)
}

/// Raises `over_refunded` if the refund that just succeeded after a failure took its payment's
/// refunds past the payment's amount (the store then wrote `payment.over_refunded`).
async fn report_over_refund(store: &dyn Store, refund: &RefundRecord) {
    match store.payment_by_id(refund.payment_id).await {
        Ok(Some(p)) if p.amount_refunded > p.amount.minor() => {
            tracing::error!(
                alert = "over_refunded",
                payment = %p.id,
                refund = %refund.id,
                "the payment's refunds now exceed its amount"
            );
            telemetry::anomaly(Anomaly::OverRefunded);
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(refund = %refund.id, error = %e, "could not check the payment for an over-refund");
        }
    }
}

/// Why a reported success cannot be this refund's, if it cannot: another amount, or a total
/// refunded on the payment that the refunds we hold cannot add up to.
async fn refund_mismatch(
    store: &dyn Store,
    refund: &RefundRecord,
    report: &ChannelRefund,
) -> Result<Option<String>, paymux_store::StoreError> {
    if let RefundDecision::AmountMismatch { reported, expected } =
        decide_refund(refund.status, refund.action_required_at.is_some(), refund.amount, report)
    {
        return Ok(Some(format!(
            "channel reports {} refunded for refund {} of {}",
            reported, refund.id, expected
        )));
    }
    let ChannelRefund::Succeeded { refunded_total: Some(total), .. } = report else {
        return Ok(None);
    };
    if refund.attempt_id.is_some() {
        // A duplicate attempt's trade is refunded once, in full, by this refund alone.
        return Ok((*total != refund.amount).then(|| {
            format!(
                "channel reports {} refunded in total on duplicate attempt of payment {} with \
                 refund {} of {}",
                total, refund.payment_id, refund.id, refund.amount
            )
        }));
    }
    let Some(payment) = store.payment_by_id(refund.payment_id).await? else {
        return Ok(None);
    };
    Ok(refunded_total_mismatch(refund, &payment, *total))
}

/// Checks a channel's cumulative refunded total (Alipay's `refund_fee`) reported with this
/// refund's success: it includes this refund, and cannot exceed the refunds that may have moved
/// money (every refund not failed, this one included). Anything else is not this refund's truth.
pub fn refunded_total_mismatch(
    refund: &RefundRecord,
    payment: &PaymentRecord,
    total: paymux_core::Money,
) -> Option<String> {
    let held_failed = if refund.status == RefundStatus::Failed { refund.amount.minor() } else { 0 };
    // The reservations stop at the amount; refunds that went past it are all succeeded ones.
    let ceiling = payment.amount_reserved.max(payment.amount_refunded) + held_failed;
    if total.currency() != refund.amount.currency()
        || total.minor() < refund.amount.minor()
        || total.minor() > ceiling
    {
        return Some(format!(
            "channel reports {} refunded in total on payment {} with refund {} of {}; the refunds \
             that can have moved money come to {} fen",
            total, payment.id, refund.id, refund.amount, ceiling
        ));
    }
    None
}

async fn mark_action_required(
    store: &dyn Store,
    refund: &RefundRecord,
    channel_refund_id: Option<String>,
) -> Result<Applied, paymux_store::StoreError> {
    if refund.status != RefundStatus::Pending || refund.action_required_at.is_some() {
        return Ok(Applied::Unchanged);
    }
    let now = OffsetDateTime::now_utc();
    let mut after = refund.clone();
    after.channel_refund_id = channel_refund_id.clone().or(after.channel_refund_id);
    after.action_required_at = Some(now);
    let change = paymux_store::RefundActionRequired {
        refund_id: refund.id,
        merchant_id: refund.merchant_id,
        channel_refund_id,
        at: now,
        events: vec![event(
            EventType::RefundActionRequired,
            refund.id.to_string(),
            EventObject::from(&after).to_value(),
        )],
    };
    if store.mark_refund_action_required(&change).await? {
        tracing::error!(
            alert = "refund_action_required",
            refund = %refund.id,
            "the refund cannot reach the payer; the merchant must re-drive it at the channel"
        );
        Ok(Applied::Changed)
    } else {
        Ok(Applied::Unchanged)
    }
}

/// The store's compare-and-set for a decided transition of `refund` to `to`, with `events`;
/// after a failure, also the `payment.over_refunded` event the store writes only if re-reserving
/// the refund takes the payment past its amount.
async fn refund_transition_for(
    store: &dyn Store,
    refund: &RefundRecord,
    report: &ChannelRefund,
    to: RefundStatus,
    events: &[EventType],
    after_failure: bool,
) -> Result<Option<RefundTransition>, paymux_store::StoreError> {
    let now = OffsetDateTime::now_utc();
    let (channel_refund_id, succeeded_at, failure) = match report {
        ChannelRefund::Succeeded { channel_refund_id, succeeded_at, .. } => {
            (channel_refund_id.clone(), Some(succeeded_at.unwrap_or(now)), None)
        }
        ChannelRefund::Failed { code, message } => {
            (None, None, Some((code.clone(), message.clone())))
        }
        ChannelRefund::Pending { .. } | ChannelRefund::ActionRequired { .. } => return Ok(None),
    };
    let mut after = refund.clone();
    after.status = to;
    after.channel_refund_id = channel_refund_id.clone().or(after.channel_refund_id);
    after.succeeded_at = succeeded_at;
    after.updated_at = now;
    if let Some((code, message)) = &failure {
        after.failure_code = Some(code.clone());
        after.failure_message = Some(message.clone());
    } else {
        after.failure_code = None;
        after.failure_message = None;
    }
    let data = EventObject::from(&after).to_value();
    let id = refund.id.to_string();
    let events = events.iter().map(|kind| event(*kind, id.clone(), data.clone())).collect();
    let mut over_refund_events = Vec::new();
    if after_failure {
        // Written by the store only if re-reserving this refund takes the payment past its amount.
        if let Some(mut payment) = store.payment_by_id(refund.payment_id).await? {
            let attempts = store.attempts(payment.id).await?;
            payment.amount_refunded += refund.amount.minor();
            payment.updated_at = now;
            over_refund_events.push(event(
                EventType::PaymentOverRefunded,
                payment.id.to_string(),
                EventObject::payment(&payment, &attempts).to_value(),
            ));
        }
    }
    Ok(Some(RefundTransition {
        refund_id: refund.id,
        payment_id: refund.payment_id,
        merchant_id: refund.merchant_id,
        amount: refund.amount.minor(),
        from: refund.status,
        to,
        channel_refund_id,
        succeeded_at,
        failure_code: failure.as_ref().map(|f| f.0.clone()),
        failure_message: failure.map(|f| f.1),
        at: now,
        events,
        over_refund_events,
        of_duplicate: refund.attempt_id.is_some(),
    }))
}
