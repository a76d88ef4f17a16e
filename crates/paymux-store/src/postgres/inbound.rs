//! The log of channel notifications.

use async_trait::async_trait;
use paymux_core::{AccountId, ChannelKind};
use time::OffsetDateTime;

use super::PgStore;
use crate::codec::{headers_json, ms};
use crate::error::unavailable;
use crate::*;

/// Writes one notification to the log, inside the caller's transaction (or alone on a pool).
pub(super) async fn insert_inbound<'c, E>(conn: E, n: &InboundRecord) -> StoreResult<()>
where
    E: sqlx::PgExecutor<'c>,
{
    sqlx::query(
        "INSERT INTO inbound_notifications (id, channel, account_id, notify_id, headers, body, \
         received_at, outcome, processed_at, payment_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&n.id)
    .bind(n.channel.as_str())
    .bind(n.account_id.to_string())
    .bind(&n.notify_id)
    .bind(headers_json(&n.headers))
    .bind(&n.body)
    .bind(ms(n.received_at))
    .bind(&n.outcome)
    .bind(n.outcome.as_ref().map(|_| ms(OffsetDateTime::now_utc())))
    .bind(n.payment_id.map(|p| p.to_string()))
    .execute(conn)
    .await
    .map_err(unavailable)?;
    Ok(())
}

#[async_trait]
impl InboundStore for PgStore {
    async fn log_inbound(&self, n: &InboundRecord) -> StoreResult<()> {
        insert_inbound(&self.pool, n).await
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
