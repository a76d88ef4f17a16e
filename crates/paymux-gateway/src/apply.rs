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
pub async fn apply_refund(
    store: &dyn Store,
    refund: &RefundRecord,
    report: &ChannelRefund,
) -> Result<Applied, paymux_store::StoreError> {
    if let ChannelRefund::Succeeded { amount: Some(amount), .. } = report
        && *amount != refund.amount
    {
        let why = format!(
            "channel reports {} refunded for refund {} of {}",
            amount, refund.id, refund.amount
        );
        tracing::error!(alert = "refund_amount_mismatch", refund = %refund.id, "{why}");
        return Ok(Applied::Mismatch(why));
    }
    let now = OffsetDateTime::now_utc();
    let (to, channel_refund_id, succeeded_at, failure) = match report {
        ChannelRefund::Pending { .. } => return Ok(Applied::Unchanged),
        ChannelRefund::Succeeded { channel_refund_id, succeeded_at, .. } => (
            RefundStatus::Succeeded,
            channel_refund_id.clone(),
            Some(succeeded_at.unwrap_or(now)),
            None,
        ),
        ChannelRefund::Failed { code, message } => {
            (RefundStatus::Failed, None, None, Some((code.clone(), message.clone())))
        }
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
        return Ok(Applied::Unchanged);
    }
    let mut after = refund.clone();
    after.status = to;
    after.channel_refund_id = channel_refund_id.clone().or(after.channel_refund_id);
    after.succeeded_at = succeeded_at;
    if let Some((code, message)) = &failure {
        after.failure_code = Some(code.clone());
        after.failure_message = Some(message.clone());
    }
    let kind = match to {
        RefundStatus::Succeeded => EventType::RefundSucceeded,
        _ => EventType::RefundFailed,
    };
    let change = RefundTransition {
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
        events: vec![event(kind, refund.id.to_string(), objects::refund(&after))],
    };
    if store.transition_refund(&change).await? {
        Ok(Applied::Changed)
    } else {
        Ok(Applied::Unchanged)
    }
}
