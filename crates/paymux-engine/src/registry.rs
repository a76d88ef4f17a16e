//! The channel registry: one adapter per channel account, built by its channel's factory from the
//! account's stored configuration on first use and kept, so keys are parsed once per account.
//!
//! Each channel supplies a factory ([`ChannelFactory`]); a new channel adds a registration in
//! [`ChannelRegistry::new`], not a branch in the code that uses adapters.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use paymux_core::{AccountId, Channel, ChannelError, ChannelKind};
use paymux_store::AccountRecord;
use serde::de::DeserializeOwned;

/// Why an account's stored configuration gives no adapter. Never carries a configured value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The configuration does not have the channel's shape; the text is serde's, cut before the
    /// first quote (serde quotes the offending value, which may be key text).
    #[error("{redacted}")]
    Unreadable { redacted: String },
    /// The adapter refused the configuration (an empty field, a key that does not parse).
    #[error(transparent)]
    Refused(#[from] ChannelError),
    #[error("no channel factory is registered for {0}")]
    Unregistered(ChannelKind),
}

/// Builds a channel's adapter from one account's stored configuration.
pub type ChannelFactory = fn(&serde_json::Value, Duration) -> Result<Arc<dyn Channel>, ConfigError>;

#[derive(Debug)]
pub struct ChannelRegistry {
    timeout: Duration,
    factories: HashMap<ChannelKind, ChannelFactory>,
    adapters: RwLock<HashMap<AccountId, Arc<dyn Channel>>>,
}

impl ChannelRegistry {
    /// A registry with every channel paymux ships, whose adapters call with `timeout`.
    pub fn new(timeout: Duration) -> Self {
        let mut registry =
            Self { timeout, factories: HashMap::new(), adapters: RwLock::new(HashMap::new()) };
        registry.register(ChannelKind::Alipay, alipay);
        registry.register(ChannelKind::Wechat, wechat);
        registry.register(ChannelKind::Unionpay, unionpay);
        registry
    }

    /// Makes `factory` the builder of `kind`'s adapters.
    pub fn register(&mut self, kind: ChannelKind, factory: ChannelFactory) {
        self.factories.insert(kind, factory);
    }

    /// The account's adapter, built now if it is not cached yet, and measured (every call to the
    /// channel is counted and timed).
    pub fn adapter(&self, account: &AccountRecord) -> Result<Arc<dyn Channel>, ConfigError> {
        if let Some(a) = self.adapters.read().ok().and_then(|m| m.get(&account.id).cloned()) {
            return Ok(a);
        }
        let factory = self
            .factories
            .get(&account.channel)
            .ok_or(ConfigError::Unregistered(account.channel))?;
        let built = factory(&account.config, self.timeout).inspect_err(|e| {
            tracing::error!(account = %account.id, channel = %account.channel, error = %e, "channel account misconfigured");
        })?;
        let built: Arc<dyn Channel> = Arc::new(crate::telemetry::Metered(built));
        if let Ok(mut m) = self.adapters.write() {
            m.insert(account.id, built.clone());
        }
        Ok(built)
    }

    /// Drops a cached adapter so the next use rebuilds it from the store (after a config change).
    pub fn forget(&self, account: AccountId) {
        if let Ok(mut m) = self.adapters.write() {
            m.remove(&account);
        }
    }
}

fn parse<T: DeserializeOwned>(config: &serde_json::Value) -> Result<T, ConfigError> {
    serde_json::from_value(config.clone()).map_err(|e| {
        let text = e.to_string();
        let redacted = match text.find('"') {
            Some(i) => format!("{}<redacted>", &text[..i]),
            None => text,
        };
        ConfigError::Unreadable { redacted }
    })
}

fn alipay(config: &serde_json::Value, timeout: Duration) -> Result<Arc<dyn Channel>, ConfigError> {
    Ok(Arc::new(paymux_alipay::AlipayChannel::new(&parse(config)?, timeout)?))
}

fn wechat(config: &serde_json::Value, timeout: Duration) -> Result<Arc<dyn Channel>, ConfigError> {
    Ok(Arc::new(paymux_wechat::WechatChannel::new(&parse(config)?, timeout)?))
}

fn unionpay(
    config: &serde_json::Value,
    timeout: Duration,
) -> Result<Arc<dyn Channel>, ConfigError> {
    Ok(Arc::new(paymux_unionpay::UnionpayChannel::new(&parse(config)?, timeout)?))
}
