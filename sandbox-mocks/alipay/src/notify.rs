//! Posting signed trade notifications and retrying them on Alipay's schedule.

use std::sync::{Arc, PoisonError};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::Shared;
use crate::protocol::{format_beijing, notification_sign_content};
use crate::trade::{Attempt, DeliveryState, NotifyJob};

/// How long the reorder fault holds a notification back waiting for a successor to overtake it;
/// after that it goes out anyway, so a lone notification is late but never lost.
pub(crate) const REORDER_HOLD_TIMEOUT: Duration = Duration::from_secs(1);

/// The reorder fault's state: at most one held notification, tagged with a ticket so that its
/// hold timer releases only that one and never a later notification held in its place.
#[derive(Default)]
pub(crate) struct Reorder {
    next_ticket: u64,
    held: Option<(u64, NotifyJob)>,
}

/// Starts delivering `job` in the background (nothing to do without a `notify_url`); with the
/// reorder fault it is held back, or overtakes the one held.
pub(crate) fn spawn(shared: &Arc<Shared>, job: NotifyJob) {
    if job.url.is_empty() {
        return;
    }
    let reorder_on = shared.faults().reorder_notifications;
    let mut reorder = shared.reorder.lock().unwrap_or_else(PoisonError::into_inner);
    // A held notification is overtaken by the next one produced, whether or not the fault is
    // still on: it was held precisely to wait for this.
    if let Some((_, earlier)) = reorder.held.take() {
        drop(reorder);
        let newer_sent = start(shared, job);
        let shared = shared.clone();
        tokio::spawn(async move {
            // An error only means that delivery task ended early; the held one goes anyway.
            let _ = newer_sent.await;
            start(&shared, earlier);
        });
    } else if reorder_on {
        let ticket = reorder.next_ticket;
        reorder.next_ticket += 1;
        reorder.held = Some((ticket, job));
        drop(reorder);
        tokio::spawn(release_after_hold(shared.clone(), ticket));
    } else {
        drop(reorder);
        start(shared, job);
    }
}

/// Sends the notification held under `ticket` if no successor has overtaken it meanwhile.
async fn release_after_hold(shared: Arc<Shared>, ticket: u64) {
    tokio::time::sleep(REORDER_HOLD_TIMEOUT).await;
    let job = {
        let mut reorder = shared.reorder.lock().unwrap_or_else(PoisonError::into_inner);
        match reorder.held.take_if(|(held, _)| *held == ticket) {
            Some((_, job)) => job,
            None => return,
        }
    };
    tracing::info!(out_trade_no = %job.out_trade_no, "held notification released unovertaken");
    start(&shared, job);
}

/// Starts delivering `job`; the receiver fires once its first send has finished (answered or
/// not).
fn start(shared: &Arc<Shared>, job: NotifyJob) -> oneshot::Receiver<()> {
    let (first_send, finished) = oneshot::channel();
    tokio::spawn(deliver(shared.clone(), job, first_send));
    finished
}

/// The form body of a notification: its fields plus `sign` over everything but `sign` and
/// `sign_type`.
pub(crate) fn signed_form(shared: &Shared, job: &NotifyJob) -> Option<String> {
    let sign = shared.sign(&notification_sign_content(&job.fields))?;
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.extend_pairs(job.fields.iter());
    form.append_pair("sign", &sign);
    Some(form.finish())
}

/// Sends until the receiver answers exactly `success`, waiting the configured intervals
/// between sends, then gives up.
async fn deliver(shared: Arc<Shared>, job: NotifyJob, first_send: oneshot::Sender<()>) {
    let delays = shared.config.notify_delays.clone();
    let mut first_send = Some(first_send);
    for send in 0..=delays.len() {
        if let Some(delay) = send.checked_sub(1).and_then(|i| delays.get(i)) {
            tokio::time::sleep(*delay).await;
        }
        let acknowledged = send_once(&shared, &job).await;
        if let Some(done) = first_send.take() {
            // Nobody waiting (no notification was held behind this one) is fine.
            let _ = done.send(());
        }
        if acknowledged {
            shared.trades().set_delivery_state(
                &job.out_trade_no,
                job.index,
                DeliveryState::Delivered,
            );
            return;
        }
    }
    tracing::info!(out_trade_no = %job.out_trade_no, "notification never acknowledged; giving up");
    shared.trades().set_delivery_state(&job.out_trade_no, job.index, DeliveryState::GaveUp);
}

/// One scheduled send (two posts with the duplicate fault). True when acknowledged.
async fn send_once(shared: &Shared, job: &NotifyJob) -> bool {
    let faults = shared.faults();
    if faults.drop_notifications {
        // Lost on the way: Alipay never hears `success`, so it keeps retrying.
        record(shared, job, "dropped (fault injection)".into(), false);
        return false;
    }
    let Some(form) = signed_form(shared, job) else {
        record(shared, job, "not sent: signing failed".into(), false);
        return false;
    };
    let copies = if faults.duplicate_notifications { 2 } else { 1 };
    let mut acknowledged = false;
    for _ in 0..copies {
        let outcome = post(shared, &job.url, form.clone()).await;
        let ok = matches!(&outcome, Ok((_, body)) if body == "success");
        let text = match outcome {
            Ok((status, body)) => format!("HTTP {status}, body {:?}", truncate(&body)),
            Err(error) => format!("error: {error}"),
        };
        record(shared, job, text, ok);
        acknowledged |= ok;
    }
    acknowledged
}

async fn post(shared: &Shared, url: &str, form: String) -> Result<(u16, String), reqwest::Error> {
    let response = shared
        .http
        .post(url)
        .header(reqwest::header::CONTENT_TYPE, "application/x-www-form-urlencoded; charset=utf-8")
        .body(form)
        .send()
        .await?;
    let status = response.status().as_u16();
    Ok((status, response.text().await?))
}

fn record(shared: &Shared, job: &NotifyJob, outcome: String, acknowledged: bool) {
    let attempt = Attempt { at: format_beijing(OffsetDateTime::now_utc()), outcome, acknowledged };
    shared.trades().log_attempt(&job.out_trade_no, job.index, attempt);
}

fn truncate(body: &str) -> String {
    body.chars().take(200).collect()
}
