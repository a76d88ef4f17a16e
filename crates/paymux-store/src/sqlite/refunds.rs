//! Refunds and their reservations on the payment.

use async_trait::async_trait;
use paymux_core::{ChannelOrderNo, MerchantId, PaymentId, RefundId};
use rusqlite::{Connection, params};
use time::OffsetDateTime;

use super::idempotency::bind_idempotency_key;
use super::outbox::insert_events;
use super::settlement::{Movement, record_movement};
use super::{Sql, SqliteStore};
use crate::codec::{self, Columns, REFUND_COLUMNS, ms, parse};
use crate::rules::{self, Refundable};
use crate::*;

/// The payment's refundable state, read in the writer's transaction (the one writer makes the
/// read and the write that follows it atomic).
fn refundable(c: &Connection, payment: PaymentId) -> StoreResult<Refundable> {
    c.one(
        "SELECT status, amount, amount_reserved + amount_over_reserved AS reserved \
         FROM payments WHERE id = ?",
        params![payment.to_string()],
        |row| {
            Ok(Refundable {
                status: parse(row.text("status")?, "payment status")?,
                amount: row.int("amount")?,
                reserved: row.int("reserved")?,
            })
        },
    )?
    .ok_or(StoreError::NotFound)
}

#[async_trait]
impl RefundStore for SqliteStore {
    async fn insert_refund(
        &self,
        r: &RefundRecord,
        first_check_at: OffsetDateTime,
        idempotency_key: Option<&str>,
    ) -> StoreResult<()> {
        let r = r.clone();
        let idempotency_key = idempotency_key.map(str::to_owned);
        self.write(move |tx| {
            let payment = refundable(tx, r.payment_id)?;
            rules::check_refund(&payment, r.amount.minor())?;
            // The schema's guard too: the reservation never passes the amount, whatever reads raced.
            let reserved = tx.exec(
                "UPDATE payments SET amount_reserved = amount_reserved + ? \
                 WHERE id = ? AND status = 'succeeded' \
                   AND amount_reserved + amount_over_reserved + ? <= amount",
                params![r.amount.minor(), r.payment_id.to_string(), r.amount.minor()],
            )?;
            if reserved != 1 {
                return Err(StoreError::RefundExceedsAmount {
                    requested: r.amount.minor(),
                    available: (payment.amount - payment.reserved).max(0),
                });
            }
            // Read after the reservation locked the payment's row: a settle that started a split
            // commits before this read or waits for this transaction (it locks the row too).
            let settlement = tx.one(
                "SELECT status FROM settlements WHERE payment_id = ?",
                params![r.payment_id.to_string()],
                |row| row.text("status"),
            )?;
            if let Some(status) = settlement {
                let status: paymux_core::SettlementStatus = parse(status, "settlement status")?;
                if matches!(
                    status,
                    paymux_core::SettlementStatus::Settling | paymux_core::SettlementStatus::Failed
                ) {
                    return Err(StoreError::SettlementBusy(status));
                }
            }
            insert_refund_row(tx, &r, first_check_at)?;
            bind_idempotency_key(tx, r.merchant_id, idempotency_key.as_deref(), &r.id.to_string())
        })
        .await
    }

