//! Barcode payments: the merchant scans the code the payer shows (`method: "barcode"`).
//!
//! The create path hands over to this module after the payment and its attempt are committed
//! (rule 1): one pay call with the payer's code, whose answer is paid, refused, "the payer is
//! confirming on the phone", or unknown. The last two are settled by the sweeper, which polls the
//! query on the channel's schedule (the payment's next check, durable in the store, so the loop
//! survives a restart and moves to another instance with the lease) and, past the schedule's
//! limit, cancels or reverses the payment at the channel, repeating the cancel until the channel
//! confirms it: a payment the payer could still confirm is never left behind.
//!
//! The payer's code goes to the channel in the one pay call and nowhere else: the payment keeps a
//! masked form, logs see the masked form, and the pay call is never repeated (an unknown answer
//! is settled by query and cancel, which need only the order number).

use std::sync::Arc;
use std::time::Duration;

use paymux_core::{
    BarcodeCancel, BarcodePaid, BarcodeSchedule, Channel, ChannelError, ChannelPayment,
    CreatePayment, PaymentRef, ReportSource, mask_auth_code,
};
use paymux_store::{AttemptRecord, PaymentRecord, StoreError};
use time::OffsetDateTime;

use crate::apply::Applied;
use crate::engine::{Engine, payment_ref};
use crate::error::EngineError;
use crate::objects::Payment;

/// How many unconfirmed cancels are sent at the channel's own pace before the pace slows to the
/// sweeper's longest backoff (with an alert: a person should look at a cancel that never lands).
const FAST_CANCELS: u32 = 20;

/// Checks the payer's code against the channel's format, before anything is written.
pub(crate) fn check_auth_code(adapter: &dyn Channel, auth_code: &str) -> Result<(), EngineError> {
    adapter.check_auth_code(auth_code).map_err(|message| EngineError::InvalidInput {
        field: "payer.auth_code",
        message: format!("payer.auth_code {}: {message}", mask_auth_code(auth_code)),
    })
}

/// The masked code, as the payment keeps it.
pub(crate) fn stored_auth_code(auth_code: &str) -> String {
    mask_auth_code(auth_code)
}

/// The channel's schedule, compressed as configured.
fn schedule(engine: &Engine, adapter: &dyn Channel) -> Option<BarcodeSchedule> {
    adapter.barcode_schedule().map(|s| s.compressed(engine.config.barcode.time_compression))
}

/// When the sweeper first looks at a new barcode payment: one poll interval after it is written,
/// so a crash during the pay call starts the loop at once.
pub(crate) fn first_check(
    engine: &Engine,
    adapter: &dyn Channel,
    now: OffsetDateTime,
) -> OffsetDateTime {
    let poll =
        schedule(engine, adapter).map_or(engine.config.sweeper.first_check_after, |s| s.poll_every);
    now + poll
}

