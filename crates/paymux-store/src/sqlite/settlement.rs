//! Receivers, settlements and the ledger.

use async_trait::async_trait;
use paymux_core::{LedgerKind, MerchantId, PaymentId, ReceiverId};
use rusqlite::types::ToSql;
use rusqlite::{Connection, params, params_from_iter};
use time::OffsetDateTime;

use super::outbox::insert_events;
use super::{Sql, SqliteStore};
use crate::codec::{
    self, Columns, LEDGER_COLUMNS, RECEIVER_COLUMNS, SETTLEMENT_COLUMNS, ms, splits_json,
};
use crate::error::unavailable;
use crate::*;

/// Writes the entries in one statement (a movement's entries go together).
fn insert_entries(
    c: &Connection,
    merchant: MerchantId,
    livemode: bool,
    entries: &[LedgerEntryRecord],
) -> StoreResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?)"; entries.len()].join(", ");
    let sql = format!(
        "INSERT INTO ledger_entries (id, merchant_id, livemode, payment_id, account, bucket, \
         kind, amount, created_at) VALUES {values}"
    );
    let merchant = merchant.to_string();
    let mut binds: Vec<Box<dyn ToSql + '_>> = Vec::with_capacity(entries.len() * 9);
    for e in entries {
        binds.push(Box::new(&e.id));
        binds.push(Box::new(merchant.as_str()));
        binds.push(Box::new(livemode));
        binds.push(Box::new(e.payment_id.to_string()));
        binds.push(Box::new(&e.account));
        binds.push(Box::new(e.bucket.as_str()));
        binds.push(Box::new(e.kind.as_str()));
        binds.push(Box::new(e.amount));
        binds.push(Box::new(ms(e.created_at)));
    }
    c.exec_unique(&sql, params_from_iter(binds), "ledger entry")?;
    Ok(())
}

