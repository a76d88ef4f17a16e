//! The outbox: events, webhook endpoints and deliveries.

use async_trait::async_trait;
use paymux_core::{EventId, EventType, MerchantId};
use rusqlite::{Connection, params};
use time::OffsetDateTime;

use super::{Sql, SqliteStore};
use crate::codec::{self, Columns, ENDPOINT_COLUMNS, EVENT_COLUMNS, ms, parse};
use crate::error::unavailable;
use crate::rules::{self, Subscriber};
use crate::*;

/// The merchant's endpoints, as event routing sees them.
fn subscribers(c: &Connection, merchant: MerchantId) -> StoreResult<Vec<(String, Subscriber)>> {
    c.all(
        "SELECT id, events, livemode, deleted FROM webhook_endpoints WHERE merchant_id = ?",
        params![merchant.to_string()],
        |r| codec::subscriber(r),
    )
}

/// Writes events of one mode (their object's) and, in the same transaction, a delivery to each
/// endpoint that receives them.
pub(super) fn insert_events(
    c: &Connection,
    merchant: MerchantId,
    livemode: bool,
    events: &[NewEvent],
    at: OffsetDateTime,
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let endpoints = subscribers(c, merchant)?;
    for e in events {
        c.exec(
            "INSERT INTO events (id, merchant_id, type, object_id, data, livemode, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
            params![
                e.id.to_string(),
                merchant.to_string(),
                e.kind.as_str(),
                &e.object_id,
                e.data.to_string(),
                livemode,
                ms(at),
            ],
        )?;
        for (id, endpoint) in &endpoints {
            if rules::receives(endpoint, e.kind, livemode) {
                insert_delivery(c, &e.id.to_string(), id, at)?;
            }
        }
    }
    Ok(())
}

