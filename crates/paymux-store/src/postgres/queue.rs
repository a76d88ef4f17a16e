//! The work queue: leases on the payments and refunds the sweeper checks and on the deliveries
//! the dispatcher sends. A claim locks the due rows it takes `FOR UPDATE SKIP LOCKED` and writes
//! their lease before it commits: a concurrent claim on another instance skips them, and once the
//! lease is written they are no longer due until it runs out.

use async_trait::async_trait;
use paymux_core::{PaymentId, RefundId};
use sqlx::postgres::PgRow;
use time::OffsetDateTime;

use super::PgStore;
use crate::codec::{self, Columns, DUE_EVENT_COLUMNS, PAYMENT_COLUMNS, REFUND_COLUMNS, ms};
use crate::error::unavailable;
use crate::rules;
use crate::*;

impl PgStore {
    /// Rows of `table` (payments or refunds) in one of `statuses` whose next check is due, leased
    /// until `lease_until`: pushing `next_check_at` out hides them from other sweepers till then.
    async fn claim_due_rows(
        &self,
        table: &'static str,
        columns: &'static str,
        statuses: &'static str,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<PgRow>> {
        let mut tx = self.begin().await?;
        let select = format!(
            "SELECT {columns} FROM {table} WHERE next_check_at IS NOT NULL AND next_check_at <= $1 \
             AND status IN ({statuses}) ORDER BY next_check_at LIMIT $2 FOR UPDATE SKIP LOCKED"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(select))
            .bind(ms(now))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        let ids = rows.iter().map(|row| row.text("id")).collect::<StoreResult<Vec<_>>>()?;
        let lease = format!("UPDATE {table} SET next_check_at = $1 WHERE id = ANY($2)");
        sqlx::query(sqlx::AssertSqlSafe(lease))
            .bind(ms(lease_until))
            .bind(ids)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(rows)
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
        let sql = format!("UPDATE {table} SET {column} = $1 WHERE id = $2 AND {column} = $3");
        let done = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(until))
            .bind(id)
            .bind(ms(held))
            .execute(&self.pool)
            .await
            .map_err(unavailable)?
            .rows_affected();
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
            "UPDATE {table} SET next_check_at = $1, check_count = check_count + 1 WHERE id = $2"
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(at))
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl WorkQueue for PgStore {
    async fn claim_due_payments(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<PaymentRecord>> {
        let rows = self
            .claim_due_rows(
                "payments",
                PAYMENT_COLUMNS,
                "'pending', 'closed', 'succeeded', 'failed'",
                now,
                lease_until,
                limit,
            )
            .await?;
        rows.iter().map(codec::payment).collect()
    }

    async fn schedule_payment_check(&self, id: PaymentId, at: OffsetDateTime) -> StoreResult<()> {
        self.schedule_check("payments", id.to_string(), at).await
    }

    async fn stop_payment_checks(&self, id: PaymentId) -> StoreResult<()> {
        sqlx::query("UPDATE payments SET next_check_at = NULL WHERE id = $1")
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn claim_due_refunds(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<RefundRecord>> {
        let rows = self
            .claim_due_rows("refunds", REFUND_COLUMNS, "'pending'", now, lease_until, limit)
            .await?;
        rows.iter().map(codec::refund).collect()
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
        let mut tx = self.begin().await?;
        let sql = format!(
            "SELECT d.id AS delivery_id, d.attempts, d.window_started_at, w.id AS endpoint_id, \
               w.url, w.secret, {DUE_EVENT_COLUMNS} \
             FROM deliveries d JOIN webhook_endpoints w ON w.id = d.endpoint_id \
               JOIN events e ON e.id = d.event_id \
             WHERE d.status = 'pending' AND d.next_attempt_at <= $1 AND NOT w.deleted \
               AND (d.locked_until IS NULL OR d.locked_until <= $2) \
             ORDER BY d.next_attempt_at LIMIT $3 FOR UPDATE OF d SKIP LOCKED"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(now))
            .bind(ms(now))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let previous_secrets = sqlx::query_scalar(
                "SELECT secret FROM webhook_old_secrets WHERE endpoint_id = $1 \
                 AND expires_at > $2 ORDER BY expires_at DESC",
            )
            .bind(row.text("endpoint_id")?)
            .bind(ms(now))
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
            let due = codec::due_delivery(row, previous_secrets)?;
            sqlx::query("UPDATE deliveries SET locked_until = $1 WHERE id = $2")
                .bind(ms(lease_until))
                .bind(&due.delivery_id)
                .execute(&mut *tx)
                .await
                .map_err(unavailable)?;
            out.push(due);
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(out)
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
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO delivery_attempts (id, delivery_id, at, status_code, latency_ms, error) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(format!("att_{}", uuid::Uuid::now_v7().simple()))
        .bind(delivery_id)
        .bind(ms(a.at))
        .bind(a.status_code.map(i64::from))
        .bind(a.latency_ms)
        .bind(&a.error)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let update = rules::delivery_update(next, a.at);
        sqlx::query(
            "UPDATE deliveries SET status = $1, attempts = attempts + 1, next_attempt_at = $2, \
             delivered_at = COALESCE($3, delivered_at), locked_until = NULL WHERE id = $4",
        )
        .bind(update.status)
        .bind(ms(update.next_attempt_at))
        .bind(update.delivered_at.map(ms))
        .bind(delivery_id)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn sweeper_backlog(&self, now: OffsetDateTime) -> StoreResult<SweeperBacklog> {
        let (payments, refunds): (i64, i64) = sqlx::query_as(
            "SELECT \
               (SELECT COUNT(*) FROM payments WHERE next_check_at <= $1 \
                  AND status IN ('pending', 'closed', 'succeeded', 'failed')), \
               (SELECT COUNT(*) FROM refunds WHERE next_check_at <= $1 AND status = 'pending')",
        )
        .bind(ms(now))
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(SweeperBacklog {
            payments_due: u64::try_from(payments).unwrap_or(0),
            refunds_due: u64::try_from(refunds).unwrap_or(0),
        })
    }
}