/// The pay call and the commit of its answer, on their own task (a caller that hangs up cannot
/// cut them apart). Paid at once or refused: the payment is final. Confirming: it is returned
/// pending and the sweeper runs the loop. Unknown: it stays pending, the loop settles it, and
/// the caller gets the error with the payment's id.
pub(crate) async fn pay(
    engine: &Engine,
    adapter: Arc<dyn Channel>,
    record: PaymentRecord,
    attempt: AttemptRecord,
    call: CreatePayment,
) -> Result<Payment, EngineError> {
    let engine = engine.clone();
    let payment_id = record.id;
    let task = tokio::spawn(async move {
        let outcome = adapter.pay_barcode(&call).await;
        // The code is needed for this call only.
        drop(call);
        crate::failpoint::hit(crate::failpoint::AFTER_CHANNEL_CREATE).await;
        let object = payment_id.to_string();
        let after_channel =
            |source: StoreError| EngineError::StoreAfterChannel { source, object: object.clone() };
        match outcome {
            Ok(BarcodePaid { state, channel_data }) => {
                engine
                    .store
                    .record_created(attempt.id, &serde_json::Value::Null, &channel_data, None)
                    .await
                    .map_err(after_channel)?;
                if let Applied::Mismatch(why) =
                    apply(&engine, &record, &attempt, &state).await.map_err(after_channel)?
                {
                    return Err(EngineError::ChannelMismatch { why });
                }
                if state == ChannelPayment::Pending {
                    tracing::info!(payment = %payment_id, "barcode payment: the payer is confirming; polling");
                    let at = first_check(&engine, &*adapter, OffsetDateTime::now_utc());
                    engine
                        .store
                        .schedule_payment_check(payment_id, at)
                        .await
                        .map_err(after_channel)?;
                }
                let now = engine
                    .store
                    .payment_by_id(payment_id)
                    .await
                    .map_err(after_channel)?
                    .ok_or(EngineError::NotFound { what: "payment" })?;
                engine.payment_object(&now).await
            }
            Err(e @ (ChannelError::Declined { .. } | ChannelError::Invalid { .. })) => {
                let (code, message) = match &e {
                    ChannelError::Declined { code, message } => (code.clone(), message.clone()),
                    other => ("invalid_request".to_owned(), other.to_string()),
                };
                let failed = ChannelPayment::Failed { code, message };
                apply(&engine, &record, &attempt, &failed).await.map_err(after_channel)?;
                Err(EngineError::ChannelCall { source: e, object })
            }
            Err(e) => {
                tracing::warn!(payment = %payment_id, error = %e, "barcode pay outcome unknown; polling, then cancelling if unpaid");
                Err(EngineError::ChannelCall { source: e, object })
            }
        }
    });
    task.await.map_err(|_| EngineError::Interrupted { object: payment_id.to_string() })?
}

/// One sweeper pass over a pending barcode payment: poll until the schedule's limit, then
/// cancel until the channel confirms.
pub(crate) async fn sweep(
    engine: &Engine,
    adapter: &dyn Channel,
    p: &PaymentRecord,
    attempt: &AttemptRecord,
    reference: &PaymentRef,
) {
    let Some(sched) = schedule(engine, adapter) else {
        tracing::error!(payment = %p.id, channel = %p.channel, "a barcode payment on a channel without barcode payments");
        return reschedule(engine, p, engine.config.sweeper.max_backoff).await;
    };
    let now = OffsetDateTime::now_utc();
    // Never before the pay call itself has ended (its timeout, and a second for its answer to be
    // written): a cancel that overtook it would find no order, count it closed, and the pay call
    // could still take the money.
    let pay_call_over = engine.config.channel_timeout + Duration::from_secs(1);
    let give_up_at = p.created_at + sched.give_up_after.max(pay_call_over);
    if now < give_up_at {
        return poll(engine, adapter, p, attempt, reference, &sched, give_up_at).await;
    }
    match adapter.cancel_barcode(reference).await {
        Ok(done) => {
            if let Err(e) = record_cancel(engine, p, attempt, &done).await {
                tracing::warn!(payment = %p.id, error = %e, "could not record the cancel; it is sent again");
                reschedule(engine, p, sched.cancel_every).await;
            }
        }
        Err(e) => {
            let late = now - give_up_at > sched.cancel_every * FAST_CANCELS;
            if late || matches!(e, ChannelError::Declined { .. } | ChannelError::Invalid { .. }) {
                tracing::error!(
                    alert = "barcode_cancel_unconfirmed",
                    payment = %p.id,
                    error = %e,
                    "the channel has not confirmed the cancel of a barcode payment; it stays pending and is sent again"
                );
            } else {
                tracing::info!(payment = %p.id, error = %e, "barcode cancel not confirmed; sending it again");
            }
            let wait = if late { engine.config.sweeper.max_backoff } else { sched.cancel_every };
            reschedule(engine, p, wait).await;
        }
    }
}

/// Records a cancel the channel confirmed: the payment is closed and nothing more is asked of
/// the channel (nobody can pay the order any more).
async fn record_cancel(
    engine: &Engine,
    p: &PaymentRecord,
    attempt: &AttemptRecord,
    done: &BarcodeCancel,
) -> Result<(), StoreError> {
    if *done == BarcodeCancel::Refunded {
        tracing::error!(
            alert = "barcode_cancel_refunded",
            payment = %p.id,
            "the payer paid before the cancel arrived; the channel gave the money back and the payment is closed"
        );
    }
    tracing::info!(payment = %p.id, "barcode payment cancelled at the channel");
    // The channel confirmed it: nobody can pay this order any more.
    apply(engine, p, attempt, &ChannelPayment::Closed).await?;
    engine.store.stop_payment_checks(p.id).await
}

