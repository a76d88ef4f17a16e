//! The work queue: leases on the payments and refunds the sweeper checks and on the deliveries
//! the dispatcher sends. One writer runs every claim, so a claim's read and its lease are atomic.

use async_trait::async_trait;
use paymux_core::{PaymentId, RefundId};
use rusqlite::{Row, params};
use time::OffsetDateTime;

use super::{Sql, SqliteStore};
use crate::codec::{self, Columns, DUE_EVENT_COLUMNS, PAYMENT_COLUMNS, REFUND_COLUMNS, ms};
use crate::error::unavailable;
use crate::rules;
use crate::*;

impl SqliteStore {
    /// Rows of `table` (payments or refunds) in one of `statuses` whose next check is due, leased
    /// until `lease_until`: pushing `next_check_at` out hides them from other sweepers till then.
    /// Each row reads back with `map`; the rows are leased even when one of them does not read
    /// back (the claim then fails after its commit).
    #[allow(clippy::too_many_arguments)]
    async fn claim_due_rows<T: Send + 'static>(
        &self,
        table: &'static str,
        columns: &'static str,
        statuses: &'static str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
        map: fn(&Row<'_>) -> StoreResult<T>,
    ) -> StoreResult<Vec<T>> {
        let select = format!(
            "SELECT {columns} FROM {table} WHERE next_check_at IS NOT NULL AND next_check_at <= ? \
             AND status IN ({statuses}) ORDER BY next_check_at LIMIT ?"
        );
        let lease = format!("UPDATE {table} SET next_check_at = ? WHERE id = ?");
        let rows = self
            .write(move |tx| {
                let rows = tx.all(&select, params![ms(now), i64::from(limit)], |row| {
                    Ok((row.text("id")?, map(row)))
                })?;
                for (id, _) in &rows {
                    tx.exec(&lease, params![ms(lease_until), id])?;
                }
                Ok(rows)
            })
            .await?;
        rows.into_iter().map(|(_, record)| record).collect()
    }

    /// Compare-and-set on a lease column: the row is still ours only while the lease we wrote is
    /// the one in it.
    async fn renew_lease(
        &self,
        table: &'static str,
        column: &'static str,
        id: String,
        held: OffsetDateTime,
        until: OffsetDateTime,
    ) -> StoreResult<bool> {
        let sql = format!("UPDATE {table} SET {column} = ? WHERE id = ? AND {column} = ?");
        let done = self.write(move |tx| tx.exec(&sql, params![ms(until), id, ms(held)])).await?;
        Ok(done == 1)
    }

    /// The next sweeper check of a payment or refund, one step further along its backoff.
    async fn schedule_check(
        &self,
        table: &'static str,
        id: String,
        at: OffsetDateTime,
    ) -> StoreResult<()> {
        let sql = format!(
            "UPDATE {table} SET next_check_at = ?, check_count = check_count + 1 WHERE id = ?"
        );
        self.write(move |tx| tx.exec(&sql, params![ms(at), id]).map(drop)).await
    }
}

