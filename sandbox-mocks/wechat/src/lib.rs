//! A sandbox server that speaks WeChat Pay API v3 as the real gateway does: it checks every
//! request's `Authorization` signature against the merchant's registered key (HTTP 401
//! `SIGN_ERROR` otherwise), signs every 2xx answer with a platform certificate or the WeChat Pay
//! public key (chosen by the request's `Wechatpay-Serial`, like WeChat), serves
//! `/v3/certificates` encrypted with the merchant's APIv3 key, and sends encrypted, signed
//! notifications with WeChat's retry schedule (compressible for tests). Orders live in memory.
//! Orders created with `settle_info.profit_sharing` are frozen for profit sharing: receivers,
//! split orders, unfreeze, returns and the unsplit amount under `/v3/profitsharing/`, with their
//! rules and faults in `/_sandbox/profitsharing` ([`ProfitSharingSettings`]).
//!
//! Under `/_sandbox/` a control API pays, fails or closes orders, rotates the platform
//! certificate and injects faults (latency, errors, timeouts after commit, dropped, duplicated or
//! reordered notifications, bad signatures, WeChat's `WECHATPAY/SIGNTEST/` probes); each order
//! has a cashier page with a QR code and Pay / Cancel buttons.
//!
//! ```no_run
//! use paymux_mock_wechat::{KeyMode, PlatformKeys, WechatMerchant, WechatMock, WechatMockConfig};
//!
//! # async fn run(merchant_public_key: paymux_crypto::RsaPublicKey) -> Result<(), Box<dyn std::error::Error>> {
//! let mock = WechatMock::new(WechatMockConfig::new("http://127.0.0.1:9101"), PlatformKeys::generate()?);
//! mock.register_merchant(
//!     WechatMerchant {
//!         mchid: "1900007291".into(),
//!         appid: "wxd678efh567hg6787".into(),
//!         merchant_serial: "408B07E79B8269FEC3D5D3E6AB8ED163A6A380DB".into(),
//!         merchant_public_key,
//!         apiv3_key: "a7cde1ZJB1kG2e7VfTs3jQzaWizur8Gb".into(),
//!     },
//!     KeyMode::Both,
//! );
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9101").await?;
//! mock.serve(listener).await?;
//! # Ok(()) }
//! ```

mod api;
mod barcode;
mod cashier;
mod control;
mod keys;
mod notify;
mod profitsharing;
pub mod protocol;
mod state;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use paymux_mock_kit::notify::Scheduler;

pub use keys::{KeysError, PlatformKeys};
pub use profitsharing::ProfitSharingSettings;
pub use state::Faults;

use state::{Shared, lock, read, write};

/// How the mock runs.
#[derive(Debug, Clone)]
pub struct WechatMockConfig {
    /// The base URL clients and browsers reach the mock at; cashier links are built on it.
    pub public_url: String,
    /// Intervals between notification sends. WeChat's are 15s, 15s, 30s, 3m, 10m, 20m, 30m, 30m,
    /// 30m, 60m, 3h, 3h, 3h, 6h, 6h; tests compress them. After the last, the mock gives up.
    pub notify_delays: Vec<Duration>,
    /// How far a request's timestamp may be from the mock's clock (WeChat: 5 minutes).
    pub timestamp_tolerance: Duration,
}

impl WechatMockConfig {
    /// WeChat's real retry schedule and time window.
    pub fn new(public_url: impl Into<String>) -> Self {
        let m = |minutes: u64| Duration::from_secs(minutes * 60);
        Self {
            public_url: public_url.into(),
            notify_delays: vec![
                Duration::from_secs(15),
                Duration::from_secs(15),
                Duration::from_secs(30),
                m(3),
                m(10),
                m(20),
                m(30),
                m(30),
                m(30),
                m(60),
                m(180),
                m(180),
                m(180),
                m(360),
                m(360),
            ],
            timestamp_tolerance: m(5),
        }
    }
}

