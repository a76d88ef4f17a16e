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

    /// Adds a channel account to a merchant. Its adapter is built first, so a bad key is reported
    /// here and not at the first payment.
    pub async fn add_account(
        &self,
        merchant: MerchantId,
        channel: paymux_core::ChannelKind,
        config: serde_json::Value,
        livemode: bool,
    ) -> Result<AccountRecord, EngineError> {
        let account = AccountRecord {
            id: AccountId::new(),
            merchant_id: merchant,
            channel,
            config,
            livemode,
            created_at: time::OffsetDateTime::now_utc(),
        };
        self.adapter(&account)?;
        self.store.put_channel_account(&account).await?;
        Ok(account)
    }
}
