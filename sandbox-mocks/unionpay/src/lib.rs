//! A sandbox server that speaks UnionPay's online gateway protocol (ACP 5.1.0) for local
//! development and end-to-end tests. `frontTransReq.do`, `backTransReq.do`, `appTransReq.do` and
//! `queryTrans.do` verify requests as UnionPay does (the certificate registered for the `merId`,
//! the `certId`, the signMethod 01 or 11 signature) and answer raw `k=v&` signed with the mock's
//! key, carrying its certificate (`signPubKeyCert`) from a generated root -> intermediate ->
//! signing chain. A bank card page takes the payer's "card" and posts the signed front
//! notification back to `frontUrl`; the back notification goes to `backUrl` and is retried until
//! answered HTTP 200. Under `/_sandbox/` a control API pays, fails or closes orders and injects
//! faults (latency, errors, timeouts after commit, `respCode=05` answers, dropped, duplicated or
//! reordered notifications, bad signatures). Card preauthorisation (02), its completion (03)
//! and the undos (32, 33) hold and capture money the way a direct merchant can; their rules and
//! the completion-in-process fault are in `/_sandbox/preauth` ([`PreauthSettings`]).
//!
//! ```no_run
//! use paymux_mock_unionpay::{UnionpayMerchant, UnionpayMock, UnionpayMockConfig, keys};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let (mock_keys, merchant, _paths) =
//!     keys::write_sandbox_credentials(std::path::Path::new("keys"), "777290058110048")?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:9103").await?;
//! let mock = UnionpayMock::new(UnionpayMockConfig::new("http://127.0.0.1:9103"), mock_keys);
//! mock.register_merchant(UnionpayMerchant::with_certificate(
//!     "777290058110048",
//!     "paymux sandbox shop",
//!     &merchant.certificate_pem,
//! )?);
//! let (addr, task) = mock.start(listener)?;
//! # let _ = (addr, task); Ok(()) }
//! ```

mod barcode;
mod gateway;
pub mod keys;
mod notify;
mod preauth;
pub mod protocol;
mod sandbox;
mod state;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use paymux_crypto::Certificate;
use paymux_mock_kit::faults::FaultSwitch;
use paymux_mock_kit::notify::Scheduler;
use paymux_mock_kit::sync::write;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub use keys::{CredentialPaths, KeysError, MerchantCredentials, UnionpayKeys};
pub use preauth::PreauthSettings;
pub use state::Faults;

use state::Shared;

/// How the mock runs.
#[derive(Debug, Clone)]
pub struct UnionpayMockConfig {
    /// How browsers and clients reach the mock, e.g. `http://127.0.0.1:9103`; QR codes and the
    /// bank page are built on it.
    pub public_url: String,
    /// Intervals between back notification sends (the notes: 1, 2, 4, 5 minutes); one send more
    /// than there are intervals, then the mock gives up.
    pub notify_delays: Vec<Duration>,
}

impl UnionpayMockConfig {
    /// The schedule of the notes, uncompressed.
    pub fn new(public_url: impl Into<String>) -> Self {
        let m = |minutes: u64| Duration::from_secs(minutes * 60);
        Self { public_url: public_url.into(), notify_delays: vec![m(1), m(2), m(4), m(5)] }
    }
}

/// A merchant the mock accepts requests from.
#[derive(Clone)]
pub struct UnionpayMerchant {
    /// 15 digits.
    pub mer_id: String,
    /// Shown on the bank page.
    pub name: String,
    /// The signing certificate registered for the merchant: requests with signMethod 01 must
    /// name it by `certId`, and `accNo` is encrypted under it.
    pub certificate: Certificate,
    /// The secure key for signMethod 11, if the merchant was given one.
    pub secure_key: Option<String>,
}

impl UnionpayMerchant {
    /// A merchant that signs with its certificate (signMethod 01).
    pub fn with_certificate(
        mer_id: &str,
        name: &str,
        certificate_pem: &str,
    ) -> Result<Self, paymux_crypto::CryptoError> {
        Ok(Self {
            mer_id: mer_id.to_owned(),
            name: name.to_owned(),
            certificate: Certificate::from_pem(certificate_pem)?,
            secure_key: None,
        })
    }
}

impl fmt::Debug for UnionpayMerchant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnionpayMerchant")
            .field("mer_id", &self.mer_id)
            .field("name", &self.name)
            .field("cert_id", &self.certificate.serial_decimal())
            .field("secure_key", &self.secure_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// The mock server. Cheap to clone: clones share one state.
#[derive(Clone)]
pub struct UnionpayMock {
    shared: Arc<Shared>,
}

impl fmt::Debug for UnionpayMock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnionpayMock")
            .field("public_url", &self.shared.public_url)
            .finish_non_exhaustive()
    }
}

impl UnionpayMock {
    pub fn new(config: UnionpayMockConfig, keys: UnionpayKeys) -> Self {
        Self {
            shared: Arc::new(Shared {
                public_url: config.public_url.trim_end_matches('/').to_owned(),
                keys,
                merchants: RwLock::new(HashMap::new()),
                book: Mutex::new(state::Book::default()),
                barcode: Mutex::new(barcode::Book::default()),
                faults: FaultSwitch::default(),
                notifier: Scheduler::new(config.notify_delays),
                http: paymux_mock_kit::server::http_client(Some(Duration::from_secs(10))),
                preauth: Mutex::new(PreauthSettings::default()),
            }),
        }
    }

