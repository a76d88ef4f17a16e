//! Notifications: encrypted with the merchant's APIv3 key, signed like answers, re-sent on the
//! configured schedule until the receiver answers 2xx within 5 seconds.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::sync::oneshot;

use crate::protocol::{EncryptedResource, beijing_rfc3339, encrypt_resource};
use crate::state::{Delivery, OrderKey, Shared, Signer, lock};

/// WeChat counts no answer within 5 s as a failure.
const RECEIVER_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the reorder fault holds a notification back waiting for a successor to overtake it;
/// after that it goes out anyway, so a lone notification is late but never lost.
pub(crate) const REORDER_HOLD_TIMEOUT: Duration = Duration::from_secs(1);

struct Outgoing {
    id: String,
    event_type: String,
    url: String,
    body: Vec<u8>,
    signer: Signer,
}

/// A built notification not yet handed to delivery, with how many copies to deliver.
pub(crate) struct Ready {
    key: OrderKey,
    outgoing: Arc<Outgoing>,
    copies: usize,
}

/// The reorder fault's state: at most one held notification, tagged with a ticket so that its
/// hold timer releases only that one and never a later notification held in its place.
#[derive(Default)]
pub(crate) struct Reorder {
    next_ticket: u64,
    held: Option<(u64, Ready)>,
}

/// Builds the notification for `plaintext` and starts delivering it in the background (twice if
/// the duplicate fault is on; held back, or overtaking the held one, with the reorder fault).
/// Failures to build are logged: the sandbox has nobody to answer.
pub(crate) fn dispatch(
    shared: &Arc<Shared>,
    key: &OrderKey,
    event_type: &str,
    summary: &str,
    original_type: &str,
    url: String,
    plaintext: &Value,
) {
    let Some(merchant) = shared.merchant(&key.0) else {
        tracing::warn!(mchid = %key.0, "notification for an unregistered merchant dropped");
        return;
    };
    let nonce = paymux_crypto::random_alphanumeric(12);
    let resource = match encrypt_resource(
        merchant.merchant.apiv3_key.as_bytes(),
        &nonce,
        original_type,
        plaintext.to_string().as_bytes(),
    ) {
        Ok(r) => EncryptedResource { original_type: Some(original_type.to_owned()), ..r },
        Err(e) => {
            tracing::error!(error = %e, mchid = %key.0, "notification resource could not be encrypted");
            return;
        }
    };
    let id = uuid::Uuid::now_v7().to_string();
    let body = json!({
        "id": id,
        "create_time": beijing_rfc3339(OffsetDateTime::now_utc()),
        "resource_type": "encrypt-resource",
        "event_type": event_type,
        "summary": summary,
        "resource": resource,
    });
    let outgoing = Arc::new(Outgoing {
        id,
        event_type: event_type.to_owned(),
        url,
        body: body.to_string().into_bytes(),
        signer: Signer::for_notification(merchant.mode),
    });
    let faults = shared.faults();
    let copies = if faults.duplicate_notifications { 2 } else { 1 };
    let ready = Ready { key: key.clone(), outgoing, copies };
    let mut reorder = lock(&shared.reorder);
    // A held notification is overtaken by the next one produced, whether or not the fault is
    // still on: it was held precisely to wait for this.
    if let Some((_, earlier)) = reorder.held.take() {
        drop(reorder);
        let newer_sent = start(shared, ready);
        let shared = shared.clone();
        tokio::spawn(async move {
            for first_send in newer_sent {
                // An error only means that delivery task ended early; the held one goes anyway.
                let _ = first_send.await;
            }
            start(&shared, earlier);
        });
    } else if faults.reorder_notifications {
        let ticket = reorder.next_ticket;
        reorder.next_ticket += 1;
        reorder.held = Some((ticket, ready));
        drop(reorder);
        tokio::spawn(release_after_hold(shared.clone(), ticket));
    } else {
        drop(reorder);
        start(shared, ready);
    }
}

