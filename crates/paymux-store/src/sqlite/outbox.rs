//! The outbox: events, webhook endpoints and deliveries.

use async_trait::async_trait;
use paymux_core::{EventId, EventType, MerchantId};
use time::OffsetDateTime;

use super::writer::ExecuteAlone;
use super::{SqliteStore, Tx};
use crate::codec::{self, Columns, ENDPOINT_COLUMNS, EVENT_COLUMNS, ms, parse};
use crate::error::unavailable;
use crate::rules::{self, Subscriber};
use crate::*;

/// The merchant's endpoints, as event routing sees them.
async fn subscribers(tx: &mut Tx, merchant: MerchantId) -> StoreResult<Vec<(String, Subscriber)>> {
    let rows = sqlx::query(
        "SELECT id, events, livemode, deleted FROM webhook_endpoints WHERE merchant_id = ?",
    )
    .bind(merchant.to_string())
    .fetch_all(&mut **tx)
    .await
    .map_err(unavailable)?;
    rows.iter().map(codec::subscriber).collect()
}

/// Writes events of one mode (their object's) and, in the same transaction, a delivery to each
/// endpoint that receives them.
pub(super) async fn insert_events(
    tx: &mut Tx,
    merchant: MerchantId,
    livemode: bool,
    events: &[NewEvent],
    at: OffsetDateTime,
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let endpoints = subscribers(tx, merchant).await?;
    for e in events {
        sqlx::query(
            "INSERT INTO events (id, merchant_id, type, object_id, data, livemode, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.id.to_string())
        .bind(merchant.to_string())
        .bind(e.kind.as_str())
        .bind(&e.object_id)
        .bind(e.data.to_string())
        .bind(livemode)
        .bind(ms(at))
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
        for (id, endpoint) in &endpoints {
            if rules::receives(endpoint, e.kind, livemode) {
                insert_delivery(tx, &e.id.to_string(), id, at).await?;
            }
        }
    }
    Ok(())
}

async fn insert_delivery(
    tx: &mut Tx,
    event_id: &str,
    endpoint_id: &str,
    at: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO deliveries (id, event_id, endpoint_id, status, attempts, next_attempt_at, \
         window_started_at, created_at) VALUES (?, ?, ?, 'pending', 0, ?, ?, ?)",
    )
    .bind(format!("dlv_{}", uuid::Uuid::now_v7().simple()))
    .bind(event_id)
    .bind(endpoint_id)
    .bind(ms(at))
    .bind(ms(at))
    .bind(ms(at))
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(())
}