fn insert_delivery(
    c: &Connection,
    event_id: &str,
    endpoint_id: &str,
    at: OffsetDateTime,
) -> StoreResult<()> {
    c.exec(
        "INSERT INTO deliveries (id, event_id, endpoint_id, status, attempts, next_attempt_at, \
         window_started_at, created_at) VALUES (?, ?, ?, 'pending', 0, ?, ?, ?)",
        params![
            format!("dlv_{}", uuid::Uuid::now_v7().simple()),
            event_id,
            endpoint_id,
            ms(at),
            ms(at),
            ms(at),
        ],
    )?;
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
        self.read(|c| {
            c.all(
                &sql,
                params![
                    merchant.to_string(),
                    livemode,
                    after.clone(),
                    after,
                    i64::from(limit.clamp(1, 100)),
                ],
                |r| codec::event(r),
            )
        })
    }

    async fn event(&self, merchant: MerchantId, id: EventId) -> StoreResult<Option<EventRecord>> {
        let sql = format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ? AND merchant_id = ?");
        self.read(|c| {
            c.one(&sql, params![id.to_string(), merchant.to_string()], |r| codec::event(r))
        })
    }

    async fn create_webhook_endpoint(&self, ep: &WebhookEndpointRecord) -> StoreResult<()> {
        let ep = ep.clone();
        self.write(move |tx| {
            tx.exec(
                "INSERT INTO webhook_endpoints (id, merchant_id, url, secret, events, livemode, \
                 created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                params![
                    &ep.id,
                    ep.merchant_id.to_string(),
                    &ep.url,
                    &ep.secret,
                    codec::event_types_json(ep.events.as_deref()),
                    ep.livemode,
                    ms(ep.created_at),
                ],
            )
            .map(drop)
        })
        .await
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
        self.read(|c| c.all(&sql, params![merchant.to_string(), livemode], |r| codec::endpoint(r)))
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
        self.read(|c| c.one(&sql, params![merchant.to_string(), id], |r| codec::endpoint(r)))
    }

    async fn rotate_webhook_secret(
        &self,
        merchant: MerchantId,
        id: &str,
        rotation: &SecretRotation<'_>,
    ) -> StoreResult<Option<String>> {
        let id = id.to_owned();
        let secret = rotation.secret.to_owned();
        let idempotency_key = rotation.idempotency_key.map(str::to_owned);
        let now = rotation.now;
        let old_expires_at = rotation.old_expires_at;
        self.write(move |tx| {
            let current: Option<String> = tx.one(
                "SELECT secret FROM webhook_endpoints WHERE merchant_id = ? AND id = ? AND NOT deleted",
                params![merchant.to_string(), &id],
                |r| r.text("secret"),
            )?;
            let Some(current) = current else {
                tx.roll_back();
                return Ok(None);
            };
            if let Some(key) = &idempotency_key {
                let made: Option<String> = tx.one(
                    "SELECT secret FROM webhook_rotations WHERE endpoint_id = ? AND idempotency_key = ?",
                    params![&id, key],
                    |r| r.text("secret"),
                )?;
                if made.is_some() {
                    tx.roll_back();
                    return Ok(made);
                }
                tx.exec(
                    "INSERT INTO webhook_rotations (endpoint_id, idempotency_key, secret) VALUES (?, ?, ?)",
                    params![&id, key, &secret],
                )?;
            }
            tx.exec(
                "DELETE FROM webhook_old_secrets WHERE endpoint_id = ? AND expires_at <= ?",
                params![&id, ms(now)],
            )?;
            tx.exec(
                "INSERT INTO webhook_old_secrets (endpoint_id, secret, expires_at) VALUES (?, ?, ?)",
                params![&id, &current, ms(old_expires_at)],
            )?;
            tx.exec(
                "UPDATE webhook_endpoints SET secret = ? WHERE id = ?",
                params![&secret, &id],
            )?;
            Ok(Some(secret))
        })
        .await
    }

    async fn delete_webhook_endpoint(&self, merchant: MerchantId, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(move |tx| {
            let done = tx.exec(
                "UPDATE webhook_endpoints SET deleted = TRUE WHERE merchant_id = ? AND id = ? AND NOT deleted",
                params![merchant.to_string(), &id],
            )?;
            if done == 1 {
                // Nothing more goes to a deleted endpoint.
                tx.exec(
                    "UPDATE deliveries SET status = 'canceled' WHERE endpoint_id = ? AND status = 'pending'",
                    params![&id],
                )?;
            }
            Ok(done == 1)
        })
        .await
    }

    async fn deliveries_for_event(
        &self,
        merchant: MerchantId,
        event: EventId,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        self.read(|c| {
            // Each delivery's attempts are read while its row is at hand (a second statement on
            // the same connection).
            c.all(
                "SELECT d.id, d.endpoint_id, w.url, d.status, d.next_attempt_at, d.delivered_at \
                 FROM deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id \
                   JOIN events e ON e.id = d.event_id \
                 WHERE d.event_id = ? AND e.merchant_id = ? ORDER BY d.id",
                params![event.to_string(), merchant.to_string()],
                |row| {
                    let attempts = c.all(
                        "SELECT at, status_code, latency_ms, error FROM delivery_attempts \
                         WHERE delivery_id = ? ORDER BY at, id",
                        params![row.text("id")?],
                        |r| codec::delivery_attempt(r),
                    )?;
                    codec::delivery(row, attempts)
                },
            )
        })
    }

    async fn redeliver_event(
        &self,
        merchant: MerchantId,
        event: EventId,
        now: OffsetDateTime,
    ) -> StoreResult<u64> {
        self.write(move |tx| {
            let (kind, livemode): (EventType, bool) = tx
                .one(
                    "SELECT type, livemode FROM events WHERE id = ? AND merchant_id = ?",
                    params![event.to_string(), merchant.to_string()],
                    |row| Ok((parse(row.text("type")?, "event type")?, row.flag("livemode")?)),
                )?
                .ok_or(StoreError::NotFound)?;
            let mut count = 0;
            for (endpoint_id, endpoint) in subscribers(tx, merchant)? {
                if !rules::receives(&endpoint, kind, livemode) {
                    continue;
                }
                let updated = tx.exec(
                    "UPDATE deliveries SET status = 'pending', next_attempt_at = ?, window_started_at = ?, \
                     locked_until = NULL WHERE event_id = ? AND endpoint_id = ?",
                    params![ms(now), ms(now), event.to_string(), &endpoint_id],
                )?;
                if updated == 0 {
                    insert_delivery(tx, &event.to_string(), &endpoint_id, now)?;
                }
                count += 1;
            }
            Ok(count)
        })
        .await
    }

    async fn outbox_backlog(&self) -> StoreResult<OutboxBacklog> {
        let (undelivered, oldest): (i64, Option<i64>) = self
            .scan(|c| {
                c.one(
                    "SELECT COUNT(*), MIN(e.created_at) FROM deliveries d \
                 JOIN events e ON e.id = d.event_id WHERE d.status = 'pending'",
                    [],
                    |r| Ok((r.get(0).map_err(unavailable)?, r.get(1).map_err(unavailable)?)),
                )?
                .ok_or_else(|| unavailable(rusqlite::Error::QueryReturnedNoRows))
            })
            .await?;
        Ok(OutboxBacklog {
            undelivered: u64::try_from(undelivered).unwrap_or(0),
            oldest_undelivered_at: oldest.map(codec::from_ms).transpose()?,
        })
    }
}
