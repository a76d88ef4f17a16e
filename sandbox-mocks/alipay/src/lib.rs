//! A sandbox server that speaks Alipay's OpenAPI wire protocol (RSA2 public-key mode) for local
//! development and end-to-end tests. `/gateway.do` verifies requests exactly as Alipay does
//! (every received parameter but `sign`, empty values dropped, sorted, raw `k=v&`) and answers
//! signed JSON in Alipay's byte layout; trades follow Alipay's rules (a QR code's trade does not
//! exist until scanned, refunds are idempotent by `out_request_no`); payments are made on a cashier
//! page or through the control API under `/_sandbox/`, and signed notifications are posted to the
//! order's `notify_url` and retried on Alipay's schedule, time-compressed. Faults (latency, errors,
//! timeouts after commit, lost, duplicated, reordered or badly signed messages) can be switched on
//! at run time. Trades created with `extend_params.royalty_freeze="true"` are frozen for 商家分账
//! (relation bind, `alipay.trade.order.settle` and its queries, the settle message), with the
//! rules and faults in `/_sandbox/royalty` ([`RoyaltySettings`]).
//!
//! ```no_run
//! use std::time::Duration;
//! use paymux_crypto::RsaPrivateKey;
//! use paymux_mock_alipay::{AlipayMock, AlipayMockConfig};
//!
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9102").await?;
//! let mock = AlipayMock::new(AlipayMockConfig {
//!     public_url: "http://127.0.0.1:9102".into(),
//!     alipay_private_key: RsaPrivateKey::generate().expect("key"),
//!     seller_id: "2088000000000001".into(),
//!     notify_delays: vec![Duration::from_secs(4), Duration::from_secs(10)],
//!     timestamp_tolerance: None,
//! });
//! let app_key = RsaPrivateKey::generate().expect("key");
//! mock.register_app("2021000000000001", app_key.public_key());
//! mock.serve(listener).await
//! # }
//! ```

mod barcode;
mod gateway;
mod notify;
pub mod protocol;
mod royalty;
mod sandbox;
mod trade;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use paymux_crypto::{RsaPrivateKey, RsaPublicKey};
use paymux_mock_kit::faults::FaultSwitch;
use paymux_mock_kit::notify::Scheduler;
use paymux_mock_kit::sync::{lock, read, write};

pub use crate::royalty::RoyaltySettings;
use crate::sandbox::Faults;
use crate::trade::Trades;

/// How the mock is reached and what it signs with.
#[derive(Debug, Clone)]
pub struct AlipayMockConfig {
    /// How browsers and clients reach this mock, e.g. `http://127.0.0.1:9102`; QR codes and
    /// cashier redirects point here.
    pub public_url: String,
    /// The mock's "Alipay" key: it signs answers, notifications and return redirects.
    pub alipay_private_key: RsaPrivateKey,
    /// The merchant's Alipay account, as notifications carry it.
    pub seller_id: String,
    /// Intervals between notification sends (Alipay: 4m, 10m, 10m, 1h, 2h, 6h, 15h); one send
    /// more than there are intervals, then the mock gives up.
    pub notify_delays: Vec<Duration>,
    /// How far a request's `timestamp` may be from the mock's clock; `None` checks only its format.
    pub timestamp_tolerance: Option<Duration>,
}

/// The running mock's state. Cheap to clone: clones share everything.
#[derive(Clone)]
pub struct AlipayMock {
    shared: Arc<Shared>,
}

impl fmt::Debug for AlipayMock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlipayMock")
            .field("public_url", &self.shared.public_url)
            .finish_non_exhaustive()
    }
}

pub(crate) struct Shared {
    public_url: String,
    config: AlipayMockConfig,
    apps: RwLock<HashMap<String, RsaPublicKey>>,
    trades: Mutex<Trades>,
    barcode: Mutex<barcode::Book>,
    faults: FaultSwitch<Faults>,
    notifier: Scheduler<notify::Outgoing>,
    http: reqwest::Client,
    /// 商家分账: relations, settles, holds, balances, and the settle messages' scheduler.
    royalty: royalty::Royalty,
}

impl Shared {
    fn trades(&self) -> MutexGuard<'_, Trades> {
        lock(&self.trades)
    }

    fn faults(&self) -> Faults {
        self.faults.get()
    }

    fn app_key(&self, app_id: &str) -> Option<RsaPublicKey> {
        read(&self.apps).get(app_id).cloned()
    }

    fn cashier_url(&self, out_trade_no: &str) -> String {
        format!("{}/_sandbox/cashier/{out_trade_no}", self.public_url)
    }

    /// Signs `content` with the mock's key; with the bad-signature fault on, the signature is
    /// well-formed but made over other bytes.
    fn sign(&self, content: &str) -> Option<String> {
        let signed = if self.faults().bad_signature {
            format!("{content}#tampered")
        } else {
            content.to_owned()
        };
        match self.config.alipay_private_key.sign_base64(signed.as_bytes()) {
            Ok(sign) => Some(sign),
            Err(error) => {
                tracing::error!(%error, "the mock could not sign");
                None
            }
        }
    }
}

