//! Channel notifications: verify, log, deduplicate, apply, and decide the channel's answer.
//!
//! Verify, record durably, then acknowledge: the channel's success reply goes out only after the
//! state change and its event are committed. Anything not authentic, not ours, or not matching what
//! we hold changes nothing and gets the channel's failure reply, so the channel keeps the message.

use paymux_core::{
    AccountId, ChannelKind, ChannelOrderNo, InboundRequest, Notification, NotificationAck,
    ReportSource,
};
use paymux_store::{AccountRecord, InboundRecord, StoreError};
use time::OffsetDateTime;

use crate::apply::{Applied, apply_refund};
use crate::engine::Engine;
use crate::telemetry::{self, NotificationResult};

/// What to answer a channel's notification with.
#[derive(Debug)]
pub enum NotificationReply {
    /// No account of this channel has this id: the URL names nothing.
    UnknownAccount,
    /// The store did not answer: nothing was recorded, so the channel must send it again.
    StoreUnavailable,
    /// The account's configuration gives no adapter to verify with.
    Misconfigured,
    /// The channel's own reply: success only once the notification is durably recorded and
    /// applied (or known to change nothing).
    Ack(NotificationAck),
}

/// What processing a verified notification did.
#[derive(Debug)]
struct Processed {
    applied: Applied,
    /// The notification was logged in the transaction that applied it.
    logged: bool,
}

/// Why a verified notification was not applied; recorded on its inbound log row.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("unknown order {0}")]
    UnknownOrder(ChannelOrderNo),
    #[error("payment gone")]
    PaymentGone,
    #[error("unknown refund {0}")]
    UnknownRefund(ChannelOrderNo),
}

impl Engine {
    /// Handles one notification sent to `/callbacks/{channel}/{account_id}`.
    pub async fn handle_notification(
        &self,
        channel: ChannelKind,
        account_id: AccountId,
        inbound: InboundRequest,
    ) -> NotificationReply {
        let account = match self.store.channel_account(account_id).await {
            Ok(Some(a)) if a.channel == channel => a,
            Ok(_) => {
                telemetry::notification(channel, NotificationResult::Refused);
                return NotificationReply::UnknownAccount;
            }
            Err(e) => {
                tracing::error!(error = %e, "store unavailable while receiving a notification");
                telemetry::notification(channel, NotificationResult::Refused);
                return NotificationReply::StoreUnavailable;
            }
        };
        let Ok(adapter) = self.channels.adapter(&account) else {
            telemetry::notification(channel, NotificationResult::Refused);
            return NotificationReply::Misconfigured;
        };
        // Verify first: an unauthenticated POST costs no write (the account id in a notify URL is
        // no secret), and nothing changes because of it.
        let notification = match adapter.parse_notification(&inbound).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(%channel, account = %account_id, error = %e, "notification refused");
                telemetry::notification(channel, NotificationResult::Refused);
                return NotificationReply::Ack(adapter.ack(false));
            }
        };
        let notify_id = notification.notify_id().map(str::to_owned);
        if let Some(id) = &notify_id
            && matches!(self.store.inbound_already_applied(channel, account_id, id).await, Ok(true))
        {
            // A re-send of one already applied: acknowledge, change nothing.
            telemetry::notification(channel, NotificationResult::Duplicate);
            return NotificationReply::Ack(adapter.ack(true));
        }
        // The verified raw notification is logged with what became of it: in the transaction of
        // the state change it brought (one commit for both), or on its own when it changed
        // nothing. Either way it is durable before the channel hears "received".
        let mut record = InboundRecord {
            id: format!("in_{}", uuid::Uuid::now_v7().simple()),
            channel,
            account_id,
            notify_id,
            headers: inbound.headers,
            body: inbound.body,
            received_at: OffsetDateTime::now_utc(),
            outcome: Some("applied".to_owned()),
            payment_id: None,
        };
        let outcome = self.process(&account, &notification, &mut record).await;
        let (result, note, logged) = match &outcome {
            Ok(Processed { applied: Applied::Changed, logged }) => {
                (NotificationResult::Applied, "applied".to_owned(), *logged)
            }
            Ok(Processed { applied: Applied::Duplicate(_), .. }) => {
                (NotificationResult::Applied, "duplicate_paid".to_owned(), false)
            }
            Ok(Processed { applied: Applied::Unchanged, .. }) => {
                (NotificationResult::Duplicate, "unchanged".to_owned(), false)
            }
            Ok(Processed { applied: Applied::Mismatch(why), .. }) => {
                (NotificationResult::Refused, format!("mismatch: {why}"), false)
            }
            Err(why) => (NotificationResult::Refused, why.to_string(), false),
        };
        let mut accepted = result != NotificationResult::Refused;
        if !logged {
            record.outcome = Some(note.clone());
            if let Err(e) = self.store.log_inbound(&record).await {
                // Not recorded, so not acknowledged: the channel will send it again, and a
                // duplicate changes nothing.
                tracing::error!(error = %e, "could not record a verified notification");
                accepted = false;
            }
        }
        telemetry::notification(
            channel,
            if accepted { result } else { NotificationResult::Refused },
        );
        if !accepted {
            tracing::error!(alert = "notification_rejected", %channel, account = %account_id, reason = %note, "notification not applied");
        }
        NotificationReply::Ack(adapter.ack(accepted))
    }

    /// Checks the notification against what we hold and applies it. Once the payment it is about
    /// is found, `inbound` names it, whatever comes of it (the admin page shows a payment's
    /// notifications; WeChat's are encrypted, so the raw body alone does not say which payment).
    async fn process(
        &self,
        account: &AccountRecord,
        n: &Notification,
        inbound: &mut InboundRecord,
    ) -> Result<Processed, Refused> {
        let store = &*self.store;
        let attempt = store
            .attempt_by_channel_order_no(account.id, n.channel_order_no())
            .await?
            .ok_or_else(|| Refused::UnknownOrder(n.channel_order_no().clone()))?;
        let payment = store
            .payment(account.merchant_id, attempt.payment_id)
            .await?
            .ok_or(Refused::PaymentGone)?;
        inbound.payment_id = Some(payment.id);
        let inbound = &*inbound;
        match n {
            Notification::Payment { state: report, .. } => {
                let (applied, logged) = self
                    .apply_report_notified(
                        &payment,
                        &attempt,
                        report,
                        ReportSource::Channel,
                        Some(inbound),
                    )
                    .await?;
                if applied == Applied::Changed {
                    telemetry::notification_lag(&attempt);
                }
                Ok(Processed { applied, logged })
            }
            Notification::Refund { channel_refund_no, state: report, .. } => {
                let refund = store
                    .refund_by_channel_refund_no(channel_refund_no)
                    .await?
                    .filter(|r| r.payment_id == payment.id)
                    .ok_or_else(|| Refused::UnknownRefund(channel_refund_no.clone()))?;
                let applied = apply_refund(store, &refund, report).await?;
                Ok(Processed { applied, logged: false })
            }
        }
    }
}
