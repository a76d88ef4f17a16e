//! The log of channel notifications.

use async_trait::async_trait;
use paymux_core::{AccountId, ChannelKind};
use time::OffsetDateTime;

use sqlx::SqliteConnection;

use super::SqliteStore;
use crate::codec::{headers_json, ms};
use crate::error::unavailable;
use crate::*;

/// Writes one notification to the log, inside the caller's transaction.
pub(super) async fn insert_inbound(
    conn: &mut SqliteConnection,
    n: &InboundRecord,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO inbound_notifications (id, channel, account_id, notify_id, headers, body, \
         received_at, outcome, processed_at, payment_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
impl InboundStore for SqliteStore {
    async fn log_inbound(&self, n: &InboundRecord) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        insert_inbound(&mut tx, n).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn inbound_already_applied(
        &self,
        channel: ChannelKind,
        account: AccountId,
        notify_id: &str,
    ) -> StoreResult<bool> {
        let row = sqlx::query(
            "SELECT 1 FROM inbound_notifications WHERE channel = ? AND account_id = ? \
             AND notify_id = ? AND outcome IN ('applied', 'unchanged') LIMIT 1",
        )
        .bind(channel.as_str())
        .bind(account.to_string())
        .bind(notify_id)
        .fetch_optional(&self.reader)
        .await
        .map_err(unavailable)?;
        Ok(row.is_some())
    }
}
