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
        // The verified raw notification is logged before it is processed.
        let log_id = format!("in_{}", uuid::Uuid::now_v7().simple());
        let record = InboundRecord {
            id: log_id.clone(),
            channel,
            account_id,
            notify_id: notify_id.clone(),
            headers: inbound.headers,
            body: inbound.body,
            received_at: OffsetDateTime::now_utc(),
        };
        if let Err(e) = self.store.log_inbound(&record).await {
            // Not recorded, so not acknowledged: the channel will send it again.
            tracing::error!(error = %e, "could not record a verified notification");
            telemetry::notification(channel, NotificationResult::Refused);
            return NotificationReply::Ack(adapter.ack(false));
        }
        let outcome = self.process(&account, &notification).await;
        let (result, note) = match &outcome {
            Ok(Applied::Changed) => (NotificationResult::Applied, "applied".to_owned()),
            Ok(Applied::Duplicate(_)) => (NotificationResult::Applied, "duplicate_paid".to_owned()),
            Ok(Applied::Unchanged) => (NotificationResult::Duplicate, "unchanged".to_owned()),
            Ok(Applied::Mismatch(why)) => (NotificationResult::Refused, format!("mismatch: {why}")),
            Err(why) => (NotificationResult::Refused, why.to_string()),
        };
        telemetry::notification(channel, result);
        let accepted = result != NotificationResult::Refused;
        if let Err(e) = self.store.mark_inbound(&log_id, &note).await {
            tracing::warn!(error = %e, "could not mark the inbound notification processed");
        }
        if !accepted {
            tracing::error!(alert = "notification_rejected", %channel, account = %account_id, reason = %note, "notification not applied");
        }
        NotificationReply::Ack(adapter.ack(accepted))
    }

    /// Checks the notification against what we hold and applies it.
    async fn process(&self, account: &AccountRecord, n: &Notification) -> Result<Applied, Refused> {
        let store = &*self.store;
        let attempt = store
            .attempt_by_channel_order_no(account.id, n.channel_order_no())
            .await?
            .ok_or_else(|| Refused::UnknownOrder(n.channel_order_no().clone()))?;
        let payment = store
            .payment(account.merchant_id, attempt.payment_id)
            .await?
            .ok_or(Refused::PaymentGone)?;
        match n {
            Notification::Payment { state: report, .. } => {
                let applied =
                    self.apply_report(&payment, &attempt, report, ReportSource::Channel).await?;
                if applied == Applied::Changed {
                    telemetry::notification_lag(&attempt);
                }
                Ok(applied)
            }
            Notification::Refund { channel_refund_no, state: report, .. } => {
                let refund = store
                    .refund_by_channel_refund_no(channel_refund_no)
                    .await?
                    .filter(|r| r.payment_id == payment.id)
                    .ok_or_else(|| Refused::UnknownRefund(channel_refund_no.clone()))?;
                Ok(apply_refund(store, &refund, report).await?)
            }
        }
    }
}
