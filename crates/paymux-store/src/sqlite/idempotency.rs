//! Idempotency keys.

use async_trait::async_trait;
use paymux_core::MerchantId;
use rusqlite::{Connection, params};
use time::OffsetDateTime;

use super::{Sql, SqliteStore};
use crate::codec::{self, KEY_COLUMNS, ms};
use crate::rules::{self, KeyDecision};
use crate::*;

/// Binds the merchant's in-flight claim of `key` to the object just written, in the caller's
/// transaction: the object and the binding commit together or not at all.
pub(super) fn bind_idempotency_key(
    c: &Connection,
    merchant: MerchantId,
    key: Option<&str>,
    object_id: &str,
) -> StoreResult<()> {
    let Some(key) = key else { return Ok(()) };
    c.exec(
        "UPDATE idempotency_keys SET object_id = ? \
         WHERE merchant_id = ? AND key = ? AND response_status IS NULL",
        params![object_id, merchant.to_string(), key],
    )?;
    Ok(())
}

/// Keeps `answer` for its key, in the caller's transaction, if the key has no answer yet (and,
/// with `object_id`, only while the key is bound to that object): an answer once kept is never
/// replaced. Returns whether it was kept.
pub(super) fn keep_answer(
    c: &Connection,
    answer: KeptAnswer<'_>,
    object_id: Option<&str>,
) -> StoreResult<bool> {
    let kept = c.exec(
        "UPDATE idempotency_keys SET response_status = ?1, response_body = ?2 \
         WHERE merchant_id = ?3 AND key = ?4 AND response_status IS NULL \
         AND (?5 IS NULL OR object_id = ?5)",
        params![
            i64::from(answer.status),
            answer.body,
            answer.merchant.to_string(),
            answer.key,
            object_id
        ],
    )?;
    Ok(kept == 1)
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
        let key = key.to_owned();
        let request_hash = request_hash.to_owned();
        // The one writer makes this read and the write after it atomic. The claim needs no fsync
        // of its own: a crash that loses it loses nothing that rests on it (the object a request
        // writes under it is a later, durable commit, which would make the claim durable too), and
        // a retry then simply runs, as it would once the claim's lock ran out.
        self.write_unsynced(move |tx| {
            let sql = format!(
                "SELECT {KEY_COLUMNS} FROM idempotency_keys WHERE merchant_id = ? AND key = ?"
            );
            let existing =
                tx.one(&sql, params![merchant.to_string(), key], |r| codec::key_row(r))?;
            match rules::idempotency_decision(existing.as_ref(), &request_hash, now, retain_after) {
                KeyDecision::Answer(answer) => return Ok(answer),
                KeyDecision::Claim => {}
            }
            tx.exec(
                "INSERT INTO idempotency_keys (merchant_id, key, request_hash, locked_until, created_at) \
                 VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (merchant_id, key) DO UPDATE SET request_hash = excluded.request_hash, \
                   response_status = NULL, response_body = NULL, object_id = NULL, \
                   locked_until = excluded.locked_until, created_at = excluded.created_at",
                params![merchant.to_string(), key, request_hash, ms(lock_until), ms(now)],
            )?;
            Ok(IdempotencyBegin::Started)
        })
        .await
    }

    async fn idempotency_finish(
        &self,
        merchant: MerchantId,
        key: &str,
        status: u16,
        body: &[u8],
    ) -> StoreResult<bool> {
        let key = key.to_owned();
        let body = body.to_vec();
        self.write(move |tx| {
            keep_answer(tx, KeptAnswer { merchant, key: &key, status, body: &body }, None)
        })
        .await
    }

    async fn purge_idempotency_keys(&self, before: OffsetDateTime) -> StoreResult<u64> {
        let done = self
            .write(move |tx| {
                tx.exec("DELETE FROM idempotency_keys WHERE created_at < ?", params![ms(before)])
            })
            .await?;
        Ok(done as u64)
    }

    async fn idempotency_release(&self, merchant: MerchantId, key: &str) -> StoreResult<()> {
        let key = key.to_owned();
        self.write(move |tx| {
            tx.exec(
                // A claim bound to an object it wrote is never forgotten: the object exists.
                "DELETE FROM idempotency_keys WHERE merchant_id = ? AND key = ? \
                 AND response_status IS NULL AND object_id IS NULL",
                params![merchant.to_string(), key],
            )
            .map(drop)
        })
        .await
    }
}
