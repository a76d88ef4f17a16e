//! Posting signed trade notifications and retrying them on Alipay's schedule.

use std::sync::Arc;

use paymux_mock_kit::notify::Notification;
use time::OffsetDateTime;

use crate::Shared;
use crate::protocol::{format_beijing, notification_sign_content};
use crate::trade::{Attempt, DeliveryState, NotifyJob};

/// A trade notification on its way to the order's `notify_url`.
pub(crate) struct Outgoing {
    shared: Arc<Shared>,
    job: NotifyJob,
}

impl Notification for Outgoing {
    async fn send(&self, _attempt: usize) -> bool {
        send_once(&self.shared, &self.job).await
    }

    fn finished(&self, acknowledged: bool) {
        let state = if acknowledged { DeliveryState::Delivered } else { DeliveryState::GaveUp };
        self.shared.trades().set_delivery_state(&self.job.out_trade_no, self.job.index, state);
    }

    fn label(&self) -> String {
        self.job.out_trade_no.clone()
    }
}

/// Starts delivering `job` in the background (nothing to do without a `notify_url`); with the
/// reorder fault it is held back, or overtakes the one held.
pub(crate) fn spawn(shared: &Arc<Shared>, job: NotifyJob) {
    if job.url.is_empty() {
        return;
    }
    let reorder = shared.faults().reorder_notifications;
    shared.notifier.dispatch(Outgoing { shared: shared.clone(), job }, 1, reorder);
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
