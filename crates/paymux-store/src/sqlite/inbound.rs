//! The log of channel notifications.

use async_trait::async_trait;
use paymux_core::{AccountId, ChannelKind};
use rusqlite::{Connection, params};
use time::OffsetDateTime;

use super::{Sql, SqliteStore};
use crate::codec::{headers_json, ms};
use crate::*;

/// Writes one notification to the log, inside the caller's transaction.
pub(super) fn insert_inbound(c: &Connection, n: &InboundRecord) -> StoreResult<()> {
    c.exec(
        "INSERT INTO inbound_notifications (id, channel, account_id, notify_id, headers, body, \
         received_at, outcome, processed_at, payment_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            n.id,
            n.channel.as_str(),
            n.account_id.to_string(),
            n.notify_id,
            headers_json(&n.headers),
            n.body,
            ms(n.received_at),
            n.outcome,
            n.outcome.as_ref().map(|_| ms(OffsetDateTime::now_utc())),
            n.payment_id.map(|p| p.to_string()),
        ],
    )?;
    Ok(())
}

#[async_trait]
impl InboundStore for SqliteStore {
    async fn log_inbound(&self, n: &InboundRecord) -> StoreResult<()> {
        let n = n.clone();
        self.write(move |tx| insert_inbound(tx, &n)).await
    }

    async fn inbound_already_applied(
        &self,
        channel: ChannelKind,
        account: AccountId,
        notify_id: &str,
    ) -> StoreResult<bool> {
        let row = self.read(|c| {
            c.one(
                "SELECT 1 FROM inbound_notifications WHERE channel = ? AND account_id = ? \
                 AND notify_id = ? AND outcome IN ('applied', 'unchanged') LIMIT 1",
                params![channel.as_str(), account.to_string(), notify_id],
                |_| Ok(()),
            )
        })?;
        Ok(row.is_some())
    }
}