#[async_trait]
impl OutboxStore for SqliteStore {
    async fn events(
        &self,
        merchant: MerchantId,
        livemode: bool,
        after: Option<EventId>,
        limit: u32,
    ) -> StoreResult<Vec<EventRecord>> {
        // Commit order is rowid order: there is one writer.
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE merchant_id = ? AND livemode = ? \
               AND (? IS NULL OR rowid > (SELECT rowid FROM events WHERE id = ?)) \
             ORDER BY rowid LIMIT ?"
        );
        let after = after.map(|a| a.to_string());
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(merchant.to_string())
            .bind(livemode)
            .bind(after.clone())
            .bind(after)
            .bind(i64::from(limit.clamp(1, 100)))
            .fetch_all(&self.reader)
            .await
            .map_err(unavailable)?;
        rows.iter().map(codec::event).collect()
    }

    async fn event(&self, merchant: MerchantId, id: EventId) -> StoreResult<Option<EventRecord>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ? AND merchant_id = ?");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .bind(merchant.to_string())
            .fetch_optional(&self.reader)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(codec::event).transpose()
    }

    async fn create_webhook_endpoint(&self, ep: &WebhookEndpointRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO webhook_endpoints (id, merchant_id, url, secret, events, livemode, \
             created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(&ep.id)
        .bind(ep.merchant_id.to_string())
        .bind(&ep.url)
        .bind(&ep.secret)
        .bind(codec::event_types_json(ep.events.as_deref()))
        .bind(ep.livemode)
        .bind(ms(ep.created_at))
        .execute_alone(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn webhook_endpoints(
        &self,
        merchant: MerchantId,
        livemode: bool,
    ) -> StoreResult<Vec<WebhookEndpointRecord>> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints \
             WHERE merchant_id = ? AND livemode = ? AND NOT deleted ORDER BY id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(merchant.to_string())
            .bind(livemode)
            .fetch_all(&self.reader)
            .await
            .map_err(unavailable)?;
        rows.iter().map(codec::endpoint).collect()
    }

    async fn webhook_endpoint(
        &self,
        merchant: MerchantId,
        id: &str,
    ) -> StoreResult<Option<WebhookEndpointRecord>> {
        let sql = format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints \
             WHERE merchant_id = ? AND id = ? AND NOT deleted"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(merchant.to_string())
            .bind(id)
            .fetch_optional(&self.reader)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(codec::endpoint).transpose()
    }

    async fn rotate_webhook_secret(
        &self,
        merchant: MerchantId,
        id: &str,
        rotation: &SecretRotation<'_>,
    ) -> StoreResult<Option<String>> {
        let mut tx = self.begin().await?;
        let current: Option<String> = sqlx::query_scalar(
            "SELECT secret FROM webhook_endpoints WHERE merchant_id = ? AND id = ? AND NOT deleted",
        )
        .bind(merchant.to_string())
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some(current) = current else { return Ok(None) };
        if let Some(key) = rotation.idempotency_key {
            let made: Option<String> = sqlx::query_scalar(
                "SELECT secret FROM webhook_rotations WHERE endpoint_id = ? AND idempotency_key = ?",
            )
            .bind(id)
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
            if made.is_some() {
                return Ok(made);
            }
            sqlx::query(
                "INSERT INTO webhook_rotations (endpoint_id, idempotency_key, secret) VALUES (?, ?, ?)",
            )
            .bind(id)
            .bind(key)
            .bind(rotation.secret)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        sqlx::query("DELETE FROM webhook_old_secrets WHERE endpoint_id = ? AND expires_at <= ?")
            .bind(id)
            .bind(ms(rotation.now))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO webhook_old_secrets (endpoint_id, secret, expires_at) VALUES (?, ?, ?)",
        )
        .bind(id)
        .bind(&current)
        .bind(ms(rotation.old_expires_at))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        sqlx::query("UPDATE webhook_endpoints SET secret = ? WHERE id = ?")
            .bind(rotation.secret)
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(Some(rotation.secret.to_owned()))
    }

    async fn delete_webhook_endpoint(&self, merchant: MerchantId, id: &str) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE webhook_endpoints SET deleted = TRUE WHERE merchant_id = ? AND id = ? AND NOT deleted",
        )
        .bind(merchant.to_string())
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if done == 1 {
            // Nothing more goes to a deleted endpoint.
            sqlx::query(
                "UPDATE deliveries SET status = 'canceled' WHERE endpoint_id = ? AND status = 'pending'",
            )
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(done == 1)
    }

    async fn deliveries_for_event(
        &self,
        merchant: MerchantId,
        event: EventId,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let rows = sqlx::query(
            "SELECT d.id, d.endpoint_id, w.url, d.status, d.next_attempt_at, d.delivered_at \
             FROM deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id \
               JOIN events e ON e.id = d.event_id \
             WHERE d.event_id = ? AND e.merchant_id = ? ORDER BY d.id",
        )
        .bind(event.to_string())
        .bind(merchant.to_string())
        .fetch_all(&self.reader)
        .await
        .map_err(unavailable)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let attempts = sqlx::query(
                "SELECT at, status_code, latency_ms, error FROM delivery_attempts \
                 WHERE delivery_id = ? ORDER BY at, id",
            )
            .bind(row.text("id")?)
            .fetch_all(&self.reader)
            .await
            .map_err(unavailable)?
            .iter()
            .map(codec::delivery_attempt)
            .collect::<StoreResult<Vec<_>>>()?;
            out.push(codec::delivery(row, attempts)?);
        }
        Ok(out)
    }

    async fn redeliver_event(
        &self,
        merchant: MerchantId,
        event: EventId,
        now: OffsetDateTime,
    ) -> StoreResult<u64> {
        let mut tx = self.begin().await?;
        let row = sqlx::query("SELECT type, livemode FROM events WHERE id = ? AND merchant_id = ?")
            .bind(event.to_string())
            .bind(merchant.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
            .ok_or(StoreError::NotFound)?;
        let kind: EventType = parse(row.text("type")?, "event type")?;
        let livemode = row.flag("livemode")?;
        let mut count = 0;
        for (endpoint_id, endpoint) in subscribers(&mut tx, merchant).await? {
            if !rules::receives(&endpoint, kind, livemode) {
                continue;
            }
            let updated = sqlx::query(
                "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, window_started_at = ?, \
                 locked_until = NULL WHERE event_id = ? AND endpoint_id = ?",
            )
            .bind(ms(now))
            .bind(ms(now))
            .bind(event.to_string())
            .bind(&endpoint_id)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?
            .rows_affected();
            if updated == 0 {
                insert_delivery(&mut tx, &event.to_string(), &endpoint_id, now).await?;
            }
            count += 1;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(count)
    }

    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog> {
        let (undelivered, oldest): (i64, Option<i64>) = sqlx::query_as(
            "SELECT COUNT(*), MIN(e.created_at) FROM deliveries d \
             JOIN events e ON e.id = d.event_id WHERE d.status = 'pending'",
        )
        .fetch_one(&self.reader)
        .await
        .map_err(unavailable)?;
        Ok(OutboxBacklog {
            undelivered: u64::try_from(undelivered).unwrap_or(0),
            oldest_undelivered_at: oldest.map(codec::from_ms).transpose()?,
        })
    }
}
