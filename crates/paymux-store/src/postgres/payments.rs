//! Payments and their attempts.

use async_trait::async_trait;
use paymux_core::{AccountId, ChannelOrderNo, MerchantId, PaymentId, PaymentStatus};
use time::OffsetDateTime;

use super::PgStore;
use super::idempotency::bind_idempotency_key;
use super::inbound::insert_inbound;
use super::outbox::insert_events;
use super::settlement::{Movement, record_movement};
use crate::codec::{self, ATTEMPT_COLUMNS, Columns, PAYMENT_COLUMNS, ms};
use crate::error::{unavailable, unique_or};
use crate::rules;
use crate::*;

#[async_trait]
impl PaymentStore for PgStore {
    async fn insert_payment(
        &self,
        p: &PaymentRecord,
        a: &AttemptRecord,
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
        sqlx::query(
            "INSERT INTO attempts (id, payment_id, account_id, channel, channel_order_no, \
             channel_data, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&a.id)
        .bind(a.payment_id.to_string())
        .bind(a.account_id.to_string())
        .bind(a.channel.as_str())
        .bind(a.channel_order_no.as_str())
        .bind(a.channel_data.to_string())
        .bind(ms(a.created_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_or(e, "channel_order_no"))?;
        bind_idempotency_key(&mut tx, p.merchant_id, idempotency_key, &p.id.to_string()).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn record_created(
        &self,
        payment: PaymentId,
        action: &serde_json::Value,
        channel_data: &serde_json::Value,
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE payments SET action = $1, updated_at = $2 WHERE id = $3")
            .bind(action.to_string())
            .bind(ms(OffsetDateTime::now_utc()))
            .bind(payment.to_string())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query("UPDATE attempts SET channel_data = $1 WHERE payment_id = $2")
            .bind(channel_data.to_string())
            .bind(payment.to_string())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
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

    async fn attempt_for_payment(&self, payment: PaymentId) -> StoreResult<Option<AttemptRecord>> {
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE payment_id = $1 ORDER BY id DESC LIMIT 1"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(payment.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(codec::attempt).transpose()
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
               failure_code = $4, failure_message = $5, updated_at = $6, \
               next_check_at = CASE WHEN $7 THEN next_check_at ELSE NULL END \
             WHERE id = $8 AND status = $9 RETURNING livemode",
        )
        .bind(c.to.as_str())
        .bind(&c.channel_trade_no)
        .bind(c.paid_at.map(ms))
        .bind(&c.failure_code)
        .bind(&c.failure_message)
        .bind(ms(c.at))
        .bind(rules::checks_continue(c.to))
        .bind(c.payment_id.to_string())
        .bind(c.from.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some(changed) = done else {
            return Ok(false);
        };
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
