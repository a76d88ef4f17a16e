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
    pub sweeper: SweeperConfig,
    pub webhooks: WebhookConfig,
    /// How long a stored idempotent response is replayed (24 h).
    pub idempotency_retention: Duration,
    /// An in-flight idempotency claim older than this was abandoned by a dead process and may be
    /// taken over (2 min: well past a request's longest run, a channel call's timeout included).
    pub idempotency_lease: Duration,
}

impl GatewayConfig {
    /// Production defaults for everything but the public URL.
    pub fn new(public_url: impl Into<String>) -> Self {
        Self {
            public_url: public_url.into(),
            channel_timeout: Duration::from_secs(10),
            sweeper: SweeperConfig::default(),
            webhooks: WebhookConfig::default(),
            idempotency_retention: Duration::from_secs(24 * 3600),
            idempotency_lease: Duration::from_secs(120),
        }
    }
}

/// The pending-payment sweeper: how often it wakes and how it backs off per payment or refund.
#[derive(Debug, Clone)]
pub struct SweeperConfig {
    pub interval: Duration,
    /// A payment or refund still pending this long after it was created gets its first query:
    /// by then its notification should have arrived.
    pub first_check_after: Duration,
    /// Checks back off exponentially from `first_check_after`, up to this.
    pub max_backoff: Duration,
    /// How long a claimed row is hidden from other sweepers (another instance takes over after).
    pub lease: Duration,
}

impl Default for SweeperConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            first_check_after: Duration::from_secs(60),
            max_backoff: Duration::from_secs(15 * 60),
            lease: Duration::from_secs(60),
        }
    }
}

/// Merchant webhook delivery: at least once, exponential backoff with jitter, for 3 days.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub interval: Duration,
    pub first_retry: Duration,
    pub max_backoff: Duration,
    /// After this long without a 2xx, a delivery is marked failed (redeliver by hand).
    pub give_up_after: Duration,
    /// A 2xx must come within this to count.
    pub timeout: Duration,
    /// Whether endpoints may point at loopback, private or link-local addresses. Off in
    /// production (a merchant must not make the gateway probe its own network); on in the sandbox.
    pub allow_private_urls: bool,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(500),
            first_retry: Duration::from_secs(10),
            max_backoff: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(3 * 24 * 3600),
            timeout: Duration::from_secs(10),
            allow_private_urls: false,
        }
    }
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

/// A configuration error without any configured value in it: serde quotes the offending value
/// (which may be key text), so everything from the first quote on is dropped.
fn redacted(e: &serde_json::Error) -> String {
    let text = e.to_string();
    match text.find('"') {
        Some(i) => format!("{}<redacted>", &text[..i]),
        None => text,
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
                    .map_err(|e| bad_config(redacted(&e)))?;
            let a = paymux_alipay::AlipayChannel::new(&cfg, timeout)
                .map_err(|e| bad_config(e.to_string()))?;
            Ok(Arc::new(a))
        }
        ChannelKind::Wechat => {
            let cfg: paymux_wechat::WechatAccountConfig =
                serde_json::from_value(account.config.clone())
                    .map_err(|e| bad_config(redacted(&e)))?;
            let a = paymux_wechat::WechatChannel::new(&cfg, timeout)
                .map_err(|e| bad_config(e.to_string()))?;
            Ok(Arc::new(a))
        }
        ChannelKind::Unionpay => {
            let cfg: paymux_unionpay::UnionpayAccountConfig =
                serde_json::from_value(account.config.clone())
                    .map_err(|e| bad_config(redacted(&e)))?;
            let a = paymux_unionpay::UnionpayChannel::new(&cfg, timeout)
                .map_err(|e| bad_config(e.to_string()))?;
            Ok(Arc::new(a))
        }
    }
}
