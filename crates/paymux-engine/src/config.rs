//! How the engine is set up: built by the CLI from flags and files.

use std::time::Duration;

/// How the engine (and the gateway in front of it) is set up.
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
    /// How often the backlog gauges (outbox, sweeper) are read from the store.
    pub gauges_interval: Duration,
    pub barcode: BarcodeConfig,
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
            gauges_interval: Duration::from_secs(15),
            barcode: BarcodeConfig::default(),
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

/// Barcode payments: the channels' own poll-then-cancel schedules, run faster for tests.
#[derive(Debug, Clone)]
pub struct BarcodeConfig {
    /// Divides every channel's barcode schedule (poll interval, limit, cancel interval): 1 in
    /// production. The sweeper's interval bounds how fast the loop can turn.
    pub time_compression: u32,
}

impl Default for BarcodeConfig {
    fn default() -> Self {
        Self { time_compression: 1 }
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