#[async_trait]
impl SettlementStore for SqliteStore {
    async fn insert_receiver(&self, r: &ReceiverRecord) -> StoreResult<()> {
        let r = r.clone();
        self.write(move |tx| {
            tx.exec_unique(
                "INSERT INTO receivers (id, merchant_id, livemode, name, accounts, registrations, \
                 created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                params![
                    r.id.to_string(),
                    r.merchant_id.to_string(),
                    r.livemode,
                    r.name,
                    r.accounts.to_string(),
                    r.registrations.to_string(),
                    ms(r.created_at),
                ],
                "receiver",
            )
            .map(drop)
        })
        .await
    }

    async fn receiver(
        &self,
        merchant: MerchantId,
        id: ReceiverId,
    ) -> StoreResult<Option<ReceiverRecord>> {
        let sql =
            format!("SELECT {RECEIVER_COLUMNS} FROM receivers WHERE id = ? AND merchant_id = ?");
        self.read(|c| {
            c.one(&sql, params![id.to_string(), merchant.to_string()], |row| codec::receiver(row))
        })
    }

    async fn list_receivers(
        &self,
        merchant: MerchantId,
        livemode: bool,
    ) -> StoreResult<Vec<ReceiverRecord>> {
        let sql = format!(
            "SELECT {RECEIVER_COLUMNS} FROM receivers WHERE merchant_id = ? AND livemode = ? AND deleted_at IS NULL ORDER BY id"
        );
        self.read(|c| {
            c.all(&sql, params![merchant.to_string(), livemode], |row| codec::receiver(row))
        })
    }

    async fn delete_receiver(
        &self,
        merchant: MerchantId,
        id: ReceiverId,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        let done = self
            .write(move |tx| {
                tx.exec(
                    "UPDATE receivers SET deleted_at = ? WHERE id = ? AND merchant_id = ? AND deleted_at IS NULL",
                    params![ms(at), id.to_string(), merchant.to_string()],
                )
            })
            .await?;
        Ok(done == 1)
    }

    async fn settlement(&self, payment: PaymentId) -> StoreResult<Option<SettlementRecord>> {
        let sql = format!("SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE payment_id = ?");
        self.read(|c| c.one(&sql, params![payment.to_string()], |row| codec::settlement(row)))
    }

    async fn transition_settlement(&self, c: &SettlementChange) -> StoreResult<bool> {
        let c = c.clone();
        self.write(move |tx| {
            if let Some((reserved, refunded)) = c.expect_refunds {
                let row = tx
                    .one(
                        "SELECT amount_reserved, amount_refunded FROM payments WHERE id = ?",
                        params![c.payment_id.to_string()],
                        |row| Ok((row.int("amount_reserved")?, row.int("amount_refunded")?)),
                    )?
                    .ok_or(StoreError::NotFound)?;
                if row != (reserved, refunded) {
                    tx.roll_back();
                    return Ok(false);
                }
            }
            let done = tx.one(
                "UPDATE settlements SET status = ?, splits = ?, settled_at = COALESCE(?, settled_at), \
                 next_check_at = ?, release_no = COALESCE(release_no, ?), updated_at = ? \
                 WHERE payment_id = ? AND merchant_id = ? AND status = ? AND updated_at = ? \
                 RETURNING livemode",
                params![
                    c.to.as_str(),
                    splits_json(&c.splits),
                    c.settled_at.map(ms),
                    c.next_check_at.map(ms),
                    c.release_no,
                    ms(c.at),
                    c.payment_id.to_string(),
                    c.merchant_id.to_string(),
                    c.from.as_str(),
                    ms(c.from_updated_at),
                ],
                |row| row.flag("livemode"),
            )?;
            let Some(livemode) = done else {
                tx.roll_back();
                return Ok(false);
            };
            insert_entries(tx, c.merchant_id, livemode, &c.entries)?;
            insert_events(tx, c.merchant_id, livemode, &c.events, c.at)?;
            Ok(true)
        })
        .await
    }

    async fn claim_due_settlements(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<SettlementRecord>> {
        let sql = format!(
            "SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE next_check_at IS NOT NULL \
             AND next_check_at <= ? AND status IN ('held', 'settling') ORDER BY next_check_at LIMIT ?"
        );
        // Each row is decoded in the transaction but its decoding's failure is reported only
        // after the commit: a row that does not read back is leased with the others.
        let rows = self
            .write(move |tx| {
                let rows = tx.all(&sql, params![ms(now), i64::from(limit)], |row| {
                    Ok((row.text("payment_id")?, codec::settlement(row)))
                })?;
                for (payment_id, _) in &rows {
                    tx.exec(
                        "UPDATE settlements SET next_check_at = ? WHERE payment_id = ?",
                        params![ms(lease_until), payment_id],
                    )?;
                }
                Ok(rows)
            })
            .await?;
        rows.into_iter().map(|(_, settlement)| settlement).collect()
    }

    async fn schedule_settlement_check(
        &self,
        payment: PaymentId,
        at: Option<OffsetDateTime>,
    ) -> StoreResult<()> {
        self.write(move |tx| {
            tx.exec(
                "UPDATE settlements SET next_check_at = ? WHERE payment_id = ?",
                params![at.map(ms), payment.to_string()],
            )
            .map(drop)
        })
        .await
    }

    async fn insert_ledger_entries(
        &self,
        merchant: MerchantId,
        livemode: bool,
        entries: &[LedgerEntryRecord],
    ) -> StoreResult<()> {
        let entries = entries.to_vec();
        self.write(move |tx| insert_entries(tx, merchant, livemode, &entries)).await
    }

    async fn ledger_entries(
        &self,
        merchant: MerchantId,
        f: &LedgerFilter,
    ) -> StoreResult<Vec<LedgerEntryRecord>> {
        let sql = format!(
            "SELECT {LEDGER_COLUMNS} FROM ledger_entries WHERE merchant_id = ? AND livemode = ? AND (? IS NULL OR payment_id = ?) AND (? IS NULL OR account = ?) AND (? IS NULL OR created_at >= ?) AND (? IS NULL OR created_at < ?) ORDER BY created_at, id LIMIT ?"
        );
        let payment = f.payment_id.map(|p| p.to_string());
        let from = f.from.map(ms);
        let to = f.to.map(ms);
        let (livemode, account, limit) =
            (f.livemode, f.account.clone(), i64::from(f.limit.clamp(1, 1000)));
        self.scan(move |c| {
            c.all(
                &sql,
                params![
                    merchant.to_string(),
                    livemode,
                    payment,
                    payment,
                    account,
                    account,
                    from,
                    from,
                    to,
                    to,
                    limit,
                ],
                |row| codec::ledger_entry(row),
            )
        })
        .await
    }

    async fn balances(
        &self,
        merchant: MerchantId,
        livemode: bool,
    ) -> StoreResult<Vec<BalanceRecord>> {
        self.scan(move |c| {
            c.all(
                "SELECT account, \
                 COALESCE(SUM(CASE WHEN bucket = 'held' THEN amount ELSE 0 END), 0) AS held, \
                 COALESCE(SUM(CASE WHEN bucket = 'settled' THEN amount ELSE 0 END), 0) AS settled \
                 FROM ledger_entries WHERE merchant_id = ? AND livemode = ? AND bucket <> 'external' \
                 GROUP BY account ORDER BY account",
                params![merchant.to_string(), livemode],
                |row| codec::balance(row),
            )
        })
        .await
    }

    async fn ledger_imbalances(&self) -> StoreResult<Vec<LedgerImbalance>> {
        self.scan(|c| {
            c.all(
                "SELECT l.payment_id AS payment_id, p.amount AS amount, \
                 COALESCE(SUM(CASE WHEN l.kind = 'paid' AND l.account = 'channel' THEN -l.amount ELSE 0 END), 0) AS paid, \
                 COALESCE(SUM(l.amount), 0) AS total \
                 FROM ledger_entries l JOIN payments p ON p.id = l.payment_id \
                 GROUP BY l.payment_id, p.amount \
                 HAVING COALESCE(SUM(l.amount), 0) <> 0 \
                 OR COALESCE(SUM(CASE WHEN l.kind = 'paid' AND l.account = 'channel' THEN -l.amount ELSE 0 END), 0) <> p.amount \
                 ORDER BY l.payment_id",
                [],
                |row| codec::imbalance(row),
            )
        })
        .await
    }
}

