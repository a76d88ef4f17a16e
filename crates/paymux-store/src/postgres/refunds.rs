//! Refunds and their reservations on the payment.

use async_trait::async_trait;
use paymux_core::{ChannelOrderNo, MerchantId, PaymentId, RefundId};
use time::OffsetDateTime;

use super::idempotency::bind_idempotency_key;
use super::outbox::insert_events;
use super::settlement::{Movement, record_movement};
use super::{PgStore, Tx};
use crate::codec::{self, Columns, REFUND_COLUMNS, ms, parse};
use crate::error::{unavailable, unique_or};
use crate::rules::{self, Refundable};
use crate::*;

/// The payment's refundable state, locked for the rest of the transaction: refunds of one payment
/// from any instance check and write its reservation one at a time.
async fn refundable(tx: &mut Tx, payment: PaymentId) -> StoreResult<Refundable> {
    let row = sqlx::query(
        "SELECT status, amount, amount_reserved + amount_over_reserved AS reserved \
         FROM payments WHERE id = $1 FOR UPDATE",
    )
    .bind(payment.to_string())
    .fetch_optional(&mut **tx)
    .await
    .map_err(unavailable)?
    .ok_or(StoreError::NotFound)?;
    Ok(Refundable {
        status: parse(row.text("status")?, "payment status")?,
        amount: row.int("amount")?,
        reserved: row.int("reserved")?,
    })
}