    /// Accepts requests from `merchant` (replacing an earlier registration of its merId).
    pub fn register_merchant(&self, merchant: UnionpayMerchant) {
        write(&self.shared.merchants).insert(merchant.mer_id.clone(), Arc::new(merchant));
    }

    /// Replaces the injected faults, as `POST /_sandbox/faults` does (`Faults::default()` clears).
    pub fn set_faults(&self, faults: Faults) {
        self.shared.faults.set(faults);
    }

    /// Replaces the preauth family's settings, as `POST /_sandbox/preauth/settings` does.
    pub fn set_preauth(&self, settings: PreauthSettings) {
        *paymux_mock_kit::sync::lock(&self.shared.preauth) = settings;
    }

    /// Every route:
    ///
    /// | route | what |
    /// |---|---|
    /// | `POST /gateway/api/frontTransReq.do` | consume (01/01) or preauth (02/01) from the payer's browser: verified, then the bank page (303) |
    /// | `POST /gateway/api/backTransReq.do` | QR consume (01/07), barcode consume (01/06, `barcode.rs`), 冲正 (99/01), refund (04), consume cancel (31), preauth completion (03), preauth undo (32), completion undo (33) |
    /// | `GET /_sandbox/barcode/{orderId}` | a barcode consume: the variant its `qrNo` chose, its queries and reversals |
    /// | `POST /gateway/api/appTransReq.do` | app consume or preauth: the answer carries the `tn` |
    /// | `POST /gateway/api/queryTrans.do` | query by `orderId` + `txnTime` (or `queryId`) |
    /// | `GET /_sandbox/qr/{queryId}` | what a QR consume's `qrCode` holds: scanning it opens the bank page (303) |
    /// | `GET /_sandbox/cashier/{orderId}` | the bank page: merchant, amount, card number, Pay / Cancel (QR orders: the QR code too) |
    /// | `POST /_sandbox/cashier/{orderId}/pay`, `.../cancel` | its buttons; Pay posts the signed front notification to `frontUrl` |
    /// | `GET /_sandbox/orders`, `GET /_sandbox/orders/{orderId}` | transactions with state, refunds and notification deliveries |
    /// | `POST /_sandbox/orders/{orderId}/pay`, `.../fail`, `.../close` | the payer pays / the payment fails / the order lapses unpaid |
    /// | `GET /_sandbox/keys` | root, intermediate and signing certificates |
    /// | `GET`/`POST`/`DELETE /_sandbox/faults` | show, set (replacing all), clear injected faults |
    /// | `GET /_sandbox/preauth` | every preauth (held, completing, completed, undone, expired) and each merchant's held and captured totals |
    /// | `GET /_sandbox/receivers/{merId}` | the merchant's held and captured amounts, with its preauths |
    /// | `GET`/`POST /_sandbox/preauth/settings` | validity, the 115 % cap, the undo window, the completion-in-process fault |
    ///
    /// Where several merchants or days used one `orderId`, `?merId=&txnTime=` picks one.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/gateway/api/frontTransReq.do", post(gateway::front))
            .route("/gateway/api/backTransReq.do", post(gateway::back))
            .route("/gateway/api/appTransReq.do", post(gateway::app))
            .route("/gateway/api/queryTrans.do", post(gateway::query))
            .route("/_sandbox/qr/{query_id}", get(sandbox::scan))
            .route("/_sandbox/cashier/{order_id}", get(sandbox::cashier))
            .route("/_sandbox/cashier/{order_id}/pay", post(sandbox::cashier_pay))
            .route("/_sandbox/cashier/{order_id}/cancel", post(sandbox::cashier_cancel))
            .route("/_sandbox/barcode/{order_id}", get(barcode::show))
            .route("/_sandbox/orders", get(sandbox::list_orders))
            .route("/_sandbox/orders/{order_id}", get(sandbox::show_order))
            .route("/_sandbox/orders/{order_id}/pay", post(sandbox::pay_order))
            .route("/_sandbox/orders/{order_id}/fail", post(sandbox::fail_order))
            .route("/_sandbox/orders/{order_id}/close", post(sandbox::close_order))
            .route("/_sandbox/preauth", get(preauth::show))
            .route("/_sandbox/receivers/{mer_id}", get(preauth::show_receiver))
            .route(
                "/_sandbox/preauth/settings",
                get(preauth::show_settings).post(preauth::set_settings),
            )
            .route("/_sandbox/keys", get(sandbox::keys))
            .route(
                "/_sandbox/faults",
                get(sandbox::show_faults).post(sandbox::set_faults).delete(sandbox::clear_faults),
            )
            .with_state(self.shared.clone())
    }

    /// Serves the router on `listener` until the process ends.
    pub async fn serve(self, listener: TcpListener) -> std::io::Result<()> {
        paymux_mock_kit::server::serve(listener, self.router()).await
    }

    /// Serves in the background: the bound address (port 0 picks one) and the server task.
    pub fn start(
        &self,
        listener: TcpListener,
    ) -> std::io::Result<(SocketAddr, JoinHandle<std::io::Result<()>>)> {
        paymux_mock_kit::server::start(listener, self.router())
    }
}