/// Writes a held payment's settlement row, in the caller's transaction.
/// The sweeper first looks at it at its auto-settle time.
pub(super) fn insert_settlement_row(c: &Connection, s: &SettlementRecord) -> StoreResult<()> {
    c.exec_unique(
        "INSERT INTO settlements (payment_id, merchant_id, livemode, status, splits, \
         auto_settle_at, settled_at, next_check_at, release_no, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        params![
            s.payment_id.to_string(),
            s.merchant_id.to_string(),
            s.livemode,
            s.status.as_str(),
            splits_json(&s.splits),
            s.auto_settle_at.map(ms),
            s.settled_at.map(ms),
            s.auto_settle_at.map(ms),
            s.release_no,
            ms(s.created_at),
            ms(s.updated_at),
        ],
        "settlement",
    )?;
    Ok(())
}

/// What a payment's money did, for its ledger entries written in the caller's transaction.
pub(super) enum Movement {
    /// The payment succeeded: its amount came in.
    Paid,
    /// Refunds took this much (negative: gave it back) out of the payment.
    Refunded(i64),
    /// A second attempt paid this much after the payment had succeeded (a duplicate payment):
    /// it is the merchant's, settled, until it is refunded; never held.
    DuplicatePaid(i64),
    /// The refund of a duplicate payment gave this much back.
    DuplicateRefunded(i64),
}

