//! Payments and their attempts.

use async_trait::async_trait;
use paymux_core::{AccountId, AttemptId, ChannelOrderNo, MerchantId, PaymentId, PaymentStatus};
use time::OffsetDateTime;

use super::idempotency::{bind_idempotency_key, keep_answer};
use super::inbound::insert_inbound;
use super::outbox::insert_events;
use super::refunds::insert_refund_row;
use super::settlement::{Movement, insert_settlement_row, record_movement};
use super::{PgStore, Tx};
use crate::codec::{self, ATTEMPT_COLUMNS, Columns, PAYMENT_COLUMNS, ms, parse};
use crate::error::{unavailable, unique_or};
use crate::*;

#[async_trait]
impl PaymentStore for PgStore {
    async fn insert_payment(
        &self,
        p: &PaymentRecord,
        a: &AttemptRecord,
        settlement: Option<&SettlementRecord>,
        first_check_at: OffsetDateTime,
        idempotency_key: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO payments (id, merchant_id, merchant_order_no, amount, currency, subject, \
             status, channel, method, account_id, channel_order_no, channel_trade_no, action, \
             amount_refunded, amount_reserved, failure_code, failure_message, client_ip, return_url, \
             payer, metadata, expires_at, paid_at, created_at, updated_at, next_check_at, livemode) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27)",
        )
        .bind(p.id.to_string())
        .bind(p.merchant_id.to_string())
        .bind(&p.merchant_order_no)
        .bind(p.amount.minor())
        .bind(p.amount.currency().code())
        .bind(&p.subject)
        .bind(p.status.as_str())
        .bind(p.channel.as_str())
        .bind(p.method.as_str())
        .bind(p.account_id.to_string())
        .bind(p.channel_order_no.as_str())
        .bind(&p.channel_trade_no)
        .bind(p.action.as_ref().map(|v| v.to_string()))
        .bind(p.amount_refunded)
        .bind(p.amount_reserved)
        .bind(&p.failure_code)
        .bind(&p.failure_message)
        .bind(&p.client_ip)
        .bind(&p.return_url)
        .bind(p.payer.as_ref().map(|v| v.to_string()))
        .bind(p.metadata.to_string())
        .bind(ms(p.expires_at))
        .bind(p.paid_at.map(ms))
        .bind(ms(p.created_at))
        .bind(ms(p.updated_at))
        .bind(ms(first_check_at))
        .bind(p.livemode)
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_or(e, "merchant_order_no"))?;
        insert_attempt_row(&mut tx, a).await?;
        if let Some(s) = settlement {
            insert_settlement_row(&mut tx, s).await?;
        }
        bind_idempotency_key(&mut tx, p.merchant_id, idempotency_key, &p.id.to_string()).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn insert_attempt(
        &self,
        a: &AttemptRecord,
        idempotency_key: Option<&str>,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        let shown = sqlx::query(
            "UPDATE payments SET channel = $1, method = $2, account_id = $3, channel_order_no = $4, \
             action = NULL, updated_at = $5 WHERE id = $6 AND status = 'pending' \
             RETURNING merchant_id",
        )
        .bind(a.channel.as_str())
        .bind(a.method.as_str())
        .bind(a.account_id.to_string())
        .bind(a.channel_order_no.as_str())
        .bind(ms(a.created_at))
        .bind(a.payment_id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some(shown) = shown else {
            let status = sqlx::query("SELECT status FROM payments WHERE id = $1")
                .bind(a.payment_id.to_string())
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?
                .ok_or(StoreError::NotFound)?;
            return Err(StoreError::PaymentNotPending(parse(
                status.text("status")?,
                "payment status",
            )?));
        };
        let merchant = parse(shown.text("merchant_id")?, "merchant id")?;
        insert_attempt_row(&mut tx, a).await?;
        bind_idempotency_key(&mut tx, merchant, idempotency_key, &a.payment_id.to_string()).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn record_created(
        &self,
        attempt: AttemptId,
        action: &serde_json::Value,
        channel_data: &serde_json::Value,
        answer: Option<KeptAnswer<'_>>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "UPDATE attempts SET action = $1, channel_data = $2 WHERE id = $3 \
             RETURNING payment_id, account_id, channel_order_no",
        )
        .bind(action.to_string())
        .bind(channel_data.to_string())
        .bind(attempt.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?
        .ok_or(StoreError::NotFound)?;
        let payment_id = row.text("payment_id")?;
        // The payment shows the action only while this attempt is the one it shows.
        sqlx::query(
            "UPDATE payments SET action = $1, updated_at = $2 \
             WHERE id = $3 AND account_id = $4 AND channel_order_no = $5",
        )
        .bind(action.to_string())
        .bind(ms(OffsetDateTime::now_utc()))
        .bind(&payment_id)
        .bind(row.text("account_id")?)
        .bind(row.text("channel_order_no")?)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let kept = match answer {
            None => false,
            Some(a) => keep_answer(&mut *tx, a, Some(&payment_id)).await?,
        };
        tx.commit().await.map_err(unavailable)?;
        Ok(kept)
    }

    async fn payment(
        &self,
        merchant: MerchantId,
        id: PaymentId,
    ) -> StoreResult<Option<PaymentRecord>> {
        let sql =
            format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1 AND merchant_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .bind(merchant.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(codec::payment).transpose()
    }

    async fn payment_by_order_no(
        &self,
        merchant: MerchantId,
        merchant_order_no: &str,
    ) -> StoreResult<Option<PaymentRecord>> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE merchant_id = $1 AND merchant_order_no = $2"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(merchant.to_string())
            .bind(merchant_order_no)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(codec::payment).transpose()
    }

    async fn list_payments(
        &self,
        merchant: MerchantId,
        filter: &PaymentFilter,
    ) -> StoreResult<Vec<PaymentRecord>> {
        // Optional filters as `? IS NULL OR col = ?`: one static statement, no string building.
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE merchant_id = $1 AND livemode = $2 \
             AND ($3 IS NULL OR merchant_order_no = $4) AND ($5 IS NULL OR status = $6) \
             AND ($7 IS NULL OR id < $8) ORDER BY id DESC LIMIT $9"
        );
        let order_no = filter.merchant_order_no.as_deref();
        let status = filter.status.map(|s| s.as_str());
        let before = filter.before.map(|b| b.to_string());
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(merchant.to_string())
            .bind(filter.livemode)
            .bind(order_no)
            .bind(order_no)
            .bind(status)
            .bind(status)
            .bind(before.clone())
            .bind(before)
            .bind(i64::from(filter.limit.clamp(1, 100)))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(codec::payment).collect()
    }

    async fn attempts(&self, payment: PaymentId) -> StoreResult<Vec<AttemptRecord>> {
        let sql =
            format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE payment_id = $1 ORDER BY id");
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(payment.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(codec::attempt).collect()
    }

    async fn attempt_by_channel_order_no(
        &self,
        account: AccountId,
        channel_order_no: &ChannelOrderNo,
    ) -> StoreResult<Option<AttemptRecord>> {
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE account_id = $1 AND channel_order_no = $2"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(account.to_string())
            .bind(channel_order_no.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(codec::attempt).transpose()
    }

    async fn transition_payment(&self, c: &PaymentTransition) -> StoreResult<bool> {
        if !c.from.can_become(c.to) {
            return Ok(false);
        }
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE payments SET status = $1, \
               channel_trade_no = COALESCE($2, channel_trade_no), \
               paid_at = COALESCE($3, paid_at), \
               failure_code = $4, failure_message = $5, updated_at = $6 \
             WHERE id = $7 AND status = $8 RETURNING livemode",
        )
        .bind(c.to.as_str())
        .bind(&c.channel_trade_no)
        .bind(c.paid_at.map(ms))
        .bind(&c.failure_code)
        .bind(&c.failure_message)
        .bind(ms(c.at))
        .bind(c.payment_id.to_string())
        .bind(c.from.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some(changed) = done else {
            return Ok(false);
        };
        if !change_attempt(&mut tx, c.payment_id, &c.attempt).await? {
            // Dropping the transaction rolls the payment's change back.
            return Ok(false);
        }
        if c.to == PaymentStatus::Succeeded {
            // The payment shows the attempt it succeeded with.
            sqlx::query(
                "UPDATE payments SET (channel, method, account_id, channel_order_no, action) = \
                 (SELECT a.channel, a.method, a.account_id, a.channel_order_no, \
                         COALESCE(a.action, payments.action) \
                  FROM attempts a WHERE a.id = $1) WHERE id = $2",
            )
            .bind(c.attempt.attempt_id.to_string())
            .bind(c.payment_id.to_string())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        // Read after the attempts were written in this transaction: an attempt added before it
        // began is seen (SQLite's one writer; PostgreSQL's row lock on the payment).
        sqlx::query(
            "UPDATE payments SET next_check_at = CASE WHEN EXISTS \
               (SELECT 1 FROM attempts WHERE payment_id = $1 AND watching) \
             THEN COALESCE(next_check_at, $2) ELSE NULL END WHERE id = $3",
        )
        .bind(c.payment_id.to_string())
        .bind(ms(c.at))
        .bind(c.payment_id.to_string())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        insert_events(&mut tx, c.merchant_id, changed.flag("livemode")?, &c.events, c.at).await?;
        if let Some(inbound) = &c.inbound {
            insert_inbound(&mut *tx, inbound).await?;
        }
        if c.to == PaymentStatus::Succeeded {
            record_movement(&mut tx, c.payment_id, Movement::Paid, c.at).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn transition_attempt(&self, c: &AttemptChange) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let payment = sqlx::query("SELECT payment_id FROM attempts WHERE id = $1")
            .bind(c.attempt_id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
            .ok_or(StoreError::NotFound)?;
        let payment = parse(payment.text("payment_id")?, "payment id")?;
        if !change_attempt(&mut tx, payment, c).await? {
            return Ok(false);
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn record_duplicate(&self, d: &DuplicatePaid) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let row = sqlx::query(
            "SELECT p.id, p.livemode, p.amount FROM attempts a \
             JOIN payments p ON p.id = a.payment_id WHERE a.id = $1",
        )
        .bind(d.change.attempt_id.to_string())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?
        .ok_or(StoreError::NotFound)?;
        let payment = parse(row.text("id")?, "payment id")?;
        if !change_attempt(&mut tx, payment, &d.change).await? {
            return Ok(false);
        }
        insert_events(&mut tx, d.merchant_id, row.flag("livemode")?, &d.events, d.at).await?;
        // A duplicate attempt pays the payment's amount again.
        record_movement(&mut tx, payment, Movement::DuplicatePaid(row.int("amount")?), d.at)
            .await?;
        if let Some((refund, first_check_at)) = &d.refund {
            // Nothing is reserved: the money refunded is the duplicate's, not the payment's.
            insert_refund_row(&mut tx, refund, *first_check_at).await?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn payment_by_id(&self, id: PaymentId) -> StoreResult<Option<PaymentRecord>> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(codec::payment).transpose()
    }
}

async fn insert_attempt_row(tx: &mut Tx, a: &AttemptRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO attempts (id, payment_id, account_id, channel, method, channel_order_no, \
         status, action, channel_trade_no, channel_data, watching, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(a.id.to_string())
    .bind(a.payment_id.to_string())
    .bind(a.account_id.to_string())
    .bind(a.channel.as_str())
    .bind(a.method.as_str())
    .bind(a.channel_order_no.as_str())
    .bind(a.status.as_str())
    .bind(a.action.as_ref().map(|v| v.to_string()))
    .bind(&a.channel_trade_no)
    .bind(a.channel_data.to_string())
    .bind(a.watching)
    .bind(ms(a.created_at))
    .execute(&mut **tx)
    .await
    .map_err(|e| unique_or(e, "channel_order_no"))?;
    Ok(())
}

/// The compare-and-set on one attempt of `payment`, in the caller's transaction. Returns whether
/// it applied.
async fn change_attempt(tx: &mut Tx, payment: PaymentId, c: &AttemptChange) -> StoreResult<bool> {
    if c.from != c.to && !c.from.can_become(c.to) {
        return Ok(false);
    }
    let done = sqlx::query(
        "UPDATE attempts SET status = $1, watching = $2, \
           channel_trade_no = COALESCE($3, channel_trade_no) \
         WHERE id = $4 AND payment_id = $5 AND status = $6",
    )
    .bind(c.to.as_str())
    .bind(c.watching)
    .bind(&c.channel_trade_no)
    .bind(c.attempt_id.to_string())
    .bind(payment.to_string())
    .bind(c.from.as_str())
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?
    .rows_affected();
    Ok(done == 1)
}
