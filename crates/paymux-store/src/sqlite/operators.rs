//! Operators: tokens, admin sessions, their actions, and the views across merchants.

use async_trait::async_trait;
use paymux_core::PaymentId;
use rusqlite::params;
use time::OffsetDateTime;

use super::{Sql, SqliteStore};
use crate::codec::{
    self, ADMIN_SESSION_COLUMNS, EVENT_COLUMNS, INBOUND_COLUMNS, OPERATOR_ACTION_COLUMNS,
    OPERATOR_TOKEN_COLUMNS, PAYMENT_COLUMNS, ms,
};
use crate::*;

#[async_trait]
impl OperatorStore for SqliteStore {
    async fn add_operator_token(&self, t: &OperatorTokenRecord) -> StoreResult<()> {
        let t = t.clone();
        self.write(move |tx| {
            tx.exec_unique(
                "INSERT INTO operator_tokens (id, token_hash, label, created_at) VALUES (?, ?, ?, ?)",
                params![&t.id, &t.token_hash, &t.label, ms(t.created_at)],
                "operator token",
            )
            .map(drop)
        })
        .await
    }

    async fn operator_token_by_hash(
        &self,
        token_hash: &str,
    ) -> StoreResult<Option<OperatorTokenRecord>> {
        let sql =
            format!("SELECT {OPERATOR_TOKEN_COLUMNS} FROM operator_tokens WHERE token_hash = ?");
        self.read(|c| c.one(&sql, params![token_hash], |r| codec::operator_token(r)))
    }

    async fn create_admin_session(&self, s: &AdminSessionRecord) -> StoreResult<()> {
        let s = s.clone();
        self.write(move |tx| {
            tx.exec("DELETE FROM admin_sessions WHERE expires_at <= ?", params![ms(s.created_at)])?;
            tx.exec_unique(
                "INSERT INTO admin_sessions (id_hash, token_id, created_at, expires_at) \
                 VALUES (?, ?, ?, ?)",
                params![&s.id_hash, &s.token_id, ms(s.created_at), ms(s.expires_at)],
                "admin session",
            )?;
            Ok(())
        })
        .await
    }

    async fn admin_session(
        &self,
        id_hash: &str,
        now: OffsetDateTime,
    ) -> StoreResult<Option<AdminSessionRecord>> {
        let sql = format!(
            "SELECT {ADMIN_SESSION_COLUMNS} FROM admin_sessions WHERE id_hash = ? AND expires_at > ?"
        );
        self.read(|c| c.one(&sql, params![id_hash, ms(now)], |r| codec::admin_session(r)))
    }

    async fn end_admin_session(&self, id_hash: &str) -> StoreResult<()> {
        let id_hash = id_hash.to_owned();
        self.write(move |tx| {
            tx.exec("DELETE FROM admin_sessions WHERE id_hash = ?", params![id_hash]).map(drop)
        })
        .await
    }

    async fn record_operator_action(&self, a: &OperatorActionRecord) -> StoreResult<()> {
        let a = a.clone();
        self.write(move |tx| {
            tx.exec(
                "INSERT INTO operator_actions (id, token_id, action, payment_id, target, outcome, \
                 detail, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                params![
                    &a.id,
                    &a.token_id,
                    &a.action,
                    a.payment_id.to_string(),
                    &a.target,
                    &a.outcome,
                    &a.detail,
                    ms(a.at),
                ],
            )
            .map(drop)
        })
        .await
    }

    async fn operator_actions(&self, payment: PaymentId) -> StoreResult<Vec<OperatorActionRecord>> {
        let sql = format!(
            "SELECT {OPERATOR_ACTION_COLUMNS} FROM operator_actions WHERE payment_id = ? \
             ORDER BY at, id"
        );
        self.read(|c| c.all(&sql, params![payment.to_string()], |r| codec::operator_action(r)))
    }

    async fn admin_payments(&self, f: &AdminPaymentFilter) -> StoreResult<Vec<PaymentRecord>> {
        // Optional filters as `? IS NULL OR ...`: one static statement, no string building.
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE \
             (? IS NULL OR status = ?) AND (? IS NULL OR channel = ?) \
             AND (? IS NULL OR method = ?) AND (? IS NULL OR merchant_order_no = ?) \
             AND (? IS NULL OR created_at >= ?) AND (? IS NULL OR created_at < ?) \
             AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?"
        );
        let status = f.status.map(|s| s.as_str());
        let channel = f.channel.map(|c| c.as_str());
        let method = f.method.map(|m| m.as_str());
        let order_no = f.merchant_order_no.clone();
        let from = f.created_from.map(ms);
        let to = f.created_to.map(ms);
        let before = f.before.map(|b| b.to_string());
        let limit = i64::from(f.limit.clamp(1, 200));
        self.scan(move |c| {
            c.all(
                &sql,
                params![
                    status, status, channel, channel, method, method, order_no, order_no, from,
                    from, to, to, before, before, limit,
                ],
                |r| codec::payment(r),
            )
        })
        .await
    }

    async fn object_events(&self, object_id: &str) -> StoreResult<Vec<EventRecord>> {
        let sql = format!(
            "SELECT {EVENT_COLUMNS} FROM events WHERE object_id = ? ORDER BY created_at, id"
        );
        self.read(|c| c.all(&sql, params![object_id], |r| codec::event(r)))
    }

    async fn inbound_for_payment(&self, payment: PaymentId) -> StoreResult<Vec<InboundLogRecord>> {
        let sql = format!(
            "SELECT {INBOUND_COLUMNS} FROM inbound_notifications WHERE payment_id = ? \
             ORDER BY received_at, id"
        );
        self.read(|c| c.all(&sql, params![payment.to_string()], |r| codec::inbound_log(r)))
    }

    async fn payment_outcomes(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        bucket_ms: i64,
    ) -> StoreResult<Vec<OutcomeCount>> {
        self.scan(move |c| {
            c.all(
                "SELECT channel, status, (created_at - ?) / ? AS bucket, COUNT(*) AS n FROM payments \
                 WHERE created_at >= ? AND created_at < ? GROUP BY channel, status, bucket \
                 ORDER BY channel, bucket, status",
                params![ms(from), bucket_ms.max(1), ms(from), ms(to)],
                |r| codec::outcome_count(r),
            )
        })
        .await
    }

    async fn failure_reasons(
        &self,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<FailureReason>> {
        self.scan(move |c| {
            c.all(
                "SELECT channel, failure_code AS code, COALESCE(failure_message, '') AS message, \
                 COUNT(*) AS n FROM payments \
                 WHERE created_at >= ? AND created_at < ? AND failure_code IS NOT NULL \
                 GROUP BY channel, code, message ORDER BY n DESC, channel, code LIMIT ?",
                params![ms(from), ms(to), i64::from(limit.clamp(1, 100))],
                |r| codec::failure_reason(r),
            )
        })
        .await
    }
}
