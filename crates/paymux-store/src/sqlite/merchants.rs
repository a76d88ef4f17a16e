//! Merchants, API keys and channel accounts.

use async_trait::async_trait;
use paymux_core::{AccountId, MerchantId};
use rusqlite::params;
use time::OffsetDateTime;

use super::{Sql, SqliteStore};
use crate::codec::{self, ACCOUNT_COLUMNS, ms};
use crate::*;

#[async_trait]
impl MerchantStore for SqliteStore {
    async fn create_merchant(&self, name: &str) -> StoreResult<MerchantId> {
        let id = MerchantId::new();
        let name = name.to_owned();
        let now = OffsetDateTime::now_utc();
        self.write(move |tx| {
            tx.exec(
                "INSERT INTO merchants (id, name, created_at) VALUES (?, ?, ?)",
                params![id.to_string(), name, ms(now)],
            )
            .map(drop)
        })
        .await?;
        Ok(id)
    }

    async fn merchant(&self, id: MerchantId) -> StoreResult<Option<MerchantRecord>> {
        self.read(|c| {
            c.one(
                "SELECT id, name, created_at, duplicate_auto_refund FROM merchants WHERE id = ?",
                params![id.to_string()],
                |r| codec::merchant(r),
            )
        })
    }

    async fn add_api_key(&self, key: &NewApiKey) -> StoreResult<()> {
        let key = key.clone();
        let now = OffsetDateTime::now_utc();
        self.write(move |tx| {
            tx.exec_unique(
                "INSERT INTO api_keys (key_hash, merchant_id, prefix, livemode, created_at) \
                 VALUES (?, ?, ?, ?, ?)",
                params![
                    key.key_hash,
                    key.merchant_id.to_string(),
                    key.prefix,
                    key.livemode,
                    ms(now),
                ],
                "api key",
            )
            .map(drop)
        })
        .await
    }

    async fn merchant_for_key(&self, key_hash: &str) -> StoreResult<Option<ApiKeyOwner>> {
        self.read(|c| {
            c.one(
                "SELECT merchant_id, livemode FROM api_keys WHERE key_hash = ?",
                params![key_hash],
                |r| codec::key_owner(r),
            )
        })
    }

    async fn set_duplicate_auto_refund(&self, id: MerchantId, on: bool) -> StoreResult<bool> {
        let done = self
            .write(move |tx| {
                tx.exec(
                    "UPDATE merchants SET duplicate_auto_refund = ? WHERE id = ?",
                    params![on, id.to_string()],
                )
            })
            .await?;
        Ok(done == 1)
    }
}

#[async_trait]
impl AccountStore for SqliteStore {
    async fn put_channel_account(&self, a: &AccountRecord) -> StoreResult<()> {
        let a = a.clone();
        self.write(move |tx| {
            tx.exec(
                "INSERT INTO channel_accounts (id, merchant_id, channel, config, livemode, created_at) \
                 VALUES (?, ?, ?, ?, ?, ?) \
                 ON CONFLICT (id) DO UPDATE SET config = excluded.config, livemode = excluded.livemode",
                params![
                    a.id.to_string(),
                    a.merchant_id.to_string(),
                    a.channel.as_str(),
                    a.config.to_string(),
                    a.livemode,
                    ms(a.created_at),
                ],
            )
            .map(drop)
        })
        .await
    }

    async fn channel_account(&self, id: AccountId) -> StoreResult<Option<AccountRecord>> {
        let sql = format!("SELECT {ACCOUNT_COLUMNS} FROM channel_accounts WHERE id = ?");
        self.read(|c| c.one(&sql, params![id.to_string()], |r| codec::account(r)))
    }

    async fn channel_accounts(&self, merchant: MerchantId) -> StoreResult<Vec<AccountRecord>> {
        let sql = format!(
            "SELECT {ACCOUNT_COLUMNS} FROM channel_accounts WHERE merchant_id = ? ORDER BY id"
        );
        self.read(|c| c.all(&sql, params![merchant.to_string()], |r| codec::account(r)))
    }
}
