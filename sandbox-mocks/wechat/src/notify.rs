//! Notifications: encrypted with the merchant's APIv3 key, signed like answers, re-sent on the
//! configured schedule until the receiver answers 2xx within 5 seconds.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::protocol::{EncryptedResource, beijing_rfc3339, encrypt_resource};
use paymux_mock_kit::notify::Notification;

use crate::state::{Delivery, OrderKey, Shared, Signer, lock};

/// WeChat counts no answer within 5 s as a failure.
const RECEIVER_TIMEOUT: Duration = Duration::from_secs(5);

/// A notification on its way: the same body every send, signed afresh each time.
pub(crate) struct Outgoing {
    shared: Arc<Shared>,
    key: OrderKey,
    id: String,
    event_type: String,
    url: String,
    body: Vec<u8>,
    signer: Signer,
}

impl Notification for Outgoing {
    async fn send(&self, attempt: usize) -> bool {
        // Signed afresh each time: WeChat re-sends the same body with new signature headers.
        let (status, outcome, signature) = send_once(&self.shared, self).await;
        record(&self.shared, &self.key, self, attempt, status, outcome, signature);
        outcome == "delivered"
    }

    fn finished(&self, acknowledged: bool) {
        if !acknowledged {
            tracing::warn!(id = %self.id, url = %self.url, "notification given up");
        }
    }

    fn label(&self) -> String {
        self.id.clone()
    }
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
    let outgoing = Outgoing {
        shared: shared.clone(),
        key: key.clone(),
        id,
        event_type: event_type.to_owned(),
        url,
        body: body.to_string().into_bytes(),
        signer: Signer::for_notification(merchant.mode),
    };
    let faults = shared.faults();
    let copies = if faults.duplicate_notifications { 2 } else { 1 };
    shared.notifier.dispatch(outgoing, copies, faults.reorder_notifications);
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
