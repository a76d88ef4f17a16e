//! Back notifications: the transaction's fields, signed, form-encoded and posted to `backUrl`,
//! re-sent on the configured schedule until the receiver answers HTTP 200 (its body is not
//! read).

use std::sync::Arc;

use paymux_mock_kit::notify::Notification;
use time::OffsetDateTime;

use crate::gateway::transaction_fields;
use crate::protocol::{Fields, beijing_compact};
use crate::state::{Delivery, Shared, Txn, TxnKey};

/// A back notification on its way; signed afresh at each send.
pub(crate) struct BackNotification {
    shared: Arc<Shared>,
    key: TxnKey,
    url: String,
    fields: Fields,
}

/// The fields of a result message (back or front notification) for `txn`, unsigned.
pub(crate) fn result_fields(shared: &Shared, txn: &Txn) -> Fields {
    let mut fields = transaction_fields(shared, txn);
    fields.insert("respCode".into(), "00".into());
    fields.insert("respMsg".into(), "success".into());
    fields
}

/// Starts notifying `txn`'s result to its `backUrl` (nothing to do without one).
pub(crate) fn send_back(shared: &Arc<Shared>, txn: &Txn) {
    let Some(url) = txn.back_url.clone() else { return };
    let faults = shared.faults();
    let copies = if faults.duplicate_notifications { 2 } else { 1 };
    let notification = BackNotification {
        shared: shared.clone(),
        key: txn.key(),
        url,
        fields: result_fields(shared, txn),
    };
    shared.notifier.dispatch(notification, copies, faults.reorder_notifications);
}

impl Notification for BackNotification {
    async fn send(&self, attempt: usize) -> bool {
        let (status, outcome) = self.post().await;
        tracing::info!(order_id = %self.key.1, attempt, ?status, outcome, "back notification");
        if let Some(txn) = self.shared.book().txns.get_mut(&self.key) {
            txn.deliveries.push(Delivery {
                attempt,
                at: beijing_compact(OffsetDateTime::now_utc()),
                status,
                outcome,
            });
        }
        outcome == "acknowledged"
    }

    fn finished(&self, acknowledged: bool) {
        if !acknowledged {
            tracing::warn!(order_id = %self.key.1, url = %self.url, "back notification given up");
        }
    }

    fn label(&self) -> String {
        self.key.1.clone()
    }
}

impl BackNotification {
    async fn post(&self) -> (Option<u16>, &'static str) {
        if self.shared.faults().drop_notifications {
            return (None, "dropped");
        }
        let merchant = self.shared.merchant(&self.key.0);
        let signed = self.shared.sign(self.fields.clone(), merchant.as_deref());
        let form =
            form_urlencoded::Serializer::new(String::new()).extend_pairs(signed.iter()).finish();
        let sent = self
            .shared
            .http
            .post(&self.url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded; charset=UTF-8",
            )
            .body(form)
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status().as_u16() == 200 => (Some(200), "acknowledged"),
            Ok(answer) => (Some(answer.status().as_u16()), "refused"),
            Err(error) => {
                tracing::debug!(%error, url = %self.url, "back notification send failed");
                (None, "error")
            }
        }
    }
}