    async fn refund(
        &self,
        merchant: MerchantId,
        id: RefundId,
    ) -> StoreResult<Option<RefundRecord>> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE id = ? AND merchant_id = ?");
        self.read(|c| {
            c.one(&sql, params![id.to_string(), merchant.to_string()], |row| codec::refund(row))
        })
    }

    async fn refund_by_merchant_refund_no(
        &self,
        merchant: MerchantId,
        merchant_refund_no: &str,
    ) -> StoreResult<Option<RefundRecord>> {
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE merchant_id = ? AND merchant_refund_no = ?"
        );
        self.read(|c| {
            c.one(&sql, params![merchant.to_string(), merchant_refund_no], |row| codec::refund(row))
        })
    }

    async fn list_refunds(
        &self,
        merchant: MerchantId,
        filter: &RefundFilter,
    ) -> StoreResult<Vec<RefundRecord>> {
        let sql = format!(
            "SELECT {REFUND_COLUMNS} FROM refunds WHERE merchant_id = ? AND livemode = ? \
             AND (? IS NULL OR payment_id = ?) AND (? IS NULL OR merchant_refund_no = ?) \
             AND (? IS NULL OR id < ?) ORDER BY id DESC LIMIT ?"
        );
        let payment = filter.payment_id.map(|p| p.to_string());
        let refund_no = filter.merchant_refund_no.as_deref();
        let before = filter.before.map(|b| b.to_string());
        self.read(|c| {
            c.all(
                &sql,
                params![
                    merchant.to_string(),
                    filter.livemode,
                    payment,
                    payment,
                    refund_no,
                    refund_no,
                    before,
                    before,
                    i64::from(filter.limit.clamp(1, 100)),
                ],
                |row| codec::refund(row),
            )
        })
    }

    async fn refund_by_channel_refund_no(
        &self,
        channel_refund_no: &ChannelOrderNo,
    ) -> StoreResult<Option<RefundRecord>> {
        let sql = format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE channel_refund_no = ?");
        self.read(|c| c.one(&sql, params![channel_refund_no.as_str()], |row| codec::refund(row)))
    }

    async fn transition_refund(&self, c: &RefundTransition) -> StoreResult<bool> {
        if !c.from.can_become(c.to) {
            return Ok(false);
        }
        let Some(settlement) = rules::refund_settlement(c.from, c.to, c.amount) else {
            return Ok(false);
        };
        let c = c.clone();
        self.write(move |tx| {
            let done = tx.one(
                "UPDATE refunds SET status = ?, channel_refund_id = COALESCE(?, channel_refund_id), \
                   succeeded_at = COALESCE(?, succeeded_at), failure_code = ?, failure_message = ?, \
                   updated_at = ?, next_check_at = NULL \
                 WHERE id = ? AND status = ? RETURNING livemode",
                params![
                    c.to.as_str(),
                    c.channel_refund_id,
                    c.succeeded_at.map(ms),
                    c.failure_code,
                    c.failure_message,
                    ms(c.at),
                    c.refund_id.to_string(),
                    c.from.as_str(),
                ],
                |row| row.flag("livemode"),
            )?;
            let Some(livemode) = done else {
                tx.roll_back();
                return Ok(false);
            };
            if c.of_duplicate {
                // The refund of a duplicate payment: the payment's own totals do not move; the
                // ledger gives the duplicate's money back.
                record_movement(
                    tx,
                    c.payment_id,
                    Movement::DuplicateRefunded(settlement.refunded),
                    c.at,
                )?;
                insert_events(tx, c.merchant_id, livemode, &c.events, c.at)?;
                return Ok(true);
            }
            let payment = refundable(tx, c.payment_id)?;
            let next = rules::reservations(payment.amount, payment.reserved, settlement);
            tx.exec(
                "UPDATE payments SET amount_refunded = amount_refunded + ?, amount_reserved = ?, \
                 amount_over_reserved = ?, updated_at = ? WHERE id = ?",
                params![
                    settlement.refunded,
                    next.amount_reserved,
                    next.amount_over_reserved,
                    ms(c.at),
                    c.payment_id.to_string(),
                ],
            )?;
            record_movement(tx, c.payment_id, Movement::Refunded(settlement.refunded), c.at)?;
            insert_events(tx, c.merchant_id, livemode, &c.events, c.at)?;
            if next.over_refunded {
                insert_events(tx, c.merchant_id, livemode, &c.over_refund_events, c.at)?;
            }
            Ok(true)
        })
        .await
    }

    async fn stop_refund_resends(&self, id: RefundId, code: &str) -> StoreResult<()> {
        let code = code.to_owned();
        self.write(move |tx| {
            tx.exec(
                "UPDATE refunds SET resend_declined_code = ? WHERE id = ?",
                params![code, id.to_string()],
            )
            .map(drop)
        })
        .await
    }

    async fn mark_refund_action_required(&self, c: &RefundActionRequired) -> StoreResult<bool> {
        let c = c.clone();
        self.write(move |tx| {
            let done = tx.one(
                "UPDATE refunds SET action_required_at = ?, \
                   channel_refund_id = COALESCE(?, channel_refund_id), updated_at = ? \
                 WHERE id = ? AND status = 'pending' AND action_required_at IS NULL RETURNING livemode",
                params![ms(c.at), c.channel_refund_id, ms(c.at), c.refund_id.to_string()],
                |row| row.flag("livemode"),
            )?;
            let Some(livemode) = done else {
                tx.roll_back();
                return Ok(false);
            };
            insert_events(tx, c.merchant_id, livemode, &c.events, c.at)?;
            Ok(true)
        })
        .await
    }
}

/// Writes a refund row, due for its first sweeper check at `first_check_at`, in the caller's
/// transaction. Reserving its amount on the payment (or not) is the caller's part.
pub(super) fn insert_refund_row(
    c: &Connection,
    r: &RefundRecord,
    first_check_at: OffsetDateTime,
) -> StoreResult<()> {
    c.exec_unique(
        "INSERT INTO refunds (id, merchant_id, payment_id, merchant_refund_no, channel_refund_no, \
         amount, currency, status, reason, channel_refund_id, failure_code, failure_message, \
         created_at, succeeded_at, updated_at, next_check_at, livemode, attempt_id) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            r.id.to_string(),
            r.merchant_id.to_string(),
            r.payment_id.to_string(),
            r.merchant_refund_no,
            r.channel_refund_no.as_str(),
            r.amount.minor(),
            r.amount.currency().code(),
            r.status.as_str(),
            r.reason,
            r.channel_refund_id,
            r.failure_code,
            r.failure_message,
            ms(r.created_at),
            r.succeeded_at.map(ms),
            ms(r.updated_at),
            ms(first_check_at),
            r.livemode,
            r.attempt_id.map(|a| a.to_string()),
        ],
        "merchant_refund_no",
    )?;
    Ok(())
}