#[async_trait]
impl WorkQueue for SqliteStore {
    async fn claim_due_payments(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<PaymentRecord>> {
        self.claim_due_rows(
            "payments",
            PAYMENT_COLUMNS,
            "'pending', 'closed', 'succeeded', 'failed'",
            now,
            lease_until,
            limit,
            |r| codec::payment(r),
        )
        .await
    }

    async fn schedule_payment_check(&self, id: PaymentId, at: OffsetDateTime) -> StoreResult<()> {
        self.schedule_check("payments", id.to_string(), at).await
    }

    async fn stop_payment_checks(&self, id: PaymentId) -> StoreResult<()> {
        self.write(move |tx| {
            tx.exec(
                "UPDATE payments SET next_check_at = NULL WHERE id = ?",
                params![id.to_string()],
            )
            .map(drop)
        })
        .await
    }

    async fn claim_due_refunds(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<RefundRecord>> {
        self.claim_due_rows("refunds", REFUND_COLUMNS, "'pending'", now, lease_until, limit, |r| {
            codec::refund(r)
        })
        .await
    }

    async fn schedule_refund_check(&self, id: RefundId, at: OffsetDateTime) -> StoreResult<()> {
        self.schedule_check("refunds", id.to_string(), at).await
    }

    async fn renew_payment_lease(
        &self,
        id: PaymentId,
        held: OffsetDateTime,
        until: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.renew_lease("payments", "next_check_at", id.to_string(), held, until).await
    }

    async fn renew_refund_lease(
        &self,
        id: RefundId,
        held: OffsetDateTime,
        until: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.renew_lease("refunds", "next_check_at", id.to_string(), held, until).await
    }

    async fn claim_due_deliveries(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<DueDelivery>> {
        let sql = format!(
            "SELECT d.id AS delivery_id, d.attempts, d.window_started_at, w.id AS endpoint_id, \
               w.url, w.secret, {DUE_EVENT_COLUMNS} \
             FROM deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id \
               JOIN events e ON e.id = d.event_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= ? AND NOT w.deleted \
               AND (d.locked_until IS NULL OR d.locked_until <= ?) \
             ORDER BY d.next_attempt_at LIMIT ?"
        );
        self.write(move |tx| {
            // Every due row is read (with its endpoint's previous secrets) before the first
            // lease is written, so the leases never change rows the select is still reading.
            let out = tx.all(&sql, params![ms(now), ms(now), i64::from(limit)], |row| {
                let previous_secrets = tx.all(
                    "SELECT secret FROM webhook_old_secrets WHERE endpoint_id = ? \
                     AND expires_at > ? ORDER BY expires_at DESC",
                    params![row.text("endpoint_id")?, ms(now)],
                    |r| r.text("secret"),
                )?;
                codec::due_delivery(row, previous_secrets)
            })?;
            for due in &out {
                tx.exec(
                    "UPDATE deliveries SET locked_until = ? WHERE id = ?",
                    params![ms(lease_until), &due.delivery_id],
                )?;
            }
            Ok(out)
        })
        .await
    }

    async fn renew_delivery_lease(
        &self,
        delivery_id: &str,
        held: OffsetDateTime,
        until: OffsetDateTime,
    ) -> StoreResult<bool> {
        self.renew_lease("deliveries", "locked_until", delivery_id.to_owned(), held, until).await
    }

    async fn record_delivery_attempt(
        &self,
        delivery_id: &str,
        a: &DeliveryAttemptRecord,
        next: DeliveryNext,
    ) -> StoreResult<()> {
        let delivery_id = delivery_id.to_owned();
        let a = a.clone();
        self.write(move |tx| {
            tx.exec(
                "INSERT INTO delivery_attempts (id, delivery_id, at, status_code, latency_ms, error) \
                 VALUES (?, ?, ?, ?, ?, ?)",
                params![
                    format!("att_{}", uuid::Uuid::now_v7().simple()),
                    &delivery_id,
                    ms(a.at),
                    a.status_code.map(i64::from),
                    a.latency_ms,
                    &a.error,
                ],
            )?;
            let update = rules::delivery_update(next, a.at);
            tx.exec(
                "UPDATE deliveries SET status = ?, attempts = attempts + 1, next_attempt_at = ?, \
                 delivered_at = COALESCE(?, delivered_at), locked_until = NULL WHERE id = ?",
                params![
                    update.status,
                    ms(update.next_attempt_at),
                    update.delivered_at.map(ms),
                    &delivery_id,
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn sweeper_backlog(&self, now: OffsetDateTime) -> StoreResult<SweeperBacklog> {
        let (payments, refunds): (i64, i64) = self
            .scan(move |c| {
                c.one(
                    "SELECT \
                   (SELECT COUNT(*) FROM payments WHERE next_check_at <= ? \
                      AND status IN ('pending', 'closed', 'succeeded', 'failed')), \
                   (SELECT COUNT(*) FROM refunds WHERE next_check_at <= ? AND status = 'pending')",
                    params![ms(now), ms(now)],
                    |r| Ok((r.get(0).map_err(unavailable)?, r.get(1).map_err(unavailable)?)),
                )?
                .ok_or_else(|| unavailable(rusqlite::Error::QueryReturnedNoRows))
            })
            .await?;
        Ok(SweeperBacklog {
            payments_due: u64::try_from(payments).unwrap_or(0),
            refunds_due: u64::try_from(refunds).unwrap_or(0),
        })
    }
}
