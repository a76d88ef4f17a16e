//! Payments and their attempts.

use async_trait::async_trait;
use paymux_core::{AccountId, AttemptId, ChannelOrderNo, MerchantId, PaymentId, PaymentStatus};
use rusqlite::{Connection, params};
use time::OffsetDateTime;

use super::idempotency::{bind_idempotency_key, keep_answer};
use super::inbound::insert_inbound;
use super::outbox::insert_events;
use super::refunds::insert_refund_row;
use super::settlement::{
    Movement, holding, insert_settlement_row, record_movement, record_movement_of,
};
use super::{Sql, SqliteStore};
use crate::codec::{self, ATTEMPT_COLUMNS, Columns, PAYMENT_COLUMNS, ms, parse};
use crate::*;

#[async_trait]
impl PaymentStore for SqliteStore {
    async fn insert_payment(
        &self,
        p: &PaymentRecord,
        a: &AttemptRecord,
        settlement: Option<&SettlementRecord>,
        first_check_at: OffsetDateTime,
        idempotency_key: Option<&str>,
    ) -> StoreResult<()> {
        let p = p.clone();
        let a = a.clone();
        let settlement = settlement.cloned();
        let idempotency_key = idempotency_key.map(str::to_owned);
        self.write(move |tx| {
            tx.exec_unique(
                "INSERT INTO payments (id, merchant_id, merchant_order_no, amount, currency, subject, \
                 status, channel, method, account_id, channel_order_no, channel_trade_no, action, \
                 amount_refunded, amount_reserved, failure_code, failure_message, client_ip, return_url, \
                 payer, metadata, expires_at, paid_at, created_at, updated_at, next_check_at, livemode) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                params![
                    p.id.to_string(),
                    p.merchant_id.to_string(),
                    p.merchant_order_no,
                    p.amount.minor(),
                    p.amount.currency().code(),
                    p.subject,
                    p.status.as_str(),
                    p.channel.as_str(),
                    p.method.as_str(),
                    p.account_id.to_string(),
                    p.channel_order_no.as_str(),
                    p.channel_trade_no,
                    p.action.as_ref().map(|v| v.to_string()),
                    p.amount_refunded,
                    p.amount_reserved,
                    p.failure_code,
                    p.failure_message,
                    p.client_ip,
                    p.return_url,
                    p.payer.as_ref().map(|v| v.to_string()),
                    p.metadata.to_string(),
                    ms(p.expires_at),
                    p.paid_at.map(ms),
                    ms(p.created_at),
                    ms(p.updated_at),
                    ms(first_check_at),
                    p.livemode,
                ],
                "merchant_order_no",
            )?;
            insert_attempt_row(tx, &a)?;
            if let Some(s) = &settlement {
                insert_settlement_row(tx, s)?;
            }
            bind_idempotency_key(tx, p.merchant_id, idempotency_key.as_deref(), &p.id.to_string())
        })
        .await
    }

    async fn insert_attempt(
        &self,
        a: &AttemptRecord,
        idempotency_key: Option<&str>,
    ) -> StoreResult<()> {
        let a = a.clone();
        let idempotency_key = idempotency_key.map(str::to_owned);
        self.write(move |tx| {
            let shown = tx.one(
                "UPDATE payments SET channel = ?, method = ?, account_id = ?, channel_order_no = ?, \
                 action = NULL, updated_at = ? WHERE id = ? AND status = 'pending' \
                 RETURNING merchant_id",
                params![
                    a.channel.as_str(),
                    a.method.as_str(),
                    a.account_id.to_string(),
                    a.channel_order_no.as_str(),
                    ms(a.created_at),
                    a.payment_id.to_string(),
                ],
                |r| r.text("merchant_id"),
            )?;
            let Some(shown) = shown else {
                let status = tx
                    .one(
                        "SELECT status FROM payments WHERE id = ?",
                        params![a.payment_id.to_string()],
                        |r| r.text("status"),
                    )?
                    .ok_or(StoreError::NotFound)?;
                return Err(StoreError::PaymentNotPending(parse(status, "payment status")?));
            };
            let merchant = parse(shown, "merchant id")?;
            insert_attempt_row(tx, &a)?;
            bind_idempotency_key(tx, merchant, idempotency_key.as_deref(), &a.payment_id.to_string())
        })
        .await
    }

    async fn record_created(
        &self,
        attempt: AttemptId,
        action: &serde_json::Value,
        channel_data: &serde_json::Value,
        answer: Option<KeptAnswer<'_>>,
    ) -> StoreResult<bool> {
        let action = action.to_string();
        let channel_data = channel_data.to_string();
        let answer = answer.map(|a| (a.merchant, a.key.to_owned(), a.status, a.body.to_vec()));
        self.write(move |tx| {
            let (payment_id, account_id, channel_order_no) = tx
                .one(
                    "UPDATE attempts SET action = ?, channel_data = ? WHERE id = ? \
                     RETURNING payment_id, account_id, channel_order_no",
                    params![action, channel_data, attempt.to_string()],
                    |r| {
                        Ok((
                            r.text("payment_id")?,
                            r.text("account_id")?,
                            r.text("channel_order_no")?,
                        ))
                    },
                )?
                .ok_or(StoreError::NotFound)?;
            // The payment shows the action only while this attempt is the one it shows.
            tx.exec(
                "UPDATE payments SET action = ?, updated_at = ? \
                 WHERE id = ? AND account_id = ? AND channel_order_no = ?",
                params![
                    action,
                    ms(OffsetDateTime::now_utc()),
                    payment_id,
                    account_id,
                    channel_order_no,
                ],
            )?;
            let Some((merchant, key, status, body)) = answer else { return Ok(false) };
            let answer = KeptAnswer { merchant, key: &key, status, body: &body };
            keep_answer(tx, answer, Some(&payment_id))
        })
        .await
    }

    async fn payment(
        &self,
        merchant: MerchantId,
        id: PaymentId,
    ) -> StoreResult<Option<PaymentRecord>> {
        let sql =
            format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ? AND merchant_id = ?");
        self.read(|c| {
            c.one(&sql, params![id.to_string(), merchant.to_string()], |r| codec::payment(r))
        })
    }

    async fn payment_by_order_no(
        &self,
        merchant: MerchantId,
        merchant_order_no: &str,
    ) -> StoreResult<Option<PaymentRecord>> {
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE merchant_id = ? AND merchant_order_no = ?"
        );
        self.read(|c| {
            c.one(&sql, params![merchant.to_string(), merchant_order_no], |r| codec::payment(r))
        })
    }

    async fn list_payments(
        &self,
        merchant: MerchantId,
        filter: &PaymentFilter,
    ) -> StoreResult<Vec<PaymentRecord>> {
        // Optional filters as `? IS NULL OR col = ?`: one static statement, no string building.
        let sql = format!(
            "SELECT {PAYMENT_COLUMNS} FROM payments WHERE merchant_id = ? AND livemode = ? \
             AND (? IS NULL OR merchant_order_no = ?) AND (? IS NULL OR status = ?) \
             AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?"
        );
        let order_no = filter.merchant_order_no.as_deref();
        let status = filter.status.map(|s| s.as_str());
        let before = filter.before.map(|b| b.to_string());
        self.read(|c| {
            c.all(
                &sql,
                params![
                    merchant.to_string(),
                    filter.livemode,
                    order_no,
                    order_no,
                    status,
                    status,
                    before,
                    before,
                    i64::from(filter.limit.clamp(1, 100)),
                ],
                |r| codec::payment(r),
            )
        })
    }

    async fn attempts(&self, payment: PaymentId) -> StoreResult<Vec<AttemptRecord>> {
        let sql =
            format!("SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE payment_id = ? ORDER BY id");
        self.read(|c| c.all(&sql, params![payment.to_string()], |r| codec::attempt(r)))
    }

    async fn attempt_by_channel_order_no(
        &self,
        account: AccountId,
        channel_order_no: &ChannelOrderNo,
    ) -> StoreResult<Option<AttemptRecord>> {
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE account_id = ? AND channel_order_no = ?"
        );
        self.read(|c| {
            c.one(&sql, params![account.to_string(), channel_order_no.as_str()], |r| {
                codec::attempt(r)
            })
        })
    }

    async fn transition_payment(&self, c: &PaymentTransition) -> StoreResult<bool> {
        if !c.from.can_become(c.to) {
            return Ok(false);
        }
        let c = c.clone();
        self.write(move |tx| {
            // The attempt's compare-and-set first, so that the payment's one UPDATE below reads the
            // attempts as they are after it (which one it shows, whether any is still watched).
            if !change_attempt(tx, c.payment_id, &c.attempt)? {
                return Ok(false);
            }
            // A success shows the attempt it succeeded with; the sweeper keeps looking while an
            // attempt is watched (an attempt added before this transaction began is seen: one
            // writer). One UPDATE does all of it, and returns what the ledger entries need. ?1,
            // the attempt, is bound in both forms: numbered, the statement has nine either way.
            let shown = if c.to == PaymentStatus::Succeeded {
                "(channel, method, account_id, channel_order_no, action) = \
                 (SELECT a.channel, a.method, a.account_id, a.channel_order_no, \
                         COALESCE(a.action, payments.action) FROM attempts a WHERE a.id = ?1), "
            } else {
                ""
            };
            let sql = format!(
                "UPDATE payments SET status = ?2, \
                   channel_trade_no = COALESCE(?3, channel_trade_no), \
                   paid_at = COALESCE(?4, paid_at), \
                   failure_code = ?5, failure_message = ?6, updated_at = ?7, {shown}\
                   next_check_at = CASE WHEN EXISTS \
                     (SELECT 1 FROM attempts WHERE payment_id = payments.id AND watching) \
                   THEN COALESCE(next_check_at, ?7) ELSE NULL END \
                 WHERE id = ?8 AND status = ?9 \
                 RETURNING merchant_id, livemode, amount, \
                   (SELECT status FROM settlements WHERE payment_id = payments.id) AS settlement"
            );
            let holding = tx.one(
                &sql,
                params![
                    c.attempt.attempt_id.to_string(),
                    c.to.as_str(),
                    c.channel_trade_no,
                    c.paid_at.map(ms),
                    c.failure_code,
                    c.failure_message,
                    ms(c.at),
                    c.payment_id.to_string(),
                    c.from.as_str(),
                ],
                holding,
            )?;
            let Some(holding) = holding else {
                // The attempt's change is rolled back with it.
                tx.roll_back();
                return Ok(false);
            };
            insert_events(tx, c.merchant_id, holding.livemode, &c.events, c.at)?;
            if let Some(inbound) = &c.inbound {
                insert_inbound(tx, inbound)?;
            }
            if c.to == PaymentStatus::Succeeded {
                record_movement_of(tx, c.payment_id, &holding, Movement::Paid, c.at)?;
            }
            Ok(true)
        })
        .await
    }

    async fn transition_attempt(&self, c: &AttemptChange) -> StoreResult<bool> {
        let c = c.clone();
        self.write(move |tx| {
            let payment = tx
                .one(
                    "SELECT payment_id FROM attempts WHERE id = ?",
                    params![c.attempt_id.to_string()],
                    |r| r.text("payment_id"),
                )?
                .ok_or(StoreError::NotFound)?;
            let payment = parse(payment, "payment id")?;
            change_attempt(tx, payment, &c)
        })
        .await
    }

    async fn record_duplicate(&self, d: &DuplicatePaid) -> StoreResult<bool> {
        let d = d.clone();
        self.write(move |tx| {
            let (payment, livemode, amount) = tx
                .one(
                    "SELECT p.id, p.livemode, p.amount FROM attempts a \
                     JOIN payments p ON p.id = a.payment_id WHERE a.id = ?",
                    params![d.change.attempt_id.to_string()],
                    |r| Ok((r.text("id")?, r.flag("livemode")?, r.int("amount")?)),
                )?
                .ok_or(StoreError::NotFound)?;
            let payment = parse(payment, "payment id")?;
            if !change_attempt(tx, payment, &d.change)? {
                return Ok(false);
            }
            insert_events(tx, d.merchant_id, livemode, &d.events, d.at)?;
            // A duplicate attempt pays the payment's amount again.
            record_movement(tx, payment, Movement::DuplicatePaid(amount), d.at)?;
            if let Some((refund, first_check_at)) = &d.refund {
                // Nothing is reserved: the money refunded is the duplicate's, not the payment's.
                insert_refund_row(tx, refund, *first_check_at)?;
            }
            Ok(true)
        })
        .await
    }

    async fn payment_by_id(&self, id: PaymentId) -> StoreResult<Option<PaymentRecord>> {
        let sql = format!("SELECT {PAYMENT_COLUMNS} FROM payments WHERE id = ?");
        self.read(|c| c.one(&sql, params![id.to_string()], |r| codec::payment(r)))
    }
}