#[async_trait]
impl RefundStore for PgStore {
    async fn insert_refund(
        &self,
        r: &RefundRecord,
        first_check_at: OffsetDateTime,
        idempotency_key: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let payment = refundable(&mut tx, r.payment_id).await?;
        rules::check_refund(&payment, r.amount.minor())?;
        // Guarded in SQL too: the reservation never passes the amount, whatever the code above read.
        let reserved = sqlx::query(
            "UPDATE payments SET amount_reserved = amount_reserved + $1 \
             WHERE id = $2 AND status = 'succeeded' \
               AND amount_reserved + amount_over_reserved + $3 <= amount",
        )
        .bind(r.amount.minor())
        .bind(r.payment_id.to_string())
        .bind(r.amount.minor())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if reserved != 1 {
            return Err(StoreError::RefundExceedsAmount {
                requested: r.amount.minor(),
                available: (payment.amount - payment.reserved).max(0),
            });
        }
        // Read after the reservation locked the payment's row: a settle that started a split
        // commits before this read or waits for this transaction (it locks the row too).
        let settlement = sqlx::query("SELECT status FROM settlements WHERE payment_id = $1")
            .bind(r.payment_id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        if let Some(row) = settlement {
            let status: paymux_core::SettlementStatus =
                parse(row.text("status")?, "settlement status")?;
            if matches!(
                status,
                paymux_core::SettlementStatus::Settling | paymux_core::SettlementStatus::Failed
            ) {
                return Err(StoreError::SettlementBusy(status));
            }
        }
        insert_refund_row(&mut tx, r, first_check_at).await?;
        bind_idempotency_key(&mut tx, r.merchant_id, idempotency_key, &r.id.to_string()).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn refund(
        &self,
        merchant: MerchantId,
        id: RefundId,
    ) -> StoreResult<Option<RefundRecord>> {
        let sql =
            format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE id = $1 AND merchant_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .bind(merchant.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(codec::refund).transpose()
    }

    async fn refund_by_merchant_refund_no(
        &self,
        merchant: MerchantId,
        merchant_refund_no: &str,
    ) -> StoreResult<Option<RefundRecord>> {
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE merchant_id = $1 AND merchant_refund_no = $2"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(merchant.to_string())
            .bind(merchant_refund_no)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(codec::refund).transpose()
    }

    async fn list_refunds(
        &self,
        merchant: MerchantId,
        filter: &RefundFilter,
    ) -> StoreResult<Vec<RefundRecord>> {
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE merchant_id = $1 AND livemode = $2 \
             AND ($3 IS NULL OR payment_id = $4) AND ($5 IS NULL OR merchant_refund_no = $6) \
             AND ($7 IS NULL OR id < $8) ORDER BY id DESC LIMIT $9"
        );
        let payment = filter.payment_id.map(|p| p.to_string());
        let refund_no = filter.merchant_refund_no.as_deref();
        let before = filter.before.map(|b| b.to_string());
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(merchant.to_string())
            .bind(filter.livemode)
            .bind(payment.clone())
            .bind(payment)
            .bind(refund_no)
            .bind(refund_no)
            .bind(before.clone())
            .bind(before)
            .bind(i64::from(filter.limit.clamp(1, 100)))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(codec::refund).collect()
    }

    async fn refund_by_channel_refund_no(
        &self,
        channel_refund_no: &ChannelOrderNo,
    ) -> StoreResult<Option<RefundRecord>> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE channel_refund_no = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(channel_refund_no.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(codec::refund).transpose()
    }

    async fn transition_refund(&self, c: &RefundTransition) -> StoreResult<bool> {
        if !c.from.can_become(c.to) {
            return Ok(false);
        }
        let Some(settlement) = rules::refund_settlement(c.from, c.to, c.amount) else {
            return Ok(false);
        };
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE refunds SET status = $1, channel_refund_id = COALESCE($2, channel_refund_id), \
               succeeded_at = COALESCE($3, succeeded_at), failure_code = $4, failure_message = $5, \
               updated_at = $6, next_check_at = NULL \
             WHERE id = $7 AND status = $8 RETURNING livemode",
        )
        .bind(c.to.as_str())
        .bind(&c.channel_refund_id)
        .bind(c.succeeded_at.map(ms))
        .bind(&c.failure_code)
        .bind(&c.failure_message)
        .bind(ms(c.at))
        .bind(c.refund_id.to_string())
        .bind(c.from.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some(changed) = done else {
            return Ok(false);
        };
        let livemode = changed.flag("livemode")?;
        if c.of_duplicate {
            // The refund of a duplicate payment: the payment's own totals do not move; the
            // ledger gives the duplicate's money back.
            record_movement(
                &mut tx,
                c.payment_id,
                Movement::DuplicateRefunded(settlement.refunded),
                c.at,
            )
            .await?;
            insert_events(&mut tx, c.merchant_id, livemode, &c.events, c.at).await?;
            tx.commit().await.map_err(unavailable)?;
            return Ok(true);
        }
        let payment = refundable(&mut tx, c.payment_id).await?;
        let next = rules::reservations(payment.amount, payment.reserved, settlement);
        sqlx::query(
            "UPDATE payments SET amount_refunded = amount_refunded + $1, amount_reserved = $2, \
             amount_over_reserved = $3, updated_at = $4 WHERE id = $5",
        )
        .bind(settlement.refunded)
        .bind(next.amount_reserved)
        .bind(next.amount_over_reserved)
        .bind(ms(c.at))
        .bind(c.payment_id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        record_movement(&mut tx, c.payment_id, Movement::Refunded(settlement.refunded), c.at)
            .await?;
        insert_events(&mut tx, c.merchant_id, livemode, &c.events, c.at).await?;
        if next.over_refunded {
            insert_events(&mut tx, c.merchant_id, livemode, &c.over_refund_events, c.at).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn stop_refund_resends(&self, id: RefundId, code: &str) -> StoreResult<()> {
        sqlx::query("UPDATE refunds SET resend_declined_code = $1 WHERE id = $2")
            .bind(code)
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn mark_refund_action_required(&self, c: &RefundActionRequired) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE refunds SET action_required_at = $1, \
               channel_refund_id = COALESCE($2, channel_refund_id), updated_at = $3 \
             WHERE id = $4 AND status = 'pending' AND action_required_at IS NULL RETURNING livemode",
        )
        .bind(ms(c.at))
        .bind(&c.channel_refund_id)
        .bind(ms(c.at))
        .bind(c.refund_id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some(changed) = done else {
            return Ok(false);
        };
        insert_events(&mut tx, c.merchant_id, changed.flag("livemode")?, &c.events, c.at).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }
}

/// Writes a refund row, due for its first sweeper check at `first_check_at`, in the caller's
/// transaction. Reserving its amount on the payment (or not) is the caller's part.
pub(super) async fn insert_refund_row(
    tx: &mut Tx,
    r: &RefundRecord,
    first_check_at: OffsetDateTime,
) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO refunds (id, merchant_id, payment_id, merchant_refund_no, channel_refund_no, \
         amount, currency, status, reason, channel_refund_id, failure_code, failure_message, \
         created_at, succeeded_at, updated_at, next_check_at, livemode, attempt_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(r.id.to_string())
    .bind(r.merchant_id.to_string())
    .bind(r.payment_id.to_string())
    .bind(&r.merchant_refund_no)
    .bind(r.channel_refund_no.as_str())
    .bind(r.amount.minor())
    .bind(r.amount.currency().code())
    .bind(r.status.as_str())
    .bind(&r.reason)
    .bind(&r.channel_refund_id)
    .bind(&r.failure_code)
    .bind(&r.failure_message)
    .bind(ms(r.created_at))
    .bind(r.succeeded_at.map(ms))
    .bind(ms(r.updated_at))
    .bind(ms(first_check_at))
    .bind(r.livemode)
    .bind(r.attempt_id.map(|a| a.to_string()))
    .execute(&mut **tx)
    .await
    .map_err(|e| unique_or(e, "merchant_refund_no"))?;
    Ok(())
}
