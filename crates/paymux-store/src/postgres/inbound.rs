//! The log of channel notifications.

use async_trait::async_trait;
use paymux_core::{AccountId, ChannelKind, PaymentId};
use time::OffsetDateTime;

use super::PgStore;
use crate::codec::{headers_json, ms};
use crate::error::unavailable;
use crate::*;

#[async_trait]
impl InboundStore for PgStore {
    async fn log_inbound(&self, n: &InboundRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO inbound_notifications (id, channel, account_id, notify_id, headers, body, \
             received_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&n.id)
        .bind(n.channel.as_str())
        .bind(n.account_id.to_string())
        .bind(&n.notify_id)
        .bind(headers_json(&n.headers))
        .bind(&n.body)
        .bind(ms(n.received_at))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn mark_inbound(
        &self,
        id: &str,
        outcome: &str,
        payment: Option<PaymentId>,
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE inbound_notifications SET outcome = $1, processed_at = $2, \
             payment_id = COALESCE($3, payment_id) WHERE id = $4",
        )
        .bind(outcome)
        .bind(ms(OffsetDateTime::now_utc()))
        .bind(payment.map(|p| p.to_string()))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn inbound_already_applied(
        &self,
        channel: ChannelKind,
        account: AccountId,
        notify_id: &str,
    ) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM inbound_notifications WHERE channel = $1 AND account_id = $2 \
             AND notify_id = $3 AND outcome IN ('applied', 'unchanged') LIMIT 1",
        )
        .bind(channel.as_str())
        .bind(account.to_string())
        .bind(notify_id)
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(row.is_some())
    }
}