/// A merchant the mock accepts requests from.
#[derive(Clone)]
pub struct WechatMerchant {
    pub mchid: String,
    pub appid: String,
    /// The serial of the merchant's API certificate, as sent in `serial_no`.
    pub merchant_serial: String,
    /// Verifies the merchant's request signatures.
    pub merchant_public_key: paymux_crypto::RsaPublicKey,
    /// 32 ASCII characters: the AES-256-GCM key for notifications and certificate downloads.
    pub apiv3_key: String,
}

impl fmt::Debug for WechatMerchant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WechatMerchant")
            .field("mchid", &self.mchid)
            .field("appid", &self.appid)
            .field("merchant_serial", &self.merchant_serial)
            .field("apiv3_key", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// Which of WeChat's keys a merchant verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyMode {
    /// Platform certificates downloaded from `/v3/certificates`.
    PlatformCertificate,
    /// The WeChat Pay public key (`PUB_KEY_ID_...`); `/v3/certificates` answers 404.
    PublicKey,
    /// Migration: both. Answers follow the request's `Wechatpay-Serial`; notifications use the
    /// public key.
    Both,
}

impl KeyMode {
    /// The mode's name on the command line and in `sandbox.json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PlatformCertificate => "certificate",
            Self::PublicKey => "public-key",
            Self::Both => "both",
        }
    }
}

impl fmt::Display for KeyMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A key mode name that is not `certificate`, `public-key` or `both`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown WeChat key mode {0:?}: expected certificate, public-key or both")]
pub struct UnknownKeyMode(String);

impl std::str::FromStr for KeyMode {
    type Err = UnknownKeyMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [Self::PlatformCertificate, Self::PublicKey, Self::Both]
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownKeyMode(s.to_owned()))
    }
}

/// The mock server. Cheap to clone: all clones share one state.
#[derive(Clone)]
pub struct WechatMock {
    shared: Arc<Shared>,
}

impl fmt::Debug for WechatMock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WechatMock")
            .field("public_url", &self.shared.config.public_url)
            .finish_non_exhaustive()
    }
}

impl WechatMock {
    pub fn new(config: WechatMockConfig, keys: PlatformKeys) -> Self {
        let notifier = Scheduler::new(config.notify_delays.clone());
        Self {
            shared: Arc::new(Shared {
                config,
                keys: RwLock::new(keys),
                merchants: RwLock::new(HashMap::new()),
                book: Default::default(),
                barcode: Default::default(),
                faults: Default::default(),
                refund_delay: std::sync::Mutex::new(state::DEFAULT_REFUND_DELAY),
                notifier,
                http: paymux_mock_kit::server::http_client(None),
                certificate_downloads: Default::default(),
                profit: Default::default(),
            }),
        }
    }

    /// Accepts requests from `merchant` (replacing an earlier registration of the same mchid).
    pub fn register_merchant(&self, merchant: WechatMerchant, mode: KeyMode) {
        if merchant.apiv3_key.len() != 32 {
            tracing::error!(
                mchid = %merchant.mchid,
                "APIv3 key is not 32 bytes: certificate downloads and notifications will fail"
            );
        }
        let mchid = merchant.mchid.clone();
        write(&self.shared.merchants)
            .insert(mchid, Arc::new(state::MerchantEntry { merchant, mode }));
    }

    /// Issues a new platform certificate and signs with it from now on; the old ones stay listed
    /// by `/v3/certificates`. Returns the new serial, or an empty string if issuance failed
    /// (logged; the current certificate keeps signing).
    pub fn rotate_platform_certificate(&self) -> String {
        match self.shared.rotate() {
            Ok(serial) => serial,
            Err(e) => {
                tracing::error!(error = %e, "platform certificate rotation failed");
                String::new()
            }
        }
    }

    /// A snapshot of the keys, so a caller can persist them after a rotation.
    pub fn keys(&self) -> PlatformKeys {
        read(&self.shared.keys).clone()
    }

    /// How long a refund stays PROCESSING before it succeeds and is notified (default 1 s).
    pub fn set_refund_delay(&self, delay: Duration) {
        *lock(&self.shared.refund_delay) = delay;
    }