/// What the ledger entries of a payment's movement are written from: the payment's owner, mode
/// and amount, and its settlement's status (none when the payment is not held).
pub(super) struct Holding {
    pub(super) merchant: MerchantId,
    pub(super) livemode: bool,
    pub(super) amount: i64,
    pub(super) settlement: Option<String>,
}

/// A [`Holding`] from a row with the columns `merchant_id`, `livemode`, `amount`, `settlement`.
pub(super) fn holding(row: &rusqlite::Row<'_>) -> StoreResult<Holding> {
    Ok(Holding {
        merchant: codec::parse(row.text("merchant_id")?, "merchant id")?,
        livemode: row.flag("livemode")?,
        amount: row.int("amount")?,
        settlement: row.opt_text("settlement")?,
    })
}

/// Writes the ledger entries of a payment's movement: what comes in from or goes back through the
/// channel, against the merchant's held balance while the payment is held (a settlement that has
/// not settled), else its settled balance.
pub(super) fn record_movement(
    c: &Connection,
    payment: PaymentId,
    movement: Movement,
    at: OffsetDateTime,
) -> StoreResult<()> {
    // The payment's row is there (the caller's transaction has just read or changed it): its
    // absence is the statement's failure, as it always was.
    let holding = c
        .one(
            "SELECT p.merchant_id AS merchant_id, p.livemode AS livemode, p.amount AS amount, \
             s.status AS settlement FROM payments p LEFT JOIN settlements s ON s.payment_id = p.id \
             WHERE p.id = ?",
            params![payment.to_string()],
            holding,
        )?
        .ok_or_else(|| unavailable(rusqlite::Error::QueryReturnedNoRows))?;
    record_movement_of(c, payment, &holding, movement, at)
}

/// [`record_movement`] with the payment's [`Holding`] as the caller's transaction just read it.
pub(super) fn record_movement_of(
    c: &Connection,
    payment: PaymentId,
    holding: &Holding,
    movement: Movement,
    at: OffsetDateTime,
) -> StoreResult<()> {
    let held = holding.settlement.as_deref().is_some_and(|s| s != "settled");
    let mut bucket = if held { LedgerBucket::Held } else { LedgerBucket::Settled };
    let (kind, amount, merchant_kind) = match movement {
        Movement::Paid => {
            let k = if held { LedgerKind::Held } else { LedgerKind::Paid };
            (LedgerKind::Paid, holding.amount, k)
        }
        Movement::Refunded(delta) => (LedgerKind::Refunded, -delta, LedgerKind::Refunded),
        Movement::DuplicatePaid(amount) => {
            bucket = LedgerBucket::Settled;
            (LedgerKind::DuplicatePaid, amount, LedgerKind::DuplicatePaid)
        }
        Movement::DuplicateRefunded(amount) => {
            bucket = LedgerBucket::Settled;
            (LedgerKind::DuplicateRefund, -amount, LedgerKind::DuplicateRefund)
        }
    };
    if held && matches!(movement, Movement::Paid) {
        // Paid after its auto-settle time had come and gone (a late notification of a closed
        // payment): the sweeper settles it from now on.
        c.exec(
            "UPDATE settlements SET next_check_at = CASE WHEN auto_settle_at > ? \
             THEN auto_settle_at ELSE ? END WHERE payment_id = ? AND status = 'held' \
             AND auto_settle_at IS NOT NULL AND next_check_at IS NULL",
            params![ms(at), ms(at), payment.to_string()],
        )?;
    }
    if amount == 0 {
        return Ok(());
    }
    let entries = [
        LedgerEntryRecord::new(payment, CHANNEL_ACCOUNT, LedgerBucket::External, kind, -amount, at),
        LedgerEntryRecord::new(payment, MERCHANT_ACCOUNT, bucket, merchant_kind, amount, at),
    ];
    insert_entries(c, holding.merchant, holding.livemode, &entries)
}