/// The merchant closes a pending barcode payment (`POST /v1/payments/{id}/close`): a payer who
/// has already paid wins (the close is refused); otherwise the payment is cancelled at the
/// channel now, and closed once the channel confirms. An unconfirmed cancel leaves it pending,
/// and the loop sends the cancel again.
pub(crate) async fn close(
    engine: &Engine,
    p: &PaymentRecord,
) -> Result<PaymentRecord, EngineError> {
    let (adapter, attempt) = engine.adapter_and_attempt(p).await?;
    let reference = payment_ref(p, &attempt);
    if let Ok(report @ ChannelPayment::Succeeded { .. }) = adapter.query(&reference).await
        && apply(engine, p, &attempt, &report).await? == Applied::Changed
    {
        return Err(EngineError::PaidBeforeClose { payment: p.id, at_channel: true });
    }
    let done = adapter
        .cancel_barcode(&reference)
        .await
        .map_err(|source| EngineError::ChannelCall { source, object: p.id.to_string() })?;
    record_cancel(engine, p, &attempt, &done).await?;
    let after = engine
        .store
        .payment(p.merchant_id, p.id)
        .await?
        .ok_or(EngineError::NotFound { what: "payment" })?;
    if after.status == paymux_core::PaymentStatus::Succeeded {
        // A notification of payment won the race with the cancel.
        return Err(EngineError::PaidBeforeClose { payment: after.id, at_channel: false });
    }
    Ok(after)
}

/// Before the limit: query, apply a final answer, or look again one interval later (and at the
/// limit at the latest).
async fn poll(
    engine: &Engine,
    adapter: &dyn Channel,
    p: &PaymentRecord,
    attempt: &AttemptRecord,
    reference: &PaymentRef,
    sched: &BarcodeSchedule,
    give_up_at: OffsetDateTime,
) {
    match adapter.query(reference).await {
        Ok(report) => match apply(engine, p, attempt, &report).await {
            Ok(Applied::Changed) if matches!(report, ChannelPayment::Failed { .. }) => {
                // WeChat asks for a reverse of a failed code payment too; it changes nothing
                // here, so its answer is only logged.
                if let Err(e) = adapter.cancel_barcode(reference).await {
                    tracing::info!(payment = %p.id, error = %e, "reverse of a failed barcode payment not confirmed");
                }
                return;
            }
            Ok(Applied::Changed) => {
                tracing::info!(payment = %p.id, "barcode payment settled by the poll");
                if report == ChannelPayment::Closed
                    && let Err(e) = engine.store.stop_payment_checks(p.id).await
                {
                    tracing::warn!(payment = %p.id, error = %e, "could not stop checking a closed barcode payment");
                }
                return;
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(payment = %p.id, error = %e, "could not record the poll's answer")
            }
        },
        Err(e) => tracing::info!(payment = %p.id, error = %e, "barcode poll gave no answer"),
    }
    let until_limit = (give_up_at - OffsetDateTime::now_utc()).max(time::Duration::ZERO);
    let wait = sched.poll_every.min(Duration::try_from(until_limit).unwrap_or(Duration::ZERO));
    reschedule(engine, p, wait).await;
}

/// What the channel said about the barcode payment's one attempt, applied.
async fn apply(
    engine: &Engine,
    p: &PaymentRecord,
    attempt: &AttemptRecord,
    report: &ChannelPayment,
) -> Result<Applied, StoreError> {
    engine.apply_report(p, attempt, report, ReportSource::Channel).await
}

async fn reschedule(engine: &Engine, p: &PaymentRecord, wait: Duration) {
    let at = OffsetDateTime::now_utc() + wait;
    if let Err(e) = engine.store.schedule_payment_check(p.id, at).await {
        // The lease runs out by itself, so the row comes back anyway.
        tracing::warn!(payment = %p.id, error = %e, "could not schedule the next barcode check");
    }
}
