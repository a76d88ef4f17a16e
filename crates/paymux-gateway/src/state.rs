use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use paymux_core::{AccountId, Channel, ChannelKind};
use paymux_store::{AccountRecord, Store};

use crate::error::ApiError;

/// How the gateway is set up; built by the CLI from flags and files.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// How the channels reach this gateway: notification URLs are built on it.
    pub public_url: String,
    /// The timeout of one channel call.
    pub channel_timeout: Duration,
}

/// Everything a handler needs, shared.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub channels: Arc<ChannelRegistry>,
    pub config: Arc<GatewayConfig>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: GatewayConfig) -> Self {
        let channels = Arc::new(ChannelRegistry::new(config.channel_timeout));
        Self { store, channels, config: Arc::new(config) }
    }

    pub fn notify_url(&self, channel: ChannelKind, account: AccountId) -> String {
        format!(
            "{}/callbacks/{}/{}",
            self.config.public_url.trim_end_matches('/'),
            channel,
            account
        )
    }
}

/// One adapter per channel account, built from its stored configuration on first use and kept:
/// keys are parsed once per account.
#[derive(Debug)]
pub struct ChannelRegistry {
    timeout: Duration,
    adapters: RwLock<HashMap<AccountId, Arc<dyn Channel>>>,
}

impl ChannelRegistry {
    pub fn new(timeout: Duration) -> Self {
        Self { timeout, adapters: RwLock::new(HashMap::new()) }
    }

    pub fn adapter(&self, account: &AccountRecord) -> Result<Arc<dyn Channel>, ApiError> {
        if let Some(a) = self.adapters.read().ok().and_then(|m| m.get(&account.id).cloned()) {
            return Ok(a);
        }
        let built = build_adapter(account, self.timeout)?;
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

fn build_adapter(account: &AccountRecord, timeout: Duration) -> Result<Arc<dyn Channel>, ApiError> {
    let bad_config = |e: String| {
        tracing::error!(account = %account.id, channel = %account.channel, error = %e, "channel account misconfigured");
        ApiError::internal(format!("channel account {} is misconfigured: {e}", account.id))
    };
    match account.channel {
        ChannelKind::Alipay => {
            let cfg: paymux_alipay::AlipayAccountConfig =
                serde_json::from_value(account.config.clone())
                    .map_err(|e| bad_config(e.to_string()))?;
            let a = paymux_alipay::AlipayChannel::new(&cfg, timeout)
                .map_err(|e| bad_config(e.to_string()))?;
            Ok(Arc::new(a))
        }
        ChannelKind::Wechat => {
            let cfg: paymux_wechat::WechatAccountConfig =
                serde_json::from_value(account.config.clone())
                    .map_err(|e| bad_config(e.to_string()))?;
            let a = paymux_wechat::WechatChannel::new(&cfg, timeout)
                .map_err(|e| bad_config(e.to_string()))?;
            Ok(Arc::new(a))
        }
        ChannelKind::Unionpay => Err(bad_config("UnionPay is not supported yet".into())),
    }
}
