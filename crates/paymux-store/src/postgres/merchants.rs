//! Merchants, API keys and channel accounts.

use async_trait::async_trait;
use paymux_core::{AccountId, MerchantId};
use time::OffsetDateTime;

use super::PgStore;
use crate::codec::{self, ACCOUNT_COLUMNS, ms};
use crate::error::{unavailable, unique_or};
use crate::*;

#[async_trait]
impl MerchantStore for PgStore {
    async fn create_merchant(&self, name: &str) -> StoreResult<MerchantId> {
        let id = MerchantId::new();
        sqlx::query("INSERT INTO merchants (id, name, created_at) VALUES ($1, $2, $3)")
            .bind(id.to_string())
            .bind(name)
            .bind(ms(OffsetDateTime::now_utc()))
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(id)
    }

    async fn merchant(&self, id: MerchantId) -> StoreResult<Option<MerchantRecord>> {
        let row = sqlx::query(
            "SELECT id, name, created_at, duplicate_auto_refund FROM merchants WHERE id = $1",
        )
        .bind(id.to_string())
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        row.as_ref().map(codec::merchant).transpose()
    }

    async fn add_api_key(&self, key: &NewApiKey) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO api_keys (key_hash, merchant_id, prefix, livemode, created_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&key.key_hash)
        .bind(key.merchant_id.to_string())
        .bind(&key.prefix)
        .bind(key.livemode)
        .bind(ms(OffsetDateTime::now_utc()))
        .execute(&self.pool)
        .await
        .map_err(|e| unique_or(e, "api key"))?;
        Ok(())
    }

    async fn merchant_for_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyOwner>> {
        let row = sqlx::query("SELECT merchant_id, livemode FROM api_keys WHERE key_hash = $1")
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(codec::key_owner).transpose()
    }

    async fn set_duplicate_auto_refund(&self, id: MerchantId, on: bool) -> StoreResult<bool> {
        let done = sqlx::query("UPDATE merchants SET duplicate_auto_refund = $1 WHERE id = $2")
            .bind(on)
            .bind(id.to_string())
            .execute(&self.pool)
            .await
            .map_err(unavailable)?
            .rows_affected();
        Ok(done == 1)
    }
}

#[async_trait]
impl AccountStore for PgStore {
    async fn put_channel_account(&self, a: &AccountRecord) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO channel_accounts (id, merchant_id, channel, config, livemode, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (id) DO UPDATE SET config = excluded.config, livemode = excluded.livemode",
        )
        .bind(a.id.to_string())
        .bind(a.merchant_id.to_string())
        .bind(a.channel.as_str())
        .bind(a.config.to_string())
        .bind(a.livemode)
        .bind(ms(a.created_at))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn channel_account(&self, id: AccountId) -> StoreResult<Option<AccountRecord>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM channel_accounts WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(codec::account).transpose()
    }

    async fn channel_accounts(&self, merchant: MerchantId) -> StoreResult<Vec<AccountRecord>> {
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM channel_accounts WHERE merchant_id = $1 ORDER BY id"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(merchant.to_string())
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(codec::account).collect()
    }
}
