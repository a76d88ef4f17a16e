//! Setting up merchants: a merchant with its first API key, a channel account.

use paymux_core::{AccountId, MerchantId};
use paymux_crypto::{random_alphanumeric, sha256_hex};
use paymux_store::{AccountRecord, NewApiKey};

use crate::engine::Engine;
use crate::error::EngineError;

/// A new secret key and what the store keeps of it: `(key, sha256 hex, prefix)`. The key itself
/// is shown once.
pub fn new_api_key(livemode: bool) -> (String, String, String) {
    let key = format!("sk_{}_{}", if livemode { "live" } else { "test" }, random_alphanumeric(32));
    let hash = sha256_hex(key.as_bytes());
    let prefix = key[..12].to_owned();
    (key, hash, prefix)
}

impl Engine {
    /// Creates a merchant and one API key of the given mode; returns the merchant and the key,
    /// which is not kept (only its hash is).
    pub async fn create_merchant(
        &self,
        name: &str,
        livemode: bool,
    ) -> Result<(MerchantId, String), EngineError> {
        let merchant = self.store.create_merchant(name).await?;
        let (key, key_hash, prefix) = new_api_key(livemode);
        self.store
            .add_api_key(&NewApiKey { merchant_id: merchant, key_hash, prefix, livemode })
            .await?;
        Ok((merchant, key))
    }

    /// Sets whether the merchant's duplicate payments (a second attempt paid after another had
    /// won) are refunded automatically; they are by default.
    pub async fn set_duplicate_auto_refund(
        &self,
        merchant: MerchantId,
        on: bool,
    ) -> Result<(), EngineError> {
        if !self.store.set_duplicate_auto_refund(merchant, on).await? {
            return Err(EngineError::NotFound { what: "merchant" });
        }
        Ok(())
    }

    /// Whether the merchant exists.
    pub async fn merchant_exists(&self, merchant: MerchantId) -> Result<bool, EngineError> {
        Ok(self.store.merchant(merchant).await?.is_some())
    }

    /// Adds a channel account to a merchant under a new id. Its adapter is built first, so a bad
    /// key is reported here and not at the first payment.
    pub async fn add_account(
        &self,
        merchant: MerchantId,
        channel: paymux_core::ChannelKind,
        config: serde_json::Value,
        livemode: bool,
    ) -> Result<AccountRecord, EngineError> {
        self.put_account(AccountId::new(), merchant, channel, config, livemode).await
    }

    /// Adds the account `id`, or updates its configuration (keys, URLs). Its merchant, channel and
    /// mode are what its payments were made under: changing them is refused, as is an account
    /// of a merchant that does not exist or whose configuration gives no adapter.
    pub async fn put_account(
        &self,
        id: AccountId,
        merchant: MerchantId,
        channel: paymux_core::ChannelKind,
        config: serde_json::Value,
        livemode: bool,
    ) -> Result<AccountRecord, EngineError> {
        if !self.merchant_exists(merchant).await? {
            return Err(EngineError::NotFound { what: "merchant" });
        }
        let existing = self.store.channel_account(id).await?;
        if let Some(e) = &existing
            && (e.merchant_id != merchant || e.channel != channel || e.livemode != livemode)
        {
            return Err(EngineError::Rejected {
                code: "account_identity_changed",
                field: None,
                message: format!(
                    "it is stored as a {} {} account of merchant {}; an account's merchant, \
                     channel and mode cannot change (give it a new id)",
                    if e.livemode { "live" } else { "test" },
                    e.channel,
                    e.merchant_id
                ),
            });
        }
        let account = AccountRecord {
            id,
            merchant_id: merchant,
            channel,
            config,
            livemode,
            created_at: existing.map_or_else(time::OffsetDateTime::now_utc, |e| e.created_at),
        };
        // Built now (not from a cached adapter of the old configuration), so a key that does not
        // load is reported here.
        self.channels.forget(id);
        self.adapter(&account)?;
        self.store.put_channel_account(&account).await?;
        Ok(account)
    }
}