/// Sends the notification held under `ticket` if no successor has overtaken it meanwhile.
async fn release_after_hold(shared: Arc<Shared>, ticket: u64) {
    tokio::time::sleep(REORDER_HOLD_TIMEOUT).await;
    let ready = {
        let mut reorder = lock(&shared.reorder);
        match reorder.held.take_if(|(held, _)| *held == ticket) {
            Some((_, ready)) => ready,
            None => return,
        }
    };
    tracing::info!(id = %ready.outgoing.id, "held notification released after the hold timeout");
    start(&shared, ready);
}

/// Starts delivering every copy of `ready`; each returned receiver fires once that copy's first
/// send has finished (answered, refused or failed).
fn start(shared: &Arc<Shared>, ready: Ready) -> Vec<oneshot::Receiver<()>> {
    (0..ready.copies)
        .map(|_| {
            let (first_send, finished) = oneshot::channel();
            tokio::spawn(deliver(
                shared.clone(),
                ready.key.clone(),
                ready.outgoing.clone(),
                first_send,
            ));
            finished
        })
        .collect()
}

async fn deliver(
    shared: Arc<Shared>,
    key: OrderKey,
    n: Arc<Outgoing>,
    first_send: oneshot::Sender<()>,
) {
    let delays = shared.config.notify_delays.clone();
    let mut first_send = Some(first_send);
    for attempt in 1..=delays.len() + 1 {
        // Signed afresh each time: WeChat re-sends the same body with new signature headers.
        let (status, outcome, signature) = send_once(&shared, &n).await;
        let delivered = outcome == "delivered";
        record(&shared, &key, &n, attempt, status, outcome, signature);
        if let Some(done) = first_send.take() {
            // Nobody waiting (no notification was held behind this one) is fine.
            let _ = done.send(());
        }
        if delivered {
            return;
        }
        match delays.get(attempt - 1) {
            Some(delay) => tokio::time::sleep(*delay).await,
            None => {
                tracing::warn!(id = %n.id, url = %n.url, attempts = attempt, "notification given up");
            }
        }
    }
}

async fn send_once(shared: &Shared, n: &Outgoing) -> (Option<u16>, &'static str, &'static str) {
    let sig = match shared.sign(n.signer, &n.body) {
        Ok(sig) => sig,
        Err(e) => {
            tracing::error!(message = %e.message, "notification could not be signed");
            return (None, "error", "none");
        }
    };
    if shared.faults().drop_notifications {
        return (None, "dropped", sig.kind);
    }
    let mut request = shared
        .http
        .post(&n.url)
        .timeout(RECEIVER_TIMEOUT)
        .header("content-type", "application/json")
        .header("user-agent", "Mozilla/4.0")
        .body(n.body.clone());
    for (name, value) in sig.pairs() {
        request = request.header(name, value);
    }
    match request.send().await {
        Ok(answer) if answer.status().is_success() => {
            (Some(answer.status().as_u16()), "delivered", sig.kind)
        }
        Ok(answer) => (Some(answer.status().as_u16()), "refused", sig.kind),
        Err(e) if e.is_timeout() => (None, "timeout", sig.kind),
        Err(e) => {
            tracing::debug!(error = %e, url = %n.url, "notification send failed");
            (None, "error", sig.kind)
        }
    }
}

fn record(
    shared: &Shared,
    key: &OrderKey,
    n: &Outgoing,
    attempt: usize,
    status: Option<u16>,
    outcome: &str,
    signature: &'static str,
) {
    tracing::info!(id = %n.id, event = %n.event_type, attempt, ?status, outcome, "notification attempt");
    if let Some(order) = lock(&shared.book).orders.get_mut(key) {
        order.deliveries.push(Delivery {
            notification_id: n.id.clone(),
            event_type: n.event_type.clone(),
            attempt,
            sent_at: beijing_rfc3339(OffsetDateTime::now_utc()),
            url: n.url.clone(),
            status,
            outcome: outcome.to_owned(),
            signature,
        });
    }
}
