//! Idempotency keys.

use async_trait::async_trait;
use paymux_core::MerchantId;
use time::OffsetDateTime;

use super::{PgStore, Tx};
use crate::codec::{self, KEY_COLUMNS, ms};
use crate::error::unavailable;
use crate::rules::{self, KeyDecision};
use crate::*;

/// Binds the merchant's in-flight claim of `key` to the object just written, in the caller's
/// transaction: the object and the binding commit together or not at all.
pub(super) async fn bind_idempotency_key(
    tx: &mut Tx,
    merchant: MerchantId,
    key: Option<&str>,
    object_id: &str,
) -> StoreResult<()> {
    let Some(key) = key else { return Ok(()) };
    sqlx::query(
        "UPDATE idempotency_keys SET object_id = $1 \
         WHERE merchant_id = $2 AND key = $3 AND response_status IS NULL",
    )
    .bind(object_id)
    .bind(merchant.to_string())
    .bind(key)
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(())
}

/// Keeps `answer` for its key if the key has no answer yet (and, with `object_id`, only while
/// the key is bound to that object): an answer once kept is never replaced. Returns whether it
/// was kept.
pub(super) async fn keep_answer<'e>(
    db: impl sqlx::PgExecutor<'e>,
    answer: KeptAnswer<'_>,
    object_id: Option<&str>,
) -> StoreResult<bool> {
    let kept = sqlx::query(
        "UPDATE idempotency_keys SET response_status = $1, response_body = $2 \
         WHERE merchant_id = $3 AND key = $4 AND response_status IS NULL \
         AND ($5::text IS NULL OR object_id = $5)",
    )
    .bind(i64::from(answer.status))
    .bind(answer.body)
    .bind(answer.merchant.to_string())
    .bind(answer.key)
    .bind(object_id)
    .execute(db)
    .await
    .map_err(unavailable)?
    .rows_affected();
    Ok(kept == 1)
}

/// How many times a claim retries a key that vanished under it.
const CLAIM_ROUNDS: usize = 3;

#[async_trait]
impl IdempotencyStore for PgStore {
    async fn idempotency_begin(
        &self,
        merchant: MerchantId,
        key: &str,
        request_hash: &str,
        now: OffsetDateTime,
        lock_until: OffsetDateTime,
        retain_after: OffsetDateTime,
    ) -> StoreResult<IdempotencyBegin> {
        // A caller that finds the key gone between its insert and its read (released or purged
        // that instant) tries again; one whose key keeps vanishing is told it is in flight, which
        // is what the churn means.
        for _ in 0..CLAIM_ROUNDS {
            let mut tx = self.begin().await?;
            // A racing insert of the same key waits here for the first to commit, then inserts
            // nothing: exactly one caller makes the row.
            let inserted = sqlx::query(
                "INSERT INTO idempotency_keys (merchant_id, key, request_hash, locked_until, \
                 created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (merchant_id, key) DO NOTHING",
            )
            .bind(merchant.to_string())
            .bind(key)
            .bind(request_hash)
            .bind(ms(lock_until))
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?
            .rows_affected();
            if inserted == 1 {
                tx.commit().await.map_err(unavailable)?;
                return Ok(IdempotencyBegin::Started);
            }
            // The row is locked until this transaction ends: of two callers taking over an
            // abandoned claim, the second reads the first's claim, in flight.
            let sql = format!(
                "SELECT {KEY_COLUMNS} FROM idempotency_keys WHERE merchant_id = $1 AND key = $2 \
                 FOR UPDATE"
            );
            let Some(row) = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(merchant.to_string())
                .bind(key)
                .fetch_optional(&mut *tx)
                .await
                .map_err(unavailable)?
            else {
                continue;
            };
            let existing = codec::key_row(&row)?;
            match rules::idempotency_decision(Some(&existing), request_hash, now, retain_after) {
                KeyDecision::Answer(answer) => return Ok(answer),
                KeyDecision::Claim => {}
            }
            sqlx::query(
                "UPDATE idempotency_keys SET request_hash = $3, response_status = NULL, \
                 response_body = NULL, object_id = NULL, locked_until = $4, created_at = $5 \
                 WHERE merchant_id = $1 AND key = $2",
            )
            .bind(merchant.to_string())
            .bind(key)
            .bind(request_hash)
            .bind(ms(lock_until))
            .bind(ms(now))
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
            tx.commit().await.map_err(unavailable)?;
            return Ok(IdempotencyBegin::Started);
        }
        tracing::warn!(%merchant, key, "idempotency key vanished under every claim; answered in flight");
        Ok(IdempotencyBegin::InFlight)
    }

    async fn idempotency_finish(
        &self,
        merchant: MerchantId,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> StoreResult<bool> {
        keep_answer(&self.pool, KeptAnswer { merchant, key, status, body }, None).await
    }

    async fn purge_idempotency_keys(&self, before: OffsetDateTime) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1")
            .bind(ms(before))
            .execute(&self.pool)
            .await
            .map_err(unavailable)?
            .rows_affected();
        Ok(done)
    }

    async fn idempotency_release(&self, merchant: MerchantId, key: &str) -> StoreResult<()> {
        sqlx::query(
            // A claim bound to an object it wrote is never forgotten: the object exists.
            "DELETE FROM idempotency_keys WHERE merchant_id = $1 AND key = $2 \
             AND response_status IS NULL AND object_id IS NULL",
        )
        .bind(merchant.to_string())
        .bind(key)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}
