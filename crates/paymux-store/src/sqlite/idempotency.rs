//! Idempotency keys.

use async_trait::async_trait;
use paymux_core::MerchantId;
use time::OffsetDateTime;

use super::writer::ExecuteAlone;
use super::{SqliteStore, Tx};
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
        "UPDATE idempotency_keys SET object_id = ? \
         WHERE merchant_id = ? AND key = ? AND response_status IS NULL",
    )
    .bind(object_id)
    .bind(merchant.to_string())
    .bind(key)
    .execute(&mut **tx)
    .await
    .map_err(unavailable)?;
    Ok(())
}

#[async_trait]
impl IdempotencyStore for SqliteStore {
    async fn idempotency_begin(
        &self,
        merchant: MerchantId,
        key: &str,
        request_hash: &str,
        now: OffsetDateTime,
        lock_until: OffsetDateTime,
        retain_after: OffsetDateTime,
    ) -> StoreResult<IdempotencyBegin> {
        // The one writer makes this read and the write after it atomic.
        let mut tx = self.begin().await?;
        let sql =
            format!("SELECT {KEY_COLUMNS} FROM idempotency_keys WHERE merchant_id = ? AND key = ?");
        let existing = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(merchant.to_string())
            .bind(key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?
            .as_ref()
            .map(codec::key_row)
            .transpose()?;
        match rules::idempotency_decision(existing.as_ref(), request_hash, now, retain_after) {
            KeyDecision::Answer(answer) => return Ok(answer),
            KeyDecision::Claim => {}
        }
        sqlx::query(
            "INSERT INTO idempotency_keys (merchant_id, key, request_hash, locked_until, created_at) \
             VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (merchant_id, key) DO UPDATE SET request_hash = excluded.request_hash, \
               response_status = NULL, response_body = NULL, object_id = NULL, \
               locked_until = excluded.locked_until, created_at = excluded.created_at",
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
        Ok(IdempotencyBegin::Started)
    }

    async fn idempotency_finish(
        &self,
        merchant: MerchantId,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> StoreResult<()> {
        sqlx::query(
            "UPDATE idempotency_keys SET response_status = ?, response_body = ? \
             WHERE merchant_id = ? AND key = ?",
        )
        .bind(i64::from(status))
        .bind(body)
        .bind(merchant.to_string())
        .bind(key)
        .execute_alone(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn purge_idempotency_keys(&self, before: OffsetDateTime) -> StoreResult<u64> {
        let done = sqlx::query("DELETE FROM idempotency_keys WHERE created_at < ?")
            .bind(ms(before))
            .execute_alone(&self.writer)
            .await
            .map_err(unavailable)?
            .rows_affected();
        Ok(done)
    }

    async fn idempotency_release(&self, merchant: MerchantId, key: &str) -> StoreResult<()> {
        sqlx::query(
            // A claim bound to an object it wrote is never forgotten: the object exists.
            "DELETE FROM idempotency_keys WHERE merchant_id = ? AND key = ? \
             AND response_status IS NULL AND object_id IS NULL",
        )
        .bind(merchant.to_string())
        .bind(key)
        .execute_alone(&self.writer)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}
