//! Receivers, settlements and the ledger (the SQLite backend's statements with `$n` placeholders
//! and sums cast back to BIGINT).

use async_trait::async_trait;
use paymux_core::{LedgerKind, MerchantId, PaymentId, ReceiverId};
use time::OffsetDateTime;

use super::outbox::insert_events;
use super::{PgStore, Tx};
use crate::codec::{
    self, Columns, LEDGER_COLUMNS, RECEIVER_COLUMNS, SETTLEMENT_COLUMNS, ms, splits_json,
};
use crate::error::{unavailable, unique_or};
use crate::*;

/// Writes the entries in one statement (a movement's entries go together).
async fn insert_entries(
    tx: &mut Tx,
    merchant: MerchantId,
    livemode: bool,
    entries: &[LedgerEntryRecord],
) -> StoreResult<()> {
    if entries.is_empty() {
        return Ok(());
    }
    let values: Vec<String> = (0..entries.len())
        .map(|i| {
            let n = i * 9;
            format!(
                "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5,
                n + 6,
                n + 7,
                n + 8,
                n + 9
            )
        })
        .collect();
    let values = values.join(", ");
    let sql = format!(
        "INSERT INTO ledger_entries (id, merchant_id, livemode, payment_id, account, bucket, \
         kind, amount, created_at) VALUES {values}"
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for e in entries {
        q = q
            .bind(e.id.clone())
            .bind(merchant.to_string())
            .bind(livemode)
            .bind(e.payment_id.to_string())
            .bind(e.account.clone())
            .bind(e.bucket.as_str())
            .bind(e.kind.as_str())
            .bind(e.amount)
            .bind(ms(e.created_at));
    }
    q.execute(&mut **tx).await.map_err(|e| unique_or(e, "ledger entry"))?;
    Ok(())
}

#[async_trait]
impl SettlementStore for PgStore {
    async fn insert_receiver(&self, r: &ReceiverRecord) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO receivers (id, merchant_id, livemode, name, accounts, registrations, \
             created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(r.id.to_string())
        .bind(r.merchant_id.to_string())
        .bind(r.livemode)
        .bind(&r.name)
        .bind(r.accounts.to_string())
        .bind(r.registrations.to_string())
        .bind(ms(r.created_at))
        .execute(&mut *tx)
        .await
        .map_err(|e| unique_or(e, "receiver"))?;
        tx.commit().await.map_err(unavailable)
    }

    async fn receiver(
        &self,
        merchant: MerchantId,
        id: ReceiverId,
    ) -> StoreResult<Option<ReceiverRecord>> {
        let sql =
            format!("SELECT {RECEIVER_COLUMNS} FROM receivers WHERE id = $1 AND merchant_id = $2");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .bind(merchant.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(codec::receiver).transpose()
    }

    async fn list_receivers(
        &self,
        merchant: MerchantId,
        livemode: bool,
    ) -> StoreResult<Vec<ReceiverRecord>> {
        let sql = format!(
            "SELECT {RECEIVER_COLUMNS} FROM receivers WHERE merchant_id = $1 AND livemode = $2 AND deleted_at IS NULL ORDER BY id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(merchant.to_string())
            .bind(livemode)
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(codec::receiver).collect()
    }

    async fn delete_receiver(
        &self,
        merchant: MerchantId,
        id: ReceiverId,
        at: OffsetDateTime,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE receivers SET deleted_at = $1 WHERE id = $2 AND merchant_id = $3 AND deleted_at IS NULL",
        )
        .bind(ms(at))
        .bind(id.to_string())
        .bind(merchant.to_string())
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        tx.commit().await.map_err(unavailable)?;
        Ok(done == 1)
    }

    async fn settlement(&self, payment: PaymentId) -> StoreResult<Option<SettlementRecord>> {
        let sql = format!("SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE payment_id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(payment.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(codec::settlement).transpose()
    }

    async fn transition_settlement(&self, c: &SettlementChange) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        if let Some((reserved, refunded)) = c.expect_refunds {
            let row = sqlx::query(
                "SELECT amount_reserved, amount_refunded FROM payments WHERE id = $1 FOR UPDATE",
            )
            .bind(c.payment_id.to_string())
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
            .ok_or(StoreError::NotFound)?;
            if (row.int("amount_reserved")?, row.int("amount_refunded")?) != (reserved, refunded) {
                return Ok(false);
            }
        }
        let done = sqlx::query(
            "UPDATE settlements SET status = $1, splits = $2, settled_at = COALESCE($3, settled_at), \
             next_check_at = $4, updated_at = $5, release_no = COALESCE(release_no, $6) \
             WHERE payment_id = $7 AND merchant_id = $8 AND status = $9 AND updated_at = $10 \
             RETURNING livemode",
        )
        .bind(c.to.as_str())
        .bind(splits_json(&c.splits))
        .bind(c.settled_at.map(ms))
        .bind(c.next_check_at.map(ms))
        .bind(ms(c.at))
        .bind(&c.release_no)
        .bind(c.payment_id.to_string())
        .bind(c.merchant_id.to_string())
        .bind(c.from.as_str())
        .bind(ms(c.from_updated_at))
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        let Some(changed) = done else {
            return Ok(false);
        };
        let livemode = codec::Columns::flag(&changed, "livemode")?;
        insert_entries(&mut tx, c.merchant_id, livemode, &c.entries).await?;
        insert_events(&mut tx, c.merchant_id, livemode, &c.events, c.at).await?;
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }

    async fn claim_due_settlements(
        &self,
        now: OffsetDateTime,
        lease_until: OffsetDateTime,
        limit: u32,
    ) -> StoreResult<Vec<SettlementRecord>> {
        let mut tx = self.begin().await?;
        let sql = format!(
            "SELECT {SETTLEMENT_COLUMNS} FROM settlements WHERE next_check_at IS NOT NULL \
             AND next_check_at <= $1 AND status IN ('held', 'settling') ORDER BY next_check_at \
             LIMIT $2 FOR UPDATE SKIP LOCKED"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(ms(now))
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(unavailable)?;
        let ids = rows.iter().map(|r| r.text("payment_id")).collect::<StoreResult<Vec<_>>>()?;
        sqlx::query("UPDATE settlements SET next_check_at = $1 WHERE payment_id = ANY($2)")
            .bind(ms(lease_until))
            .bind(ids)
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        rows.iter().map(codec::settlement).collect()
    }

    async fn schedule_settlement_check(
        &self,
        payment: PaymentId,
        at: Option<OffsetDateTime>,
    ) -> StoreResult<()> {
        sqlx::query("UPDATE settlements SET next_check_at = $1 WHERE payment_id = $2")
            .bind(at.map(ms))
            .bind(payment.to_string())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn insert_ledger_entries(
        &self,
        merchant: MerchantId,
        livemode: bool,
        entries: &[LedgerEntryRecord],
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        insert_entries(&mut tx, merchant, livemode, entries).await?;
        tx.commit().await.map_err(unavailable)
    }

    async fn ledger_entries(
        &self,
        merchant: MerchantId,
        f: &LedgerFilter,
    ) -> StoreResult<Vec<LedgerEntryRecord>> {
        let sql = format!(
            "SELECT {LEDGER_COLUMNS} FROM ledger_entries WHERE merchant_id = $1 AND livemode = $2 AND ($3 IS NULL OR payment_id = $4) AND ($5 IS NULL OR account = $6) AND ($7 IS NULL OR created_at >= $8) AND ($9 IS NULL OR created_at < $10) ORDER BY created_at, id LIMIT $11"
        );
        let payment = f.payment_id.map(|p| p.to_string());
        let from = f.from.map(ms);
        let to = f.to.map(ms);
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(merchant.to_string())
            .bind(f.livemode)
            .bind(payment.clone())
            .bind(payment)
            .bind(f.account.clone())
            .bind(f.account.clone())
            .bind(from)
            .bind(from)
            .bind(to)
            .bind(to)
            .bind(i64::from(f.limit.clamp(1, 1000)))
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(codec::ledger_entry).collect()
    }

    async fn balances(
        &self,
        merchant: MerchantId,
        livemode: bool,
    ) -> StoreResult<Vec<BalanceRecord>> {
        let rows = sqlx::query(
            "SELECT account, \
             COALESCE(SUM(CASE WHEN bucket = 'held' THEN amount ELSE 0 END), 0)::BIGINT AS held, \
             COALESCE(SUM(CASE WHEN bucket = 'settled' THEN amount ELSE 0 END), 0)::BIGINT AS settled \
             FROM ledger_entries WHERE merchant_id = $1 AND livemode = $2 AND bucket <> 'external' \
             GROUP BY account ORDER BY account",
        )
        .bind(merchant.to_string())
        .bind(livemode)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(codec::balance).collect()
    }

    async fn ledger_imbalances(&self) -> StoreResult<Vec<LedgerImbalance>> {
        let rows = sqlx::query(
            "SELECT l.payment_id AS payment_id, p.amount AS amount, \
             COALESCE(SUM(CASE WHEN l.kind = 'paid' AND l.account = 'channel' THEN -l.amount ELSE 0 END), 0)::BIGINT AS paid, \
             COALESCE(SUM(l.amount), 0)::BIGINT AS total \
             FROM ledger_entries l JOIN payments p ON p.id = l.payment_id \
             GROUP BY l.payment_id, p.amount \
             HAVING COALESCE(SUM(l.amount), 0) <> 0 \
             OR COALESCE(SUM(CASE WHEN l.kind = 'paid' AND l.account = 'channel' THEN -l.amount ELSE 0 END), 0) <> p.amount \
             ORDER BY l.payment_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(codec::imbalance).collect()
    }
}

/// Writes a held payment's settlement row, in the caller's transaction.
/// The sweeper first looks at it at its auto-settle time.
pub(super) async fn insert_settlement_row(tx: &mut Tx, s: &SettlementRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO settlements (payment_id, merchant_id, livemode, status, splits, \
         auto_settle_at, settled_at, next_check_at, release_no, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(s.payment_id.to_string())
    .bind(s.merchant_id.to_string())
    .bind(s.livemode)
    .bind(s.status.as_str())
    .bind(splits_json(&s.splits))
    .bind(s.auto_settle_at.map(ms))
    .bind(s.settled_at.map(ms))
    .bind(s.auto_settle_at.map(ms))
    .bind(&s.release_no)
    .bind(ms(s.created_at))
    .bind(ms(s.updated_at))
    .execute(&mut **tx)
    .await
    .map_err(|e| unique_or(e, "settlement"))?;
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

/// Writes the ledger entries of a payment's movement: what comes in from or goes back through the
/// channel, against the merchant's held balance while the payment is held (a settlement that has
/// not settled), else its settled balance.
pub(super) async fn record_movement(
    tx: &mut Tx,
    payment: PaymentId,
    movement: Movement,
    at: OffsetDateTime,
) -> StoreResult<()> {
    let row = sqlx::query(
        "SELECT p.merchant_id AS merchant_id, p.livemode AS livemode, p.amount AS amount, \
         s.status AS settlement FROM payments p LEFT JOIN settlements s ON s.payment_id = p.id \
         WHERE p.id = $1",
    )
    .bind(payment.to_string())
    .fetch_one(&mut **tx)
    .await
    .map_err(unavailable)?;
    let merchant: MerchantId = codec::parse(row.text("merchant_id")?, "merchant id")?;
    let livemode = row.flag("livemode")?;
    let held = row.opt_text("settlement")?.is_some_and(|s| s != "settled");
    let mut bucket = if held { LedgerBucket::Held } else { LedgerBucket::Settled };
    let (kind, amount, merchant_kind) = match movement {
        Movement::Paid => {
            let k = if held { LedgerKind::Held } else { LedgerKind::Paid };
            (LedgerKind::Paid, row.int("amount")?, k)
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
        sqlx::query(
            "UPDATE settlements SET next_check_at = CASE WHEN auto_settle_at > $1 \
             THEN auto_settle_at ELSE $1 END WHERE payment_id = $2 AND status = 'held' \
             AND auto_settle_at IS NOT NULL AND next_check_at IS NULL",
        )
        .bind(ms(at))
        .bind(payment.to_string())
        .execute(&mut **tx)
        .await
        .map_err(unavailable)?;
    }
    if amount == 0 {
        return Ok(());
    }
    let entries = [
        LedgerEntryRecord::new(payment, CHANNEL_ACCOUNT, LedgerBucket::External, kind, -amount, at),
        LedgerEntryRecord::new(payment, MERCHANT_ACCOUNT, bucket, merchant_kind, amount, at),
    ];
    insert_entries(tx, merchant, livemode, &entries).await
}
