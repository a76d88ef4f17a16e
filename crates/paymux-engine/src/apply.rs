//! Applying a channel's truth (from an answer, a notification or a query) to the store.
//!
//! One place decides every payment and refund state change, whoever learned of it: the notification
//! handler, a merchant's sync, a create or refund answer, the sweeper. Each change is a
//! compare-and-set with its event in one transaction, so duplicates and races change state once.

use paymux_core::{ChannelPayment, ChannelRefund, EventId, EventType, PaymentStatus, RefundStatus};
use paymux_store::{
    NewEvent, PaymentRecord, PaymentTransition, RefundRecord, RefundTransition, Store,
};
use time::OffsetDateTime;

use crate::objects;

/// What applying a report did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The state changed (and its event was written).
    Changed,
    /// Nothing to do: already in that state, or the report says "not yet".
    Unchanged,
    /// The report contradicts what we hold (amount, currency): nothing changed; an operator must look.
    Mismatch(String),
}

/// How many times a compare-and-set that lost a race is retried against the fresh row.
const CAS_RETRIES: usize = 3;

fn event(kind: EventType, object_id: String, data: serde_json::Value) -> NewEvent {
    NewEvent { id: EventId::new(), kind, object_id, data }
}

/// Applies what the channel says about a payment.
pub async fn apply_payment(
    store: &dyn Store,
    payment: &PaymentRecord,
    report: &ChannelPayment,
) -> Result<Applied, paymux_store::StoreError> {
    if let ChannelPayment::Succeeded { amount, .. } = report
        && *amount != payment.amount
    {
        let why = format!(
            "channel reports {} paid for payment {} of {}",
            amount, payment.id, payment.amount
        );
        tracing::error!(alert = "amount_mismatch", payment = %payment.id, "{why}");
        return Ok(Applied::Mismatch(why));
    }
    let mut current = payment.clone();
    for _ in 0..CAS_RETRIES {
        let Some(change) = transition_for(&current, report) else {
            return Ok(Applied::Unchanged);
        };
        if store.transition_payment(&change).await? {
            if change.from != PaymentStatus::Pending && change.to == PaymentStatus::Succeeded {
                tracing::error!(
                    alert = "paid_after_close",
                    payment = %payment.id,
                    from = %change.from,
                    "a verified payment arrived for a payment that was no longer pending"
                );
            }
            return Ok(Applied::Changed);
        }
        // Lost a race: read the row again and decide against what is there now.
        match store.payment(payment.merchant_id, payment.id).await? {
            Some(fresh) => current = fresh,
            None => return Ok(Applied::Unchanged),
        }
    }
    Ok(Applied::Unchanged)
}

/// The transition a report asks of a payment in its current state, if any, with its events.
fn transition_for(p: &PaymentRecord, report: &ChannelPayment) -> Option<PaymentTransition> {
    let now = OffsetDateTime::now_utc();
    let (to, trade_no, paid_at, failure) = match report {
        ChannelPayment::Pending => return None,
        ChannelPayment::Succeeded { channel_trade_no, paid_at, .. } => (
            PaymentStatus::Succeeded,
            Some(channel_trade_no.clone()),
            Some(paid_at.unwrap_or(now)),
            None,
        ),
        ChannelPayment::Closed => (PaymentStatus::Closed, None, None, None),
        ChannelPayment::Failed { code, message } => {
            (PaymentStatus::Failed, None, None, Some((code.clone(), message.clone())))
        }
    };
    if !p.status.can_become(to) {
        return None;
    }
    let mut after = p.clone();
    after.status = to;
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
    let data = objects::payment(&after);
    let id = p.id.to_string();
    let events = match to {
        PaymentStatus::Succeeded if p.status != PaymentStatus::Pending => vec![
            event(EventType::PaymentSucceeded, id.clone(), data.clone()),
            event(EventType::PaymentPaidAfterClose, id, data),
        ],
        PaymentStatus::Succeeded => vec![event(EventType::PaymentSucceeded, id, data)],
        PaymentStatus::Closed => vec![event(EventType::PaymentClosed, id, data)],
        PaymentStatus::Failed => vec![event(EventType::PaymentFailed, id, data)],
        PaymentStatus::Pending => return None,
    };
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
    })
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
        return Ok(Applied::Mismatch(why));
    }
    let mut current = refund.clone();
    for _ in 0..CAS_RETRIES {
        let applied = match report {
            ChannelRefund::Pending { .. } => return Ok(Applied::Unchanged),
            ChannelRefund::ActionRequired { channel_refund_id } => {
                return mark_action_required(store, &current, channel_refund_id.clone()).await;
            }
            ChannelRefund::Succeeded { .. } | ChannelRefund::Failed { .. } => {
                let Some(change) = refund_transition_for(store, &current, report).await? else {
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

/// Why a reported success cannot be this refund's, if it cannot: another amount, or a total
/// refunded on the payment that the refunds we hold cannot add up to.
async fn refund_mismatch(
    store: &dyn Store,
    refund: &RefundRecord,
    report: &ChannelRefund,
) -> Result<Option<String>, paymux_store::StoreError> {
    let ChannelRefund::Succeeded { amount, refunded_total, .. } = report else {
        return Ok(None);
    };
    if let Some(amount) = amount
        && *amount != refund.amount
    {
        return Ok(Some(format!(
            "channel reports {} refunded for refund {} of {}",
            amount, refund.id, refund.amount
        )));
    }
    let Some(total) = refunded_total else {
        return Ok(None);
    };
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
            objects::refund(&after),
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

/// The transition a final report asks of a refund in its current state, if any, with its events.
async fn refund_transition_for(
    store: &dyn Store,
    refund: &RefundRecord,
    report: &ChannelRefund,
) -> Result<Option<RefundTransition>, paymux_store::StoreError> {
    let now = OffsetDateTime::now_utc();
    let (to, channel_refund_id, succeeded_at, failure) = match report {
        ChannelRefund::Succeeded { channel_refund_id, succeeded_at, .. } => (
            RefundStatus::Succeeded,
            channel_refund_id.clone(),
            Some(succeeded_at.unwrap_or(now)),
            None,
        ),
        ChannelRefund::Failed { code, message } => {
            (RefundStatus::Failed, None, None, Some((code.clone(), message.clone())))
        }
        ChannelRefund::Pending { .. } | ChannelRefund::ActionRequired { .. } => return Ok(None),
    };
    if !refund.status.can_become(to) {
        if refund.status != to {
            tracing::error!(
                alert = "refund_contradiction",
                refund = %refund.id,
                held = %refund.status,
                reported = %to,
                "the channel reports a refund state that contradicts a final one we hold"
            );
        }
        return Ok(None);
    }
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
    let data = objects::refund(&after);
    let id = refund.id.to_string();
    let mut events = vec![event(
        if to == RefundStatus::Succeeded {
            EventType::RefundSucceeded
        } else {
            EventType::RefundFailed
        },
        id.clone(),
        data.clone(),
    )];
    let mut over_refund_events = Vec::new();
    if refund.status == RefundStatus::Failed {
        events.push(event(EventType::RefundSucceededAfterFailure, id, data));
        // Written by the store only if re-reserving this refund takes the payment past its amount.
        if let Some(mut payment) = store.payment_by_id(refund.payment_id).await? {
            payment.amount_refunded += refund.amount.minor();
            payment.updated_at = now;
            over_refund_events.push(event(
                EventType::PaymentOverRefunded,
                payment.id.to_string(),
                objects::payment(&payment),
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
    }))
}