    /// How many `/v3/certificates` requests it has answered (also in `GET /_sandbox/keys`).
    pub fn certificate_downloads(&self) -> u64 {
        self.shared.certificate_downloads.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Replaces the injected faults, as `POST /_sandbox/faults` does (`Faults::default()` clears).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.faults.set(faults);
    }

    /// Replaces the profit-sharing rules' values and faults, as `POST
    /// /_sandbox/profitsharing/settings` does.
    pub fn set_profit_sharing(&self, settings: ProfitSharingSettings) {
        lock(&self.shared.profit).set_settings(settings);
    }

    /// Every route: WeChat's `/v3/...` API, the cashier and the `/_sandbox/` control API.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/v3/pay/transactions/native", post(api::create_native))
            .route("/v3/pay/transactions/jsapi", post(api::create_jsapi))
            .route("/v3/pay/transactions/app", post(api::create_app))
            .route("/v3/pay/transactions/h5", post(api::create_h5))
            .route(
                "/v3/pay/transactions/out-trade-no/{out_trade_no}",
                get(api::query_by_out_trade_no),
            )
            .route("/v3/pay/transactions/id/{transaction_id}", get(api::query_by_id))
            .route("/v3/pay/transactions/out-trade-no/{out_trade_no}/close", post(api::close))
            .route("/v3/pay/transactions/codepay", post(barcode::codepay))
            .route(
                "/v3/pay/transactions/out-trade-no/{out_trade_no}/reverse",
                post(barcode::reverse),
            )
            .route("/_sandbox/barcode/{out_trade_no}", get(barcode::show))
            .route("/v3/refund/domestic/refunds", post(api::refund))
            .route("/v3/refund/domestic/refunds/{out_refund_no}", get(api::refund_query))
            .route("/v3/certificates", get(api::certificates))
            .route("/v3/profitsharing/receivers/add", post(profitsharing::add_receiver))
            .route("/v3/profitsharing/receivers/delete", post(profitsharing::delete_receiver))
            .route("/v3/profitsharing/orders", post(profitsharing::create_order))
            .route("/v3/profitsharing/orders/unfreeze", post(profitsharing::unfreeze))
            .route("/v3/profitsharing/orders/{out_order_no}", get(profitsharing::query_order))
            .route(
                "/v3/profitsharing/transactions/{transaction_id}/amounts",
                get(profitsharing::amounts),
            )
            .route("/v3/profitsharing/return-orders", post(profitsharing::create_return))
            .route(
                "/v3/profitsharing/return-orders/{out_return_no}",
                get(profitsharing::query_return),
            )
            .route("/_sandbox/profitsharing", get(profitsharing::show))
            .route(
                "/_sandbox/profitsharing/settings",
                get(profitsharing::show_settings).post(profitsharing::set_settings),
            )
            .route("/_sandbox/receivers/{account}", get(profitsharing::show_receiver))
            .route("/_sandbox/orders", get(control::list_orders))
            .route("/_sandbox/orders/{out_trade_no}", get(control::show_order))
            .route("/_sandbox/orders/{out_trade_no}/pay", post(control::pay))
            .route("/_sandbox/orders/{out_trade_no}/fail", post(control::fail))
            .route("/_sandbox/orders/{out_trade_no}/close", post(control::close))
            .route("/_sandbox/refunds/{out_refund_no}/abnormal", post(control::abnormal_refund))
            .route("/_sandbox/rotate_certificate", post(control::rotate_certificate))
            .route("/_sandbox/keys", get(control::show_keys))
            .route(
                "/_sandbox/faults",
                get(control::show_faults).post(control::set_faults).delete(control::clear_faults),
            )
            .route("/_sandbox/cashier/{out_trade_no}", get(cashier::page))
            .route("/_sandbox/cashier/{out_trade_no}/pay", post(cashier::pay))
            .route("/_sandbox/cashier/{out_trade_no}/cancel", post(cashier::cancel))
            .with_state(self.shared.clone())
    }

    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        paymux_mock_kit::server::serve(listener, self.router()).await
    }
}