fn insert_attempt_row(c: &Connection, a: &AttemptRecord) -> StoreResult<()> {
    c.exec_unique(
        "INSERT INTO attempts (id, payment_id, account_id, channel, method, channel_order_no, \
         status, action, channel_trade_no, channel_data, watching, created_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            a.id.to_string(),
            a.payment_id.to_string(),
            a.account_id.to_string(),
            a.channel.as_str(),
            a.method.as_str(),
            a.channel_order_no.as_str(),
            a.status.as_str(),
            a.action.as_ref().map(|v| v.to_string()),
            a.channel_trade_no,
            a.channel_data.to_string(),
            a.watching,
            ms(a.created_at),
        ],
        "channel_order_no",
    )?;
    Ok(())
}

/// The compare-and-set on one attempt of `payment`, in the caller's transaction. Returns whether
/// it applied.
fn change_attempt(c: &Connection, payment: PaymentId, ch: &AttemptChange) -> StoreResult<bool> {
    if ch.from != ch.to && !ch.from.can_become(ch.to) {
        return Ok(false);
    }
    let done = c.exec(
        "UPDATE attempts SET status = ?, watching = ?, \
           channel_trade_no = COALESCE(?, channel_trade_no) \
         WHERE id = ? AND payment_id = ? AND status = ?",
        params![
            ch.to.as_str(),
            ch.watching,
            ch.channel_trade_no,
            ch.attempt_id.to_string(),
            payment.to_string(),
            ch.from.as_str(),
        ],
    )?;
    Ok(done == 1)
}