impl AlipayMock {
    pub fn new(config: AlipayMockConfig) -> Self {
        let http = paymux_mock_kit::server::http_client(Some(Duration::from_secs(15)));
        let notifier = Scheduler::new(config.notify_delays.clone());
        let royalty = royalty::Royalty::new(config.notify_delays.clone());
        Self {
            shared: Arc::new(Shared {
                public_url: config.public_url.trim_end_matches('/').to_owned(),
                config,
                apps: RwLock::new(HashMap::new()),
                trades: Mutex::new(Trades::default()),
                barcode: Mutex::new(barcode::Book::default()),
                faults: FaultSwitch::default(),
                notifier,
                http,
                royalty,
            }),
        }
    }

    /// Registers an app and the public key its requests are verified with (replacing any earlier
    /// key for the same app).
    pub fn register_app(&self, app_id: &str, app_public_key: RsaPublicKey) {
        write(&self.shared.apps).insert(app_id.to_owned(), app_public_key);
    }

    /// The public half of the mock's key: what an adapter configures as "Alipay's public key".
    pub fn alipay_public_key(&self) -> RsaPublicKey {
        self.shared.config.alipay_private_key.public_key()
    }

    /// Replaces the royalty rules' values and faults, as `POST /_sandbox/royalty/settings` does.
    pub fn set_royalty(&self, settings: RoyaltySettings) {
        self.shared.royalty.set_settings(settings);
    }

    /// Every route:
    ///
    /// | route | what |
    /// |---|---|
    /// | `GET`/`POST /gateway.do` | the OpenAPI gateway (precreate, page.pay, wap.pay, pay (barcode), query, close, cancel, refund, fastpay.refund.query) |
    /// | `GET /_sandbox/barcode/{out_trade_no}` | a barcode trade: the variant its code chose, its queries and cancels |
    /// | `POST /_sandbox/app_pay` | an app.pay order string as the body: verified, the trade then exists |
    /// | `GET /_sandbox/keys` | the mock's public key (bare base64 and PEM), gateway URL, seller id |
    /// | `GET /_sandbox/cashier/{out_trade_no}` | the cashier page (opening it is the buyer's scan); its Pay / Cancel buttons post to `.../pay` and `.../cancel` |
    /// | `GET /_sandbox/orders`, `GET /_sandbox/orders/{out_trade_no}` | orders with state, amounts, refunds and notification deliveries |
    /// | `POST /_sandbox/orders/{out_trade_no}/pay` | the buyer pays (409 unless waiting); the notification goes out |
    /// | `POST /_sandbox/orders/{out_trade_no}/fail`, `.../close` | the buyer gives up / Alipay closes the unpaid trade (same effect: TRADE_CLOSED, notified to app/wap orders) |
    /// | `GET`/`POST`/`DELETE /_sandbox/faults` | show, set (replacing all), clear injected faults |
    /// | `GET /_sandbox/royalty` | 商家分账: relations, holds, settles with their lines, balances |
    /// | `GET`/`POST /_sandbox/royalty/settings` | the royalty rules' values and faults |
    /// | `GET /_sandbox/receivers/{account}` | what one receiver was paid, and its settle lines |
    pub fn router(&self) -> Router {
        Router::new()
            .route("/gateway.do", get(gateway::gateway).post(gateway::gateway))
            .route("/_sandbox/app_pay", post(gateway::app_pay))
            .route("/_sandbox/keys", get(sandbox::keys))
            .route("/_sandbox/cashier/{out_trade_no}", get(sandbox::cashier))
            .route("/_sandbox/cashier/{out_trade_no}/pay", post(sandbox::cashier_pay))
            .route("/_sandbox/cashier/{out_trade_no}/cancel", post(sandbox::cashier_cancel))
            .route("/_sandbox/barcode/{out_trade_no}", get(barcode::show))
            .route("/_sandbox/orders", get(sandbox::list_orders))
            .route("/_sandbox/orders/{out_trade_no}", get(sandbox::show_order))
            .route("/_sandbox/orders/{out_trade_no}/pay", post(sandbox::pay_order))
            .route("/_sandbox/orders/{out_trade_no}/fail", post(sandbox::fail_order))
            .route("/_sandbox/orders/{out_trade_no}/close", post(sandbox::close_order))
            .route(
                "/_sandbox/faults",
                get(sandbox::show_faults).post(sandbox::set_faults).delete(sandbox::clear_faults),
            )
            .route("/_sandbox/royalty", get(royalty::show))
            .route(
                "/_sandbox/royalty/settings",
                get(royalty::show_settings).post(royalty::set_settings),
            )
            .route("/_sandbox/receivers/{account}", get(royalty::show_receiver))
            .with_state(self.shared.clone())
    }

    /// Serves the router on `listener` until the process ends.
    pub async fn serve(self, listener: tokio::net::TcpListener) -> std::io::Result<()> {
        paymux_mock_kit::server::serve(listener, self.router()).await
    }
}
