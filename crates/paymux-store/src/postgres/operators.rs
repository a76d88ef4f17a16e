//! Operators: tokens, admin sessions, their actions, and the views across merchants.

use async_trait::async_trait;
use paymux_core::PaymentId;
use time::OffsetDateTime;

use super::PgStore;
use crate::codec::{
    self, ADMIN_SESSION_COLUMNS, EVENT_COLUMNS, INBOUND_COLUMNS, OPERATOR_ACTION_COLUMNS,
    OPERATOR_TOKEN_COLUMNS, PAYMENT_COLUMNS, ms,
};
use crate::error::{unavailable, unique_or};
use crate::*;

#[async_trait]
impl OperatorStore for PgStore {
    async fn add_operator_token(&self, t: &OperatorTokenRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO operator_tokens (id, token_hash, label, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(&t.id)
        .bind(&t.token_hash)
        .bind(&t.label)
        .bind(ms(t.created_at))
        .execute(&self.pool)
        .await
        .map_err(|e| unique_or(e, "operator token"))?;
        Ok(())
    }

    async fn operator_token_by_hash(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<OperatorTokenRecord>> {
        let sql =
            format!("SELECT {OPERATOR_TOKEN_COLUMNS} FROM operator_tokens WHERE token_hash = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(codec::operator_token).transpose()
    }

    async fn create_admin_session(&self, s: &AdminSessionRecord) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM admin_sessions WHERE expires_at <= $1")
            .bind(ms(s.created_at))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        sqlx::query(
            "INSERT INTO admin_sessions (id_hash, token_id, created_at, expires_at) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&s.id_hash)
        .bind(&s.token_id)
        .bind(ms(s.created_at))
        .bind(ms(s.expires_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_or(e, "admin session"))?;
        tx.commit().await.map_err(unavailable)
    }

    async fn admin_session(
        &self,
        id_hash: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<AdminSessionRecord>> {
        let sql = format!(
            "SELECT {ADMIN_SESSION_COLUMNS} FROM admin_sessions WHERE id_hash = $1 AND expires_at > $2"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id_hash)
            .bind(ms(now))
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(codec::admin_session).transpose()
    }

    async fn end_admin_session(&self, id_hash: &str) -> StoreResult<()> {
        sqlx::query("DELETE FROM admin_sessions WHERE id_hash = $1")
            .bind(id_hash)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn record_operator_action(&self, a: &OperatorActionRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO operator_actions (id, token_id, action, payment_id, target, outcome, \
             detail, at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&a.id)
        .bind(&a.token_id)
        .bind(&a.action)
        .bind(a.payment_id.to_string())
        .bind(&a.target)
        .bind(&a.outcome)
        .bind(&a.detail)
        .bind(ms(a.at))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn operator_actions(&self, payment: PaymentId) -> StoreResult<Vec<OperatorActionRecord>> {
        let sql = format!(
            "SELECT {OPERATOR_ACTION_COLUMNS} FROM operator_actions WHERE payment_id = $1 \
             ORDER BY at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(payment.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(codec::operator_action).collect()
    }

    async fn admin_payments(&self, f: &AdminPaymentFilter) -> StoreResult<Vec<PaymentRecord>> {
        // Optional filters as `? IS NULL OR ...`: one static statement, no string building.
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE \
             ($1 IS NULL OR status = $2) AND ($3 IS NULL OR channel = $4) \
             AND ($5 IS NULL OR method = $6) AND ($7 IS NULL OR merchant_order_no = $8) \
             AND ($9 IS NULL OR created_at >= $10) AND ($11 IS NULL OR created_at < $12) \
             AND ($13 IS NULL OR id < $14) ORDER BY id DESC LIMIT $15"
        );
        let status = f.status.map(|s| s.as_str());
        let channel = f.channel.map(|c| c.as_str());
        let method = f.method.map(|m| m.as_str());
        let order_no = f.merchant_order_no.as_deref();
        let from = f.created_from.map(ms);
        let to = f.created_to.map(ms);
        let before = f.before.map(|b| b.to_string());
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(status)
            .bind(status)
            .bind(channel)
            .bind(channel)
            .bind(method)
            .bind(method)
            .bind(order_no)
            .bind(order_no)
            .bind(from)
            .bind(from)
            .bind(to)
            .bind(to)
            .bind(before.clone())
            .bind(before)
            .bind(i64::from(f.limit.clamp(1, 200)))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(codec::payment).collect()
    }

    async fn object_events(&self, object_id: &str) -> StoreResult<Vec<EventRecord>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE object_id = $1 ORDER BY created_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(object_id)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(codec::event).collect()
    }

    async fn inbound_for_payment(&self, payment: PaymentId) -> StoreResult<Vec<InboundLogRecord>> {
        let sql = format!(
            "SELECT {INBOUND_COLUMNS} FROM inbound_notifications WHERE payment_id = $1 \
             ORDER BY received_at, id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(payment.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(codec::inbound_log).collect()
    }

    async fn payment_outcomes(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        bucket_ms: i64,
    ) -> StoreResult<Vec<OutcomeCount>> {
        let rows = sqlx::query(
            "SELECT channel, status, (created_at - $1) / $2 AS bucket, COUNT(*) AS n FROM payments \
             WHERE created_at >= $3 AND created_at < $4 GROUP BY channel, status, bucket \
             ORDER BY channel, bucket, status",
        )
        .bind(ms(from))
        .bind(bucket_ms.max(1))
        .bind(ms(from))
        .bind(ms(to))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(codec::outcome_count).collect()
    }

    async fn failure_reasons(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<FailureReason>> {
        let rows = sqlx::query(
            "SELECT channel, failure_code AS code, COALESCE(failure_message, '') AS message, \
             COUNT(*) AS n FROM payments \
             WHERE created_at >= $1 AND created_at < $2 AND failure_code IS NOT NULL \
             GROUP BY channel, code, message ORDER BY n DESC, channel, code LIMIT $3",
        )
        .bind(ms(from))
        .bind(ms(to))
        .bind(i64::from(limit.clamp(1, 100)))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(codec::failure_reason).collect()
    }
}
